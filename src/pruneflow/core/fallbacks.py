"""Numerical fallbacks, recorded: nothing is silently solved another way than written.

Where a solve cannot run as the method writes it (SparseGPT's Hessian not positive definite, so its dampening is
raised; an input that was never nonzero in calibration, so its diagonal is set to one and its weights to zero), the
code that falls back calls :func:`note`. The job's log gets a line naming the layer; a job that writes a variant
counts them per layer inside :func:`recording` and stores the counts in the variant's summary (``fallbacks``:
{layer: {kind: count}}), which the study tables show. Layers are named by the loops that visit them
(:func:`layer`: ``model.layers.3`` around a block, ``self_attn.q_proj`` around a linear), so the numerical code
needs no name of its own.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

# What each kind counts (a variant's summary and docs/methods.md use these names)
KINDS = {
    "dampening_raised": "times SparseGPT's dampening was multiplied by 10 (the Hessian was not positive definite)",
    "dead_inputs": "inputs never nonzero in calibration (unit Hessian diagonal; their weights set to zero)",
    "least_squares": "rows whose reconstruction system was not positive definite, solved by least squares (not Cholesky)",
}

_where: ContextVar[tuple[str, ...]] = ContextVar("pruneflow_fallback_where", default=())
_counts: ContextVar[dict | None] = ContextVar("pruneflow_fallback_counts", default=None)


@contextlib.contextmanager
def layer(name: str) -> Iterator[None]:
    """Fallbacks noted inside happen at ``name``, under the enclosing layer's name (joined by a dot)."""
    token = _where.set((*_where.get(), name))
    try:
        yield
    finally:
        _where.reset(token)


@contextlib.contextmanager
def recording() -> Iterator[dict[str, dict[str, int]]]:
    """Count every fallback noted inside: yields {layer: {kind: count}}, filled as they happen."""
    counts: dict[str, dict[str, int]] = {}
    token = _counts.set(counts)
    try:
        yield counts
    finally:
        _counts.reset(token)


def note(kind: str, detail: str, count: int = 1) -> None:
    """A fallback of ``kind`` (:data:`KINDS`) at the current layer: a log line, and ``count`` more in the recording."""
    if kind not in KINDS:
        raise ValueError(f"fallback kind {kind!r}; allowed: {', '.join(KINDS)}")
    where = ".".join(_where.get()) or "an unnamed layer"
    print(f"numerical fallback at {where}: {detail}", flush=True)
    counts = _counts.get()
    if counts is not None:
        at = counts.setdefault(where, {})
        at[kind] = at.get(kind, 0) + count


def merged(*counts: dict[str, dict[str, int]] | None) -> dict[str, dict[str, int]]:
    """Several recordings as one (a recovered variant: its parent's and its own), counts added."""
    out: dict[str, dict[str, int]] = {}
    for recorded in counts:
        for where, kinds in (recorded or {}).items():
            for kind, n in kinds.items():
                out.setdefault(where, {})[kind] = out.get(where, {}).get(kind, 0) + n
    return out


def totals(counts: dict[str, dict[str, int]] | None) -> dict[str, tuple[int, int]]:
    """{kind: (layers, count)} over a recording: how many layers fell back, and how often."""
    out: dict[str, tuple[int, int]] = {}
    for kinds in (counts or {}).values():
        for kind, n in kinds.items():
            layers, total = out.get(kind, (0, 0))
            out[kind] = (layers + 1, total + n)
    return dict(sorted(out.items()))
