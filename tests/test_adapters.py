import copy
from dataclasses import replace

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from pruneflow.core.architectures import architecture_of
from pruneflow.core.tiny import build_tiny_model
from pruneflow.prune.criteria import get_criterion
from pruneflow.prune.masks import parse_pattern
from pruneflow.prune.sequential import prune_model
from pruneflow.recover.adapters import (
    AdapterConfig,
    AdapterLinear,
    PeftError,
    add_adapters,
    merge_adapters,
    parse_subsets,
    prepare_retraining,
)
from pruneflow.recover.retrain import retrain
from pruneflow.recover.train import TrainConfig, train

torch.set_num_threads(1)

CALIB = torch.randint(2, 258, (6, 24), generator=torch.Generator().manual_seed(0))
CFG = TrainConfig.retraining(lr=1e-2, steps=6)


def _pruned(**kwargs):
    model, _ = build_tiny_model(**kwargs)
    masks = dict(prune_model(model, get_criterion("magnitude"), parse_pattern(0.5)))
    return model, masks


def _assert_zeros_are_the_mask(model, masks):
    arch = architecture_of(model)
    for index, block in enumerate(arch.get_blocks(model)):
        for name, layer in arch.block_linears(block).items():
            assert type(layer) is torch.nn.Linear
            assert torch.equal(arch.weight(layer) == 0, ~masks[index][name]), f"{index}.{name}"


def test_parse_subsets():
    assert parse_subsets("biases+norms") == ("biases", "norms")
    assert parse_subsets(["norms", "norms", "lm_head"]) == ("norms", "lm_head")
    assert parse_subsets("none") == ()
    with pytest.raises(PeftError, match="'layernorm'"):
        parse_subsets("biases+layernorm")
    with pytest.raises(PeftError, match="dropout"):
        AdapterConfig("scalelora", dropout=0.1)


def test_biases_and_norms_fraction_matches_hand_count():
    config = LlamaConfig(vocab_size=258, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, attention_bias=True, mlp_bias=True)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    setup = prepare_retraining(model, None, "biases+norms", None)
    biases = 2 * (64 + 32 + 32 + 64 + 128 + 128 + 64)  # q k v o gate up down, per block
    norms = 2 * 2 * 64 + 64  # two RMSNorms per block and the final one
    total = sum(p.numel() for p in model.parameters())
    assert setup["unavailable"] == []
    assert setup["trainable_params"] == biases + norms
    assert setup["trainable_fraction"] == pytest.approx((biases + norms) / total)


def test_biases_reported_unavailable_on_llama_without_biases():
    model, masks = _pruned()
    setup = prepare_retraining(model, masks, ("biases", "norms"), None)
    assert setup["unavailable"] == ["biases"]
    assert setup["trainable_params"] == 5 * 64  # norms only: nothing was added
    assert not any("bias" in n for n, _ in model.named_parameters())


def test_scalelora_starts_as_the_identity():
    model, masks = _pruned()
    with torch.no_grad():
        before = model(CALIB).logits
    add_adapters(model, masks, AdapterConfig("scalelora", rank=4))
    adapter = model.model.layers[0].mlp.down_proj
    assert isinstance(adapter, AdapterLinear)
    torch.testing.assert_close(adapter.lora_B @ adapter.lora_A, torch.ones(64, 128))
    with torch.no_grad():
        torch.testing.assert_close(model(CALIB).logits, before)


@pytest.mark.parametrize("kind", ["masklora", "scalelora"])
def test_merged_adapters_keep_sparsity_and_logits(kind):
    model, masks = _pruned()
    original = copy.deepcopy(model)
    setup = prepare_retraining(model, masks, "norms", AdapterConfig(kind, rank=4, alpha=8))
    batches = list(CALIB.split(2))
    history = train(setup["params"], lambda ids: model(ids, labels=ids).loss, batches, CFG, setup["masks"])
    assert history["losses"][-1] < history["losses"][0]
    with torch.no_grad():
        adapted = model(CALIB).logits
    merge_adapters(model)
    _assert_zeros_are_the_mask(model, masks)
    assert not any("lora" in n for n in model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(model(CALIB).logits, adapted, rtol=1e-4, atol=1e-5)
    w, w0 = model.model.layers[1].self_attn.o_proj.weight, original.model.layers[1].self_attn.o_proj.weight
    assert not torch.equal(w, w0)  # the adapters did change the kept weights


def test_plain_lora_merges_masked():
    model, masks = _pruned()
    summary = retrain(model, masks, CALIB, "none", AdapterConfig("lora", rank=4), CFG)
    _assert_zeros_are_the_mask(model, masks)
    # adapters on 7 linears of 2 blocks: A [4, in] (in = 64, down_proj 128) + B [out, 4]
    per_block = 4 * (6 * 64 + 128) + 4 * (64 + 32 + 32 + 64 + 128 + 128 + 64)
    assert summary["trainable_params"] == 2 * per_block


def test_full_retraining_keeps_masks_with_weight_decay():
    model, masks = _pruned()
    summary = retrain(model, masks, CALIB, "full", None, replace(CFG, weight_decay=0.1))
    _assert_zeros_are_the_mask(model, masks)
    assert summary["trainable_fraction"] == 1.0
    assert summary["losses"][-1] < summary["losses"][0]


def test_same_seed_same_weights():
    states = []
    for _ in range(2):
        model, masks = _pruned()
        retrain(model, masks, CALIB, "norms", AdapterConfig("masklora", rank=4, dropout=0.1), CFG)
        states.append(model.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_saved_merged_model_reloads_with_from_pretrained(tmp_path):
    model, masks = _pruned()
    embeddings = model.model.embed_tokens.weight.detach().clone()
    summary = retrain(model, masks, CALIB, "norms+lm_head", AdapterConfig("masklora", rank=4), CFG)
    assert summary["unavailable"] == []
    # the head was tied to the embeddings: merging its LoRA unties it and leaves the embeddings alone
    assert model.lm_head.weight is not model.model.embed_tokens.weight
    assert torch.equal(model.model.embed_tokens.weight, embeddings)
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    _assert_zeros_are_the_mask(reloaded, masks)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(CALIB).logits, model(CALIB).logits)


def test_gpt2_conv1d_adapters_merge_back_to_conv1d():
    from transformers import GPT2Config, GPT2LMHeadModel
    from transformers.pytorch_utils import Conv1D

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=258, n_embd=64, n_layer=2, n_head=4, n_positions=64)).eval()
    masks = dict(prune_model(model, get_criterion("magnitude"), parse_pattern(0.5)))
    setup = prepare_retraining(model, masks, "biases", AdapterConfig("masklora", rank=4))
    assert setup["unavailable"] == []
    train(setup["params"], lambda ids: model(ids, labels=ids).loss, list(CALIB.split(2)), CFG, setup["masks"])
    with torch.no_grad():
        adapted = model(CALIB).logits
    merge_adapters(model)
    arch = architecture_of(model)
    for index, block in enumerate(arch.get_blocks(model)):
        for name, layer in arch.block_linears(block).items():
            assert type(layer) is Conv1D
            assert torch.equal(arch.weight(layer) == 0, ~masks[index][name])
    with torch.no_grad():
        torch.testing.assert_close(model(CALIB).logits, adapted, rtol=1e-4, atol=1e-5)


def _autograd_weight(adapter: AdapterLinear) -> torch.Tensor:
    """The effective weight as plain autograd builds it (the formula of the module docstring)."""
    ba = adapter.lora_B @ adapter.lora_A
    if adapter.kind == "scalelora":
        return adapter.base_weight() * ba
    return adapter.base_weight() + adapter.scaling * (ba * adapter.keep)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("kind", ["masklora", "scalelora"])
def test_adapted_linear_gradients_are_autograds(kind, dtype):
    """The hand-written backward of MaskLoRA/ScaleLoRA gives autograd's own gradients for x, A, B and the bias
    (float32; bfloat16 weights under autocast, float32 masters, as retraining runs them)."""
    torch.manual_seed(0)
    base = torch.nn.Linear(48, 40).to(dtype)
    keep = torch.rand(40, 48) > 0.5
    with torch.no_grad():
        base.weight.mul_(keep)
    adapter = AdapterLinear(base, AdapterConfig(kind, rank=4), keep, False, torch.Generator().manual_seed(0))
    for p in (adapter.lora_A, adapter.lora_B, base.bias):
        p.data = p.data.float()
        p.requires_grad_(True)
    with torch.no_grad():
        adapter.lora_B.normal_()  # B = 0 at the start would make dA vanish
    base.weight.requires_grad_(False)
    x = torch.randn(3, 5, 48, requires_grad=True)
    results = []
    for forward in (adapter, lambda h: torch.nn.functional.linear(h, _autograd_weight(adapter), base.bias)):
        with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
            y = forward(x)
        y.float().square().sum().backward()
        results.append([y.detach()] + [t.grad.clone() for t in (x, adapter.lora_A, adapter.lora_B, base.bias)])
        for t in (x, adapter.lora_A, adapter.lora_B, base.bias):
            t.grad = None
    tol = {} if dtype == torch.float32 else {"rtol": 2e-2, "atol": 2e-2}
    for ours, reference, name in zip(*results, ("y", "x", "A", "B", "bias")):
        assert ours.dtype == reference.dtype, name
        torch.testing.assert_close(ours, reference, **tol, msg=name)


def test_masks_equal_to_the_nonzero_weights_are_not_stored():
    """A pruned layer's mask is read off its weight (no byte per weight held); a kept weight that is exactly zero
    makes the mask differ from W != 0, and then it is stored and used."""
    model, masks = _pruned()
    add_adapters(model, masks, AdapterConfig("masklora", rank=4))
    adapters = [m for m in model.modules() if isinstance(m, AdapterLinear)]
    assert adapters and all(a.stored_keep is None for a in adapters)
    assert torch.equal(adapters[0].keep, masks[0]["self_attn.q_proj"])
    model, masks = _pruned()
    layer = model.model.layers[0].self_attn.q_proj
    row, col = masks[0]["self_attn.q_proj"].nonzero()[0].tolist()
    with torch.no_grad():
        layer.weight[row, col] = 0.0  # kept, but zero
    add_adapters(model, masks, AdapterConfig("masklora", rank=4))
    adapter = model.model.layers[0].self_attn.q_proj
    assert adapter.stored_keep is not None and torch.equal(adapter.keep, masks[0]["self_attn.q_proj"])
    with torch.no_grad():
        adapter.lora_B.fill_(1.0)
    assert adapter.merged_weight()[row, col] != 0  # the kept zero weight is updated
