"""Pruning criteria: which weights of a linear layer to remove.

Each criterion maps a weight W [out, in] (and its input statistics) to a keep-mask for a pattern.
Score-based criteria (magnitude, Wanda) rank scores; SparseGPT chooses and updates weights together.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .activations import InputStats
from .masks import Pattern, make_mask


@dataclass(frozen=True)
class Criterion:
    name: str
    needs_calibration: bool
    per_row: bool  # compare scores within each output row (else across the whole matrix)
    needs_gram: bool = False


CRITERIA = {
    "magnitude": Criterion("magnitude", needs_calibration=False, per_row=False),
    "magnitude_row": Criterion("magnitude_row", needs_calibration=False, per_row=True),
    "wanda": Criterion("wanda", needs_calibration=True, per_row=True),
    "wanda_matrix": Criterion("wanda_matrix", needs_calibration=True, per_row=False),
}


class CriterionError(ValueError):
    pass


def get_criterion(name: str) -> Criterion:
    if name not in CRITERIA:
        raise CriterionError(f"unknown pruning criterion {name!r}; allowed: {', '.join(CRITERIA)}")
    return CRITERIA[name]


def magnitude_scores(weight: torch.Tensor) -> torch.Tensor:
    return weight.abs().float()


def wanda_scores(weight: torch.Tensor, col_norms: torch.Tensor) -> torch.Tensor:
    """|W_ij| · ‖X_j‖₂ (Wanda, eq. 1)."""
    return weight.abs().float() * col_norms.reshape(1, -1)


def scores_for(criterion: Criterion, weight: torch.Tensor, stats: InputStats | None) -> torch.Tensor:
    if criterion.name.startswith("magnitude"):
        return magnitude_scores(weight)
    if criterion.name.startswith("wanda"):
        return wanda_scores(weight, stats.col_norms)
    raise CriterionError(f"criterion {criterion.name!r} has no score (it chooses and updates weights together)")


@torch.no_grad()
def prune_layer(criterion: Criterion, weight: torch.Tensor, stats: InputStats | None, pattern: Pattern) -> torch.Tensor:
    """Prune ``weight`` [out, in] in place; return its keep-mask."""
    pattern.check(weight.shape[1])
    keep = make_mask(scores_for(criterion, weight, stats), pattern, criterion.per_row)
    weight.mul_(keep)
    return keep
