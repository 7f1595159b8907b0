"""ALPS (Meng et al., "ALPS: Improved Optimization for Highly Sparse One-Shot Pruning of LLMs", NeurIPS 2024).

The layer's reconstruction min ‖XW − XŴ‖² under the pattern's ℓ0 (or N:M) constraint, solved by ADMM on the damped
Gram H = XᵀX + λI (λ = ``percdamp`` · mean diag, as SparseGPT's), scaled to a unit diagonal (Ĥ = S⁻¹HS⁻¹,
S = diag(H)^½, weights Z = WS): with Z₀ the dense weights,

    Z ← (Z₀Ĥ − V + ρD)(Ĥ + ρI)⁻¹        (a ridge step; (Ĥ + ρI)⁻¹ from Ĥ's eigendecomposition)
    D ← P(Z + V/ρ)                      (P: keep the largest |·| the pattern allows)
    V ← V + ρ(Z − D)

ρ grows with how fast the support still changes, checked every ``update_every`` iterations (the reference's
schedule: ×1.3 above 10 % of the kept weights, ×1.2 above 0.5 %, ×1.1 on any change once growing; at first, no
change divides ρ by 5 and a small change also restarts from Z₀); ADMM stops when the support is still, or after
``switch_iteration`` once it changes by under 0.03 %. Then P(Z)'s support is fixed and the kept weights are solved
by ``pcg_iterations`` of conjugate gradients on ZĤ = Z₀Ĥ over the support (preconditioned by the unit diagonal).
Unstructured: exactly int(numel · ratio) pruned over the whole matrix, as the reference's one global top-k.
"""

from __future__ import annotations

from typing import NamedTuple

from pruneflow.spec.registry import Entry, Param, Solver, register


class AlpsState(NamedTuple):
    """What depends on the input alone (shared by the linears that read one input)."""

    gram: object  # Ĥ [in, in]: the damped Gram scaled to a unit diagonal
    scale: object  # S [in]: sqrt of the damped Gram's diagonal
    eigenvalues: object  # Ĥ = Q diag(L) Qᵀ
    eigenvectors: object


def prepare(gram, weight, *, percdamp: float = 0.01, **_solve_settings) -> AlpsState:
    """Ĥ and its eigendecomposition from ``gram`` [in, in] (XᵀX, any positive scale) on ``weight``'s device, float32
    (float64 when the weight or Gram is). Inputs never nonzero get a unit diagonal, as SparseGPT's."""
    import torch

    from pruneflow.prune.sparsegpt import solve_dtype

    dtype = solve_dtype(weight, gram)
    h = gram.to(weight.device, torch.float64, copy=True)
    diag = torch.diagonal(h)
    diag[diag == 0] = 1
    diag.add_(percdamp * diag.mean())
    scale = diag.sqrt()
    h /= scale[:, None] * scale[None, :]
    eigenvalues, eigenvectors = torch.linalg.eigh(h)
    return AlpsState(h.to(dtype), scale.to(dtype), eigenvalues.to(dtype), eigenvectors.to(dtype))


def _support(z, pattern):
    from pruneflow.prune.masks import make_mask

    return make_mask(z.abs(), pattern, per_row=False)


def solve(weight, state: AlpsState, pattern, *, rho: float = 0.1, max_iterations: int = 300, update_every: int = 3,
          switch_iteration: int = 30, pcg_iterations: int = 10, pcg_rtol: float = 1e-4, percdamp=None):
    """Prune ``weight`` [out, in] in place and update its kept weights; returns the keep-mask [out, in] (bool).
    (``percdamp`` was applied by :func:`prepare`.)"""
    import torch

    hat, scale, eigenvalues, q = state
    if hat.shape != (weight.shape[1],) * 2:
        raise ValueError(f"ALPS: state for {hat.shape[0]} inputs, weight {tuple(weight.shape)}")
    if rho <= 0 or max_iterations < 0 or update_every < 1 or pcg_iterations < 0:
        raise ValueError(f"ALPS: rho={rho} must be > 0, max_iterations={max_iterations} ≥ 0, "
                         f"update_every={update_every} ≥ 1, pcg_iterations={pcg_iterations} ≥ 0")
    pattern.check(weight.shape[1])
    z0 = weight.detach().to(hat.dtype) * scale
    target = z0 @ hat  # Z₀Ĥ
    kept = z0.numel() * pattern.n // pattern.m if pattern.is_nm else z0.numel() - int(z0.numel() * pattern.ratio)

    def ridge(r):
        return (q / (eigenvalues + r)) @ q.T

    z, v, support = z0.clone(), torch.zeros_like(z0), _support(z0, pattern)
    d = z0 * support
    last, growing, inverse = support, False, ridge(rho)
    for i in range(max_iterations):
        z = (target - v + rho * d) @ inverse
        support = _support(z + v / rho, pattern)
        d = (z + v / rho) * support
        v += rho * (z - d)
        if (i + 1) % update_every:
            continue
        change = int((support != last).sum())
        if change > 0.1 * kept:
            rho, growing = rho * 1.3, True
        elif change > 0.005 * kept:
            rho, growing = rho * 1.2, True
        elif change and growing:
            rho *= 1.1
        elif change:  # barely moving before ρ ever grew: a smaller ρ, from the start
            rho /= 5
            z, v, d = z0.clone(), torch.zeros_like(z0), z0 * _support(z0, pattern)
        elif growing:
            break
        else:
            rho /= 5
        last, rho = support, min(rho, 1e6)
        inverse = ridge(rho)
        if i >= switch_iteration and change < 0.0003 * kept:
            break

    keep = _support(z, pattern)
    z = _conjugate_gradients(hat, target * keep, z * keep, keep, pcg_iterations, pcg_rtol)
    weight.copy_((z / scale).to(weight.dtype))
    return keep


def _conjugate_gradients(a, b, x, mask, iterations, rtol):
    """Solve x a = b (a symmetric positive definite [in, in]) for every row of x [out, in] over ``mask`` (x is 0 off
    it); each row has its own step sizes."""
    import torch

    r = (b - x @ a) * mask
    p, rr = r.clone(), (r * r).sum(1, keepdim=True)
    stop = rtol * b.norm(dim=1, keepdim=True)
    for _ in range(iterations):
        if (rr.sqrt() <= stop).all():
            break
        ap = p @ a
        alpha = rr / (p * ap).sum(1, keepdim=True).clamp_min(torch.finfo(a.dtype).tiny)
        x += alpha * p
        r -= alpha * ap * mask
        rr, previous = (r * r).sum(1, keepdim=True), rr
        p = r + rr / previous.clamp_min(torch.finfo(a.dtype).tiny) * p
    return x


SOLVER = Solver(prepare, solve)
ENTRY = register(Entry(
    "solver", "alps", "pruneflow.methods.alps:SOLVER", needs={"calibration", "gram"},
    params=(Param("percdamp", 0.01, float, minimum=0.0, maximum=1.0, doc="damping, a fraction of mean(diag H)"),
            Param("rho", 0.1, float, minimum=1e-9, doc="ADMM's initial penalty ρ (the reference's 0.1)"),
            Param("max_iterations", 300, int, minimum=0, doc="ADMM iterations at most"),
            Param("update_every", 3, int, minimum=1, doc="iterations between support checks and ρ updates"),
            Param("switch_iteration", 30, int, minimum=0, doc="after it, ADMM stops once the support changes < 0.03 %"),
            Param("pcg_iterations", 10, int, minimum=0, doc="conjugate-gradient steps on the final support"),
            Param("pcg_rtol", 1e-4, float, minimum=0.0, doc="they stop early below this relative residual")),
    # float64 Ĥ and Q while prepared, float32 Ĥ, Q, (Ĥ + ρI)⁻¹; Z₀, Z₀Ĥ, Z, D, V and a temporary
    memory=lambda shape: 8 * 3 * shape["ffn"] ** 2 + 4 * 6 * shape["hidden"] * shape["ffn"],
    doc="ADMM under the ℓ0 / N:M constraint, then conjugate gradients on the support (ALPS, NeurIPS 2024)",
))
