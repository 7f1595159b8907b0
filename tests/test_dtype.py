"""The models.*.dtype setting: stored and computed in bfloat16/float16, statistics and optimisers in float32."""

import copy

import pytest
import torch

from pruneflow.core.activations import capture_block_inputs, collect_stats, input_groups
from pruneflow.core.architectures import architecture_of
from pruneflow.core.models import ModelSourceError, load_model, materialize
from pruneflow.evaluate.perplexity import perplexity
from pruneflow.prune.criteria import get_criterion
from pruneflow.prune.masks import parse_pattern
from pruneflow.prune.sequential import prune_model
from pruneflow.recover.run import recover
from pruneflow.spec.naming import parse_recovery

torch.set_num_threads(1)
CALIB = torch.randint(2, 258, (8, 32), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16", "float64"])
def test_materialized_model_is_stored_and_loaded_in_its_dtype(tmp_path, dtype):
    materialize({"source": "tiny", "dtype": dtype}, tmp_path / "model")
    model, _ = load_model(tmp_path / "model")
    assert {p.dtype for p in model.parameters()} == {getattr(torch, dtype)}
    assert torch.isfinite(torch.tensor(perplexity(model, CALIB[:2], 2)["perplexity"]))
    assert load_model(tmp_path / "model", dtype="float32")[0].dtype == torch.float32  # explicit override


def test_unknown_dtype_names_value_and_allowed(tmp_path):
    with pytest.raises(ModelSourceError, match=r"'fp8'.*allowed: float32, bfloat16, float16, float64"):
        materialize({"source": "tiny", "dtype": "fp8"}, tmp_path / "model")


def test_statistics_of_a_bfloat16_block_are_float32_and_match_float32_within_rounding(tiny):
    model, _ = tiny
    stats = {}
    for dtype in (torch.float32, torch.bfloat16):
        m = model.to(dtype)
        arch = architecture_of(m)
        block = arch.get_blocks(m)[0]
        inputs = capture_block_inputs(m, CALIB, 4)
        stats[dtype], _ = collect_stats(block, arch.block_linears(block), inputs, True, input_groups(arch))
    for name, s in stats[torch.bfloat16].items():
        assert s.sq_sum.dtype == torch.float32 and s.gram.dtype == torch.float32
        ref = stats[torch.float32][name]
        # bfloat16 activations carry 8 bits of mantissa: agreement to a few percent, not exactness
        torch.testing.assert_close(s.sq_sum, ref.sq_sum, rtol=0.05, atol=1e-3)


@pytest.mark.parametrize("criterion,pattern", [("wanda", "0.5"), ("sparsegpt", "0.5"), ("sparsegpt", "2:4")])
def test_bfloat16_pruning_is_exact_and_close_to_float32(tiny, criterion, pattern):
    model, _ = tiny
    results = {}
    for dtype in (torch.float32, torch.bfloat16):
        m = copy.deepcopy(model).to(dtype)  # both runs start from the dense weights
        masks = dict(prune_model(m, get_criterion(criterion), parse_pattern(pattern), CALIB, "sequential", 4))
        state = m.state_dict()
        for index, block in masks.items():
            for name, keep in block.items():
                weight = state[f"model.layers.{index}.{name}.weight"]
                assert weight.dtype == dtype
                assert torch.equal(keep, weight != 0)
                assert (~keep).float().mean().item() == pytest.approx(0.5, abs=1 / weight.shape[1])
        results[dtype] = torch.cat([k.flatten() for b in masks.values() for k in b.values()])
    agreement = (results[torch.float32] == results[torch.bfloat16]).float().mean().item()
    assert agreement > 0.9, agreement  # the same choice up to rounding near the threshold


def test_recovery_of_a_bfloat16_model_trains_in_float32_and_returns_bfloat16(tiny):
    dense, _ = tiny
    pruned = copy.deepcopy(dense)
    masks = dict(prune_model(pruned, get_criterion("wanda"), parse_pattern("0.5"), CALIB, "sequential", 4))
    dense, pruned = dense.to(torch.bfloat16), pruned.to(torch.bfloat16)
    # The reference: the same recovery on exact float32 copies, cast to bfloat16 afterwards.
    dense32, reference = copy.deepcopy(dense).float(), copy.deepcopy(pruned).float()
    recovery, settings = parse_recovery("recon:sublayer"), {"lr": 1e-3, "batch_size": 2}
    gap_before = _logit_gap(dense, pruned)
    recover(dense, pruned, masks, CALIB, recovery, settings, "cpu")
    recover(dense32, reference, masks, CALIB, recovery, settings, "cpu")
    assert {p.dtype for p in pruned.parameters()} == {torch.bfloat16}
    for (name, p), ref in zip(pruned.state_dict().items(), reference.to(torch.bfloat16).state_dict().values()):
        assert torch.equal(p, ref), name
    for index, block in masks.items():
        for name, keep in block.items():
            assert (pruned.state_dict()[f"model.layers.{index}.{name}.weight"][~keep] == 0).all()
    assert _logit_gap(dense, pruned) < gap_before  # closer to the dense model


@torch.no_grad()
def _logit_gap(dense, model) -> float:
    return (dense(CALIB).logits.float() - model(CALIB).logits.float()).pow(2).mean().item()


def test_local_checkpoint_loads_straight_into_the_dtype_with_the_same_rounding(tmp_path, tiny_model_dir):
    materialize({"source": "local", "path": str(tiny_model_dir), "dtype": "bfloat16"}, tmp_path / "model")
    got, _ = load_model(tmp_path / "model")
    expected, _ = load_model(tiny_model_dir)
    for (name, a), b in zip(got.state_dict().items(), expected.to(torch.bfloat16).state_dict().values()):
        assert a.dtype == torch.bfloat16 and torch.equal(a, b), name


@pytest.mark.parametrize("pattern", ["0.5", "2:4"])
def test_float64_model_prunes_with_float64_statistics_scores_and_solver(tmp_path, pattern):
    """dtype: float64 end to end (the exact arbiter): stored and loaded in float64, its Gram matrices and norms are
    float64 and SparseGPT solves in float64, so block 0 equals a float64 solve by hand from those statistics,
    and differs from the float32 run by rounding only."""
    from pruneflow.prune.sparsegpt import sparsegpt_prune

    materialize({"source": "tiny", "dtype": "float64"}, tmp_path / "model")
    model, _ = load_model(tmp_path / "model")
    arch = architecture_of(model)
    block = arch.get_blocks(model)[0]
    stats, _ = collect_stats(block, arch.block_linears(block), capture_block_inputs(model, CALIB, 4), True, input_groups(arch))
    assert {s.gram.dtype for s in stats.values()} == {s.col_norms.dtype for s in stats.values()} == {torch.float64}
    q = arch.block_linears(block)["self_attn.q_proj"].weight.detach().clone()
    by_hand = sparsegpt_prune(q, stats["self_attn.q_proj"].gram, parse_pattern(pattern))
    model32 = copy.deepcopy(model).float()
    masks = dict(prune_model(model, get_criterion("sparsegpt"), parse_pattern(pattern), CALIB, "sequential", 4))
    dict(prune_model(model32, get_criterion("sparsegpt"), parse_pattern(pattern), CALIB, "sequential", 4))
    assert {p.dtype for p in model.parameters()} == {torch.float64}
    got = model.state_dict()["model.layers.0.self_attn.q_proj.weight"]
    assert torch.equal(masks[0]["self_attn.q_proj"], by_hand) and torch.equal(got, q)
    assert not torch.equal(got, got.float().double())  # the updated weights carry float64 digits: no float32 solve
    got32 = model32.state_dict()["model.layers.0.self_attn.q_proj.weight"].double()
    assert not torch.equal(got, got32) and (got - got32).abs().max() < 1e-3 * got.abs().max()
