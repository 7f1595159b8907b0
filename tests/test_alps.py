"""ALPS: feasible (the pattern's exact sparsity, pruned weights exactly 0), a layer error at most SparseGPT's on the
same Gram, deterministic, and its final conjugate gradients reach the least-squares optimum on the support."""

import pytest
import torch

from pruneflow.core.activations import InputStats
from pruneflow.methods import alps
from pruneflow.prune.masks import parse_pattern
from pruneflow.prune.sparsegpt import sparsegpt_prune
from pruneflow.spec import registry

torch.set_num_threads(1)


def _correlated_layer(out_f=32, in_f=128, tokens=512, seed=0):
    """W [out, in] and the Gram of X [tokens, in]: columns share 8 latent factors and have scales spanning 30x."""
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(out_f, in_f, generator=g)
    shared = torch.randn(tokens, 8, generator=g) @ torch.randn(8, in_f, generator=g)
    scales = torch.logspace(-1, 0.5, in_f)[torch.randperm(in_f, generator=g)]
    stats = InputStats(in_f, gram=True)
    stats.add((torch.randn(tokens, in_f, generator=g) + shared) * scales)
    return weight, stats.gram


def _layer_error(weight, pruned, gram):
    """tr((W − Ŵ) H (W − Ŵ)ᵀ) = ‖X(W − Ŵ)ᵀ‖²."""
    delta = (weight - pruned).double()
    return torch.trace(delta @ gram.double() @ delta.T).item()


def _alps(weight, gram, pattern, **settings):
    pruned = weight.clone()
    keep = alps.solve(pruned, alps.prepare(gram, pruned), parse_pattern(pattern), **settings)
    return pruned, keep


@pytest.mark.parametrize("pattern", ["0.5", "0.7", "2:4", "4:8"])
def test_feasible_exact_sparsity_and_pruned_weights_zero(pattern):
    weight, gram = _correlated_layer()
    pruned, keep = _alps(weight, gram, pattern)
    p = parse_pattern(pattern)
    if p.is_nm:
        zeros = (~keep).reshape(weight.shape[0], -1, p.m).sum(-1)
        assert torch.equal(zeros, torch.full_like(zeros, p.m - p.n))
    else:
        assert int((~keep).sum()) == int(weight.numel() * p.ratio)
    assert (pruned[~keep] == 0).all() and (pruned[keep] != weight[keep]).any()  # the kept weights were updated


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("pattern", ["0.5", "0.7", "2:4"])
def test_layer_error_at_most_sparsegpts(seed, pattern):
    weight, gram = _correlated_layer(seed=seed)
    pruned, _ = _alps(weight, gram, pattern)
    obs = weight.clone()
    sparsegpt_prune(obs, gram, parse_pattern(pattern))
    assert _layer_error(weight, pruned, gram) <= _layer_error(weight, obs, gram)


def test_deterministic_and_one_state_serves_linears_of_one_input():
    weight, gram = _correlated_layer()
    other = torch.randn(16, weight.shape[1], generator=torch.Generator().manual_seed(9))
    state = alps.prepare(gram, weight)
    runs = []
    for _ in range(2):
        a, b = weight.clone(), other.clone()
        runs.append((alps.solve(a, state, parse_pattern("0.7")), a, alps.solve(b, state, parse_pattern("0.7")), b))
    assert all(torch.equal(x, y) for x, y in zip(*runs))
    assert torch.equal(runs[0][1], _alps(weight, gram, "0.7")[0])  # a state of its own: the same weights


def test_conjugate_gradients_reach_the_least_squares_optimum_on_the_support():
    weight, gram = _correlated_layer(out_f=4, in_f=32)
    pruned, keep = _alps(weight, gram, "0.5", pcg_iterations=64, pcg_rtol=1e-12)
    h = gram.double()
    h += 0.01 * h.diagonal().mean() * torch.eye(32, dtype=h.dtype)  # the damped Gram ALPS minimises over
    for row in range(4):
        s = keep[row]
        # min over Ŵ_s of (W − Ŵ) H (W − Ŵ)ᵀ: H_ss Ŵ_s = (H W)_s
        expected = torch.linalg.solve(h[s][:, s], (h @ weight[row].double())[s])
        torch.testing.assert_close(pruned[row, s].double(), expected, rtol=1e-4, atol=1e-4)


def test_bad_inputs_are_named():
    weight, gram = _correlated_layer(out_f=4, in_f=32)
    with pytest.raises(ValueError, match=r"state for 16 inputs, weight \(4, 32\)"):
        alps.solve(weight, alps.prepare(gram[:16, :16], weight), parse_pattern("0.5"))
    with pytest.raises(ValueError, match="rho=0"):
        alps.solve(weight, alps.prepare(gram, weight), parse_pattern("0.5"), rho=0)


def test_registry_entry_carries_the_papers_defaults():
    entry = registry.get("solver", "alps")
    assert entry.load() is alps.SOLVER and entry.needs == {"calibration", "gram"}
    assert entry.settings({}) == {"percdamp": 0.01, "rho": 0.1, "max_iterations": 300, "update_every": 3,
                                  "switch_iteration": 30, "pcg_iterations": 10, "pcg_rtol": 1e-4}
    weight, gram = _correlated_layer(out_f=4, in_f=32)
    settings = entry.settings({})  # the registry hands every setting to both steps
    keep = entry.load().solve(weight, entry.load().prepare(gram, weight, **settings), parse_pattern("2:4"), **settings)
    assert int((~keep).sum()) == 64
