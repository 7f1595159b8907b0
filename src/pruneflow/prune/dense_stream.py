"""The dense stream: statistics from the dense model, computed once and shared.

One pass over the calibration samples writes, for every block, the input statistics of its
linear layers (squared column norms for Wanda; Gram matrices XᵀX for SparseGPT and closed-form
reconstruction), stored once per input group (q/k/v share one input, gate/up another).
Scores are a function of weights and statistics; masks a function of scores and a pattern; so a
new sparsity or pattern recomputes only masks. SparseGPT chooses and updates weights together:
it reads the cached Gram matrices and runs as one step.

Disk cost of the cache per block, float32: 4 · Σ_groups (d_in + d_in²) bytes; for a LLaMA block
with hidden h and intermediate f: 4 · (3h + f + 3h² + f²) (q/k/v, o, gate/up inputs are h wide).
Where a method reads channel means (DSnoT), each input channel's sum is stored too, in float64:
8 · Σ_groups d_in more (8 · (3h + f)), and the number of calibration samples.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from tqdm.auto import tqdm

from pruneflow.core import fallbacks
from pruneflow.core.activations import InputStats, capture_block_inputs, collect_stats, input_groups
from pruneflow.core.architectures import architecture_of
from pruneflow.core.artifacts import block_file, load_tensors, save_tensors, verify_folder
from pruneflow.core.stream import ModelStream
from pruneflow.prune.criteria import Criterion, criterion_mask, prune_block_layers, scores_for
from pruneflow.prune.masks import Pattern
from pruneflow.spec.patterns import block_patterns


@torch.no_grad()
def build_activation_cache(model, calib_ids: torch.Tensor, folder, batch_size: int = 8, device="cpu", gram: bool = True,
                           channel_sums: bool = False) -> dict:
    """One dense pass; write ``block<i>.safetensors`` with ``<linear>.sq_sum`` [in] (and ``<linear>.gram`` [in, in];
    with ``channel_sums``, ``<linear>.sum`` [in] and the sample count) for the first linear of each input group.
    ``model``: in memory, or a :class:`~pruneflow.core.stream.ModelStream`. Returns sizes for the disk-cost formulas
    of docs/artifacts.md."""
    model = ModelStream.wrap(model)
    arch = model.arch
    inputs = capture_block_inputs(model.model, calib_ids, batch_size, device)
    sizes = []
    for index, block in tqdm(model.blocks(device), total=model.num_blocks, desc="activation cache", unit="block"):
        groups = input_groups(arch)
        stats, outputs = collect_stats(block, arch.block_linears(block), inputs, gram, groups)
        meta = {"count": str(stats[groups[0][0]].count), "groups": ";".join(",".join(g) for g in groups)}
        if channel_sums:  # only then: every other cache keeps its bytes
            meta["samples"] = str(stats[groups[0][0]].samples)
        tensors = {}
        for group in groups:  # group by group, so a block's float64 sums and float32 copies are never all held
            tensors.update(stats[group[0]].export(group[0], channel_sums))
        del stats
        save_tensors(block_file(folder, index), tensors, metadata=meta)
        sizes.append(block_file(folder, index).stat().st_size)
        inputs = inputs.replace(outputs)
    return {"blocks": len(sizes), "bytes_per_block": sizes, "tokens": int(calib_ids.numel())}


def load_block_stats(folder, index: int, device="cpu", gram: bool = True) -> dict[str, InputStats]:
    """{linear name: InputStats} for one block (linears of one group share the object); ``gram=False``: the
    squared sums only (Wanda, OWL), the Gram matrices never held. Channel sums where the cache stores them."""
    tensors, meta = load_tensors(block_file(folder, index), device, keep=None if gram else (lambda n: not n.endswith(".gram")))
    out = {}
    for group in (g.split(",") for g in meta["groups"].split(";")):
        stats = InputStats.from_tensors(int(meta["count"]), tensors[f"{group[0]}.sq_sum"], tensors.get(f"{group[0]}.gram"),
                                        tensors.get(f"{group[0]}.sum"), int(meta.get("samples", 0)))
        out.update({name: stats for name in group})
    return out


def _block_weights_and_stats(model: ModelStream, criterion: Criterion, cache) -> Iterator[tuple[int, dict]]:
    """(block index, {linear: (weight [out, in], InputStats or None)}) with each block loaded meanwhile."""
    arch = model.arch
    if criterion.needs_calibration:
        verify_folder(cache)
    for index, block in tqdm(model.blocks(), total=model.num_blocks, desc=f"scores {criterion.name}", unit="block"):
        stats = load_block_stats(cache, index, gram=criterion.needs_gram) if criterion.needs_calibration else {}
        yield index, {name: (arch.weight(layer), stats.get(name)) for name, layer in arch.block_linears(block).items()}


@torch.no_grad()
def model_scores(model, criterion: Criterion, cache=None) -> Iterator[tuple[int, dict[str, torch.Tensor]]]:
    """Yield (block index, {linear: scores [out, in]}) for a criterion (each block loaded meanwhile)."""
    for index, layers in _block_weights_and_stats(ModelStream.wrap(model), criterion, cache):
        yield index, {name: scores_for(criterion, weight, stats) for name, (weight, stats) in layers.items()}


def masks_from_scores(scores: dict[str, torch.Tensor], pattern: Pattern, criterion: Criterion) -> dict[str, torch.Tensor]:
    for name, s in scores.items():
        pattern.check(s.shape[1])
    return {name: criterion_mask(criterion, s, pattern) for name, s in scores.items()}


@torch.no_grad()
def masks_by_score(model, criterion: Criterion, pattern: Pattern, cache=None,
                   block_sparsities: list[float] | None = None) -> Iterator[tuple[int, dict[str, torch.Tensor]]]:
    """Yield (block index, {linear: keep-mask}) of a criterion (and its refinement, if any), the model left unchanged;
    ``block_sparsities`` (one ratio per block) replaces the pattern's ratio block by block."""
    model = ModelStream.wrap(model)
    patterns = block_patterns(pattern, block_sparsities, model.num_blocks)
    refinement = criterion.refinement
    for index, layers in _block_weights_and_stats(model, criterion, cache):
        scores = {name: scores_for(criterion, weight, stats) for name, (weight, stats) in layers.items()}
        masks = masks_from_scores(scores, patterns[index], criterion)
        if refinement is not None:  # the refinement reads the dense weight and edits the mask only
            masks = {name: refinement.implementation(layers[name][0], keep, layers[name][1], patterns[index], **refinement.settings)
                     for name, keep in masks.items()}
        yield index, masks


@torch.no_grad()
def apply_masks(model, masks: dict[int, dict[str, torch.Tensor]]) -> None:
    arch = architecture_of(model)
    for index, block in enumerate(arch.get_blocks(model)):
        for name, layer in arch.block_linears(block).items():
            arch.weight(layer).mul_(masks[index][name].to(layer.weight.device))


@torch.no_grad()
def prune_from_cache(model, criterion: Criterion, pattern: Pattern, cache, device="cpu",
                     block_sparsities: list[float] | None = None) -> Iterator[tuple[int, dict]]:
    """Prune every block in place from cached dense statistics (a solver, or any criterion) without a forward
    pass, yielding (block index, keep-masks) while the block is loaded; ``block_sparsities`` (one ratio per
    block) replaces the pattern's ratio block by block."""
    model = ModelStream.wrap(model)
    arch = model.arch
    verify_folder(cache)
    patterns = block_patterns(pattern, block_sparsities, model.num_blocks)
    desc = f"prune {criterion.name} {pattern.token}{' per block' if block_sparsities else ''}"
    for index, block in tqdm(model.blocks(device), total=model.num_blocks, desc=desc, unit="block"):
        with fallbacks.layer(f"{arch.blocks}.{index}"):
            masks = prune_block_layers(criterion, arch, block, load_block_stats(cache, index, device), patterns[index])
        yield index, masks
