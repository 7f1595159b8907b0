"""SparseGPT (Frantar & Alistarh, ICML 2023) as a solver: OBS with blocked column updates (prune/sparsegpt.py)."""

from pruneflow.spec.registry import Entry, Param, Solver, register


def prepare(gram, weight, *, blocksize, percdamp):
    """H⁻¹'s factor [in, in] from the Gram XᵀX (its memory reused), shared by the linears reading one input."""
    from pruneflow.prune.sparsegpt import InverseHessian

    return InverseHessian.of(gram, weight, percdamp, consume=True)


def solve(weight, state, pattern, *, blocksize, percdamp):
    """Prune ``weight`` [out, in] in place, updating the kept weights; returns the keep-mask."""
    from pruneflow.prune.sparsegpt import sparsegpt_prune

    return sparsegpt_prune(weight, state, pattern, blocksize, percdamp)


SOLVER = Solver(prepare, solve)
ENTRY = register(Entry(
    "solver", "sparsegpt", "pruneflow.methods.sparsegpt:SOLVER", needs={"calibration", "gram"},
    params=(Param("blocksize", 128, int, minimum=1, doc="columns per lazy-batch block (saliencies compared per block)"),
            Param("percdamp", 0.01, float, minimum=0.0, maximum=1.0, doc="damping, a fraction of mean(diag H)")),
    memory=lambda shape: 4 * shape["ffn"] ** 2,  # one float32 inverse factor of the widest input
    doc="OBS with blocked column updates, the kept weights updated (SparseGPT, ICML 2023)",
))
