"""How much to prune each block: uniform, or OWL (outlier-weighted layer-wise sparsity; Yin et al.,
"Outlier Weighed Layerwise Sparsity", ICML 2024).

OWL keeps more weights in blocks with more outliers. A block's outlier ratio D is the share of its
Wanda scores |W_ij|·‖X_j‖ (all its linears together) above ``m`` times their mean. Keep ratios are
the outlier ratios mapped linearly onto [0, 2λ], shifted so their mean is 1 − sparsity; a block's
sparsity is one minus its keep ratio, so the block sparsities span 2λ and their mean is exactly the
requested sparsity. The mean is weighted by the blocks' prunable weights, which changes nothing where
blocks have equal sizes (every decoder the OWL paper prunes) and keeps the model's sparsity at the
request where they differ (dense and MoE blocks mixed). The paper's defaults: m = 5, λ = 0.08.

In the workflow the allocation is its own small artifact (``allocation.json``: outlier ratios and
block sparsities) between the dense-stream activation cache and the masks, so a changed λ reruns the
allocation, the masks and below, never the cache.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from tqdm.auto import tqdm

from pruneflow.core.activations import InputStats
from pruneflow.core.artifacts import verify_folder
from pruneflow.prune.criteria import wanda_scores
from pruneflow.spec.naming import owl_lambda_bound
from pruneflow.core.artifacts import load_json
from pruneflow.core.atomic import write_json

from pruneflow.spec.naming import ALLOCATIONS


class AllocationError(ValueError):
    pass


@torch.no_grad()
def outlier_ratio(weights: Iterable[torch.Tensor], stats: Iterable[InputStats], m: float = 5.0) -> float:
    """Share of a block's Wanda scores above ``m`` × their mean (weights [out, in], one stats each)."""
    scores = torch.cat([wanda_scores(w, s.col_norms).flatten() for w, s in zip(weights, stats)])
    return float((scores > m * scores.mean()).float().mean())


def owl_sparsities(ratios: list[float], sparsity: float, lam: float = 0.08, sizes: list[int] | None = None) -> list[float]:
    """Per-block sparsities from per-block outlier ratios: spread 2·``lam``, mean ``sparsity`` (weighted by
    the blocks' prunable ``sizes`` when given; equal sizes give OWL's plain mean)."""
    if not 0 < sparsity < 1:
        raise AllocationError(f"owl needs an unstructured sparsity in (0, 1), got {sparsity!r}")
    if not 0 <= lam < owl_lambda_bound(sparsity):
        raise AllocationError(
            f"owl lambda {lam!r} must be in [0, {owl_lambda_bound(sparsity):g}) at sparsity {sparsity:g}, so that every "
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


def block_sparsities(allocation: str, sparsity: float, n_blocks: int, ratios: list[float] | None = None,
                     lam: float = 0.08, sizes: list[int] | None = None) -> list[float]:
    """Every block's sparsity for an ``allocation`` (``owl`` needs the blocks' outlier ``ratios``)."""
    if allocation == "uniform":
        return [sparsity] * n_blocks
    if allocation == "owl":
        if ratios is None or len(ratios) != n_blocks:
            raise AllocationError(f"owl needs one outlier ratio per block ({n_blocks}), got {None if ratios is None else len(ratios)}")
        return owl_sparsities(ratios, sparsity, lam, sizes)
    raise AllocationError(f"allocation {allocation!r}: allowed {', '.join(ALLOCATIONS)}")


def model_outlier_ratios(model, block_stats: Iterable[Mapping[str, InputStats]], m: float = 5.0) -> list[float]:
    """Outlier ratio of every block, from its dense-stream statistics ({linear name: InputStats} per block);
    ``model`` in memory or a :class:`~pruneflow.core.stream.ModelStream` (each block loaded in turn)."""
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


def skeleton_of(model):
    """A model in memory, or a :class:`~pruneflow.core.stream.ModelStream`'s skeleton (its shapes are the model's)."""
    from pruneflow.core.stream import ModelStream

    return model.model if isinstance(model, ModelStream) else model


def block_sizes(model) -> list[int]:
    """Prunable weights of every block (what the allocation's mean is weighted by; shapes only, so a stream's
    skeleton, whose blocks are empty shells, serves as well)."""
    from pruneflow.core.architectures import architecture_of

    model = skeleton_of(model)
    arch = architecture_of(model)
    return [sum(arch.weight(layer).numel() for layer in arch.block_linears(b).values()) for b in arch.get_blocks(model)]


def owl_allocation(model, cache, sparsity: float, m: float = 5.0, lam: float = 0.08) -> dict:
    """OWL's allocation of the dense ``model`` from the dense-stream activation ``cache`` (input norms):
    ``outlier_ratios`` and ``block_sparsities`` per block, with what made them."""
    from pruneflow.prune.dense_stream import load_block_stats

    verify_folder(cache)
    sizes = block_sizes(model)
    ratios = model_outlier_ratios(model, (load_block_stats(cache, i, gram=False) for i in range(len(sizes))), m)
    return {
        "allocation": "owl", "m": m, "lambda": lam, "sparsity": sparsity,
        "outlier_ratios": ratios, "block_sparsities": block_sparsities("owl", sparsity, len(sizes), ratios, lam, sizes),
        "block_params": sizes,
    }


ALLOCATION_FILE = "allocation.json"


def write_allocation(folder, allocation: dict) -> None:
    """Into an artifact folder being written (``artifacts.artifact_folder``)."""
    write_json(Path(folder) / ALLOCATION_FILE, allocation)


def read_allocation(folder, n_blocks: int | None = None) -> dict:
    """An allocation artifact, verified against its manifest (and the model's number of blocks)."""
    verify_folder(folder)
    data = load_json(Path(folder) / ALLOCATION_FILE)
    if n_blocks is not None and len(data["block_sparsities"]) != n_blocks:
        raise AllocationError(
            f"{folder}: {len(data['block_sparsities'])} block sparsities for a model of {n_blocks} blocks; delete {folder} and rerun"
        )
    return data


def method_block_sparsities(method, folder, model) -> list[float] | None:
    """The per-block sparsities a pruning ``method`` (``experiments.Method``) asks of ``model``: None when
    uniform, else its allocation artifact's, checked to be the one made for this method's M, λ and sparsity."""
    from pruneflow.core.architectures import architecture_of

    if method.allocation is None:
        return None
    model = skeleton_of(model)
    n_blocks = len(architecture_of(model).get_blocks(model))
    if not folder:
        raise AllocationError(f"method {method.id!r} needs its allocation artifact (allocation/<calib>/{method.allocation.token}-...)")
    data = read_allocation(folder, n_blocks)
    made = (data["m"], data["lambda"], data["sparsity"])
    if made != (method.allocation.m, method.allocation.lam, method.pattern.sparsity):
        raise AllocationError(
            f"{folder} was made for m={made[0]:g}, lambda={made[1]:g}, sparsity={made[2]:g}, not for method {method.id!r}; "
            f"delete {folder} and rerun"
        )
    return data["block_sparsities"]
