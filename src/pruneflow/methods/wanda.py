"""Wanda (Sun et al., ICLR 2024): score |W_ij| · ‖X_j‖₂, compared per output row (wanda) or per matrix (wanda_matrix)."""

from pruneflow.spec.registry import Entry, register


def scores(weight, stats):
    """|W_ij| · ‖X_j‖₂ [out, in] (Wanda, eq. 1); float64 norms (the arbiter) give float64 scores."""
    norms = stats.col_norms
    return weight.abs().to(norms.dtype) * norms.reshape(1, -1)


NEEDS = {"calibration", "input_norms"}
ENTRY = register(Entry("criterion", "wanda", "pruneflow.methods.wanda:scores", needs=NEEDS, options={"per_row": True},
                       doc="|W_ij| · ‖X_j‖₂, compared per output row (Wanda, ICLR 2024)"))
MATRIX_ENTRY = register(Entry("criterion", "wanda_matrix", "pruneflow.methods.wanda:scores", needs=NEEDS,
                              options={"per_row": False}, doc="Wanda's score, one threshold per matrix (its ablation)"))
