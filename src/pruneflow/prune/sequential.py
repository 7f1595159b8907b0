"""Unstructured and N:M pruning of every linear layer inside the transformer blocks.

``sequential`` stream (the reference Wanda/SparseGPT behaviour): block by block, statistics come
from inputs propagated through the already-pruned blocks before it. ``dense`` stream: statistics
come from the dense model's activations. Embeddings and the LM head are never pruned.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from tqdm.auto import tqdm

from pruneflow.core import fallbacks
from pruneflow.core.activations import capture_block_inputs, collect_stats, input_groups, run_block
from pruneflow.core.stream import ModelStream
from pruneflow.prune.criteria import Criterion, prune_block_layers
from pruneflow.prune.masks import Pattern
from pruneflow.spec.patterns import block_patterns

STREAMS = ("sequential", "dense")


@torch.no_grad()
def prune_model(
    model,
    criterion: Criterion,
    pattern: Pattern,
    calib_ids: torch.Tensor | None = None,
    stream: str | None = "sequential",
    batch_size: int = 8,
    device="cpu",
    block_sparsities: list[float] | None = None,
) -> Iterator[tuple[int, dict[str, torch.Tensor]]]:
    """Prune ``model`` (a model in memory, or a :class:`~pruneflow.core.stream.ModelStream`) block by block;
    yield (block index, {linear name: keep-mask}) while the block is loaded, pruned in place.

    ``block_sparsities`` (one unstructured ratio per block, e.g. OWL's allocation) replaces the
    pattern's ratio block by block. Each block is loaded on ``device`` while it is processed and released
    after the loop body that receives it (a stream's writer stores it then).
    """
    if criterion.needs_calibration and stream not in STREAMS:
        raise ValueError(f"stream {stream!r}: allowed {', '.join(STREAMS)}")
    model = ModelStream.wrap(model)
    arch = model.arch
    patterns = block_patterns(pattern, block_sparsities, model.num_blocks)
    inputs = None
    if criterion.needs_calibration:
        if calib_ids is None:
            raise ValueError(f"criterion {criterion.name!r} needs calibration samples")
        inputs = capture_block_inputs(model.model, calib_ids, batch_size, device)
    desc = f"prune {criterion.name} {pattern.token}{' per block' if block_sparsities else ''}"
    for index, block in tqdm(model.blocks(device), total=model.num_blocks, desc=desc, unit="block"):
        linears = arch.block_linears(block)
        # The dense stream's next inputs are this pass's outputs; the sequential one needs only statistics
        # here and runs the pruned block afterwards (a second pass), so its first pass stops early.
        stats, dense_out = (collect_stats(block, linears, inputs, criterion.needs_gram, input_groups(arch), outputs=stream == "dense")
                            if inputs else ({}, None))
        for group_stats in {id(s): s for s in stats.values()}.values():
            group_stats.round_gram()
        with fallbacks.layer(f"{arch.blocks}.{index}"):
            masks = prune_block_layers(criterion, arch, block, stats, patterns[index])  # empties stats
        del stats
        if inputs is not None:
            inputs = inputs.replace(run_block(block, inputs) if stream == "sequential" else dense_out)
            del dense_out
        yield index, masks
