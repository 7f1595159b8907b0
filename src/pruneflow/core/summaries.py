"""What each pruned variant records about how it was made (summary.json beside its parts).

Costs (seconds, peak memory) are not recorded here: the tables read them from Snakemake's
``benchmark:`` files of the jobs that made a variant (``experiments.making_steps``).
"""

from __future__ import annotations

from pruneflow.spec.naming import Method


def variant_summary(method: Method, calib: str, fallbacks: dict | None = None) -> dict:
    """``fallbacks``: the numerical fallbacks of the job that made it, {layer: {kind: count}}
    (:func:`pruneflow.core.fallbacks.recording`; none for a score criterion, which solves nothing)."""
    summary = {
        "criterion": method.criterion,
        "pattern": method.pattern.token,
        "sparsity": method.pattern.sparsity,
        "stream": method.stream,
        "calibration": calib,
        "fallbacks": fallbacks or {},
    }
    if method.allocation:  # uniform variants keep the summary they always had
        summary.update(allocation=method.allocation.kind, owl_m=method.allocation.m, owl_lambda=method.allocation.lam)
    return summary
