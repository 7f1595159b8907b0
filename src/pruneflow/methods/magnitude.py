"""Magnitude pruning: score |W_ij|, compared across the whole matrix (magnitude) or within each row (magnitude_row)."""

from pruneflow.spec.registry import Entry, register


def scores(weight, stats=None):
    """|W| [out, in] in float32; no statistics."""
    return weight.abs().float()


ENTRY = register(Entry("criterion", "magnitude", "pruneflow.methods.magnitude:scores", options={"per_row": False},
                       doc="|W_ij|, one threshold per matrix (the baseline of every paper)"))
ROW_ENTRY = register(Entry("criterion", "magnitude_row", "pruneflow.methods.magnitude:scores", options={"per_row": True},
                           doc="|W_ij|, compared within each output row"))
