"""Uniform allocation: every block at the requested sparsity (no token in the method id, no artifact)."""

from pruneflow.spec.registry import Entry, register


def allocate(model, cache, sparsity, sizes):
    """Every block's sparsity: the requested one."""
    return {"block_sparsities": [sparsity] * len(sizes)}


ENTRY = register(Entry("allocation", "uniform", "pruneflow.methods.uniform:allocate", options={"implicit": True},
                       doc="every block at the requested sparsity"))
