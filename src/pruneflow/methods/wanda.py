"""Wanda (Sun et al., ICLR 2024): score |W_ij| · ‖X_j‖₂, compared per output row (wanda) or per matrix (wanda_matrix)."""

from pruneflow.spec.registry import Entry, register


def wanda_scores(weight, col_norms):
    """|W_ij| · ‖X_j‖₂ [out, in] (Wanda, eq. 1); float64 norms (the arbiter) give float64 scores."""
    return weight.abs().to(col_norms.dtype) * col_norms.reshape(1, -1)


def scores(weight, stats):
    return wanda_scores(weight, stats.col_norms)


NEEDS = {"calibration", "input_norms"}
ENTRY = register(Entry("criterion", "wanda", "pruneflow.methods.wanda:scores", needs=NEEDS, options={"per_row": True},
                       doc="|W_ij| · ‖X_j‖₂, compared per output row (Wanda, ICLR 2024)"))
MATRIX_ENTRY = register(Entry("criterion", "wanda_matrix", "pruneflow.methods.wanda:scores", needs=NEEDS,
                              options={"per_row": False}, doc="Wanda's score, one threshold per matrix (its ablation)"))
