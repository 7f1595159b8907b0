"""How much to prune each block: uniform, or OWL (outlier-weighted layer-wise sparsity; Yin et al.,
"Outlier Weighed Layerwise Sparsity", ICML 2024).

OWL keeps more weights in blocks with more outliers. A block's outlier ratio D is the share of its
Wanda scores |W_ij|·‖X_j‖ (all its linears together) above ``m`` times their mean. Keep ratios are
the outlier ratios mapped linearly onto [0, 2λ], shifted so their mean is 1 − sparsity; a block's
sparsity is one minus its keep ratio, so the block sparsities span 2λ and their mean is exactly the
requested sparsity (the blocks of a decoder have equal sizes). The paper's defaults: m = 5, λ = 0.08.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch

from .activations import InputStats
from .criteria import wanda_scores

ALLOCATIONS = ("uniform", "owl")


class AllocationError(ValueError):
    pass


@torch.no_grad()
def outlier_ratio(weights: Iterable[torch.Tensor], stats: Iterable[InputStats], m: float = 5.0) -> float:
    """Share of a block's Wanda scores above ``m`` × their mean (weights [out, in], one stats each)."""
    scores = torch.cat([wanda_scores(w, s.col_norms).flatten() for w, s in zip(weights, stats)])
    return float((scores > m * scores.mean()).float().mean())


def owl_sparsities(ratios: list[float], sparsity: float, lam: float = 0.08) -> list[float]:
    """Per-block sparsities from per-block outlier ratios: spread 2·``lam``, mean ``sparsity``."""
    if not 0 < sparsity < 1:
        raise AllocationError(f"owl needs an unstructured sparsity in (0, 1), got {sparsity!r}")
    if not 0 <= lam <= min(sparsity, 1 - sparsity) / 2:
        raise AllocationError(f"owl lambda {lam!r} must be in [0, {min(sparsity, 1 - sparsity) / 2:g}] so every block's sparsity stays in [0, 1]")
    low, high = min(ratios), max(ratios)
    if high == low:
        return [sparsity] * len(ratios)
    keep = [(r - low) / (high - low) * 2 * lam for r in ratios]
    shift = (1 - sparsity) - sum(keep) / len(keep)
    return [1 - (k + shift) for k in keep]


def block_sparsities(allocation: str, sparsity: float, n_blocks: int, ratios: list[float] | None = None,
                     lam: float = 0.08) -> list[float]:
    """Every block's sparsity for an ``allocation`` (``owl`` needs the blocks' outlier ``ratios``)."""
    if allocation == "uniform":
        return [sparsity] * n_blocks
    if allocation == "owl":
        if ratios is None or len(ratios) != n_blocks:
            raise AllocationError(f"owl needs one outlier ratio per block ({n_blocks}), got {None if ratios is None else len(ratios)}")
        return owl_sparsities(ratios, sparsity, lam)
    raise AllocationError(f"allocation {allocation!r}: allowed {', '.join(ALLOCATIONS)}")


def model_outlier_ratios(model, block_stats: Iterable[Mapping[str, InputStats]], m: float = 5.0) -> list[float]:
    """Outlier ratio of every block, from its dense-stream statistics ({linear name: InputStats} per block)."""
    from .architectures import architecture_of

    arch = architecture_of(model)
    ratios = []
    for block, stats in zip(arch.get_blocks(model), block_stats):
        linears = arch.block_linears(block)
        names = [n for n in linears if n in stats and stats[n].count]
        ratios.append(outlier_ratio([arch.weight(linears[n]) for n in names], [stats[n] for n in names], m))
    return ratios
