"""What each pruned variant records about how it was made (summary.json beside its model)."""

from __future__ import annotations

from pathlib import Path

from .experiments import Method
from .io import read_json


def variant_summary(method: Method, calib: str, seconds: float, peak_memory_mb: float, upstream: list = ()) -> dict:
    """``seconds`` includes the shared upstream steps (activation cache, scores, masks) that this
    variant needed, read from their summary.json, so costs compare methods from scratch."""
    shared = sum(read_json(Path(u) / "summary.json")["seconds"] for u in upstream)
    return {
        "criterion": method.criterion,
        "pattern": method.pattern.token,
        "sparsity": method.pattern.sparsity,
        "stream": method.stream,
        "calibration": calib,
        "prune_seconds": seconds + shared,
        "peak_memory_mb": peak_memory_mb,
    }


def step_summary(seconds: float, peak_memory_mb: float, **extra) -> dict:
    return {"seconds": seconds, "peak_memory_mb": peak_memory_mb, **extra}
