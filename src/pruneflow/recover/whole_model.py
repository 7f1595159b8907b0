"""Training a whole model on the next-token loss of the calibration windows: the code PERP retraining
(:mod:`pruneflow.recover.retrain`) and reconstruction's ``full`` granularity share, over the loop of
:mod:`pruneflow.recover.train`. What trains (parameter subsets, adapters) is chosen by
:mod:`pruneflow.recover.adapters`.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterable, Mapping

import torch
import torch.utils.checkpoint
from torch import nn

from pruneflow.core.architectures import Architecture
from pruneflow.recover.adapters import AdapterConfig, merge_adapters, prepare_retraining
from pruneflow.recover.train import TrainConfig, train


def next_token_loss(model, device="cpu", dtype: torch.dtype = torch.float32):
    """The causal LM loss of a batch of token ids [batch, seqlen] (Hugging Face shifts the labels). A model
    stored in a half dtype runs under autocast to it: its frozen weights stay as stored, the float32
    trainables are cast per use (their gradients reach the float32 masters)."""
    half = dtype != torch.float32

    def loss(ids):
        with torch.autocast(torch.device(device).type, dtype=dtype if half else None, enabled=half):
            return model(input_ids=ids.to(device), labels=ids.to(device), use_cache=False).loss
    return loss


@contextlib.contextmanager
def checkpointed(blocks: Iterable[nn.Module], enabled: bool = True):
    """Gradient checkpointing of each block: its activations are recomputed in the backward pass instead of
    kept (device memory of one block's activations instead of all; about a third more compute). Works in
    eval mode, which Hugging Face's own switch does not (retraining keeps dropout off)."""
    saved = []
    if enabled:
        for block in blocks:
            saved.append((block, block.forward))
            block.forward = functools.partial(torch.utils.checkpoint.checkpoint, block.forward, use_reentrant=False)
    try:
        yield
    finally:
        for block, forward in saved:
            block.forward = forward


def train_whole_model(
    model,
    arch: Architecture,
    keep_masks: Mapping[int, Mapping[str, torch.Tensor]] | None,
    calib_ids: torch.Tensor,
    subsets,
    adapter: AdapterConfig | None,
    cfg: TrainConfig,
    device="cpu",
    gradient_checkpointing: bool = False,
    desc: str = "retrain",
) -> dict:
    """Next-token loss on the calibration windows [nsamples, seqlen], training only ``subsets`` and ``adapter``
    of ``model`` (whose architecture is ``arch``); adapters are merged afterwards, pruned weights exactly zero.
    In place.

    The frozen model stays in its own dtype (one copy on ``device``); what trains gets float32 master weights
    (bfloat16 steps of size lr·grad mostly round away), cast back when stored. Returns the loop's history
    (losses, seconds, steps, trainable_params) with total_params, trainable_fraction and the unavailable subsets.
    """
    model.to(device)
    model.eval()  # base-model dropout off: training is deterministic; adapter dropout stays on
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    stored = model.get_input_embeddings().weight.dtype
    setup = prepare_retraining(model, keep_masks, subsets, adapter, cfg.seed, arch)
    for p in setup["params"].values():
        p.data = p.data.float()
    batches = list(calib_ids.split(cfg.batch_size))
    with checkpointed(arch.get_blocks(model), gradient_checkpointing):
        history = train(setup["params"], next_token_loss(model, device, stored), batches, cfg, setup["masks"], desc=desc)
    merge_adapters(model)
    for p in model.parameters():
        p.requires_grad_(True)
    return {**history, **{k: setup[k] for k in ("unavailable", "trainable_params", "total_params", "trainable_fraction")}}
