"""Sparsity patterns: parsing, exact counts, N:M groups, and clear errors."""

import pytest
import torch

from pruneflow.core.activations import InputStats
from pruneflow.prune.criteria import get_criterion, prune_layer
from pruneflow.prune.masks import Pattern, PatternError, make_mask, nm_mask, parse_pattern, unstructured_mask

torch.set_num_threads(1)


def _random_layer(out_f=12, in_f=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(out_f, in_f, generator=g)
    stats = InputStats(in_f, gram=False)
    stats.add(torch.randn(50, in_f, generator=g) * torch.rand(in_f, generator=g) * 3)
    return weight, stats


@pytest.mark.parametrize("n,m", [(2, 4), (4, 8), (1, 4)])
@pytest.mark.parametrize("criterion", ["magnitude", "magnitude_row", "wanda", "wanda_matrix"])
def test_nm_every_group_has_m_minus_n_zeros(n, m, criterion):
    weight, stats = _random_layer()
    keep = prune_layer(get_criterion(criterion), weight, stats, Pattern(n=n, m=m))
    zeros_per_group = (weight == 0).reshape(weight.shape[0], -1, m).sum(-1)
    assert torch.equal(zeros_per_group, torch.full_like(zeros_per_group, m - n))
    assert torch.equal(keep, weight != 0)


def test_nm_keeps_the_highest_scores_of_each_group():
    scores = torch.randn(8, 16, generator=torch.Generator().manual_seed(1))
    keep = nm_mask(scores, 2, 4).reshape(8, 4, 4)
    groups = scores.reshape(8, 4, 4)
    lowest_kept = groups.masked_fill(~keep, float("inf")).amin(-1)
    highest_pruned = groups.masked_fill(keep, float("-inf")).amax(-1)
    assert (lowest_kept > highest_pruned).all()


@pytest.mark.parametrize("ratio", [0.0, 0.3, 0.5, 0.77])
def test_unstructured_counts_are_exact(ratio):
    scores = torch.rand(10, 30, generator=torch.Generator().manual_seed(2))
    per_row = unstructured_mask(scores, ratio, per_row=True)
    assert ((~per_row).sum(1) == int(30 * ratio)).all()
    per_matrix = unstructured_mask(scores, ratio, per_row=False)
    assert int((~per_matrix).sum()) == int(300 * ratio)


@pytest.mark.parametrize(
    "value,named",
    [("2:2", "2:2"), ("5:4", "5:4"), ("0:4", "0:4"), ("4of2", "4of2"), (1.5, "1.5"), ("u1.5", "u1.5"), ("-0.1", "-0.1"), ("abc", "abc")],
)
def test_invalid_patterns_raise_naming_the_value(value, named):
    with pytest.raises(PatternError, match=f"'{named}'"):
        parse_pattern(value)


def test_m_not_dividing_in_features_raises_naming_both():
    weight, stats = _random_layer(in_f=30)
    with pytest.raises(PatternError, match=r"M=4 .*30"):
        prune_layer(get_criterion("wanda"), weight, stats, parse_pattern("2:4"))
    with pytest.raises(PatternError, match=r"M=8 .*30"):
        make_mask(weight.abs(), Pattern(n=4, m=8), per_row=True)


@pytest.mark.parametrize("token", ["u0.5", "u0", "u0.25", "2of4", "4of8", "1of4"])
def test_parse_pattern_round_trips_tokens(token):
    assert parse_pattern(token).token == token
    assert parse_pattern(parse_pattern(token).token) == parse_pattern(token)


def test_parse_pattern_spellings_agree():
    assert parse_pattern("2:4") == parse_pattern("2of4") == parse_pattern(" 2 : 4 ") == Pattern(n=2, m=4)
    assert parse_pattern(0.5) == parse_pattern("0.5") == parse_pattern("u0.5") == Pattern(ratio=0.5)
    assert parse_pattern("4:8").sparsity == parse_pattern("2:4").sparsity == 0.5


@pytest.mark.parametrize(
    "shape,dim,k",
    [
        ((300,), 0, 120),
        ((7, 64), 1, 40),
        ((5, 9, 8), 2, 3),
        ((6, 4), 1, 4),
        ((4, 16, 5), 1, 7),
        ((3, 2, 5), 1, 1),
        ((300, 16, 4), 2, 2),
        ((8, 2048), 0, 5),
    ],
)
def test_lowest_equals_a_stable_sort_even_with_ties(shape, dim, k):
    from pruneflow.prune.masks import lowest

    g = torch.Generator().manual_seed(k)
    with_nan = torch.rand(shape, generator=g).masked_fill(torch.rand(shape, generator=g) < 0.1, float("nan"))
    candidates = [torch.rand(shape, generator=g), (torch.rand(shape, generator=g) * 6).round(), torch.ones(shape)]
    for scores in candidates + ([with_nan] if shape[dim] <= 16 else []):  # N:M groups: a NaN still leaves k per group
        expected = torch.zeros(shape, dtype=torch.bool)
        expected.scatter_(dim, torch.sort(scores, dim=dim, stable=True).indices.narrow(dim, 0, k), True)
        assert torch.equal(lowest(scores, k, dim), expected)
