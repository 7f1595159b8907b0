"""The dense stream's artifacts (cache -> scores -> masks) reproduce the in-memory dense stream exactly."""

import torch

from pruneflow.core.activations import capture_block_inputs, collect_stats, input_groups
from pruneflow.core.architectures import architecture_of
from pruneflow.core.artifacts import artifact_folder
from pruneflow.core.tiny import build_tiny_model
from pruneflow.prune.criteria import get_criterion
from pruneflow.prune.dense_stream import (
    apply_masks,
    load_block_stats,
    masks_from_scores,
    model_scores,
    prune_from_cache,
)
from pruneflow.prune.masks import parse_pattern
from pruneflow.prune.sequential import prune_model


def build_activation_cache(model, calib_ids, folder, **kwargs):
    """The library's cache, written as the workflow writes it: a folder with a manifest."""
    from pruneflow.prune.dense_stream import build_activation_cache as build

    with artifact_folder(folder) as out:
        return build(model, calib_ids, out, **kwargs)


def test_cache_stores_one_gram_per_input_group_and_round_trips(tmp_path, calib_ids):
    model, _ = build_tiny_model()
    sizes = build_activation_cache(model, calib_ids, tmp_path, batch_size=3)
    arch = architecture_of(model)
    block0 = arch.get_blocks(model)[0]
    direct, _ = collect_stats(block0, arch.block_linears(block0), capture_block_inputs(model, calib_ids, 8), gram=True)
    cached = load_block_stats(tmp_path, 0)
    assert cached["self_attn.q_proj"] is cached["self_attn.v_proj"]  # shared input, stored once
    for name in direct:
        torch.testing.assert_close(cached[name].gram, direct[name].gram, rtol=1e-5, atol=1e-4)
        torch.testing.assert_close(cached[name].sq_sum, direct[name].sq_sum, rtol=1e-5, atol=1e-4)
    hidden, inter = 64, 128
    expected_floats = 3 * hidden + inter + 3 * hidden**2 + inter**2  # docs/artifacts.md's formula
    assert abs(sizes["bytes_per_block"][0] - 4 * expected_floats) < 2048  # plus the safetensors header
    assert len(input_groups(arch)) == 4


def test_cached_route_equals_in_memory_dense_stream(tmp_path, calib_ids):
    reference, _ = build_tiny_model()
    expected = dict(prune_model(reference, get_criterion("wanda"), parse_pattern("2:4"), calib_ids, "dense", batch_size=8))

    model, _ = build_tiny_model()
    build_activation_cache(model, calib_ids, tmp_path, batch_size=8)
    crit = get_criterion("wanda")
    masks = {i: masks_from_scores(s, parse_pattern("2:4"), crit) for i, s in model_scores(model, crit, tmp_path)}
    for i in expected:
        for name in expected[i]:
            assert torch.equal(masks[i][name], expected[i][name]), (i, name)
    apply_masks(model, masks)
    for a, b in zip(model.parameters(), reference.parameters()):
        assert torch.equal(a, b)


def test_sparsegpt_from_cache_equals_dense_stream(tmp_path, calib_ids):
    reference, _ = build_tiny_model()
    expected = dict(prune_model(reference, get_criterion("sparsegpt"), parse_pattern(0.5), calib_ids, "dense", batch_size=8))
    model, _ = build_tiny_model()
    build_activation_cache(model, calib_ids, tmp_path, batch_size=8)
    got = dict(prune_from_cache(model, get_criterion("sparsegpt"), parse_pattern(0.5), tmp_path))
    assert all(torch.equal(got[i][n], expected[i][n]) for i in expected for n in expected[i])
    for a, b in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)  # Gram sums in another batch order


def test_norms_only_cache_serves_wanda_identically_and_is_small(tmp_path, calib_ids):
    model, _ = build_tiny_model()
    full = build_activation_cache(model, calib_ids, tmp_path / "full", batch_size=8)
    norms = build_activation_cache(model, calib_ids, tmp_path / "norms", batch_size=8, gram=False)
    hidden, inter = 64, 128
    assert abs(norms["bytes_per_block"][0] - 4 * (3 * hidden + inter)) < 2048  # no d² term
    assert load_block_stats(tmp_path / "norms", 0)["mlp.down_proj"].gram is None
    crit, pattern = get_criterion("wanda"), parse_pattern(0.5)
    a = {i: masks_from_scores(s, pattern, crit) for i, s in model_scores(model, crit, tmp_path / "full")}
    b = {i: masks_from_scores(s, pattern, crit) for i, s in model_scores(model, crit, tmp_path / "norms")}
    assert all(torch.equal(a[i][n], b[i][n]) for i in a for n in a[i])
    assert full["bytes_per_block"][0] > 10 * norms["bytes_per_block"][0]


def test_channel_sums_only_where_asked_and_dsnot_from_the_cache_equals_the_in_memory_dense_stream(tmp_path, calib_ids):
    """A cache keeps its former contents unless channel sums are asked for (DSnoT on the dense stream); with them,
    the float64 sums and the sample count round-trip exactly and DSnoT's masks equal the in-memory dense stream's."""
    from pruneflow.core.artifacts import block_file, load_tensors

    criterion, pattern = get_criterion("wanda", refinement=("dsnot", {})), parse_pattern(0.7)
    reference, _ = build_tiny_model()
    expected = dict(prune_model(reference, criterion, pattern, calib_ids, "dense", batch_size=8))
    model, _ = build_tiny_model()
    plain = build_activation_cache(model, calib_ids, tmp_path / "plain", batch_size=8, gram=False)
    sums = build_activation_cache(model, calib_ids, tmp_path / "sums", batch_size=8, gram=False, channel_sums=True)
    tensors, meta = load_tensors(block_file(tmp_path / "plain", 0))
    assert all(n.endswith(".sq_sum") for n in tensors) and "samples" not in meta  # the cache as it always was
    hidden, inter = 64, 128
    assert abs(sums["bytes_per_block"][0] - plain["bytes_per_block"][0] - 8 * (3 * hidden + inter)) < 512  # + float64 sums

    arch = architecture_of(model)
    block0 = arch.get_blocks(model)[0]
    direct, _ = collect_stats(block0, arch.block_linears(block0), capture_block_inputs(model, calib_ids, 3), gram=False)
    cached = load_block_stats(tmp_path / "sums", 0)
    for name in direct:
        assert torch.equal(cached[name].channel_sum, direct[name].channel_sum) and cached[name].samples == 8
    assert load_block_stats(tmp_path / "plain", 0)["mlp.down_proj"].channel_sum is None

    from pruneflow.prune.dense_stream import masks_by_score

    got = dict(masks_by_score(model, criterion, pattern, tmp_path / "sums"))
    assert all(torch.equal(got[i][n], expected[i][n]) for i in expected for n in expected[i])
