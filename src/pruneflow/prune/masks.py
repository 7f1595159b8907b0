"""Turn scores into keep-masks (True = weight kept) for a sparsity pattern.

Patterns: unstructured at a ratio, compared per output row or over the whole matrix, and N:M.
N:M follows the papers' notation "2:4": in every group of M consecutive weights along the
input dimension, N are kept and M - N pruned (2:4 and 4:8 are both 50% sparse); the groups may be
formed over a permutation of the input channels instead (RIA's, prune/permutation.py).
"""

from __future__ import annotations

import torch

from pruneflow.spec.patterns import Pattern, PatternError, parse_pattern  # noqa: F401 (re-exported)


def lowest(scores: torch.Tensor, k: int, dim: int) -> torch.Tensor:
    """Bool mask of the k lowest scores along ``dim`` (ties broken by index, as a stable sort would)."""
    if k <= 0:
        return torch.zeros_like(scores, dtype=torch.bool)
    if scores.shape[dim] <= 16:  # N:M groups
        # many groups: m passes of comparisons beat a sort (2-4x); a NaN compares false both ways, so a group
        # holding one goes to the sort (which ranks NaN last) to keep exactly k per group
        if scores.numel() >= 1024 * scores.shape[dim] and not scores.isnan().any():
            return _ranks(scores, dim) < k
        idx = torch.sort(scores, dim=dim, stable=True).indices.narrow(dim, 0, k)  # a few: fewer kernels
        return torch.zeros_like(scores, dtype=torch.bool).scatter_(dim, idx, True)
    # Long rows: the k-th value as a threshold is several times faster than a full sort.
    threshold = torch.kthvalue(scores, k, dim=dim, keepdim=True).values
    below = scores < threshold
    ties = scores == threshold
    missing = k - below.sum(dim, keepdim=True)
    return below | (ties & (torch.cumsum(ties, dim) <= missing))


def _ranks(scores: torch.Tensor, dim: int) -> torch.Tensor:
    """Each score's position in a stable ascending sort along a short ``dim`` (uint8): the scores below it,
    plus the equal ones before it. m passes of comparisons for a dim of m, no index tensor, no scatter."""
    by_pos = scores.movedim(dim, 0).contiguous()  # one contiguous slice per position in the group
    m = by_pos.shape[0]
    ranks = torch.zeros(by_pos.shape, dtype=torch.uint8, device=scores.device)
    for j in range(m):
        ranks[:j] += by_pos[j] < by_pos[:j]  # j comes after: it ranks before only if strictly lower
        ranks[j + 1:] += by_pos[j] <= by_pos[j + 1:]  # j comes first: a tie ranks it before too
    return ranks.movedim(0, dim)


def unstructured_mask(scores: torch.Tensor, ratio: float, per_row: bool) -> torch.Tensor:
    """Prune ``ratio`` of the weights: exactly ``int(in * ratio)`` per row, or ``int(numel * ratio)`` per matrix."""
    if per_row:
        return ~lowest(scores, int(scores.shape[1] * ratio), dim=1)
    flat = ~lowest(scores.reshape(-1), int(scores.numel() * ratio), dim=0)
    return flat.view_as(scores)


def nm_mask(scores: torch.Tensor, n: int, m: int, order: torch.Tensor | None = None) -> torch.Tensor:
    """Keep the n highest scores in every group of m consecutive input weights; with ``order`` (a permutation of the
    input channels), in every m consecutive channels of that order, the mask given in the layer's own order."""
    out_f, in_f = scores.shape
    if in_f % m:
        raise PatternError(f"pattern {n}:{m}: M={m} does not divide the input dimension {in_f}")
    if order is not None:
        keep = torch.empty_like(scores, dtype=torch.bool)
        keep[:, order] = nm_mask(scores[:, order], n, m)
        return keep
    groups = scores.reshape(out_f, in_f // m, m)
    return ~lowest(groups, m - n, dim=2).reshape(out_f, in_f)


def make_mask(scores: torch.Tensor, pattern: Pattern, per_row: bool, order: torch.Tensor | None = None) -> torch.Tensor:
    """``order``: the input-channel permutation over which N:M groups are formed (prune/permutation.py)."""
    if pattern.is_nm:
        return nm_mask(scores, pattern.n, pattern.m, order)
    if order is not None:
        raise PatternError(f"pattern {pattern.token}: a channel order forms N:M groups; an unstructured mask does not depend on it")
    return unstructured_mask(scores, pattern.ratio, per_row)
