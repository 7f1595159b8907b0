"""Per-block sensitivity: how much perplexity rises when one block alone is pruned.

For every block in turn, that block is pruned at the pattern from the dense model (statistics of its
dense inputs: the dense-stream activation cache), every other block stays dense, and perplexity is
scored on the given windows (the perplexity protocol of :mod:`pruneflow.evaluate.perplexity`, usually its first
few windows). The dense inputs of block i are computed once, so block i's score runs blocks i..L-1
and the head: L(L+1)/2 block passes for L blocks instead of L² (about half of L full evaluations).
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from pruneflow.core import fallbacks
from pruneflow.core.activations import capture_block_inputs, head_logits, run_block
from pruneflow.core.artifacts import verify_folder
from pruneflow.core.stream import ModelStream
from pruneflow.evaluate.perplexity import perplexity_result, window_nll
from pruneflow.prune.criteria import Criterion, prune_block_layers
from pruneflow.prune.masks import Pattern


@torch.no_grad()
def block_sensitivity(model, criterion: Criterion, pattern: Pattern, windows: torch.Tensor, cache=None,
                      batch_size: int = 4, device="cpu") -> dict:
    """Perplexity on ``windows`` [n, seqlen] with each block alone pruned; ``cache`` is the dense-stream
    activation cache (needed by criteria with calibration; SparseGPT needs its Gram matrices).

    Returns ``{"dense": {...}, "blocks": [{"block", "perplexity", "nll", "sparsity"}, ...]}`` (the model
    is left as it was). ``model``: in memory, or a :class:`~pruneflow.core.stream.ModelStream` (blocks
    loaded one at a time: block i's score runs blocks i..L-1 again)."""
    from pruneflow.prune.dense_stream import load_block_stats

    if criterion.needs_calibration:
        if cache is None:
            raise ValueError(f"criterion {criterion.name!r} needs the dense-stream activation cache")
        verify_folder(cache)
    stream = ModelStream.wrap(model)
    skeleton, arch = stream.model, stream.arch
    inputs = capture_block_inputs(skeleton, windows, batch_size, device)
    home = skeleton.get_input_embeddings().weight.device
    with arch.blocks_detached(skeleton):
        skeleton.to(device)  # embeddings and head, for the scoring
    chunks = windows.split(batch_size)
    results = []
    try:
        for index in tqdm(range(stream.num_blocks), desc=f"sensitivity {criterion.name} {pattern.token}", unit="block"):
            with stream.loaded(index, device) as block:
                dense_out = run_block(block, inputs)
                linears = arch.block_linears(block)
                saved = {name: arch.weight(layer).detach().clone() for name, layer in linears.items()}
                stats = load_block_stats(cache, index, device) if criterion.needs_calibration else {}
                with fallbacks.layer(f"{arch.blocks}.{index}"):
                    keeps = prune_block_layers(criterion, arch, block, stats, pattern).values()
                pruned, total = sum(int((~k).sum()) for k in keeps), sum(k.numel() for k in keeps)
                hidden = inputs.replace(run_block(block, inputs))
                for name, layer in linears.items():  # the block is dense again before anything else runs
                    arch.weight(layer).copy_(saved[name])
            for later in range(index + 1, stream.num_blocks):
                with stream.loaded(later, device) as block:
                    hidden = hidden.replace(run_block(block, hidden))
            scored = _score(skeleton, chunks, hidden.hidden, windows)
            results.append({"block": index, "sparsity": pruned / total, "perplexity": scored["perplexity"], "nll": scored["nll"]})
            inputs = inputs.replace(dense_out)
        return {"dense": _score(skeleton, chunks, inputs.hidden, windows), "blocks": results}
    finally:
        with arch.blocks_detached(skeleton):
            skeleton.to(home)


def _score(model, chunks, finals, windows) -> dict:
    nll_sum, tokens = 0.0, 0
    for chunk, final in zip(chunks, finals):
        chunk = chunk.to(final.device)
        loss, n = window_nll(head_logits(model, chunk, final), chunk)
        nll_sum += loss
        tokens += n
    return perplexity_result(nll_sum, tokens, windows)
