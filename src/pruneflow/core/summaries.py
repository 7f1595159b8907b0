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
    # Defaults, uniform and no refinement keep the summary a variant always had; the rest is spelled out for the tables.
    if method.scorer.changed:
        summary["criterion_settings"] = dict(method.scorer.changed)
    if method.refinement:
        summary.update(refinement=method.refinement.name, refinement_settings=method.refinement.settings)
    if method.allocation:
        allocation = method.allocation
        settings = allocation.settings
        summary.update(allocation=allocation.name, allocation_token=allocation.token, allocation_settings=settings)
        # an allocation's study keys (OWL's owl_m, owl_lambda) name its settings as the config does
        summary.update({key: settings[param] for key, param in allocation.entry.options.get("study_keys", {}).items()})
    return summary
