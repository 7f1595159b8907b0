"""OWL (Yin et al., "Outlier Weighed Layerwise Sparsity", ICML 2024): per-block sparsities from the share of
outliers in each block's Wanda scores; spelled ``owl-m<M>-l<lambda>`` in method ids, set by the study keys owl_m and
owl_lambda. Torch is imported where it is used: the workflow imports this module to build its DAG.

OWL keeps more weights in blocks with more outliers. A block's outlier ratio D is the share of its
Wanda scores |W_ij|·‖X_j‖ (all its linears together) above ``m`` times their mean. Keep ratios are
the outlier ratios mapped linearly onto [0, 2λ], shifted so their mean is 1 − sparsity; a block's
sparsity is one minus its keep ratio, so the block sparsities span 2λ and their mean is exactly the
requested sparsity. The mean is weighted by the blocks' prunable weights, which changes nothing where
blocks have equal sizes (every decoder the OWL paper prunes) and keeps the model's sparsity at the
request where they differ (dense and MoE blocks mixed). The paper's defaults: m = 5, λ = 0.08.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from pruneflow.spec.registry import Entry, Param, register


def allocate(model, cache, sparsity, sizes, *, m, lam):
    """Outlier ratios and block sparsities (spread 2·lam, mean ``sparsity`` weighted by the blocks' ``sizes``)."""
    return owl_allocation(model, cache, sparsity, m, lam)


def outlier_ratio(weights: Iterable, stats: Iterable, m: float = 5.0) -> float:
    """Share of a block's Wanda scores above ``m`` × their mean (weights [out, in], one InputStats each)."""
    import torch

    from pruneflow.methods.wanda import wanda_scores

    with torch.no_grad():
        scores = torch.cat([wanda_scores(w, s.col_norms).flatten() for w, s in zip(weights, stats)])
        return float((scores > m * scores.mean()).float().mean())


def owl_sparsities(ratios: list[float], sparsity: float, lam: float = 0.08, sizes: list[int] | None = None) -> list[float]:
    """Per-block sparsities from per-block outlier ratios: spread 2·``lam``, mean ``sparsity`` (weighted by
    the blocks' prunable ``sizes`` when given; equal sizes give OWL's plain mean)."""
    from pruneflow.prune.allocation import AllocationError

    if not 0 < sparsity < 1:
        raise AllocationError(f"owl needs an unstructured sparsity in (0, 1), got {sparsity!r}")
    if not 0 <= lam < lambda_bound(sparsity):
        raise AllocationError(
            f"owl lambda {lam!r} must be in [0, {lambda_bound(sparsity):g}) at sparsity {sparsity:g}, so that every "
            "block keeps some weights and loses some (block sparsities lie within 2·lambda of the mean)"
        )
    low, high = min(ratios), max(ratios)
    if high == low:
        return [sparsity] * len(ratios)
    keep = [(r - low) / (high - low) * 2 * lam for r in ratios]
    if sizes is None or len(set(sizes)) == 1:
        mean = sum(keep) / len(keep)
    else:
        mean = sum(k * n for k, n in zip(keep, sizes)) / sum(sizes)
    shift = (1 - sparsity) - mean
    return [1 - (k + shift) for k in keep]


def model_outlier_ratios(model, block_stats: Iterable[Mapping], m: float = 5.0) -> list[float]:
    """Outlier ratio of every block, from its dense-stream statistics ({linear name: InputStats} per block);
    ``model`` in memory or a :class:`~pruneflow.core.stream.ModelStream` (each block loaded in turn)."""
    from tqdm.auto import tqdm

    from pruneflow.core.stream import ModelStream

    stream = ModelStream.wrap(model)
    arch = stream.arch
    ratios = []
    blocks = tqdm(stream.blocks(), total=stream.num_blocks, desc=f"outlier ratios (m={m:g})", unit="block")
    for (_, block), stats in zip(blocks, block_stats):
        linears = arch.block_linears(block)
        names = [n for n in linears if n in stats and stats[n].count]
        ratios.append(outlier_ratio([arch.weight(linears[n]) for n in names], [stats[n] for n in names], m))
    return ratios


def owl_allocation(model, cache, sparsity: float, m: float = 5.0, lam: float = 0.08) -> dict:
    """OWL's allocation of the dense ``model`` from the dense-stream activation ``cache`` (input norms):
    ``outlier_ratios`` and ``block_sparsities`` per block, with what made them."""
    from pruneflow.core.artifacts import verify_folder
    from pruneflow.prune.allocation import block_sizes
    from pruneflow.prune.dense_stream import load_block_stats

    verify_folder(cache)
    sizes = block_sizes(model)
    ratios = model_outlier_ratios(model, (load_block_stats(cache, i, gram=False) for i in range(len(sizes))), m)
    return {
        "allocation": "owl", "m": m, "lambda": lam, "settings": {"m": m, "lam": lam}, "sparsity": sparsity,
        "outlier_ratios": ratios, "block_sparsities": owl_sparsities(ratios, sparsity, lam, sizes),
        "block_params": sizes,
    }


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
