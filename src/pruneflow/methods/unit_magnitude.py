"""Structured magnitude: a unit (a KV group of heads, or an FFN neuron) scored by the L2 norm of all its weights, the
rows it owns of the input projections and its columns of the output projection (biases not counted). No calibration."""

from pruneflow.spec.registry import Entry, register


def scores(units, stats):
    """One score per unit [units], float64 on the CPU."""
    import torch

    n = units.units
    total = units.out_weight.double().pow(2).sum(0).view(n, -1).sum(1)  # Σ_j ‖W_out[:, j]‖² of each unit's channels
    for name in units.in_names:
        rows_sq = units.in_weight(name).double().pow(2).sum(1)
        for u in range(n):
            total[u] += rows_sq[units.rows(name, torch.tensor([u]))].sum()
    return total.sqrt().cpu()


ENTRY = register(Entry("structured_criterion", "magnitude", "pruneflow.methods.unit_magnitude:scores",
                       doc="L2 norm of the unit's weights (input rows and output columns); no calibration"))
