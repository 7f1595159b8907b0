"""RIA (Zhang et al., ICLR 2024, "Plug-and-Play"): relative importance times activations,
score_ij = (|W_ij| / Σ_k |W_kj| + |W_ij| / Σ_k |W_ik|) · ‖X_j‖₂^a.

A weight counts relative to its input channel (column) and to its output neuron (row). The reference compares the
scores across the whole matrix (its default); ria_row compares them per output row (its --per_outneuron). Its
‖X_j‖ is divided by √(samples): a factor common to a layer's scores, which leaves every mask as it is. For N:M,
``permutation`` forms the groups over a channel permutation (the paper's section 4; prune/permutation.py).
"""

from pruneflow.spec.patterns import PERMUTATIONS
from pruneflow.spec.registry import Entry, Param, register


def scores(weight, stats, *, a):
    """RIA's scores [out, in] in the input norms' dtype (float64 norms: float64 scores). A row or column of zeros
    scores 0, not 0/0."""
    norms = stats.col_norms
    w = weight.abs().to(norms.dtype)
    column, row = w.sum(dim=0, keepdim=True).clamp_min(1e-30), w.sum(dim=1, keepdim=True).clamp_min(1e-30)
    return (w / column + w / row) * norms.reshape(1, -1).pow(a)


PARAMS = (Param("a", 0.5, float, minimum=0.0, maximum=2.0, doc="exponent of the input norm ‖X_j‖₂ (the paper: 0.5)"),
          Param("permutation", "none", str, choices=PERMUTATIONS, doc="N:M only: groups formed over a channel permutation, "
                "heuristic (channels dealt by importance) or lsa (then linear sum assignment: the paper's)"))
NEEDS = {"calibration", "input_norms"}
ENTRY = register(Entry("criterion", "ria", "pruneflow.methods.ria:scores", needs=NEEDS, params=PARAMS,
                       options={"per_row": False, "nm_permutation": "permutation"},
                       doc="relative importance × ‖X_j‖₂^a, one threshold per matrix (RIA, ICLR 2024)"))
ROW_ENTRY = register(Entry("criterion", "ria_row", "pruneflow.methods.ria:scores", needs=NEEDS, params=PARAMS,
                           options={"per_row": True, "nm_permutation": "permutation"},
                           doc="RIA's score, compared per output row (the reference's --per_outneuron)"))
