"""Turn scores into keep-masks (True = weight kept) for a sparsity pattern.

Patterns: unstructured at a ratio, compared per output row or over the whole matrix, and N:M.
N:M follows the papers' notation "2:4": in every group of M consecutive weights along the
input dimension, N are kept and M - N pruned (2:4 and 4:8 are both 50% sparse).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch


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


def _keep_lowest_pruned(scores: torch.Tensor, k: int, dim: int) -> torch.Tensor:
    """Keep-mask that prunes the k lowest scores along ``dim`` (ties broken by index, deterministically)."""
    keep = torch.ones_like(scores, dtype=torch.bool)
    if k > 0:
        idx = torch.sort(scores, dim=dim, stable=True).indices.narrow(dim, 0, k)
        keep.scatter_(dim, idx, False)
    return keep


def unstructured_mask(scores: torch.Tensor, ratio: float, per_row: bool) -> torch.Tensor:
    """Prune ``ratio`` of the weights: exactly ``int(in * ratio)`` per row, or ``int(numel * ratio)`` per matrix."""
    if per_row:
        return _keep_lowest_pruned(scores, int(scores.shape[1] * ratio), dim=1)
    flat = _keep_lowest_pruned(scores.reshape(-1), int(scores.numel() * ratio), dim=0)
    return flat.view_as(scores)


def nm_mask(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Keep the n highest scores in every group of m consecutive input weights."""
    out_f, in_f = scores.shape
    if in_f % m:
        raise PatternError(f"pattern {n}:{m}: M={m} does not divide the input dimension {in_f}")
    groups = scores.reshape(out_f, in_f // m, m)
    return _keep_lowest_pruned(groups, m - n, dim=2).reshape(out_f, in_f)


def make_mask(scores: torch.Tensor, pattern: Pattern, per_row: bool) -> torch.Tensor:
    if pattern.is_nm:
        return nm_mask(scores, pattern.n, pattern.m)
    return unstructured_mask(scores, pattern.ratio, per_row)
