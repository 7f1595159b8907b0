"""Fluctuation (FLAP, An et al., AAAI 2024; LIAR's criterion): a unit's score is Σ_j Var(X_j) · ‖W_out[:, j]‖₂² over its
channels j (the inputs of the output projection W_out), Var over the calibration tokens: how much the output would move
if the channel were replaced by its mean."""

from pruneflow.spec.registry import Entry, register


def scores(units, stats):
    """One score per unit [units], float64 on the CPU."""
    per_channel = stats.variance * units.out_weight.double().pow(2).sum(0)
    return per_channel.view(units.units, -1).sum(1).cpu()


ENTRY = register(Entry("structured_criterion", "fluctuation", "pruneflow.methods.fluctuation:scores",
                       needs={"calibration", "channel_variance"},
                       doc="Σ_j Var(X_j) · ‖W_out[:, j]‖₂² over the unit's channels (FLAP's fluctuation, LIAR's criterion)"))
