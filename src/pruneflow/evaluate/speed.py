"""Measured forward throughput, to compare a pruned model with its dense parent on the same machine."""

from __future__ import annotations

import statistics
import time

import torch

from pruneflow.core.dispatch import input_device


@torch.no_grad()
def tokens_per_second(model, seqlen: int = 256, batch_size: int = 1, repeats: int = 3, seed: int = 0, device=None) -> float:
    """Tokens per second of a full forward pass (no KV cache) over random ids [batch_size, seqlen].

    One warm-up pass first (allocations, kernel selection), then ``repeats`` timed passes; the
    median pass time is used, so one pass slowed by other processes on a shared machine does not
    decide the result. Uses whatever thread count torch is set to. ``device``: where to move the model
    first (None: it stays where it is, e.g. dispatched over devices).
    """
    if seqlen < 1 or batch_size < 1 or repeats < 1:
        raise ValueError(f"seqlen={seqlen}, batch_size={batch_size}, repeats={repeats}: all must be >= 1")
    if device is not None:
        model.to(device)
    model.eval()
    device = input_device(model)
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(model.config.vocab_size, (batch_size, seqlen), generator=g).to(device)
    model(ids, use_cache=False)
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        model(ids, use_cache=False)
        _sync(device)
        times.append(time.perf_counter() - start)
    return batch_size * seqlen / statistics.median(times)


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
