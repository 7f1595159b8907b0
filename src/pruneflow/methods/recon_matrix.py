"""recon:matrix — each linear layer alone, a convex least-squares problem solved in closed form per output row on
the kept inputs: w_r = (X_Kᵀ X_K + λI)⁻¹ (X_Kᵀ y_r + λ w_r,dense), from the Gram XᵀX (A Free Lunch in LLM Compression)."""

from pruneflow.spec.recovery import CLOSED_FORM_KEYS, RECONSTRUCTION, UNIT_MEMORY, recovery_entry
from pruneflow.spec.registry import register


def reconstruct(ctx, calib_ids):
    """Every linear of every block, in forward order (:func:`pruneflow.recover.reconstruct.reconstruct_matrices`)."""
    from pruneflow.recover.reconstruct import ReconstructionError, reconstruct_matrices

    if ctx.cfg.loss != "mse":
        raise ReconstructionError(f"granularity matrix (closed form) minimises the squared error; loss {ctx.cfg.loss!r} needs matrix-adam")
    # the closed form only sums Grams: chunks larger than a training batch are faster
    return reconstruct_matrices(ctx, calib_ids, solve, chunk=max(ctx.cfg.batch_size, 8))


def solve(ctx, layer, dense, keep, xs, zs, gram, cross, name) -> tuple[int, int]:
    """The ridge solution written into ``layer``; ``ctx.damp`` the ridge factor, ``ctx.solver`` cg or cholesky."""
    import torch

    from pruneflow.recover.least_squares import masked_least_squares

    with torch.no_grad():
        ctx.arch.weight(layer).copy_(masked_least_squares(dense, keep, gram, cross, ctx.damp, ctx.solver))
    return 0, int(keep.sum())


ENTRY = register(recovery_entry(
    RECONSTRUCTION, "matrix", "pruneflow.methods.recon_matrix:reconstruct", settings=CLOSED_FORM_KEYS + ("targets",),
    memory=UNIT_MEMORY, needs=("calibration", "gram"), closed_form=True,
    doc="each linear alone, least squares in closed form per output row (ridge λ = damping × mean diag)",
))
