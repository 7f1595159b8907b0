"""Bias compensation: the removed input channels x_R of the output projection replaced by their calibration mean,
b' = b + W_R E[x_R] (LIAR's bias-only ablation; LIAR with B = 0). Needs a bias on the output projection."""

from pruneflow.spec.registry import Entry, register


def fit(stats, keep, removed, *, consume=False):
    """(no coefficients, c = E[x_R] [r]) in float64."""
    return None, stats.mean.cpu()[removed]


ENTRY = register(Entry("structured_repair", "bias", "pruneflow.methods.bias_compensation:fit", needs={"calibration", "channel_means"},
                       doc="the removed channels' calibration mean folded into the bias (bias compensation)"))
