"""Pruning criteria: which weights of a linear layer to remove.

Each criterion maps a weight W [out, in] (and its input statistics) to a keep-mask for a pattern.
Score-based criteria (magnitude, Wanda) rank scores; SparseGPT chooses and updates weights together.
"""

from __future__ import annotations

import torch

from pruneflow.core import fallbacks
from pruneflow.core.activations import InputStats
from pruneflow.prune.masks import Pattern, make_mask
from pruneflow.spec.criteria import CRITERIA, Criterion, CriterionError, get_criterion  # noqa: F401 (re-exported)
from pruneflow.prune.sparsegpt import InverseHessian, sparsegpt_prune


def magnitude_scores(weight: torch.Tensor) -> torch.Tensor:
    return weight.abs().float()


def wanda_scores(weight: torch.Tensor, col_norms: torch.Tensor) -> torch.Tensor:
    """|W_ij| · ‖X_j‖₂ (Wanda, eq. 1)."""
    return weight.abs().to(col_norms.dtype) * col_norms.reshape(1, -1)  # float64 norms (the arbiter): float64 scores


def scores_for(criterion: Criterion, weight: torch.Tensor, stats: InputStats | None) -> torch.Tensor:
    """Scores [out, in] of a score-based criterion (higher = more important) from stored statistics."""
    if criterion.name.startswith("magnitude"):
        return magnitude_scores(weight)
    if criterion.name.startswith("wanda"):
        return wanda_scores(weight, stats.col_norms)
    raise CriterionError(f"criterion {criterion.name!r} has no score (it chooses and updates weights together)")


@torch.no_grad()
def prune_layer(criterion: Criterion, weight: torch.Tensor, stats: InputStats | None, pattern: Pattern,
                consume: bool = False, factors: dict[InputStats, InverseHessian] | None = None) -> torch.Tensor:
    """Prune ``weight`` [out, in] in place; return its keep-mask [out, in].

    Score-based criteria only zero the pruned weights; SparseGPT also updates the kept ones. ``consume``: this is
    the statistics' last use (SparseGPT takes the Gram without a copy and builds its inverse factor in that memory; the statistics
    hold no Gram after). ``factors``: SparseGPT's inverse factors by statistics, kept from one call to the next
    for linears that share their statistics (the Gram is taken at the first, the factor dropped at the last).
    """
    pattern.check(weight.shape[1])
    if criterion.needs_calibration and stats is None:
        raise CriterionError(f"criterion {criterion.name!r} needs input statistics from calibration samples")
    if criterion.name == "sparsegpt":
        shared = factors if factors is not None else {}
        if stats not in shared:  # the Gram is taken when the factor is kept for later calls (or at its last use)
            gram = stats.take_gram() if consume or factors is not None else stats.gram
            if gram is None:
                raise CriterionError("criterion 'sparsegpt' needs the input Gram matrix: collect InputStats with gram=True")
            shared[stats] = InverseHessian.of(gram, weight, consume=True)
        return sparsegpt_prune(weight, shared.pop(stats) if consume else shared[stats], pattern)
    keep = make_mask(scores_for(criterion, weight, stats), pattern, criterion.per_row)
    weight.mul_(keep)
    return keep


def prune_block_layers(criterion: Criterion, arch, block, stats: dict[str, InputStats], pattern: Pattern) -> dict[str, torch.Tensor]:
    """Prune every linear of ``block`` in place; returns {linear name: keep-mask on the CPU}. ``stats``:
    {linear name: InputStats} (one object per input group), emptied as it goes. SparseGPT takes a group's Gram
    [in, in] at its first layer and makes the group's one inverse factor in its memory, dropped at the group's
    last layer, before the next group's is made."""
    masks, factors = {}, {}
    for name, layer in arch.block_linears(block).items():
        layer_stats = stats.pop(name, None)
        last = layer_stats is not None and all(s is not layer_stats for s in stats.values())
        with fallbacks.layer(name):  # a numerical fallback's log line and count name the linear
            masks[name] = prune_layer(criterion, arch.weight(layer), layer_stats, pattern, consume=last, factors=factors).cpu()
    return masks
