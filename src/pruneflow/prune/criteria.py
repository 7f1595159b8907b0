"""Pruning a linear layer by a registered criterion or solver (spec/registry.py; the methods in pruneflow/methods/).

A criterion maps a weight W [out, in] and its input statistics to scores, ranked into a keep-mask for a pattern (N:M
groups formed over a channel permutation where the criterion asks for one); a solver chooses and updates weights
together (SparseGPT). A refinement, when the method has one, then edits the mask.
"""

from __future__ import annotations

import torch

from pruneflow.core import fallbacks
from pruneflow.core.activations import InputStats
from pruneflow.methods.magnitude import scores as magnitude_scores  # noqa: F401 (re-exported)
from pruneflow.methods.wanda import wanda_scores  # noqa: F401 (re-exported)
from pruneflow.prune.masks import Pattern, make_mask
from pruneflow.prune.permutation import channel_permutation
from pruneflow.spec.criteria import Criterion, CriterionError, get_criterion, method_criterion  # noqa: F401 (re-exported)


def scores_for(criterion: Criterion, weight: torch.Tensor, stats: InputStats | None) -> torch.Tensor:
    """Scores [out, in] of a criterion (higher = more important) from stored statistics."""
    if criterion.is_solver:
        raise CriterionError(f"criterion {criterion.name!r} has no score (a solver: it chooses and updates weights together)")
    return criterion.implementation(weight, stats, **criterion.score_settings)


def criterion_mask(criterion: Criterion, scores: torch.Tensor, pattern: Pattern) -> torch.Tensor:
    """A criterion's keep-mask from its scores: N:M groups formed over its channel permutation where it has one."""
    if problem := criterion.permutation_problem(pattern):
        raise CriterionError(f"criterion {criterion.name!r}: {problem}")
    order = None
    if criterion.permutation != "none":
        order = channel_permutation(scores, pattern.n, pattern.m, refine=criterion.permutation == "lsa")
    return make_mask(scores, pattern, criterion.per_row, order)


def solve_layer(criterion: Criterion, weight: torch.Tensor, stats: InputStats, pattern: Pattern, consume: bool,
                states: dict | None) -> torch.Tensor:
    """A solver's keep-mask, ``weight`` updated in place. Its state (SparseGPT: H⁻¹'s factor) is made from the Gram once
    per statistics object and kept in ``states`` for the linears that share it (dropped at the last, ``consume``)."""
    solver, settings = criterion.implementation, criterion.settings
    shared = states if states is not None else {}
    if stats not in shared:  # the Gram is taken when the state is kept for later calls (or at its last use)
        gram = stats.take_gram() if consume or states is not None else stats.gram
        if gram is None:
            raise CriterionError(f"criterion {criterion.name!r} needs the input Gram matrix: collect InputStats with gram=True")
        shared[stats] = solver.prepare(gram, weight, **settings)
    return solver.solve(weight, shared.pop(stats) if consume else shared[stats], pattern, **settings)


@torch.no_grad()
def prune_layer(criterion: Criterion, weight: torch.Tensor, stats: InputStats | None, pattern: Pattern,
                consume: bool = False, factors: dict | None = None) -> torch.Tensor:
    """Prune ``weight`` [out, in] in place; return its keep-mask [out, in].

    A criterion only zeroes the pruned weights; a solver also updates the kept ones. ``consume``: this is the
    statistics' last use (a solver takes the Gram without a copy and builds its state in that memory; the statistics
    hold no Gram after). ``factors``: solver states by statistics, kept from one call to the next for linears that
    share their statistics (the Gram is taken at the first, the state dropped at the last).
    """
    pattern.check(weight.shape[1])
    if criterion.needs_calibration and stats is None:
        raise CriterionError(f"criterion {criterion.name!r} needs input statistics from calibration samples")
    if criterion.is_solver:
        keep = solve_layer(criterion, weight, stats, pattern, consume, factors)
    else:
        keep = criterion_mask(criterion, scores_for(criterion, weight, stats), pattern)
    if criterion.refinement is None:
        if not criterion.is_solver:
            weight.mul_(keep)
        return keep
    keep = criterion.refinement.implementation(weight, keep, stats, pattern, **criterion.refinement.settings)
    weight.mul_(keep)
    return keep


def prune_block_layers(criterion: Criterion, arch, block, stats: dict[str, InputStats], pattern: Pattern) -> dict[str, torch.Tensor]:
    """Prune every linear of ``block`` in place; returns {linear name: keep-mask on the CPU}. ``stats``:
    {linear name: InputStats} (one object per input group), emptied as it goes. A solver takes a group's Gram
    [in, in] at its first layer and makes the group's one state (SparseGPT: inverse factor) in its memory, dropped
    at the group's last layer, before the next group's is made."""
    masks, factors = {}, {}
    for name, layer in arch.block_linears(block).items():
        layer_stats = stats.pop(name, None)
        last = layer_stats is not None and all(s is not layer_stats for s in stats.values())
        with fallbacks.layer(name):  # a numerical fallback's log line and count name the linear
            masks[name] = prune_layer(criterion, arch.weight(layer), layer_stats, pattern, consume=last, factors=factors).cpu()
    return masks
