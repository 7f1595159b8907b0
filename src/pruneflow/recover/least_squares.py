"""Closed-form reconstruction of one linear layer: masked least squares from Gram matrices.

The ``matrix`` granularity of :mod:`pruneflow.recover.reconstruct` solves, for every output row, a convex
problem on the row's kept inputs; this module holds that solver and the matching output error.
"""

from __future__ import annotations

import torch

from pruneflow.core import fallbacks

SOLVERS = ("cholesky", "cg")


@torch.no_grad()
def masked_least_squares(
    dense_weight: torch.Tensor,
    keep: torch.Tensor,
    gram: torch.Tensor,
    cross: torch.Tensor | None = None,
    damp: float = 0.01,
    solver: str = "cholesky",
    tol: float = 3e-3,
    max_iter: int = 200,
    max_chunk_bytes: int = 2**28,
) -> torch.Tensor:
    """Per output row r, the kept weights minimising Σ_t (w·x_t − w_dense,r·z_t)² + λ‖w − w_dense,r‖²_K.

    ``dense_weight`` and ``keep`` are [out, in]; ``gram`` = Σ x xᵀ and ``cross`` = Σ x zᵀ are
    [in, in] (``cross`` defaults to ``gram``: targets from the same inputs, z = x). λ = ``damp`` ·
    mean(diag(gram)) pulls ill-determined weights towards their dense values. The normal equations
    of row r are (G_KK + λI) w_K = (C w_dense,r + λ w_dense,r)_K.

    ``solver``: ``cholesky`` solves them exactly, rows with the same number of kept weights
    together (cost out·k³/3); ``cg`` runs Jacobi-preconditioned conjugate gradients on all rows at
    once from the pruned weights (one [out, in] × [in, in] product per iteration) until the residual
    falls below ``tol`` times its start: on SmolLM2 (tol 3e-3, ~20-40 iterations) the output error is
    within 0.01% of the exact one, 2-6x faster on a CPU. The result is exactly zero outside ``keep``.
    """
    if solver not in SOLVERS:
        raise ValueError(f"solver {solver!r}: allowed {', '.join(SOLVERS)}")
    w_d = dense_weight.float()
    gram = gram.float()
    cross = gram if cross is None else cross.float()
    lam = damp * gram.diagonal().mean().clamp_min(1e-12)
    rhs = w_d @ cross.T + lam * w_d  # row r: Σ_t (w_d,r·z_t) x_t + λ w_d,r
    if solver == "cg":
        return _masked_cg(w_d, keep, gram, rhs, lam, tol, max_iter).to(dense_weight.dtype)
    out = torch.zeros_like(w_d)
    counts = keep.sum(1)
    # Kept input indices of every row, ascending (stable sort puts True before False after negation).
    order = torch.sort((~keep).to(torch.int8), dim=1, stable=True).indices
    for k in counts.unique().tolist():
        if k == 0:
            continue
        rows = (counts == k).nonzero().flatten()
        chunk = max(1, max_chunk_bytes // (4 * k * k))
        for part in rows.split(chunk):
            idx = order[part, :k]  # [R, k]
            a = gram[idx.unsqueeze(2), idx.unsqueeze(1)]  # [R, k, k]
            a.diagonal(dim1=1, dim2=2).add_(lam)
            b = rhs[part.unsqueeze(1), idx].unsqueeze(2)  # [R, k, 1]
            chol, info = torch.linalg.cholesky_ex(a)
            if bool(failed := int((info != 0).sum())):  # not positive definite (λ = 0 with dead inputs): least squares
                fallbacks.note("least_squares", f"{failed} of {len(part)} rows' kept-weight systems not positive definite: "
                               "solved by least squares", count=failed)
                sol = torch.linalg.lstsq(a, b).solution
            else:
                # Two triangular solves: far faster on CPU than cholesky_solve for batched systems.
                y = torch.linalg.solve_triangular(chol, b, upper=False)
                sol = torch.linalg.solve_triangular(chol.mT, y, upper=True)
            out[part.unsqueeze(1), idx] = sol.squeeze(2)
    return out.to(dense_weight.dtype)


def _masked_cg(w_d, keep, gram, rhs, lam, tol, max_iter) -> torch.Tensor:
    """Preconditioned CG for every row's system at once; rows are independent (per-row step sizes)."""
    mask = keep.to(w_d.dtype)
    apply = lambda p: (p @ gram + lam * p) * mask  # noqa: E731  (gram is symmetric)
    diag = (gram.diagonal() + lam).unsqueeze(0)
    x = w_d * mask
    r = rhs * mask - apply(x)
    z = r / diag
    p = z.clone()
    rz = (r * z).sum(1, keepdim=True)
    start = r.norm()
    for _ in range(max_iter):
        if r.norm() <= tol * start:
            break
        ap = apply(p)
        alpha = rz / (p * ap).sum(1, keepdim=True).clamp_min(1e-30)
        x += alpha * p
        r -= alpha * ap
        z = r / diag
        rz_new = (r * z).sum(1, keepdim=True)
        p = z + rz_new / rz.clamp_min(1e-30) * p
        rz = rz_new
    return x * mask


@torch.no_grad()
def linear_output_error(weight, dense_weight, gram, cross=None, target_gram=None, tokens: int = 1) -> float:
    """Mean squared error per output entry between x ↦ W x and z ↦ W_dense z over the tokens the Grams sum.

    [Σ_t ‖W x_t − W_d z_t‖²] / (tokens · out) from ``gram`` = Σ x xᵀ, ``cross`` = Σ x zᵀ and
    ``target_gram`` = Σ z zᵀ (both default to ``gram``: z = x); the three-term form in float64.
    """
    if cross is None:  # one quadratic form: no cancellation, float32 products suffice
        diff = (weight - dense_weight).float()
        total = ((diff @ gram.float()) * diff).double().sum()
    else:
        w, w_d, g = weight.double(), dense_weight.double(), gram.double()
        total = ((w @ g) * w).sum() - 2 * ((w @ cross.double()) * w_d).sum() + ((w_d @ target_gram.double()) * w_d).sum()
    return float(total.clamp_min(0)) / (tokens * weight.shape[0])
