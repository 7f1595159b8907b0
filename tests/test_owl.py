"""OWL through the pruning code: per-block sparsities reach the masks exactly (every criterion, both
streams), the model's mean is the request, the allocation artifact, recovery keeps OWL's masks, and the
per-block sensitivity study's perplexities equal a plain evaluation with that block pruned."""

import copy
import json

import pytest
import torch

from pruneflow.core.architectures import architecture_of
from pruneflow.core.artifacts import artifact_folder
from pruneflow.core.sparsity import SparsityError, check_masks_kept, check_sparsity, measured_sparsity
from pruneflow.core.tiny import build_tiny_model
from pruneflow.core.writer import write_masked_variant
from pruneflow.evaluate.perplexity import perplexity
from pruneflow.evaluate.sensitivity import block_sensitivity
from pruneflow.methods.owl import owl_allocation
from pruneflow.prune.allocation import AllocationError, method_block_sparsities, write_allocation
from pruneflow.prune.criteria import get_criterion, prune_layer
from pruneflow.prune.dense_stream import build_activation_cache, load_block_stats, masks_by_score, prune_from_cache
from pruneflow.prune.masks import parse_pattern
from pruneflow.prune.sequential import prune_model
from pruneflow.recover.run import recover
from pruneflow.spec.naming import make_method, parse_recovery

BLOCKS = 4
SPARSITY, LAMBDA = 0.6, 0.1


def _tiny():
    return build_tiny_model(num_hidden_layers=BLOCKS)


@pytest.fixture(scope="module")
def cache(tmp_path_factory, calib_ids):
    folder = tmp_path_factory.mktemp("owl") / "acts"
    model, _ = _tiny()
    with artifact_folder(folder) as out:
        build_activation_cache(model, calib_ids, out, batch_size=4, gram=True)
    return folder


@pytest.fixture(scope="module")
def allocation(cache):
    model, _ = _tiny()
    return owl_allocation(model, cache, SPARSITY, m=3.0, lam=LAMBDA)


def _pruned_count(criterion: str, shape, ratio: float) -> int:
    """Weights the pattern prunes in one matrix: per row (Wanda), per matrix (magnitude), per 128-column
    block region (SparseGPT; the tiny matrices are at most 128 wide, so one region)."""
    out_f, in_f = shape
    if get_criterion(criterion).per_row:
        return out_f * int(in_f * ratio)
    return int(out_f * in_f * ratio)


def _masks(route, model, calib_ids, cache, per_block):
    pattern = parse_pattern(SPARSITY)
    criterion = get_criterion(route[0])
    if route[1] == "cache" and route[0] == "sparsegpt":
        return dict(prune_from_cache(model, criterion, pattern, cache, block_sparsities=per_block))
    if route[1] == "cache":
        return dict(masks_by_score(model, criterion, pattern, cache if criterion.needs_calibration else None, per_block))
    return dict(prune_model(model, criterion, pattern, calib_ids, route[1], batch_size=4, block_sparsities=per_block))


@pytest.mark.parametrize("route", [
    ("magnitude", "cache"), ("wanda", "cache"), ("sparsegpt", "cache"), ("wanda", "sequential"), ("sparsegpt", "sequential"),
], ids="-".join)
def test_per_block_sparsities_reach_the_masks_exactly(route, calib_ids, cache, allocation):
    per_block = allocation["block_sparsities"]
    assert len(set(per_block)) > 1 and max(per_block) - min(per_block) == pytest.approx(2 * LAMBDA)
    model, _ = _tiny()
    masks = _masks(route, model, calib_ids, cache, per_block)
    measured = measured_sparsity(model, masks)
    arch = architecture_of(model)
    for index, block in enumerate(arch.get_blocks(model)):
        expected = sum(_pruned_count(route[0], tuple(arch.weight(layer).shape), per_block[index]) for layer in arch.block_linears(block).values())
        pruned = sum(int((~keep).sum()) for keep in masks[index].values())
        assert pruned == expected, (route, index)  # exactly the block's ratio, rounded as the pattern rounds
        assert measured["per_block"][index]["sparsity"] == pytest.approx(per_block[index], abs=1 / 64)
    # the blocks' mean is the request: exactly in the allocation, within one weight per row when measured
    sizes = allocation["block_params"]
    assert sum(s * n for s, n in zip(per_block, sizes)) / sum(sizes) == pytest.approx(SPARSITY, abs=1e-12)
    assert measured["overall"] == pytest.approx(SPARSITY, abs=1 / 64)
    check_sparsity(measured, SPARSITY, per_block)


def test_uniform_masks_fail_the_owl_check_and_owl_masks_fail_the_uniform_one(calib_ids, cache, allocation):
    per_block = allocation["block_sparsities"]
    model, _ = _tiny()
    uniform = measured_sparsity(model, _masks(("wanda", "cache"), model, calib_ids, cache, None))
    with pytest.raises(SparsityError, match=r"matrix 0\.\S+: .* the requested \S+ \(its block's allocation\)"):
        check_sparsity(uniform, SPARSITY, per_block)
    owl = measured_sparsity(model, _masks(("wanda", "cache"), model, calib_ids, cache, per_block))
    with pytest.raises(SparsityError, match="differs from the requested 0.6 by more than one weight per row"):
        check_sparsity(owl, SPARSITY)


def test_owl_ratios_spread_with_the_outliers_and_weighted_mean_for_unequal_blocks(allocation):
    from pruneflow.methods.owl import owl_sparsities

    ratios, per_block = allocation["outlier_ratios"], allocation["block_sparsities"]
    assert per_block.index(min(per_block)) == ratios.index(max(ratios))  # most outliers: pruned least
    # blocks of different sizes (dense and MoE mixed): the weighted mean stays the request
    got = owl_sparsities([0.01, 0.03, 0.02], 0.7, 0.08, sizes=[100, 300, 100])
    assert sum(s * n for s, n in zip(got, [100, 300, 100])) / 500 == pytest.approx(0.7)
    assert max(got) - min(got) == pytest.approx(0.16)


def test_variant_records_per_block_sparsity_and_its_check(tmp_path, calib_ids, cache, allocation):
    per_block = allocation["block_sparsities"]
    model, tok = _tiny()
    dense = tmp_path / "dense"
    from pruneflow.core.writer import write_full_variant

    with artifact_folder(dense) as out:
        write_full_variant(out, model, tok, {})
    from pruneflow.core.mask_files import save_masks

    variant = tmp_path / "owl"
    with artifact_folder(variant) as out:
        for index, masks in masks_by_score(model, get_criterion("wanda"), parse_pattern(SPARSITY), cache, per_block):
            save_masks(out / "masks", index, masks)
        write_masked_variant(out, model, dense, variant, {}, requested=SPARSITY, block_requested=per_block)
    record = json.loads((variant / "sparsity.json").read_text())
    assert record["requested"] == SPARSITY and record["requested_per_block"] == per_block
    assert [b["sparsity"] for b in record["per_block"]] == pytest.approx(per_block, abs=1 / 64)


def test_allocation_artifact_serves_only_the_method_it_was_made_for(tmp_path, allocation):
    folder = tmp_path / "allocation"
    with artifact_folder(folder) as out:
        write_allocation(out, allocation)
    model, _ = _tiny()
    owl = make_method("wanda", SPARSITY, "sequential", {"name": "owl", "m": 3.0, "lam": LAMBDA})
    assert method_block_sparsities(owl, folder, model) == allocation["block_sparsities"]
    assert method_block_sparsities(make_method("wanda", SPARSITY), folder, model) is None  # uniform
    other = make_method("wanda", SPARSITY, "sequential", {"name": "owl", "m": 3.0, "lam": 0.05})
    with pytest.raises(
        AllocationError, match=r"was made for owl \{'lam': 0.1, 'm': 3.0\} at sparsity 0.6, not for method 'wanda-u0.6-owl-m3-l0.05-seq'"
    ):
        method_block_sparsities(other, folder, model)


def test_owl_composes_with_reconstruction_and_keeps_its_masks(calib_ids, allocation):
    per_block = allocation["block_sparsities"]
    dense, _ = _tiny()
    pruned = copy.deepcopy(dense)
    masks = dict(
        prune_model(pruned, get_criterion("wanda"), parse_pattern(SPARSITY), calib_ids, "sequential", 4, block_sparsities=per_block)
    )
    before = measured_sparsity(pruned)
    settings = {"lr": 1e-3, "batch_size": 4, "steps": 2}
    recover(dense, pruned, masks, calib_ids, parse_recovery("recon:sublayer"), settings)
    after = measured_sparsity(pruned)
    assert check_masks_kept(pruned, masks) > 0
    assert [b["zeros"] for b in after["per_block"]] == [b["zeros"] for b in before["per_block"]]
    check_sparsity(after, SPARSITY, per_block)


@pytest.mark.parametrize("criterion", ["wanda", "sparsegpt"])
def test_sensitivity_equals_perplexity_with_that_block_alone_pruned(criterion, cache):
    model, _ = _tiny()
    original = {k: v.clone() for k, v in model.state_dict().items()}
    windows = torch.randint(2, 258, (3, 24), generator=torch.Generator().manual_seed(1))
    pattern = parse_pattern(0.7)
    result = block_sensitivity(model, get_criterion(criterion), pattern, windows, cache, batch_size=2)
    assert all(torch.equal(v, original[k]) for k, v in model.state_dict().items())  # left as it was
    assert result["dense"]["perplexity"] == pytest.approx(perplexity(model, windows, 2)["perplexity"], rel=1e-5)
    arch = architecture_of(model)
    for index in range(BLOCKS):
        alone, _ = _tiny()
        block = arch.get_blocks(alone)[index]
        stats = load_block_stats(cache, index)
        for name, layer in arch.block_linears(block).items():
            prune_layer(get_criterion(criterion), arch.weight(layer), stats[name], pattern)
        expected = perplexity(alone, windows, 2)
        got = result["blocks"][index]
        assert got["block"] == index and got["perplexity"] == pytest.approx(expected["perplexity"], rel=1e-5)
        assert got["sparsity"] == pytest.approx(0.7, abs=1 / 64)
    assert max(b["perplexity"] for b in result["blocks"]) > result["dense"]["perplexity"]
