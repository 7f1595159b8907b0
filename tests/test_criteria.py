"""Score-based criteria against independent references, and exact pruned counts."""

import pytest
import torch

from pruneflow.core.activations import InputStats
from pruneflow.prune.criteria import CriterionError, get_criterion, prune_layer, scores_for
from pruneflow.prune.masks import Pattern
from pruneflow.spec.criteria import scorers

torch.set_num_threads(1)

OUT, IN = 16, 40


def _layer(seed=0):
    """A random weight [OUT, IN] and calibration inputs X [tokens, IN] with very different column scales."""
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(OUT, IN, generator=g)
    x = torch.randn(300, IN, generator=g) * torch.logspace(-1, 1, IN)[torch.randperm(IN, generator=g)]
    stats = InputStats(IN, gram=False)
    for chunk in x.split(64):  # accumulated in pieces, as the hooks do
        stats.add(chunk)
    return weight, x, stats


@pytest.mark.parametrize("ratio", [0.5, 0.3])
def test_wanda_matches_a_direct_per_row_sort(ratio):
    weight, x, stats = _layer()
    # Reference (Wanda's lib/prune.py): score |W|·‖X_j‖, sort each row, prune the int(in·ratio) lowest.
    score = weight.abs() * x.norm(dim=0)
    pruned_idx = score.argsort(dim=1)[:, : int(IN * ratio)]
    expected = torch.ones(OUT, IN, dtype=torch.bool).scatter(1, pruned_idx, False)

    pruned = weight.clone()
    keep = prune_layer(get_criterion("wanda"), pruned, stats, Pattern(ratio=ratio))
    assert torch.equal(keep, expected)
    assert torch.equal(pruned, weight * expected)


def test_wanda_differs_from_magnitude_when_inputs_are_skewed():
    weight, _, stats = _layer()
    wanda = prune_layer(get_criterion("wanda"), weight.clone(), stats, Pattern(ratio=0.5))
    magnitude = prune_layer(get_criterion("magnitude_row"), weight.clone(), None, Pattern(ratio=0.5))
    assert not torch.equal(wanda, magnitude)


@pytest.mark.parametrize("ratio", [0.5, 0.37, 0.9])
@pytest.mark.parametrize("name", ["magnitude", "wanda_matrix"])
def test_matrix_criteria_prune_exactly_numel_times_ratio(name, ratio):
    weight, _, stats = _layer(seed=1)
    pruned = weight.clone()
    keep = prune_layer(get_criterion(name), pruned, stats, Pattern(ratio=ratio))
    assert int((~keep).sum()) == int(OUT * IN * ratio)
    assert int((pruned == 0).sum()) == int(OUT * IN * ratio)
    # The pruned scores are the lowest of the whole matrix.
    score = scores_for(get_criterion(name), weight, stats)
    assert score[~keep].max() <= score[keep].min()


@pytest.mark.parametrize("ratio", [0.5, 0.37, 0.9])
@pytest.mark.parametrize("name", ["magnitude_row", "wanda"])
def test_row_criteria_prune_exactly_in_times_ratio_per_row(name, ratio):
    weight, _, stats = _layer(seed=2)
    pruned = weight.clone()
    keep = prune_layer(get_criterion(name), pruned, stats, Pattern(ratio=ratio))
    assert ((~keep).sum(1) == int(IN * ratio)).all()
    assert ((pruned == 0).sum(1) == int(IN * ratio)).all()


def test_magnitude_matrix_prunes_the_smallest_weights():
    weight, _, _ = _layer(seed=3)
    keep = prune_layer(get_criterion("magnitude"), weight.clone(), None, Pattern(ratio=0.5))
    assert weight.abs()[~keep].max() < weight.abs()[keep].min()


def test_sparsegpt_is_registered_and_has_no_score():
    sparsegpt = get_criterion("sparsegpt")
    assert sparsegpt.needs_calibration and sparsegpt.needs_gram
    assert all(("gram" in e.needs) == (e.kind == "solver") for e in scorers().values())  # solvers read the Gram, criteria don't
    with pytest.raises(CriterionError, match="sparsegpt"):
        scores_for(sparsegpt, torch.ones(2, 4), None)


def test_missing_statistics_raise_clearly():
    weight, _, stats = _layer()
    with pytest.raises(CriterionError, match="gram=True"):
        prune_layer(get_criterion("sparsegpt"), weight, stats, Pattern(ratio=0.5))
    with pytest.raises(CriterionError, match="'wanda'"):
        prune_layer(get_criterion("wanda"), weight, None, Pattern(ratio=0.5))
    with pytest.raises(CriterionError, match="'wandaa'.*allowed"):
        get_criterion("wandaa")


def test_gram_sums_added_by_row_bands_equal_one_add():
    from pruneflow.core.activations import add_by_rows

    g = torch.Generator().manual_seed(0)
    total = torch.randn(37, 37, dtype=torch.float64, generator=g)
    part = torch.randn(37, 37, generator=g)
    expected = total + part
    add_by_rows(total, part, chunk_bytes=5 * 37 * 8)  # bands of 5 rows, the last one short
    assert torch.equal(total, expected)


@pytest.mark.parametrize("n", [5, 200, 700])
def test_gram_sums_are_the_whole_products_though_only_the_upper_triangle_is_computed(n):
    # each sample's XᵀX is computed on and above the diagonal by bands of rows (half the work), the lower
    # triangle mirrored when the sums are read; the values are those of whole products, and samples added
    # after a read still count
    g = torch.Generator().manual_seed(n)
    samples = torch.randn(3, 40, n, generator=g)
    stats = InputStats(n, gram=True)
    stats.add(samples[:2])
    first = stats.gram
    stats.add(samples[2])
    whole = [(s.T @ s).double() for s in samples]
    for got, expected in [(first, whole[0] + whole[1]), (stats.gram, whole[0] + whole[1] + whole[2])]:
        assert torch.equal(got, got.T)
        assert torch.equal(torch.triu(got), torch.triu(expected.float()))


def test_mirroring_the_upper_triangle_by_bands():
    from pruneflow.core.activations import mirror_upper

    total = torch.randn(37, 37, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    expected = torch.triu(total) + torch.triu(total, 1).T
    mirror_upper(total, chunk_bytes=5 * 37 * 8)  # bands of 5 rows, the last one short
    assert torch.equal(total, expected)
