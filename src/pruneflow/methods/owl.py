"""OWL (Yin et al., ICML 2024): per-block sparsities from the share of outliers in each block's Wanda scores
(prune/allocation.py); spelled ``owl-m<M>-l<lambda>`` in method ids."""

from pruneflow.spec.registry import Entry, Param, register


def allocate(model, cache, sparsity, sizes, *, m, lam):
    """Outlier ratios and block sparsities (spread 2·lam, mean ``sparsity`` weighted by the blocks' ``sizes``)."""
    from pruneflow.prune.allocation import owl_allocation

    return owl_allocation(model, cache, sparsity, m, lam)


ENTRY = register(Entry(
    "allocation", "owl", "pruneflow.methods.owl:allocate", needs={"calibration", "input_norms"},
    params=(Param("m", 5.0, float, minimum=0.0, doc="outlier threshold, a multiple of the block's mean score"),
            Param("lam", 0.08, float, minimum=0.0, maximum=0.25, doc="λ: block sparsities span 2λ around the target")),
    options={"spelled": {"m": "m", "lam": "l"}},  # owl-m5-l0.08: the parameters spelled in the id, no hash
    doc="outlier-weighted layer-wise sparsity (OWL, ICML 2024)",
))
