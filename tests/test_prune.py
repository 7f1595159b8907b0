import torch

from pruneflow.core.activations import capture_block_inputs, collect_stats
from pruneflow.core.architectures import architecture_of
from pruneflow.core.mask_files import load_block_masks, save_block_masks
from pruneflow.prune.criteria import get_criterion, wanda_scores
from pruneflow.prune.masks import parse_pattern
from pruneflow.prune.sequential import prune_model


def test_wanda_sequential_prunes_every_matrix_exactly_per_row(tiny, calib_ids):
    model, _ = tiny
    arch = architecture_of(model)
    masks = dict(prune_model(model, get_criterion("wanda"), parse_pattern(0.5), calib_ids, "sequential", batch_size=3))
    assert sorted(masks) == [0, 1]
    for index, block in enumerate(arch.get_blocks(model)):
        for name, layer in arch.block_linears(block).items():
            w = arch.weight(layer)
            assert ((w == 0).sum(1) == w.shape[1] // 2).all(), name
            assert torch.equal(w != 0, masks[index][name])


def test_first_block_mask_is_wanda_on_dense_inputs_and_streams_differ_later(tiny, calib_ids):
    model, _ = tiny
    arch = architecture_of(model)
    inputs = capture_block_inputs(model, calib_ids, batch_size=8)
    block0 = arch.get_blocks(model)[0]
    stats, _ = collect_stats(block0, arch.block_linears(block0), inputs, gram=False)
    q = arch.weight(block0.self_attn.q_proj)
    scores = wanda_scores(q, stats["self_attn.q_proj"].col_norms)
    expected = scores >= scores.sort(dim=1).values[:, 32:33]  # the top half of each row

    seq = dict(prune_model(model, get_criterion("wanda"), parse_pattern(0.5), calib_ids, "sequential"))
    dense_model, _ = __import__("pruneflow.core.tiny", fromlist=["x"]).build_tiny_model()
    dense = dict(prune_model(dense_model, get_criterion("wanda"), parse_pattern(0.5), calib_ids, "dense"))
    assert torch.equal(seq[0]["self_attn.q_proj"], expected)
    assert torch.equal(seq[0]["mlp.down_proj"], dense[0]["mlp.down_proj"])  # same inputs in block 0
    assert not torch.equal(seq[1]["mlp.down_proj"], dense[1]["mlp.down_proj"])  # propagated vs dense inputs


def test_magnitude_needs_no_calibration_and_prunes_per_matrix(tiny):
    model, _ = tiny
    masks = dict(prune_model(model, get_criterion("magnitude"), parse_pattern(0.3), None, None))
    keep = masks[1]["mlp.up_proj"]
    assert (~keep).sum() == int(keep.numel() * 0.3)


def test_masks_round_trip_bit_packed(tmp_path):
    masks = {"a": torch.rand(5, 13) > 0.5, "b": torch.rand(3, 16) > 0.3}
    save_block_masks(tmp_path / "m.safetensors", masks)
    back = load_block_masks(tmp_path / "m.safetensors")
    assert all(torch.equal(back[k], masks[k]) for k in masks)
    assert (tmp_path / "m.safetensors").stat().st_size < 400


def test_a_statistics_only_pass_stops_before_the_last_linear_and_gathers_the_same(tiny, calib_ids):
    """The sequential stream's first pass needs no block outputs: it stops once every linear has its
    input, so the block's last linear (the MLP's down projection) never multiplies, with equal statistics."""
    model, _ = tiny
    arch = architecture_of(model)
    block = arch.get_blocks(model)[0]
    linears = arch.block_linears(block)
    inputs = capture_block_inputs(model, calib_ids, batch_size=4)
    last = list(linears.values())[-1]
    ran = []
    handle = last.register_forward_hook(lambda *_: ran.append(1))
    full, outputs = collect_stats(block, linears, inputs, gram=True, outputs=True)
    runs_with_outputs = len(ran)
    stats, none = collect_stats(block, linears, inputs, gram=True, outputs=False)
    handle.remove()
    assert runs_with_outputs == len(inputs.hidden) and len(ran) == runs_with_outputs and none is None
    assert len(outputs) == len(inputs.hidden)
    for name in linears:
        assert torch.equal(stats[name].sq_sum, full[name].sq_sum) and torch.equal(stats[name].gram, full[name].gram)
