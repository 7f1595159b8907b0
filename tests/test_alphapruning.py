"""AlphaPruning: the Hill estimator recovers a built-in tail exponent, the block sparsities average to the target
(weighted by the blocks' sizes) with the reference's spread, a heavier-tailed block is pruned less, and the
allocation runs on a model with no calibration data."""

import pytest
import torch

from pruneflow.core.tiny import build_tiny_model
from pruneflow.methods.alphapruning import allocate, block_sparsities, hill_alpha
from pruneflow.prune.allocation import AllocationError
from pruneflow.spec import registry

torch.set_num_threads(1)


def _heavy_tailed(alpha, out_f=96, in_f=96, seed=0):
    """W [out, in] whose WᵀW has Pareto eigenvalues: density ∝ λ^(−alpha) above 1 (random singular vectors)."""
    g = torch.Generator().manual_seed(seed)
    u = torch.linalg.qr(torch.randn(out_f, out_f, generator=g, dtype=torch.float64))[0][:, :in_f]
    v = torch.linalg.qr(torch.randn(in_f, in_f, generator=g, dtype=torch.float64))[0]
    quantiles = (torch.arange(in_f, dtype=torch.float64) + 0.5) / in_f  # evenly spread: the sample tail is exact
    eigenvalues = quantiles.pow(-1 / (alpha - 1))
    return (u * eigenvalues.sqrt()) @ v.T


@pytest.mark.parametrize("alpha", [2.0, 3.0, 5.0])
def test_hill_estimator_recovers_the_tail_exponent(alpha):
    assert hill_alpha(_heavy_tailed(alpha)) == pytest.approx(alpha, rel=0.05)
    assert hill_alpha(_heavy_tailed(alpha, out_f=160).float()) == pytest.approx(alpha, rel=0.05)  # a tall float32 W


def _blocks(alphas, widths=None):
    widths = widths or [96] * len(alphas)
    return [{"a": _heavy_tailed(a, w, w, seed=i), "b": _heavy_tailed(a, w, w, seed=10 + i)}
            for i, (a, w) in enumerate(zip(alphas, widths))]


def test_sparsities_average_to_the_target_and_heavier_tails_are_pruned_less():
    blocks = _blocks([2.5, 4.0, 3.0, 6.0])
    sparsities = block_sparsities(blocks, 0.7, epsilon=0.2)
    assert sum(sparsities) / 4 == pytest.approx(0.7, abs=1e-9)
    assert sparsities[0] < sparsities[2] < sparsities[1] < sparsities[3]  # ordered as the exponents
    assert all(0 < s < 1 for s in sparsities)
    # the metrics are mapped onto [1 − ε, 1 + ε] and scaled by one factor: the extremes' ratio is exact
    assert sparsities[3] / sparsities[0] == pytest.approx(1.2 / 0.8, rel=1e-12)
    assert max(abs(s - 0.7) for s in sparsities) <= 2 * 0.2 * 0.7 / (1 - 0.2)  # |r − mean r| ≤ 2ε, mean r ≥ 1 − ε


def test_unequal_blocks_average_to_the_target_by_their_weights():
    blocks = _blocks([2.5, 5.0, 3.5], widths=[64, 128, 96])
    sparsities = block_sparsities(blocks, 0.5)
    sizes = [sum(w.numel() for w in b.values()) for b in blocks]
    assert sum(s * n for s, n in zip(sparsities, sizes)) / sum(sizes) == pytest.approx(0.5, abs=1e-9)
    assert sum(sparsities) / 3 != pytest.approx(0.5, abs=1e-3)  # the plain mean is not the target here
    assert sparsities[0] < sparsities[2] < sparsities[1]


def test_equal_exponents_give_the_uniform_allocation_and_bad_settings_are_named():
    same = _heavy_tailed(3.0)
    assert block_sparsities([{"a": same}, {"a": same.clone()}], 0.6) == [0.6, 0.6]  # no spread to map
    with pytest.raises(AllocationError, match=r"block 1 would get sparsity 1\.35, outside \(0, 1\); allowed here: epsilon "
                       r"< 0\.111 \(e\.g\. allocation: \{name: alphapruning, epsilon: 0\.11\}\)"):  # 0.9 (1 + ε) < 1
        block_sparsities(_blocks([2.5, 5.0]), 0.9, epsilon=0.5)
    assert max(block_sparsities(_blocks([2.5, 5.0]), 0.9, epsilon=0.11)) < 1  # the suggested value fits
    with pytest.raises(AllocationError, match=r"epsilon 1\.5 must be in \[0, 1\)"):
        block_sparsities(_blocks([2.5, 5.0]), 0.5, epsilon=1.5)


def test_allocation_of_a_model_needs_no_calibration():
    entry = registry.get("allocation", "alphapruning")
    assert not entry.needs_calibration and entry.settings({}) == {"epsilon": 0.3}
    model, _ = build_tiny_model(num_hidden_layers=3)
    result = entry.load()(model, None, 0.6, None, **entry.settings({}))  # no activation cache
    assert entry.load() is allocate and len(result["block_sparsities"]) == 3 == len(result["block_alphas"])
    sizes = result["block_params"]
    mean = sum(s * n for s, n in zip(result["block_sparsities"], sizes)) / sum(sizes)
    assert mean == pytest.approx(0.6, abs=1e-9) and all(a > 1 for a in result["block_alphas"])
