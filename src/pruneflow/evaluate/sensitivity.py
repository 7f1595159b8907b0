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

from pruneflow.core.activations import capture_block_inputs, head_logits, run_block
from pruneflow.core.architectures import architecture_of
from pruneflow.core.artifacts import verify_folder
from pruneflow.prune.criteria import Criterion, prune_layer
from pruneflow.evaluate.perplexity import perplexity_result, window_nll
from pruneflow.prune.masks import Pattern


@torch.no_grad()
def block_sensitivity(model, criterion: Criterion, pattern: Pattern, windows: torch.Tensor, cache=None,
                      batch_size: int = 4, device="cpu") -> dict:
    """Perplexity on ``windows`` [n, seqlen] with each block alone pruned; ``cache`` is the dense-stream
    activation cache (needed by criteria with calibration; SparseGPT needs its Gram matrices).

    Returns ``{"dense": {...}, "blocks": [{"block", "perplexity", "nll", "sparsity"}, ...]}`` (the model
    is left as it was)."""
    from pruneflow.prune.dense_stream import load_block_stats

    if criterion.needs_calibration:
        if cache is None:
            raise ValueError(f"criterion {criterion.name!r} needs the dense-stream activation cache")
        verify_folder(cache)
    arch = architecture_of(model)
    blocks = arch.get_blocks(model)
    inputs = capture_block_inputs(model, windows, batch_size, device)
    model.to(device)  # a whole-model evaluation, as the perplexity job does (after the capture, which moves the head back)
    chunks = windows.split(batch_size)
    results = []
    for index, block in enumerate(tqdm(blocks, desc=f"sensitivity {criterion.name} {pattern.token}", unit="block")):
        dense_out = run_block(block, inputs)
        linears = arch.block_linears(block)
        saved = {name: arch.weight(layer).detach().clone() for name, layer in linears.items()}
        stats = load_block_stats(cache, index, device) if criterion.needs_calibration else {}
        pruned = total = 0
        for name, layer in linears.items():
            keep = prune_layer(criterion, arch.weight(layer), stats.get(name), pattern)
            pruned += int((~keep).sum())
            total += keep.numel()
        hidden = inputs.replace(run_block(block, inputs))
        for name, layer in linears.items():  # the block is dense again before anything else runs
            arch.weight(layer).copy_(saved[name])
        for later in blocks[index + 1:]:
            hidden = hidden.replace(run_block(later, hidden))
        scored = _score(model, chunks, hidden.hidden, windows)
        results.append({"block": index, "sparsity": pruned / total, "perplexity": scored["perplexity"], "nll": scored["nll"]})
        inputs = inputs.replace(dense_out)
    return {"dense": _score(model, chunks, inputs.hidden, windows), "blocks": results}


def _score(model, chunks, finals, windows) -> dict:
    nll_sum, tokens = 0.0, 0
    for chunk, final in zip(chunks, finals):
        chunk = chunk.to(final.device)
        loss, n = window_nll(head_logits(model, chunk, final), chunk)
        nll_sum += loss
        tokens += n
    return perplexity_result(nll_sum, tokens, windows)
