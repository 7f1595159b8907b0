"""The pruning criteria by name and what each needs (no torch here: the workflow imports this to build its DAG)."""

from __future__ import annotations

from dataclasses import dataclass


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
    # Unstructured SparseGPT compares saliencies over [out, blocksize] column blocks, not rows.
    "sparsegpt": Criterion("sparsegpt", needs_calibration=True, per_row=False, needs_gram=True),
}


class CriterionError(ValueError):
    pass


def get_criterion(name: str) -> Criterion:
    if name not in CRITERIA:
        raise CriterionError(f"unknown pruning criterion {name!r}; allowed: {', '.join(CRITERIA)}")
    return CRITERIA[name]
