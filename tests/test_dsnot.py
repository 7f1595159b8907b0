"""DSnoT: each row keeps its count (each N:M group its N), the reconstruction error it minimises is never raised,
a hand-checked case (the variance term decides which weight grows), and the paper's defaults in the registry."""

import pytest
import torch

from pruneflow.core.activations import InputStats
from pruneflow.methods.dsnot import refine
from pruneflow.prune.criteria import wanda_scores
from pruneflow.prune.masks import make_mask, parse_pattern
from pruneflow.spec import registry

torch.set_num_threads(1)


def _layer(out_f=32, in_f=128, samples=8, tokens=64, seed=0):
    """W [out, in] and X [samples, tokens, in] whose channels have means and scales of their own."""
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(out_f, in_f, generator=g)
    x = torch.randn(samples, tokens, in_f, generator=g) * torch.logspace(-0.5, 0.5, in_f)
    x += torch.randn(in_f, generator=g)
    stats = InputStats(in_f, gram=False)
    for sample in x.split(3):  # in chunks: the statistics must not depend on it
        stats.add(sample)
    flat = x.double().reshape(-1, in_f)
    assert stats.samples == samples and torch.allclose(stats.channel_sum, flat.sum(0), rtol=1e-6)
    assert torch.allclose(stats.channel_var, flat.var(0, unbiased=False), rtol=1e-5)
    return weight, x, stats


def _row_errors(weight, keep, x):
    """|ε_r|: the output the pruned weights take away, summed over a sample's tokens, averaged over samples."""
    per_sample = x.double().sum(1).mean(0)  # [in]
    return (weight.double() * ~keep * per_sample).sum(1).abs()


@pytest.mark.parametrize("pattern", ["0.5", "0.7", "2:4", "4:8"])
def test_counts_kept_and_error_never_raised(pattern):
    pattern = parse_pattern(pattern)
    weight, x, stats = _layer()
    keep = make_mask(wanda_scores(weight, stats.col_norms), pattern, per_row=True)
    refined = refine(weight, keep, stats, pattern)

    assert torch.equal(refined.sum(1), keep.sum(1))
    if pattern.is_nm:
        groups = refined.reshape(weight.shape[0], -1, pattern.m).sum(-1)
        assert torch.equal(groups, torch.full_like(groups, pattern.n))
    before, after = _row_errors(weight, keep, x), _row_errors(weight, refined, x)
    assert (after <= before + 1e-9).all()
    changed = (refined != keep).any(1)
    assert changed.float().mean() > 0.25 and (after[changed] < before[changed]).all()  # many rows moved, each lower
    assert torch.equal(refine(weight, keep, stats, pattern), refined)  # deterministic, ``keep`` untouched


def test_hand_checked_swap_and_the_variance_term():
    # One row, W = [4, -1, 2, 0.5], every channel's per-sample sum 1, keep {0, 1}: ε = 2 + 0.5 = 2.5.
    # Prune the only kept weight of negative contribution (1); grow the pruned one of largest c / Var^p:
    # channel 2 (c = 2, Var 16) or channel 3 (c = 0.5, Var 1).
    weight = torch.tensor([[4.0, -1.0, 2.0, 0.5]])
    sigma = torch.tensor([1.0, 1.0, 4.0, 1.0])
    stats = InputStats(4, gram=False)
    stats.add(torch.stack([0.5 + sigma, 0.5 - sigma])[None])  # one sample of two tokens: sums 1, variances σ²
    keep = torch.tensor([[True, True, False, False]])
    pattern = parse_pattern("0.5")
    # p = 1: 0.5 / 1 > 2 / 16, so 3 grows: ε = 2.5 − 0.5 − 1 = 1; then no kept weight of negative contribution is left
    assert refine(weight, keep, stats, pattern).tolist() == [[True, False, False, True]]
    # p = 0: 2 > 0.5, so 2 grows: ε = 2.5 − 2 − 1 = −0.5; then no pruned weight of negative contribution is left
    assert refine(weight, keep, stats, pattern, pow_of_var_regrowing=0.0).tolist() == [[True, False, True, False]]
    # |ε| = 2.5 is within the threshold, or no cycle: unchanged
    assert torch.equal(refine(weight, keep, stats, pattern, update_threshold=2.5), keep)
    assert torch.equal(refine(weight, keep, stats, pattern, max_cycles=0), keep)


def test_nm_grows_and_prunes_within_one_group():
    # 2:4, one row, two groups. Group 0 keeps {0, 1}; growing 2 (the largest contribution) must prune in group 0.
    weight = torch.tensor([[1.0, -0.2, 3.0, 0.1, 1.0, 1.0, 0.1, 0.1]])
    stats = InputStats(8, gram=False)
    stats.add(torch.stack([torch.ones(8) * 1.5, torch.ones(8) * 0.5])[None])  # sums 2, variances 0.25
    keep = torch.tensor([[True, True, False, False, True, True, False, False]])
    refined = refine(weight, keep, stats, parse_pattern("2:4"))
    # ε = 2·(3 + 0.1 + 0.1 + 0.1) = 6.6; grow 2 (c = 6), prune 1 (the lower Wanda score of 0 and 1): ε = 0.2 after;
    # then any growth (c = 0.2) would prune a weight of c = 2: |ε| = 2 > 0.2, refused, the row stops
    assert refined.tolist() == [[True, False, True, False, True, True, False, False]]


def test_bad_inputs_are_named():
    weight, _, stats = _layer(out_f=4, in_f=16)
    keep = torch.ones(4, 16, dtype=torch.bool)
    with pytest.raises(ValueError, match=r"bool mask of the weight's shape \(4, 16\)"):
        refine(weight, keep.float(), stats, parse_pattern("0.5"))
    stored = InputStats.from_tensors(stats.count, stats.sq_sum)  # the activation cache keeps no channel sums
    with pytest.raises(ValueError, match="channel's sum"):
        refine(weight, keep, stored, parse_pattern("0.5"))
    with pytest.raises(ValueError, match="update_threshold=-1"):
        refine(weight, keep, stats, parse_pattern("0.5"), update_threshold=-1)


def test_registry_entry_carries_the_papers_defaults():
    entry = registry.get("refinement", "dsnot")
    assert entry.load() is refine and not entry.needs - {"calibration", "input_norms", "channel_means"}
    assert entry.settings({}) == {"max_cycles": 50, "update_threshold": 0.1, "pow_of_var_regrowing": 1.0}
