"""recon:matrix-adam — each linear layer alone, the matrix problem of recon:matrix solved by gradient descent
(for comparison with the closed form)."""

from pruneflow.spec.recovery import RECONSTRUCTION, UNIT_KEYS, UNIT_MEMORY, recovery_entry
from pruneflow.spec.registry import register


def reconstruct(ctx, calib_ids):
    from pruneflow.recover.reconstruct import reconstruct_matrices

    return reconstruct_matrices(ctx, calib_ids, solve, chunk=ctx.cfg.batch_size)


def solve(ctx, layer, dense, keep, xs, zs, gram, cross, name) -> tuple[int, int]:
    """Fit W x to W_dense z over the chunks, W masked ([out, in] views); z = x unless the targets are the dense stream's."""
    import torch

    from pruneflow.recover.train import reconstruction_loss, train

    zs = xs if zs is None else zs
    param = layer.weight
    param.requires_grad_(True)

    def loss_fn(i):
        with torch.no_grad():
            target = zs[i] @ dense.T
        return reconstruction_loss(xs[i] @ ctx.arch.weight(layer).T, target, ctx.cfg.loss)

    mask = keep.T if ctx.arch.transposed else keep
    try:
        history = train({name: param}, loss_fn, list(range(len(xs))), ctx.cfg, {name: mask}, desc=f"matrix {name}")
    finally:
        param.requires_grad_(False)
    return history["steps"], history["trainable_params"]


ENTRY = register(recovery_entry(
    RECONSTRUCTION, "matrix_adam", "pruneflow.methods.recon_matrix_adam:reconstruct", spelled="matrix-adam",
    settings=UNIT_KEYS, memory=UNIT_MEMORY, doc="each linear alone, the same least squares by gradient descent",
))
