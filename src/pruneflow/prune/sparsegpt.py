"""SparseGPT (Frantar & Alistarh, 2023): prune a linear layer and update its kept weights.

Optimal Brain Surgeon, column by column, with the inverse Hessian H⁻¹ of the layer-wise
least-squares problem min ‖WX − ŴX‖² (H = 2XᵀX/n). Columns are visited left to right in
blocks of ``blocksize``: pruning column j leaves an error that is spread over the columns to its
right through row j of the upper Cholesky factor of H⁻¹, within the block at once and onto the
rest of the matrix once per block (the "lazy batch" update). The mask is chosen as the pass
goes, by the OBS saliency w² / [H⁻¹]_jj² on the weights as updated so far:

- unstructured ``ratio``: at the start of each block, the lowest-saliency ``int(out · blocksize · ratio)``
  weights of the whole [out, blocksize] block region;
- N:M: in every group of M consecutive columns, the M − N lowest-saliency weights of each row.
"""

from __future__ import annotations

import contextlib
from typing import NamedTuple

import torch

from pruneflow.core import fallbacks
from pruneflow.prune.masks import Pattern, lowest


def inverse_hessian_factor(gram: torch.Tensor, percdamp: float = 0.01) -> tuple[torch.Tensor, torch.Tensor]:
    """Upper Cholesky factor U of H⁻¹ (H⁻¹ = UᵀU) for H = ``gram`` [in, in] (any positive scale).

    Returns (U [in, in] float32, or float64 for a float64 gram; dead [in] bool). Dead inputs (never nonzero,
    diag 0) get a unit diagonal so H stays invertible; ``percdamp`` × mean(diag H) is added to the diagonal.
    """
    lower_inv, dead = reversed_inverse_factor(gram, percdamp)
    return lower_inv.flip(0, 1), dead


def reversed_inverse_factor(gram: torch.Tensor, percdamp: float = 0.01, overwrite: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """L⁻¹ for JHJ = LLᵀ (J the reversal of the inputs), and the dead inputs: U = J L⁻¹ J is
    :func:`inverse_hessian_factor`'s factor, which :func:`sparsegpt_prune` reads a band of rows at a time, so
    no flipped copy of the whole matrix is made. ``overwrite``: the result is written into ``gram``'s memory
    (a [in, in] matrix fewer at the peak; the caller's gram is lost).
    """
    # Reversing the input order turns the upper factor of H⁻¹ into an inverted lower factor of H:
    # one factorisation instead of three.
    with one_cpu_thread(gram.device):
        return _reversed_inverse_factor(gram, percdamp, overwrite)


@contextlib.contextmanager
def one_cpu_thread(device):
    """LAPACK's threaded Cholesky and triangular solve round differently with each thread count (1e-6 on
    the factor), which moved SparseGPT's 2:4 perplexity by several percent; on the CPU they run on one
    thread, so the result is the same whatever ``torch.get_num_threads()`` (the workflow's jobs use one)."""
    threads = torch.get_num_threads()
    if torch.device(device).type != "cpu" or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _reversed_inverse_factor(gram: torch.Tensor, percdamp: float, overwrite: bool) -> tuple[torch.Tensor, torch.Tensor]:
    dead = torch.diagonal(gram).to(torch.promote_types(gram.dtype, torch.float32)) == 0  # in the input order
    if dead_count := int(dead.sum()):
        fallbacks.note("dead_inputs", f"{dead_count} of {dead.numel()} inputs were never nonzero in calibration: unit "
                       "Hessian diagonal there, their weights set to zero (every layer reading this input)", dead_count)
    h = _flipped(gram, dead)
    damp = percdamp * torch.diagonal(h).mean()
    info = torch.empty((), dtype=torch.int32, device=h.device)
    damps = []
    for raised in range(5):
        damps.append(damp)
        torch.diagonal(h).add_(damp)
        torch.linalg.cholesky_ex(h, out=(h, info))  # in place: h becomes its lower factor (the same values)
        if info == 0:
            break
        h = _flipped(gram, dead)  # the failed factorisation overwrote h: rebuilt with the dampening so far
        for d in damps:
            torch.diagonal(h).add_(d)
        damp = damp * 10  # not positive definite in float32: damp more, as some reimplementations do
    else:
        raise ValueError(f"SparseGPT: the Hessian is not positive definite even with dampening {damp:.3g}")
    if raised:
        fallbacks.note("dampening_raised", f"the Hessian was not positive definite in {h.dtype}: dampening multiplied by 10 "
                       f"{raised} time(s), {float(sum(damps)):.3g} added to its diagonal in all ({percdamp:g} × its mean "
                       f"at first; every layer reading this input)", raised)
    lower = h
    del h
    # L⁻¹ solved into the identity in place (in the gram's memory when it may be overwritten): two [in, in]
    # matrices at most, the gram's included. Both are column-major (transposed views), the layout LAPACK works
    # in, so in place gives the values a new output would.
    if overwrite and gram.is_contiguous():
        lower_inv = gram.t().zero_()
        torch.diagonal(lower_inv).fill_(1)
    else:
        lower_inv = torch.eye(lower.shape[0], dtype=lower.dtype, device=lower.device).t()
    torch.linalg.solve_triangular(lower, lower_inv, upper=False, out=lower_inv)
    return lower_inv, dead


def _flipped(gram: torch.Tensor, dead: torch.Tensor) -> torch.Tensor:
    """J·gram·J (J the reversal) in at least float32, a unit diagonal at dead inputs; a new matrix (gram is left
    untouched), column-major: the layout LAPACK factors in, so the factorisation can run in place. Copied in
    bands of rows, so no second whole matrix is made on the way."""
    n = gram.shape[0]
    h = torch.empty(n, n, dtype=torch.promote_types(gram.dtype, torch.float32), device=gram.device).t()
    rows = max(1, 2**20 // max(1, n))  # bands of about 4 MiB
    for start in range(0, n, rows):
        stop = min(start + rows, n)
        h[start:stop] = gram[n - stop:n - start].flip(0, 1)
    dead = dead.flip(0)
    h[dead, dead] = 1
    return h


class InverseHessian(NamedTuple):
    """H⁻¹'s factor as :func:`sparsegpt_prune` reads it. It depends on the input alone, so the linears that read
    one input (q/k/v, gate/up) share one: one factorisation, not three."""

    lower_inv: torch.Tensor  # L⁻¹ for JHJ = LLᵀ (see reversed_inverse_factor)
    dead: torch.Tensor  # [in] bool: inputs that were never nonzero

    @classmethod
    def of(cls, gram: torch.Tensor, weight: torch.Tensor, percdamp: float = 0.01, consume: bool = False) -> "InverseHessian":
        """The factor for pruning ``weight`` (its device; float32, float64 if weight or gram is). ``consume``: the
        gram's memory may hold it (the caller's last use of the gram)."""
        h = gram.to(weight.device, solve_dtype(weight, gram))
        return cls(*reversed_inverse_factor(h, percdamp, overwrite=consume or h.data_ptr() != gram.data_ptr()))


def solve_dtype(weight: torch.Tensor, gram: torch.Tensor) -> torch.dtype:
    """float32, or float64 when the weight or the Gram is (the exact arbiter)."""
    return torch.promote_types(torch.promote_types(weight.dtype, gram.dtype), torch.float32)


@torch.no_grad()
def sparsegpt_prune(
    weight: torch.Tensor, gram: torch.Tensor | InverseHessian, pattern: Pattern, blocksize: int = 128,
    percdamp: float = 0.01, consume: bool = False,
) -> torch.Tensor:
    """Prune ``weight`` [out, in] in place (any float dtype; the math is float32, float64 if weight or gram is:
    the exact arbiter) and update the kept weights.

    ``gram`` [in, in] is XᵀX over the calibration tokens (``InputStats(gram=True).gram``), or its
    :class:`InverseHessian` (``percdamp`` was applied when it was made); ``consume``: the gram's memory is reused
    for the inverse factor (the caller's last use of it). Returns the keep-mask [out, in] (bool, True = kept).
    """
    out_f, in_f = weight.shape
    factor = gram if isinstance(gram, InverseHessian) else None
    shape = tuple((factor.lower_inv if factor else gram).shape)
    if shape != (in_f, in_f):
        raise ValueError(f"SparseGPT: gram has shape {shape}, expected ({in_f}, {in_f}) for weight {tuple(weight.shape)}")
    if blocksize < 1:
        raise ValueError(f"SparseGPT: blocksize={blocksize} must be positive")
    pattern.check(in_f)
    if pattern.is_nm:
        # A group of M columns must not straddle two blocks.
        blocksize = max(pattern.m, blocksize // pattern.m * pattern.m)

    if factor is None:
        factor = InverseHessian.of(gram, weight, percdamp, consume)
    elif factor.lower_inv.dtype != solve_dtype(weight, factor.lower_inv):
        raise ValueError(f"SparseGPT: a {weight.dtype} weight needs a {solve_dtype(weight, factor.lower_inv)} factor, "
                         f"got {factor.lower_inv.dtype}; make it with InverseHessian.of(gram, weight)")
    lower_inv, dead = factor
    dtype = lower_inv.dtype
    # Work on Wᵀ so that a column of W is a contiguous row: the column loop below then costs two
    # small kernels per column (an elementwise product and a rank-1 update), not eight.
    wt = weight.detach().to(dtype).t().contiguous()
    wt[dead] = 0
    pruned = torch.zeros(in_f, out_f, dtype=torch.bool, device=wt.device)

    for i1 in range(0, in_f, blocksize):
        i2 = min(i1 + blocksize, in_f)
        hinv_rows = lower_inv[in_f - i2:in_f - i1].flip(0, 1)  # rows i1..i2 of H⁻¹'s factor U = J L⁻¹ J
        w1, hinv1, mask1 = wt[i1:i2], hinv_rows[:, i1:i2], pruned[i1:i2]  # views: edits land in wt, pruned
        d1 = torch.diagonal(hinv1).unsqueeze(1)
        if not pattern.is_nm:
            # Exactly int(numel · ratio) per block (the reference's `<=` threshold prunes one more, even at 0%).
            k = int(w1.numel() * pattern.ratio)
            mask1.copy_(lowest((w1.pow(2) / d1.pow(2)).reshape(-1), k, dim=0).view_as(mask1))
        # err = (w − q) / [H⁻¹]_ii with q the pruned column: w · (pruned / [H⁻¹]_ii), precomputed per block.
        scale1 = mask1 / d1
        err1 = torch.empty_like(w1)
        d1_squared = d1.pow(2) if pattern.is_nm else None  # per block: the group loop below runs per M columns
        # the rows as views made once per block: per column, the loop then indexes a tuple, not a tensor
        w_rows, scale_rows, err_rows, hinv1_rows = w1.unbind(0), scale1.unbind(0), err1.unbind(0), hinv1.unbind(0)
        for i in range(i2 - i1):
            if pattern.is_nm and i % pattern.m == 0:
                rows = slice(i, i + pattern.m)
                mask1[rows] = lowest(w1[rows].pow(2) / d1_squared[rows], pattern.m - pattern.n, dim=0)
                torch.div(mask1[rows], d1[rows], out=scale1[rows])
            torch.mul(w_rows[i], scale_rows[i], out=err_rows[i])
            # OBS update of the not-yet-visited columns of the block.
            w1[i + 1 :].addr_(hinv1_rows[i][i + 1 :], err_rows[i], alpha=-1)
        w1.masked_fill_(mask1, 0)
        wt[i2:].sub_(hinv_rows[:, i2:].t() @ err1)

    weight.copy_(wt.t().to(weight.dtype))
    return ~pruned.t()
