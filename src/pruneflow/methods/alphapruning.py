"""AlphaPruning (Lu et al., "AlphaPruning: Using Heavy-Tailed Self Regularization Theory for Improved Layer-wise
Pruning of Large Language Models", NeurIPS 2024): block sparsities from the weights alone, no calibration.

Each weight matrix's empirical spectral density (the eigenvalues λ₁ ≤ … ≤ λ_N of WᵀW, the squared singular values)
has a power-law tail p(λ) ∝ λ^(−α) above some λ_min. α by the Hill (maximum-likelihood) estimator, as the reference
(``alpha_peak``) fits it: for every candidate λ_min = λ_i with n = N − i eigenvalues at or above it,

    α_i = 1 + n / Σ_{k ≥ i} ln(λ_k / λ_i),   D_i = max_k |1 − (λ_k / λ_i)^(1 − α_i) − (k − i)/n|  (Kolmogorov-Smirnov),

and α is the α_i of least D_i. The candidates are the reference's: λ_i ≤ 1.5 · p, with p the left edge of the fullest
of 100 bins of log₁₀ λ, and λ_i ≥ log₁₀(0.95 · p) (the reference compares an eigenvalue with that logarithm: kept
so that α is the reference's). A block's metric is its matrices' mean α; metrics are mapped linearly onto
[1 − ε, 1 + ε] and scaled by one factor so that the blocks' sparsities, weighted by their prunable weights, average
to the target: a heavier tail (lower α, a better-trained block) is pruned less. Default ε = 0.3 (the reference's).
"""

from __future__ import annotations

import math

from pruneflow.spec.registry import Entry, Param, register

BINS = 100  # the histogram of log10 λ whose fullest bin places λ_min


def hill_alpha(weight) -> float:
    """The heavy-tail exponent α of ``weight`` [out, in]'s spectral density (float64 eigenvalues)."""
    import torch

    w = weight.detach().double()
    eigs = torch.linalg.eigvalsh(w.T @ w if w.shape[1] <= w.shape[0] else w @ w.T)  # ascending; 4x an SVD's speed
    eigs = eigs[eigs > 0]  # a rank-deficient matrix's zeros (rounded either way) have no logarithm
    logs = eigs.log()
    log10 = eigs.log10()
    counts = torch.histc(log10, BINS, min=float(log10.min()), max=float(log10.max()))
    peak = 10 ** float(torch.linspace(float(log10.min()), float(log10.max()), BINS + 1)[counts.argmax()])
    n_eigs = len(eigs)
    low = math.log10(0.95 * peak)  # the reference's lower end: an eigenvalue compared with a logarithm
    candidates = torch.arange(n_eigs - 1)[(eigs[:-1] >= low) & (eigs[:-1] <= 1.5 * peak)]
    best_d, best_alpha = torch.inf, 0.0
    suffix = logs.flip(0).cumsum(0).flip(0)  # Σ_{k ≥ i} ln λ_k
    for i in candidates.tolist():
        n = n_eigs - i
        spread = float(suffix[i] - n * logs[i])
        if spread <= 0:  # no tail above λ_i (equal eigenvalues)
            continue
        alpha = 1 + n / spread
        fitted = 1 - (eigs[i:] / eigs[i]).pow(1 - alpha)
        d = float((fitted - torch.arange(n, dtype=eigs.dtype) / n).abs().max())
        if d < best_d:
            best_d, best_alpha = d, alpha
    return best_alpha


def block_alphas(weights_by_block) -> tuple[list[float], list[int]]:
    """(each block's mean α, its number of weights) from an iterable of {name: W [out, in]}, one block at a time."""
    metrics, sizes = [], []
    for block in weights_by_block:
        if not block:
            raise _error("alphapruning needs at least one weight matrix in every block")
        metrics.append(sum(hill_alpha(w) for w in block.values()) / len(block))
        sizes.append(sum(w.numel() for w in block.values()))
    return metrics, sizes


def sparsities_from_alphas(metrics: list[float], sizes: list[int], target: float, epsilon: float = 0.3) -> list[float]:
    """Block sparsities: ``metrics`` mapped onto [1 − ε, 1 + ε], scaled so that their mean weighted by ``sizes`` is
    ``target``."""
    if not 0 < target < 1:
        raise _error(f"alphapruning needs a target sparsity in (0, 1), got {target!r}")
    if not 0 <= epsilon < 1:
        raise _error(f"alphapruning epsilon {epsilon!r} must be in [0, 1)")
    sparsities = _scaled(metrics, sizes, target, epsilon)
    if bad := [(i, s) for i, s in enumerate(sparsities) if not 0 < s < 1]:
        # the reference would prune such a block whole; the largest ε that fits is found by bisection (ε = 0 fits)
        fits, over = 0.0, epsilon
        for _ in range(40):
            mid = (fits + over) / 2
            fits, over = (mid, over) if max(_scaled(metrics, sizes, target, mid)) < 1 else (fits, mid)
        raise _error(f"alphapruning at sparsity {target:g}, epsilon {epsilon:g}: block {bad[0][0]} would get sparsity "
                     f"{bad[0][1]:.3g}, outside (0, 1); allowed here: epsilon < {over:.3f} (e.g. allocation: "
                     f"{{name: alphapruning, epsilon: {math.floor(fits * 100) / 100:g}}})")
    return sparsities


def _scaled(metrics, sizes, target, epsilon):
    """``metrics`` mapped linearly onto [1 − ε, 1 + ε], times the one factor that makes their size-weighted mean
    ``target``."""
    low, high = min(metrics), max(metrics)
    ratios = [1 - epsilon + 2 * epsilon * ((m - low) / (high - low) if high > low else 0.5) for m in metrics]
    factor = target * sum(sizes) / sum(r * n for r, n in zip(ratios, sizes))
    return [r * factor for r in ratios]


def block_sparsities(weights_by_block, target: float, *, epsilon: float = 0.3) -> list[float]:
    """Each block's sparsity from its weight matrices ({name: W [out, in]} per block), for a ``target`` sparsity."""
    return sparsities_from_alphas(*block_alphas(weights_by_block), target, epsilon)


def allocate(model, cache, sparsity: float, sizes, *, epsilon: float = 0.3) -> dict:
    """The allocation artifact of ``model`` (in memory or a :class:`~pruneflow.core.stream.ModelStream`, a block
    loaded at a time); data-free, so ``cache`` is not read."""
    from pruneflow.core.stream import ModelStream

    stream = ModelStream.wrap(model)
    arch = stream.arch
    blocks = ({name: arch.weight(linear) for name, linear in arch.block_linears(block).items()}
              for _, block in stream.blocks())
    alphas, params = block_alphas(blocks)
    return {"allocation": "alphapruning", "epsilon": epsilon, "sparsity": sparsity, "block_alphas": alphas,
            "block_sparsities": sparsities_from_alphas(alphas, params, sparsity, epsilon), "block_params": params}


def _error(message: str):
    from pruneflow.prune.allocation import AllocationError

    return AllocationError(message)


ENTRY = register(Entry(
    "allocation", "alphapruning", "pruneflow.methods.alphapruning:allocate", needs=(),
    params=(Param("epsilon", 0.3, float, minimum=0.0, maximum=0.99,
                  doc="block sparsities span target·[1 − ε, 1 + ε] before scaling (the reference's default 0.3)"),),
    options={"spelled": {"epsilon": "e"}},  # alphapruning-e0.3 in ids, as OWL's owl-m5-l0.08
    memory=lambda shape: 8 * (shape["hidden"] * shape["ffn"] + 2 * shape["hidden"] ** 2),  # float64 W and its Gram
    doc="layer sparsities from each weight matrix's heavy-tail exponent α, no data (AlphaPruning, NeurIPS 2024)",
))
