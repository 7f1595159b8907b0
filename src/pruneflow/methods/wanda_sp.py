"""Wanda-sp, as FLAP's code scores it: a unit's score is Σ_j ‖X_j‖₂ · Σ_i |W_out[i, j]| over its channels j (the inputs
of the output projection W_out), X_j the channel over the calibration tokens: Wanda's |W_ij|·‖X_j‖ summed over the
output rows (an L1 norm of the column)."""

from pruneflow.spec.registry import Entry, register


def scores(units, stats):
    """One score per unit [units], float64 on the CPU."""
    per_channel = stats.col_norms * units.out_weight.double().abs().sum(0)
    return per_channel.view(units.units, -1).sum(1).cpu()


ENTRY = register(Entry("structured_criterion", "wanda", "pruneflow.methods.wanda_sp:scores", needs={"calibration", "input_norms"},
                       doc="Σ_j ‖X_j‖₂ · ‖W_out[:, j]‖₁ over the unit's channels (Wanda-sp, as FLAP scores it)"))
