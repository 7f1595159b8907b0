"""OWL (Yin et al., ICML 2024): per-block sparsities from the share of outliers in each block's Wanda scores
(prune/allocation.py); spelled ``owl-m<M>-l<lambda>`` in method ids, set by the study keys owl_m and owl_lambda."""

from pruneflow.spec.registry import Entry, Param, register


def allocate(model, cache, sparsity, sizes, *, m, lam):
    """Outlier ratios and block sparsities (spread 2·lam, mean ``sparsity`` weighted by the blocks' ``sizes``)."""
    from pruneflow.prune.allocation import owl_allocation

    return owl_allocation(model, cache, sparsity, m, lam)


def lambda_bound(sparsity: float) -> float:
    """λ must stay below this: block sparsities lie within 2λ of their mean, and inside (0, 1)."""
    return min(sparsity, 1 - sparsity) / 2


def check(settings: dict, sparsity: float) -> tuple[str, str] | None:
    """(parameter, why and what is allowed) where ``settings`` cannot serve ``sparsity``; None where they can."""
    if settings["lam"] >= (bound := lambda_bound(sparsity)):
        return "lam", ("block sparsities lie within 2·lambda of the mean and must stay inside (0, 1); allowed: "
                       f"0 <= lambda < {bound:g}")
    return None


ENTRY = register(Entry(
    "allocation", "owl", "pruneflow.methods.owl:allocate", needs={"calibration", "input_norms"},
    params=(Param("m", 5.0, float, minimum=0.0, exclusive_minimum=True,
                  doc="outlier threshold, a multiple of the block's mean score (the paper: 3 to 10)"),
            Param("lam", 0.08, float, minimum=0.0, doc="λ: block sparsities span 2λ around the target (the paper: 0.02 to 0.2)")),
    options={"spelled": {"m": "m", "lam": "l"},  # owl-m5-l0.08: both spelled in the id, no hash
             "study_keys": {"owl_m": "m", "owl_lambda": "lam"},  # a study sweeps them with these keys
             "check": check},
    doc="outlier-weighted layer-wise sparsity (OWL, ICML 2024)",
))
