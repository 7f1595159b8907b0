"""Sparsity patterns, parsed from the config (no torch here: the workflow imports this to build its DAG).

N:M follows the papers' notation "2:4": in every group of M consecutive weights along the
input dimension, N are kept and M - N pruned (2:4 and 4:8 are both 50% sparse).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# How a criterion's N:M groups may be formed over a permutation of the input channels (prune/permutation.py): none
# (the layer's own order), heuristic (channels dealt into groups by importance), lsa (then refined by linear sum assignment).
PERMUTATIONS = ("none", "heuristic", "lsa")


class PatternError(ValueError):
    pass


@dataclass(frozen=True)
class Pattern:
    """A sparsity pattern: ``ratio`` for unstructured, or ``n``:``m`` (n kept of every m)."""

    ratio: float | None = None
    n: int | None = None
    m: int | None = None

    @property
    def is_nm(self) -> bool:
        return self.m is not None

    @property
    def sparsity(self) -> float:
        return 1 - self.n / self.m if self.is_nm else self.ratio

    @property
    def token(self) -> str:
        """Path-safe name: ``u0.5`` or ``2of4``."""
        return f"{self.n}of{self.m}" if self.is_nm else f"u{self.ratio:g}"

    def check(self, in_features: int) -> None:
        if self.is_nm and in_features % self.m:
            raise PatternError(f"pattern {self.n}:{self.m}: M={self.m} does not divide the input dimension {in_features}")


def parse_pattern(value) -> Pattern:
    """Parse ``0.5`` / ``"0.5"`` / ``"u0.5"`` / ``"2:4"`` / ``"2of4"``; errors name the value and what is allowed."""
    if isinstance(value, Pattern):
        return value
    text = str(value).strip()
    if m := re.fullmatch(r"(\d+)\s*(?::|of)\s*(\d+)", text):
        n, mm = int(m.group(1)), int(m.group(2))
        if not 0 < n < mm:
            raise PatternError(f"pattern {text!r}: N:M needs 0 < N < M (for example 2:4 or 4:8)")
        return Pattern(n=n, m=mm)
    try:
        ratio = float(text.removeprefix("u"))
    except ValueError:
        raise PatternError(f"pattern {text!r}: expected a sparsity ratio in [0, 1) such as 0.5, or N:M such as 2:4") from None
    if not 0 <= ratio < 1:
        raise PatternError(f"pattern {text!r}: a sparsity ratio must be in [0, 1)")
    return Pattern(ratio=ratio)


def block_patterns(pattern: Pattern, sparsities: list[float] | None, n_blocks: int) -> list[Pattern]:
    """Every block's pattern: ``pattern`` everywhere (uniform), or one unstructured ratio per block
    (a non-uniform allocation such as OWL; N:M has no per-block ratio)."""
    if sparsities is None:
        return [pattern] * n_blocks
    if pattern.is_nm:
        raise PatternError(f"pattern {pattern.n}:{pattern.m}: N:M has one sparsity for every block; per-block sparsities need an unstructured ratio")
    if len(sparsities) != n_blocks:
        raise PatternError(f"{len(sparsities)} per-block sparsities for a model of {n_blocks} blocks")
    bad = [s for s in sparsities if not 0 <= s < 1]
    if bad:
        raise PatternError(f"per-block sparsity {bad[0]!r}: a sparsity ratio must be in [0, 1)")
    return [Pattern(ratio=float(s)) for s in sparsities]
