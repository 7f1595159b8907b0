"""Run one recovery (reconstruction or PERP retraining) on a pruned model, from config settings; the mode's
registry entry (spec/recovery.py) says which code runs it."""

from __future__ import annotations

import contextlib

import torch

from pruneflow.core.stream import ModelStream
from pruneflow.recover.adapters import AdapterConfig
from pruneflow.recover.reconstruct import prune_and_reconstruct, reconstruct_model
from pruneflow.recover.train import TrainConfig
from pruneflow.spec.criteria import method_criterion
from pruneflow.spec.naming import ADAPTER_NAMES, Method, Recovery
from pruneflow.spec.recovery import ADAPTER_KEYS

TRAIN_FIELDS = set(TrainConfig.__dataclass_fields__)
ADAPTER_FIELDS = set(ADAPTER_KEYS)
# Reconstruction settings outside TrainConfig, when the config leaves them out (the schema's x-default).
RECON_DEFAULTS = {"targets": "same", "damping": 0.01}


def split_trainable(trainable: str) -> tuple[list[str], str | None]:
    items = trainable.split("+") if trainable and trainable != "all" else []
    adapters = [i for i in items if i in ADAPTER_NAMES]
    return [i for i in items if i not in ADAPTER_NAMES], (adapters[0] if adapters else None)


def recover(dense, pruned, keep_masks, calib_ids: torch.Tensor, recovery: Recovery, settings: dict, device="cpu",
            method: Method | None = None, gradient_checkpointing: bool = False) -> dict:
    """Recover ``pruned`` in place; ``settings`` is the config's reconstruction/retraining section.
    ``dense`` and ``pruned``: models in memory or :class:`~pruneflow.core.stream.ModelStream` (``dense`` may be
    None for retraining, which does not read it).

    Order ``interleaved``: ``pruned`` is still dense (a copy), ``keep_masks`` is an empty dict (or None)
    that is filled block by block as each is pruned, and ``method`` says how to prune it block by block
    (:func:`pruneflow.recover.reconstruct.prune_and_reconstruct`); the
    masks it chose are returned in the summary under ``"masks"``.

    Optimisers and solvers work on float32 copies (bfloat16 steps of size lr·grad mostly round away):
    block by block, each block is loaded in float32 and stored back in the model's dtype, pruned weights
    exactly zero. PERP retraining holds the whole model once, in its stored dtype, on the device (blocks read
    straight there), with float32 masters of what trains. ``recon:full`` and ``retrain:full`` train every
    weight: they load the whole model in float32. Both return every block to the stream (its writer stores
    them). ``gradient_checkpointing`` recomputes block activations in retraining's backward pass.

    The pruned model's architecture is found here, once (its stream's), and handed to every step below.
    """
    p = ModelStream.wrap(pruned)
    d = None if dense is None else ModelStream.wrap(dense)
    if recovery.whole_model:
        dtype = torch.float32 if recovery.trains_every_weight else None
        with _whole_model(p, device, dtype) as model:
            return _recover(None, model, p.arch, keep_masks, calib_ids, recovery, settings, device, method, gradient_checkpointing)
    p.compute_dtype = d.compute_dtype = torch.float32
    try:
        return _recover(d, p, p.arch, keep_masks, calib_ids, recovery, settings, device, method)
    finally:
        p.compute_dtype = d.compute_dtype = None


@contextlib.contextmanager
def _whole_model(stream: ModelStream, device, dtype: torch.dtype | None):
    """Every block of ``stream`` loaded onto ``device`` (in ``dtype``, the rest of the model cast to it too; None:
    as stored); afterwards the rest is cast back to the stored dtype and the blocks released (to the stream's
    writer, if any)."""
    stream.compute_dtype = dtype
    model = stream.load_all(device)
    stored = stream.dtype
    with stream.arch.blocks_detached(model):
        model.to(device, dtype or stored)
    try:
        yield model
    finally:
        with stream.arch.blocks_detached(model):
            model.to("cpu", stored)
        stream.release_all()
        stream.compute_dtype = None


def _recover(dense, pruned, arch, keep_masks, calib_ids, recovery, settings, device, method=None, gradient_checkpointing=False) -> dict:
    train = {k: v for k, v in settings.items() if k in TRAIN_FIELDS}
    subsets, adapter_kind = split_trainable(recovery.trainable)
    adapter = AdapterConfig(adapter_kind, **{k: v for k, v in settings.items() if k in ADAPTER_FIELDS}) if adapter_kind else None
    if not recovery.is_reconstruction:  # a retraining: its entry's code runs it
        return recovery.entry.load()(pruned, arch, keep_masks, calib_ids, subsets, adapter, train, device, gradient_checkpointing)
    trainable = "all" if recovery.trainable == "all" else (subsets or "none")
    options = dict(trainable=trainable, adapter=adapter, targets=settings.get("targets", RECON_DEFAULTS["targets"]),
                   damp=settings.get("damping", RECON_DEFAULTS["damping"]), device=device, arch=arch)
    if recovery.interleaved:
        if method is None:
            raise ValueError(f"recovery {recovery.spec!r} prunes as it goes: it needs the pruning method")
        masks, summary = prune_and_reconstruct(dense, pruned, method_criterion(method), method.pattern, calib_ids,
                                               recovery.granularity, recovery.inputs, TrainConfig(**train), masks=keep_masks, **options)
        return {**summary, "masks": masks}
    return reconstruct_model(dense, pruned, keep_masks, calib_ids, recovery.granularity, recovery.inputs,
                             TrainConfig(**train), **options)
