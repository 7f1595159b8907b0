"""DSnoT (Zhang et al., "Dynamic Sparse No Training", ICLR 2024): training-free prune-and-grow of a given mask.

Row r's reconstruction error is the output its pruned weights take away, per calibration sample (the reference's
``sum_metric_row``: the sum over a sample's tokens, averaged over samples):

    ε_r = Σ_{j pruned} c_rj,   c_rj = W_rj · s_j,   s_j = Σ_t X_tj / samples.

Each cycle, every row with |ε_r| > ``update_threshold`` grows one pruned weight and prunes one kept weight:

- grow the pruned j with the largest sign(ε_r) · c_rj / Var(X_j)^p (p = ``pow_of_var_regrowing``): it cancels the
  most error for the least input variance;
- prune, unstructured: the kept k with sign(ε_r) · c_rk < 0 and the lowest Wanda score |W_rk|·‖X_k‖;
  N:M: the kept k of j's group with the lowest Wanda score, so that every group keeps N.

A swap is made only if it lowers |ε_r|, and a row stops at its first swap refused (as the reference's update
mask), after ``max_cycles`` at most. Only weights kept by the given mask are pruned and only pruned ones grown, each
once. The weights are never changed: the caller applies the returned mask to the dense weights.
"""

from __future__ import annotations

from pruneflow.spec.patterns import Pattern
from pruneflow.spec.registry import Entry, Param, register


def refine(weight, keep, stats, pattern: Pattern, *, max_cycles: int = 50, update_threshold: float = 0.1,
           pow_of_var_regrowing: float = 1.0):
    """The refined keep-mask [out, in] (bool, a new tensor) of the dense ``weight`` [out, in] under ``keep``; ``stats``:
    the layer's :class:`~pruneflow.core.activations.InputStats` (channel sums, squared sums, samples). Each row keeps
    as many weights as in ``keep`` (every N:M group keeps N)."""
    import torch

    if keep.shape != weight.shape or keep.dtype != torch.bool:
        raise ValueError(f"DSnoT: keep must be a bool mask of the weight's shape {tuple(weight.shape)}, "
                         f"got {keep.dtype} {tuple(keep.shape)}")
    if max_cycles < 0 or update_threshold < 0 or pow_of_var_regrowing < 0:
        raise ValueError(f"DSnoT: max_cycles={max_cycles}, update_threshold={update_threshold}, "
                         f"pow_of_var_regrowing={pow_of_var_regrowing}: each must be ≥ 0")
    if stats.channel_sum is None or not stats.samples:
        raise ValueError("DSnoT needs each input channel's sum over the calibration samples: InputStats collected "
                         "by add() (statistics stored without channel sums cannot serve)")
    pattern.check(weight.shape[1])
    w = weight.detach().double()
    contribution = w * (stats.channel_sum.to(w.device) / stats.samples)  # c_rj
    wanda = w.abs() * stats.col_norms.to(w.device).double()
    grow_score = contribution / stats.channel_var.to(w.device).pow(pow_of_var_regrowing)  # NaN only where c = 0
    keep = keep.clone()
    error = contribution.masked_fill(keep, 0).sum(1)  # ε_r

    out_f = w.shape[0]
    rows = torch.arange(out_f, device=w.device)
    cycles = min(max_cycles, w.shape[1])

    def best(score, allowed):
        """The ``cycles`` highest scores among ``allowed`` per row: (indices, valid) [out, cycles]."""
        values, index = score.masked_fill(~allowed, -torch.inf).topk(cycles, dim=1)
        return index, values > -torch.inf

    grow = [best(grow_score, ~keep & (contribution > 0)), best(-grow_score, ~keep & (contribution < 0))]  # ε > 0, ε < 0
    del grow_score
    if pattern.is_nm:
        prunable = wanda.masked_fill_(~keep, torch.inf)  # the kept weights not pruned yet, by Wanda score
    else:
        prune = [best(-wanda, keep & (contribution < 0)), best(-wanda, keep & (contribution > 0))]
    del wanda
    used = torch.zeros(2, 2, out_f, dtype=torch.long, device=w.device)  # [grow/prune, ε>0/ε<0, row]: candidates used

    def pick(lists, which, side):
        """Each row's next candidate (index, valid) from the list for its sign of ε."""
        at = used[which].gather(0, side[None])[0]
        return tuple(torch.where(side == 0, lists[0][k][rows, at], lists[1][k][rows, at]) for k in (0, 1))

    active = error.abs() > update_threshold
    for _ in range(cycles):
        if not active.any():
            break
        side = (error < 0).long()  # 0: ε > 0, 1: ε < 0
        grown, ok = pick(grow, 0, side)
        if pattern.is_nm:
            start = grown - grown % pattern.m
            group = start[:, None] + torch.arange(pattern.m, device=w.device)
            low, offset = prunable.gather(1, group).min(1)
            pruned, ok = start + offset, ok & low.isfinite()
        else:
            pruned, ok_prune = pick(prune, 1, side)
            ok = ok & ok_prune
        after = error - contribution[rows, grown] + contribution[rows, pruned]
        active = active & ok & (after.abs() < error.abs()) & (error.abs() > update_threshold)
        keep[rows[active], grown[active]] = True
        keep[rows[active], pruned[active]] = False
        if pattern.is_nm:
            prunable[rows[active], pruned[active]] = torch.inf
        error = torch.where(active, after, error)
        used[:, 0] += active & (side == 0)
        used[:, 1] += active & (side == 1)
    return keep


ENTRY = register(Entry(
    "refinement", "dsnot", "pruneflow.methods.dsnot:refine", needs={"calibration", "input_norms", "channel_means"},
    params=(Param("max_cycles", 50, int, minimum=0, doc="prune-and-grow cycles per row at most (the reference's 50)"),
            Param("update_threshold", 0.1, float, minimum=0.0,
                  doc="a row stops once |ε| is at most this, per calibration sample (the reference's 0.1)"),
            Param("pow_of_var_regrowing", 1.0, float, minimum=0.0,
                  doc="growing divides by Var(X_j) to this power (the reference's 1)")),
    memory=lambda shape: 4 * 8 * shape["hidden"] * shape["ffn"],  # float64 W, c, Wanda scores, a temporary
    doc="training-free prune-and-grow of any criterion's mask (DSnoT, ICLR 2024)",
))
