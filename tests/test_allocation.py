"""OWL layer-wise sparsity: outlier ratios from Wanda scores, and per-block sparsities with the requested mean."""

import numpy as np
import pytest
import torch

from pruneflow.core.activations import InputStats
from pruneflow.methods.owl import model_outlier_ratios, outlier_ratio, owl_sparsities
from pruneflow.prune.allocation import AllocationError
from pruneflow.prune.dense_stream import build_activation_cache, load_block_stats
from pruneflow.spec import registry


def _owl_reference(ratios, sparsity, lam):
    """OWL's public code, transcribed with numpy: ratios in %, mapped to [0, 2λ], centred on 1 - sparsity."""
    r = np.array(ratios) * 100
    r = (r - r.min()) * (1 / (r.max() - r.min()) * lam * 2)
    r = r - np.mean(r) + (1 - sparsity)
    return list(1 - r)


def test_owl_matches_the_reference_mapping_and_keeps_the_mean():
    ratios = [0.010, 0.031, 0.007, 0.022, 0.015]
    got = owl_sparsities(ratios, 0.7, 0.08)
    np.testing.assert_allclose(got, _owl_reference(ratios, 0.7, 0.08), rtol=0, atol=1e-12)
    assert sum(got) / len(got) == pytest.approx(0.7, abs=1e-12)
    assert max(got) - min(got) == pytest.approx(0.16)
    assert got[1] == min(got)  # the block with the most outliers keeps the most weights
    assert owl_sparsities([0.02] * 3, 0.5, 0.08) == [0.5] * 3


def test_outlier_ratio_counts_scores_above_m_times_the_mean():
    w = torch.ones(4, 10)
    w[0, 0] = 100.0  # one score of 100 among 40; mean 3.475, 5 x mean = 17.4
    stats = InputStats.from_tensors(1, torch.ones(10))
    assert outlier_ratio([w], [stats], m=5) == pytest.approx(1 / 40)
    assert outlier_ratio([w], [stats], m=50) == 0


def test_model_ratios_from_the_dense_stream_cache(tiny, calib_ids, tmp_path):
    model, _ = tiny
    build_activation_cache(model, calib_ids, tmp_path, batch_size=4, gram=False)
    ratios = model_outlier_ratios(model, [load_block_stats(tmp_path, i) for i in range(2)], m=3)
    assert len(ratios) == 2 and all(0 < r < 0.2 for r in ratios)
    per_block = owl_sparsities(ratios, 0.6, lam=0.05)
    assert sum(per_block) / 2 == pytest.approx(0.6) and max(per_block) - min(per_block) == pytest.approx(0.1)


def test_bad_allocations_name_value_and_allowed():
    with pytest.raises(AllocationError) as err:
        owl_sparsities([0.1, 0.2], 0.1, 0.08)
    assert all(w in str(err.value) for w in ["lambda 0.08", "[0, 0.05)"])
    with pytest.raises(registry.RegistryError, match=r"unknown allocation 'tiered'; allowed: uniform, owl"):
        registry.get("allocation", "tiered")
