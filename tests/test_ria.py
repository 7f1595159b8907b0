"""RIA's score (methods/ria.py) against a hand computation, and RIA through the tiny model's dense stream."""

import pytest
import torch

from pruneflow.core.activations import InputStats
from pruneflow.core.architectures import architecture_of
from pruneflow.core.artifacts import artifact_folder
from pruneflow.core.tiny import build_tiny_model
from pruneflow.methods.ria import scores
from pruneflow.prune.criteria import get_criterion, prune_layer
from pruneflow.prune.dense_stream import build_activation_cache, load_block_stats, masks_by_score
from pruneflow.prune.masks import make_mask, parse_pattern


def _stats(norms: list[float]) -> InputStats:
    """Statistics whose column norms are ``norms`` (one sample's squares)."""
    return InputStats.from_tensors(1, torch.tensor(norms) ** 2)  # float32, as read from the cache


def test_score_is_the_hand_computation():
    # W = [[1, -2], [3, 4]]: column sums |W| 4 and 6, row sums 3 and 7; input norms 4 and 9, a = 0.5: factors 2 and 3.
    # (1/4 + 1/3)·2 = 7/6, (2/6 + 2/3)·3 = 3, (3/4 + 3/7)·2 = 33/14, (4/6 + 4/7)·3 = 26/7
    weight = torch.tensor([[1.0, -2.0], [3.0, 4.0]])
    got = scores(weight, _stats([4.0, 9.0]), a=0.5)
    expected = torch.tensor([[7 / 6, 3.0], [33 / 14, 26 / 7]])
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=0)
    # a = 0: relative importance alone (the paper's RI); a = 1: the norms themselves
    torch.testing.assert_close(scores(weight, _stats([4.0, 9.0]), a=0.0), expected / torch.tensor([2.0, 3.0]))
    torch.testing.assert_close(scores(weight, _stats([4.0, 9.0]), a=1.0), expected * torch.tensor([2.0, 3.0]))


def test_a_dead_column_scores_zero_not_nan():
    weight = torch.tensor([[0.0, 2.0, 1.0], [0.0, 1.0, 3.0]])
    got = scores(weight, _stats([0.0, 1.0, 2.0]), a=0.5)
    assert not got.isnan().any() and (got[:, 0] == 0).all()


@pytest.mark.parametrize("name, per_row", [("ria", False), ("ria_row", True)])
def test_masks_compare_per_matrix_or_per_row(name, per_row):
    torch.manual_seed(0)
    weight = torch.randn(8, 16)
    stats = _stats(torch.rand(16).add(0.1).tolist())
    criterion = get_criterion(name, {"a": 0.3})
    expected = make_mask(scores(weight, stats, a=0.3), parse_pattern(0.5), per_row)
    keep = prune_layer(criterion, weight.clone(), stats, parse_pattern(0.5))
    assert torch.equal(keep, expected) and int((~keep).sum()) == 64
    if per_row:
        assert ((~keep).sum(dim=1) == 8).all()


def test_ria_through_the_dense_stream_prunes_what_its_score_implies(tmp_path, calib_ids):
    model, _ = build_tiny_model()
    with artifact_folder(tmp_path / "acts") as out:
        build_activation_cache(model, calib_ids, out, batch_size=8, gram=False)
    criterion = get_criterion("ria", {"a": 0.25})
    pattern = parse_pattern("2:4")
    arch = architecture_of(model)
    for index, masks in masks_by_score(model, criterion, pattern, tmp_path / "acts"):
        stats = load_block_stats(tmp_path / "acts", index, gram=False)
        linears = arch.block_linears(arch.get_blocks(model)[index])
        for name, keep in masks.items():
            expected = make_mask(scores(arch.weight(linears[name]), stats[name], a=0.25), pattern, False)
            assert torch.equal(keep, expected), (index, name)
            assert (keep.reshape(keep.shape[0], -1, 4).sum(-1) == 2).all()  # 2 of every 4 kept
