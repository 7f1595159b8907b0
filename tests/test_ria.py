"""RIA's score (methods/ria.py) against a hand computation, RIA through the tiny model's dense stream, and its channel
permutation for N:M (prune/permutation.py)."""

import itertools

import pytest
import torch
import yaml

from conftest import REPO
from pruneflow.core.activations import InputStats
from pruneflow.core.architectures import architecture_of
from pruneflow.core.artifacts import artifact_folder
from pruneflow.core.tiny import build_tiny_model
from pruneflow.methods.ria import PARAMS, scores
from pruneflow.prune.criteria import CriterionError, get_criterion, prune_layer
from pruneflow.prune.dense_stream import build_activation_cache, load_block_stats, masks_by_score
from pruneflow.prune.masks import Pattern, PatternError, make_mask, nm_mask, parse_pattern
from pruneflow.prune.permutation import channel_permutation, heuristic_order, reassign, retained
from pruneflow.spec.config import ConfigError, validate_config
from pruneflow.spec.naming import make_method, settings_digest
from pruneflow.spec.registry import Entry, RegistryError


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


@pytest.mark.parametrize("permutation", ["none", "lsa"])
def test_ria_through_the_dense_stream_prunes_what_its_score_implies(tmp_path, calib_ids, permutation):
    model, _ = build_tiny_model()
    with artifact_folder(tmp_path / "acts") as out:
        build_activation_cache(model, calib_ids, out, batch_size=8, gram=False)
    criterion = get_criterion("ria", {"a": 0.25, "permutation": permutation})
    pattern = parse_pattern("2:4")
    arch = architecture_of(model)
    for index, masks in masks_by_score(model, criterion, pattern, tmp_path / "acts"):
        stats = load_block_stats(tmp_path / "acts", index, gram=False)
        linears = arch.block_linears(arch.get_blocks(model)[index])
        for name, keep in masks.items():
            score = scores(arch.weight(linears[name]), stats[name], a=0.25)
            order = channel_permutation(score, 2, 4) if permutation == "lsa" else None
            assert torch.equal(keep, make_mask(score, pattern, False, order)), (index, name)
            grouped = keep if order is None else keep[:, order]
            assert (grouped.reshape(keep.shape[0], -1, 4).sum(-1) == 2).all()  # 2 of every 4 kept (in permuted order)


# Channel permutation for N:M (the paper's section 4; prune/permutation.py)


def _group_counts(keep: torch.Tensor, m: int) -> torch.Tensor:
    return keep.reshape(keep.shape[0], -1, m).sum(-1)


@pytest.mark.parametrize("n, m", [(2, 4), (4, 8), (1, 4)])
def test_a_permuted_mask_is_n_m_in_permuted_order_and_not_in_the_layers(n, m):
    torch.manual_seed(0)
    score = torch.rand(32, 128) * torch.rand(128)  # columns of unequal weight, as RIA's norms make them
    order = channel_permutation(score, n, m)
    assert order is not None and torch.equal(order.sort().values, torch.arange(128))  # a permutation
    keep = make_mask(score, Pattern(n=n, m=m), False, order)
    assert (_group_counts(keep[:, order], m) == n).all()
    assert (_group_counts(keep, m) != n).any()  # the groups are other channels than the layer's consecutive ones
    # the layer computes what the explicitly permuted layer does (inputs permuted alike): no weight moved
    weight, x = torch.randn(32, 128, dtype=torch.float64) * keep, torch.randn(128, dtype=torch.float64)
    torch.testing.assert_close(weight[:, order] @ x[order], weight @ x)


@pytest.mark.parametrize("seed", range(4))
def test_the_permutation_never_keeps_less_and_each_step_keeps_more(seed):
    torch.manual_seed(seed)
    score = torch.rand(48, 96).pow(3) * torch.rand(96)
    plain = retained(score, 2, 4)
    heuristic = channel_permutation(score, 2, 4, refine=False)
    full = channel_permutation(score, 2, 4)
    kept_heuristic = retained(score, 2, 4, heuristic) if heuristic is not None else plain
    assert full is not None and retained(score, 2, 4, full) > max(plain, kept_heuristic)
    # each round of linear sum assignment keeps at least what it was given
    order = heuristic_order(score, 4)
    for position in range(4):
        before, order = retained(score, 2, 4, order), reassign(score, order, 2, 4, position)
        assert retained(score, 2, 4, order) >= before - 1e-9


def test_the_heuristic_deals_channels_by_importance_in_snake_order():
    importance = torch.randperm(16).double()  # channel j has rank 15 - importance[j]
    rank_of = (15 - importance).long()
    groups = rank_of[heuristic_order(importance.reshape(1, -1), 4)].reshape(4, 4)
    # group k holds ranks k, 2g-1-k, 2g+k, 4g-1-k (g = 4): every group one channel of each quarter, sums balanced
    assert groups.tolist() == [[0, 7, 8, 15], [1, 6, 9, 14], [2, 5, 10, 13], [3, 4, 11, 12]]


def test_heavy_channels_side_by_side_are_spread_over_the_groups():
    # the first half of the channels is heavy: the layer's own groups pit heavy against heavy and light against light
    torch.manual_seed(0)
    score = torch.rand(16, 64)
    score[:, :32] += 10
    order = channel_permutation(score, 2, 4, refine=False)
    heavy = (order.reshape(-1, 4) < 32).sum(1)
    assert (heavy == 2).all()  # every group now holds two heavy channels, kept, and two light ones, pruned
    assert retained(score, 2, 4, order) == pytest.approx(float(score[:, :32].double().sum()))
    assert retained(score, 2, 4, order) > retained(score, 2, 4) + 100


def test_a_round_of_linear_sum_assignment_is_the_best_reassignment():
    """Against every reassignment of one position's channels among 5 groups (5! = 120)."""
    torch.manual_seed(1)
    score = torch.rand(6, 20).pow(2)
    start = heuristic_order(score, 4)
    for position in range(4):
        slots = start.reshape(-1, 4)
        best = max(retained(score, 2, 4, _moved(slots, position, p)) for p in itertools.permutations(range(5)))
        assert retained(score, 2, 4, reassign(score, start, 2, 4, position)) == pytest.approx(best, rel=1e-12)


def _moved(slots: torch.Tensor, position: int, pick) -> torch.Tensor:
    out = slots.clone()
    out[:, position] = slots[list(pick), position]
    return out.reshape(-1)


@pytest.mark.parametrize("name", ["ria", "ria_row"])
def test_without_permutation_masks_and_ids_are_as_before(name):
    torch.manual_seed(0)
    weight, stats = torch.randn(16, 64), _stats(torch.rand(64).add(0.1).tolist())
    for pattern in (parse_pattern("2:4"), parse_pattern(0.5)):
        expected = make_mask(scores(weight, stats, a=0.5), pattern, name == "ria_row")
        for settings in ({}, {"permutation": "none"}):
            assert torch.equal(prune_layer(get_criterion(name, settings), weight.clone(), stats, pattern), expected)
    assert make_method(name, "2:4").id == make_method({"name": name, "permutation": "none"}, "2:4").id == f"{name}-2of4-seq"
    permuted = make_method({"name": name, "permutation": "lsa"}, "2:4")
    assert permuted.id == f"{name}-p{settings_digest({'permutation': 'lsa'})}-2of4-seq" and permuted.scorer.label == f"{name} permutation=lsa"


def test_prune_layer_keeps_the_permuted_mask_and_zeroes_the_rest():
    torch.manual_seed(0)
    weight, stats = torch.randn(16, 64), _stats(torch.rand(64).add(0.1).tolist())
    score = scores(weight, stats, a=0.5)
    pruned = weight.clone()
    keep = prune_layer(get_criterion("ria", {"permutation": "heuristic"}), pruned, stats, parse_pattern("2:4"))
    order = channel_permutation(score, 2, 4, refine=False)
    assert torch.equal(keep, nm_mask(score, 2, 4, order)) and torch.equal(pruned, weight * keep)
    assert not torch.equal(keep, nm_mask(score, 2, 4))


def test_a_permutation_with_an_unstructured_pattern_or_a_refinement_is_refused():
    weight, stats = torch.randn(8, 16), _stats([1.0] * 16)
    with pytest.raises(CriterionError, match=r"permutation = 'lsa' forms N:M groups .* unstructured mask \(u0\.5\) .*allowed: N:M"):
        prune_layer(get_criterion("ria", {"permutation": "lsa"}), weight, stats, parse_pattern(0.5))
    criterion = get_criterion("ria", {"permutation": "lsa"}, refinement=("dsnot", {}))
    with pytest.raises(CriterionError, match=r"refinement 'dsnot': .*would break the permuted N:M groups"):
        prune_layer(criterion, weight, stats, parse_pattern("2:4"))
    with pytest.raises(PatternError, match="a channel order forms N:M groups"):
        make_mask(weight, parse_pattern(0.5), False, torch.arange(16))


@pytest.mark.parametrize("study, message", [
    ({"criteria": ["wanda", {"name": "ria", "permutation": "lsa"}], "patterns": ["2:4", 0.5]},
     r"studies\.p\.criteria\[1\]: .* not allowed with pattern 0\.5 \(studies\.p\.patterns\[1\]\): .*allowed: N:M patterns"),
    ({"criteria": [{"name": "ria_row", "permutation": "heuristic"}], "patterns": ["2:4"], "refinements": ["none", "dsnot"]},
     r"studies\.p\.criteria\[0\]: .* with pattern '2:4' .* and refinement dsnot: .*allowed: no refinement"),
])
def test_the_config_refuses_a_permutation_where_it_cannot_apply(study, message):
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["studies"] = {"p": study}
    with pytest.raises(ConfigError, match=message):
        validate_config(config)
    study["patterns"], study["refinements"] = ["2:4", "4:8"], "none"
    validate_config(config)  # N:M alone: allowed


def test_a_criterion_entry_must_name_a_permutation_parameter_that_fits():
    with pytest.raises(RegistryError, match=r"option nm_permutation = 'a': allowed: on a criterion, the name of one of its parameters"):
        Entry("criterion", "ria_bad", "pruneflow.methods.ria:scores", params=PARAMS, options={"nm_permutation": "a"})
