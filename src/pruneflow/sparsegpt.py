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

import torch

from .masks import Pattern


def inverse_hessian_factor(gram: torch.Tensor, percdamp: float = 0.01) -> tuple[torch.Tensor, torch.Tensor]:
    """Upper Cholesky factor U of H⁻¹ (H⁻¹ = UᵀU) for H = ``gram`` [in, in] (any positive scale).

    Returns (U [in, in] float32, dead [in] bool). Dead inputs (never nonzero, diag 0) get a unit
    diagonal so H stays invertible; ``percdamp`` × mean(diag H) is added to the diagonal.
    """
    h = gram.detach().float().clone()
    dead = torch.diagonal(h) == 0
    h[dead, dead] = 1
    diag = torch.diagonal(h)  # a view: edits write into h
    damp = percdamp * diag.mean()
    for _ in range(5):
        diag += damp
        lower, info = torch.linalg.cholesky_ex(h)
        if info == 0:
            break
        damp = damp * 10  # not positive definite in float32: damp more, as some reimplementations do
    else:
        raise ValueError(f"SparseGPT: the Hessian is not positive definite even with dampening {damp:.3g}")
    hinv = torch.cholesky_inverse(lower)
    return torch.linalg.cholesky(hinv, upper=True), dead


@torch.no_grad()
def sparsegpt_prune(
    weight: torch.Tensor, gram: torch.Tensor, pattern: Pattern, blocksize: int = 128, percdamp: float = 0.01
) -> torch.Tensor:
    """Prune ``weight`` [out, in] in place (any float dtype; the math is float32) and update the kept weights.

    ``gram`` [in, in] is XᵀX over the calibration tokens (``InputStats(gram=True).gram``).
    Returns the keep-mask [out, in] (bool, True = kept).
    """
    out_f, in_f = weight.shape
    if gram.shape != (in_f, in_f):
        raise ValueError(f"SparseGPT: gram has shape {tuple(gram.shape)}, expected ({in_f}, {in_f}) for weight {tuple(weight.shape)}")
    if blocksize < 1:
        raise ValueError(f"SparseGPT: blocksize={blocksize} must be positive")
    pattern.check(in_f)
    if pattern.is_nm:
        # A group of M columns must not straddle two blocks.
        blocksize = max(pattern.m, blocksize // pattern.m * pattern.m)

    hinv, dead = inverse_hessian_factor(gram.to(weight.device), percdamp)
    w = weight.detach().float().clone()
    w[:, dead] = 0
    pruned = torch.zeros(out_f, in_f, dtype=torch.bool, device=w.device)

    for i1 in range(0, in_f, blocksize):
        i2 = min(i1 + blocksize, in_f)
        w1 = w[:, i1:i2].clone()
        hinv1 = hinv[i1:i2, i1:i2]
        d1 = torch.diagonal(hinv1)
        err1 = torch.zeros_like(w1)
        mask1 = torch.zeros_like(w1, dtype=torch.bool)
        if not pattern.is_nm:
            # Exactly int(numel · ratio) per block (the reference's `<=` threshold prunes one more, even at 0%).
            k = int(w1.numel() * pattern.ratio)
            saliency = (w1.pow(2) / d1.pow(2)).reshape(-1)
            mask1.view(-1)[torch.sort(saliency, stable=True).indices[:k]] = True
        for i in range(i2 - i1):
            if pattern.is_nm and i % pattern.m == 0:
                group = w1[:, i : i + pattern.m].pow(2) / d1[i : i + pattern.m].pow(2)
                lowest = torch.sort(group, dim=1, stable=True).indices[:, : pattern.m - pattern.n]
                mask1[:, i : i + pattern.m].scatter_(1, lowest, True)
            col = w1[:, i]
            q = col.masked_fill(mask1[:, i], 0)
            err = (col - q) / hinv1[i, i]
            # OBS update of the not-yet-visited columns of the block (column i itself becomes q).
            w1[:, i:].sub_(err.unsqueeze(1) * hinv1[i, i:].unsqueeze(0))
            w1[:, i] = q
            err1[:, i] = err
        w[:, i1:i2] = w1
        pruned[:, i1:i2] = mask1
        w[:, i2:].sub_(err1 @ hinv[i1:i2, i2:])

    weight.copy_(w.to(weight.dtype))
    return ~pruned

