"""Every feature on every family of tests/families.py: architecture found from the module tree,
the block-by-block forward, unstructured pruning in both streams, reconstruction, PERP,
structured pruning (or its clear error), mixture-of-experts routing, and the families table of docs/models.md."""

from __future__ import annotations

import copy
import re

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from conftest import REPO
from families import FAMILIES, MOE, NONE_ONLY, STRUCTURED, WORKS, build, token_ids
from pruneflow.core.activations import InputStats, capture_block_inputs, collect_stats, forward_by_blocks, input_groups
from pruneflow.core.architectures import UnsupportedModelError, architecture_of, check_supported, saveable
from pruneflow.core.artifacts import artifact_folder
from pruneflow.core.sparsity import check_masks_kept, check_sparsity, measured_sparsity
from pruneflow.evaluate.perplexity import perplexity
from pruneflow.prune.criteria import get_criterion
from pruneflow.prune.dense_stream import apply_masks, build_activation_cache, masks_from_scores, model_scores, prune_from_cache
from pruneflow.prune.masks import parse_pattern
from pruneflow.prune.sequential import prune_model
from pruneflow.recover.run import recover
from pruneflow.spec.naming import parse_recovery
from pruneflow.structured.prune import StructuredError, count_parameters, prune_structured

ALL = list(FAMILIES)
CALIB = token_ids(4, 32, seed=1)


@pytest.mark.parametrize("family", ALL)
def test_blockwise_forward_reproduces_the_models_logits(family):
    """Each block run alone with its own captured arguments (sliding-window and global masks,
    per-layer rotary tables) gives the model's own logits."""
    model = build(family)
    ids = token_ids(3, 24, seed=2)  # longer than the sliding windows of 8
    with torch.no_grad():
        reference = model(ids, use_cache=False).logits
    got = forward_by_blocks(model, ids, batch_size=2)
    assert ((got - reference).abs().max() / reference.abs().max()).item() <= 1e-5


# What the trace must find where families differ: (attention pre/post norm, MLP pre/post norm, parallel).
PARTS = {
    "llama": ("input_layernorm", None, "post_attention_layernorm", None, False),
    "gemma2": ("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm", "post_feedforward_layernorm", False),
    "olmo2": (None, "post_attention_layernorm", None, "post_feedforward_layernorm", False),
    "gpt_neox": ("input_layernorm", None, "post_attention_layernorm", None, True),
    "falcon": ("ln_attn", None, "ln_mlp", None, True),
    "opt": ("self_attn_layer_norm", None, "final_layer_norm", None, False),
    "gpt2": ("ln_1", None, "ln_2", None, False),
}


@pytest.mark.parametrize("family", ALL)
def test_architecture_found_from_the_module_tree(family):
    model = build(family)
    arch = architecture_of(model)
    block = arch.get_blocks(model)[0]
    every_linear = {n for n, m in block.named_modules() if isinstance(m, torch.nn.Linear) or type(m).__name__ == "Conv1D"}
    routers = every_linear - set(arch.linears)
    assert all(block.get_submodule(r).weight.shape[0] in (1, 4) for r in routers)  # only expert gates left out
    assert len(arch.linears) == len(set(arch.linears)) and set(arch.attn.linears) | set(arch.mlp.linears) == set(arch.linears)
    assert arch.attn.output and arch.attn.inputs
    if family in PARTS:
        assert (arch.attn.pre_norm, arch.attn.post_norm, arch.mlp.pre_norm, arch.mlp.post_norm, arch.parallel_residual) == PARTS[family]
    if family in MOE:
        assert arch.has_experts and arch.mlp.output is None and any(".experts.3." in n for n in arch.linears)


def _prune_dense_stream(model, criterion, pattern, tmp_path):
    cache = tmp_path / "acts"
    with artifact_folder(cache) as out:
        build_activation_cache(model, CALIB, out, batch_size=2)
    crit = get_criterion(criterion)
    if criterion == "sparsegpt":
        return dict(prune_from_cache(model, crit, pattern, cache))
    masks = {i: masks_from_scores(s, pattern, crit) for i, s in model_scores(model, crit, cache)}
    apply_masks(model, masks)
    return masks


def _check_pattern(model, masks, pattern):
    check_sparsity(measured_sparsity(model), pattern.sparsity)
    assert check_masks_kept(model, masks) > 0
    if pattern.is_nm:
        arch = architecture_of(model)
        for block in arch.get_blocks(model):
            for layer in arch.block_linears(block).values():
                w = arch.weight(layer)
                zeros = (w == 0).reshape(w.shape[0], -1, pattern.m).sum(-1)
                assert bool((zeros >= pattern.m - pattern.n).all())


@pytest.mark.parametrize("family", ALL)
def test_unstructured_pruning_in_both_streams(family, tmp_path):
    """Magnitude, Wanda and SparseGPT at 50% and 2:4, sequential and dense stream: exact sparsity,
    every mask kept, and the pruned model still evaluates."""
    for criterion in ("magnitude", "wanda", "sparsegpt"):
        for token in (0.5, "2:4"):
            pattern = parse_pattern(token)
            for stream in ("sequential", "dense") if criterion != "magnitude" else ("sequential",):
                model = build(family)
                if stream == "dense":
                    masks = _prune_dense_stream(model, criterion, pattern, tmp_path / f"{criterion}{pattern.token}")
                else:
                    masks = dict(prune_model(model, get_criterion(criterion), pattern, CALIB, stream, batch_size=2))
                _check_pattern(model, masks, pattern)
    assert perplexity(model, token_ids(2, 16, seed=3), batch_size=2)["perplexity"] > 1


@pytest.mark.parametrize("family", ALL)
def test_reconstruction_and_perp(family):
    """recon:sublayer, recon:block and retrain:norms+masklora after Wanda 50%: pruned weights stay
    zero, layer-wise reconstruction lowers its loss, and the model evaluates."""
    dense = build(family)
    pruned_base = build(family)
    masks = dict(prune_model(pruned_base, get_criterion("wanda"), parse_pattern(0.5), CALIB, "sequential", batch_size=2))
    settings = {"lr": 1e-3, "batch_size": 2, "rank": 4, "alpha": 8}
    for spec in ("recon:sublayer", "recon:block", "retrain:norms+masklora"):
        pruned = copy.deepcopy(pruned_base)
        result = recover(dense, pruned, masks, CALIB, parse_recovery(spec), settings)
        assert check_masks_kept(pruned, masks) > 0
        if spec.startswith("recon"):
            assert result["loss_after"] < result["loss_before"], spec
        assert perplexity(pruned, token_ids(2, 16, seed=3), batch_size=2)["perplexity"] > 1


@pytest.mark.parametrize("family", ALL)
@pytest.mark.parametrize("target", ["heads", "neurons"])
def test_structured_pruning_or_one_clear_error(family, target, tmp_path):
    expected = STRUCTURED[family][target]
    for reconstruction in ("none", "liar_weight", "liar"):  # liar_weight adds no bias: it works where none does
        model = build(family)
        before = count_parameters(model)
        works = expected == WORKS or (expected == NONE_ONLY and reconstruction in ("none", "liar_weight"))
        if not works:
            with pytest.raises(StructuredError, match=family):
                prune_structured(model, CALIB, target, 0.5, "fluctuation", reconstruction, damping=0.1, batch_size=2)
            continue
        prune_structured(model, CALIB, target, 0.5, "fluctuation", reconstruction, damping=0.1, batch_size=2)
        assert count_parameters(model) < before
        folder = tmp_path / f"{target}-{reconstruction}"
        with saveable(model):
            model.save_pretrained(folder)
        loaded = AutoModelForCausalLM.from_pretrained(folder).eval()
        ids = token_ids(2, 16, seed=4)
        with torch.no_grad():
            torch.testing.assert_close(loaded(ids, use_cache=False).logits, model(ids, use_cache=False).logits, rtol=0, atol=1e-5)


@pytest.mark.parametrize("family", MOE)
def test_expert_statistics_come_from_the_tokens_routed_to_them(family):
    model = build(family)
    arch = architecture_of(model)
    block = arch.get_blocks(model)[0]
    inputs = capture_block_inputs(model, CALIB, batch_size=2)
    routed = {}
    router = next(m for n, m in block.named_modules() if n.endswith("mlp.gate"))
    handle = router.register_forward_hook(lambda _m, _a, out: routed.setdefault("idx", []).append(out[2]))
    stats, _ = collect_stats(block, arch.block_linears(block), inputs, gram=False, groups=input_groups(arch))
    handle.remove()
    chosen = torch.cat(routed["idx"])  # [tokens, top_k]
    for e in range(4):
        expected = int((chosen == e).any(1).sum())
        assert stats[f"mlp.experts.{e}.gate_proj"].count == expected
        assert stats[f"mlp.experts.{e}.up_proj"] is stats[f"mlp.experts.{e}.gate_proj"]
    assert stats["self_attn.q_proj"].count == CALIB.numel()
    assert isinstance(stats["mlp.experts.0.down_proj"], InputStats)


@pytest.mark.parametrize("family", MOE)
def test_moe_routers_untouched_and_saved_fused(family, tmp_path):
    model = build(family)
    routers = {n: p.clone() for n, p in model.named_parameters() if n.endswith("mlp.gate.weight")}
    masks = dict(prune_model(model, get_criterion("wanda"), parse_pattern(0.5), CALIB, "sequential", batch_size=2))
    assert routers and all(torch.equal(p, dict(model.named_parameters())[n]) for n, p in routers.items())
    with saveable(model):
        model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert any(n.endswith("experts.gate_up_proj") for n, _ in loaded.named_parameters())
    ids = token_ids(2, 16, seed=4)
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids, use_cache=False).logits, model(ids, use_cache=False).logits, rtol=0, atol=1e-6)
    check_masks_kept(loaded, masks)  # unfused again on load, the masks fit the same names


def test_unsupported_model_names_family_part_and_how_to_add():
    config = AutoConfig.for_model("mamba", hidden_size=32, num_hidden_layers=2, vocab_size=100)
    with pytest.raises(UnsupportedModelError) as err:
        check_supported(config)
    text = str(err.value)
    assert "'mamba'" in text and "attention" in text and "EXCEPTIONS" in text


@pytest.mark.parametrize("family", ALL)
def test_check_supported_reads_only_the_config(family):
    config = build(family).config
    described = check_supported(config)
    assert described["family"] == family and described["linears_per_block"] >= 4


def test_docs_families_table_says_what_the_tests_run():
    page = (REPO / "docs" / "models.md").read_text()
    table = page.split("<!-- families table -->")[1].split("<!-- end families table -->")[0]
    rows = {m.group(1): [c.strip() for c in m.group(2).split("|")] for m in re.finditer(r"^\| `([a-z0-9_]+)` \|(.*)\|$", table, re.M)}
    assert set(rows) == set(FAMILIES)
    for family, cells in rows.items():
        assert cells[:4] == ["works"] * 4, family  # unstructured, streams, reconstruction, PERP
        assert cells[4] == STRUCTURED[family]["heads"] and cells[5] == STRUCTURED[family]["neurons"], family
