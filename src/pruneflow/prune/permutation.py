"""Channel permutation for N:M sparsity (RIA, Zhang et al., ICLR 2024, section 4).

N:M keeps n of every m consecutive input channels per row; which channels share a group is arbitrary, since a layer
whose input channels are permuted, with its inputs, computes the same function (a 2:4 kernel gathers its inputs in
that order). The permutation forms the groups so that they keep as much total score as possible:

1. heuristic allocation: channels ranked by their summed score Σ_i s_ij are dealt into the in/m groups in snake order
   (ranks 0..g-1 to groups 0..g-1, ranks g..2g-1 back from g-1 to 0, ...), so every group holds one channel of each
   importance band and heavy channels are not pruned against one another;
2. linear sum assignment, once per position j of a group (m rounds): the channels at position j are reassigned among
   the groups, the other m-1 of each group fixed, by the exact assignment that maximises the retained score.

The masks are chosen in permuted order and mapped back (prune/masks.py ``nm_mask(order=...)``): no weight moves.
"""

from __future__ import annotations

import torch

from pruneflow.prune.masks import nm_mask


def retained(scores: torch.Tensor, n: int, m: int, order: torch.Tensor | None = None) -> float:
    """Total score kept by the n:m mask of ``scores`` whose groups are formed over ``order`` (None: the layer's own)."""
    return float(scores.mul(nm_mask(scores, n, m, order)).sum(dtype=torch.float64))


def heuristic_order(scores: torch.Tensor, m: int) -> torch.Tensor:
    """Channels ranked by summed score, dealt into groups in snake order: group k holds ranks k, 2g-1-k, 2g+k, ..."""
    ranked = scores.sum(dim=0).argsort(descending=True, stable=True).reshape(m, -1)  # row j: importance band j
    ranked[1::2] = ranked[1::2].flip(1)
    return ranked.t().reshape(-1)


def reassign(scores: torch.Tensor, order: torch.Tensor, n: int, m: int, position: int) -> torch.Tensor:
    """``order`` with the channels at ``position`` of each group reassigned among the groups, the rest fixed, so that
    the n:m mask keeps the most total score (an exact linear sum assignment)."""
    from scipy.optimize import linear_sum_assignment

    groups = scores[:, order].reshape(scores.shape[0], -1, m)  # [out, g, m]
    moving = groups[:, :, position]
    fixed = torch.cat([groups[:, :, :position], groups[:, :, position + 1:]], dim=2)
    nth = fixed.topk(n, dim=2).values[:, :, n - 1]  # the n-th highest fixed score of each group, row by row
    # Group b given channel a keeps, per row, its n-1 highest fixed scores plus max(s_a, nth_b) = (s_a + nth_b +
    # |s_a - nth_b|) / 2. Summed over an assignment, every term but the last is the same whatever the pairing, so
    # the best assignment maximises Σ_b ‖s_π(b) - nth_b‖₁.
    gain = l1_distances(nth, moving)  # [g (group b), g (channel a)]
    _, pick = linear_sum_assignment(gain.cpu().numpy(), maximize=True)
    slots = order.reshape(-1, m).clone()
    slots[:, position] = slots[torch.as_tensor(pick, device=order.device), position]
    return slots.reshape(-1)


def l1_distances(a: torch.Tensor, b: torch.Tensor, chunk_elements: int = 2**20) -> torch.Tensor:
    """[g, g] with Σ_r |a[r, i] - b[r, j]| at (i, j), for a, b [rows, g]: a few rows at a time, 4 MiB of float32 each
    (measured 2-4x faster than torch.cdist with p=1 on one CPU core)."""
    a, b, g = a.contiguous(), b.contiguous(), a.shape[1]
    step = max(1, chunk_elements // (g * g))
    out = torch.zeros(g, g, dtype=a.dtype, device=a.device)
    for r in range(0, a.shape[0], step):
        out += (a[r:r + step, :, None] - b[r:r + step, None, :]).abs_().sum(dim=0)
    return out


@torch.no_grad()
def channel_permutation(scores: torch.Tensor, n: int, m: int, refine: bool = True) -> torch.Tensor | None:
    """The input-channel order [in] over which n:m groups keep the most score: the heuristic allocation, then (with
    ``refine``) one linear sum assignment per group position. None where the layer's own order keeps at least as
    much (a check the reference does not make: the result never keeps less than no permutation)."""
    if scores.shape[1] % m:
        raise ValueError(f"pattern {n}:{m}: M={m} does not divide the input dimension {scores.shape[1]}")
    order = heuristic_order(scores, m)
    if refine:
        for position in range(m):
            order = reassign(scores, order, n, m, position)
    return order if retained(scores, n, m, order) > retained(scores, n, m) else None
