"""What each pruned variant records about how it was made (summary.json beside its parts).

Costs (seconds, peak memory) are not recorded here: the tables read them from Snakemake's
``benchmark:`` files of the jobs that made a variant (``experiments.making_steps``).
"""

from __future__ import annotations

from .experiments import Method


def variant_summary(method: Method, calib: str) -> dict:
    return {
        "criterion": method.criterion,
        "pattern": method.pattern.token,
        "sparsity": method.pattern.sparsity,
        "stream": method.stream,
        "calibration": calib,
    }
