"""Run one recovery (reconstruction or PERP retraining) on a pruned model, from config settings."""

from __future__ import annotations

import torch

from pruneflow.spec.naming import ADAPTER_KEYS, ADAPTER_NAMES, Method, Recovery
from pruneflow.recover.adapters import AdapterConfig, retrain
from pruneflow.recover.reconstruct import prune_and_reconstruct, reconstruct_model
from pruneflow.spec.criteria import get_criterion
from pruneflow.recover.train import TrainConfig

TRAIN_FIELDS = set(TrainConfig.__dataclass_fields__)
ADAPTER_FIELDS = set(ADAPTER_KEYS)
# Reconstruction settings outside TrainConfig, when the config leaves them out (the schema's x-default).
RECON_DEFAULTS = {"targets": "same", "damping": 0.01}


def split_trainable(trainable: str) -> tuple[list[str], str | None]:
    items = trainable.split("+") if trainable and trainable != "all" else []
    adapters = [i for i in items if i in ADAPTER_NAMES]
    return [i for i in items if i not in ADAPTER_NAMES], (adapters[0] if adapters else None)


def recover(dense, pruned, keep_masks, calib_ids: torch.Tensor, recovery: Recovery, settings: dict, device="cpu",
            method: Method | None = None) -> dict:
    """Recover ``pruned`` in place; ``settings`` is the config's reconstruction/retraining section.

    Order ``interleaved``: ``pruned`` is still dense (a copy), ``keep_masks`` is None and ``method``
    says how to prune it block by block (:func:`pruneflow.recover.reconstruct.prune_and_reconstruct`); the
    masks it chose are returned in the summary under ``"masks"``.

    Optimisers and solvers work on float32 copies (bfloat16 steps of size lr·grad mostly round
    away); the result is cast back to the pruned model's dtype, pruned weights staying exactly zero.
    """
    dense_dtype, stored = dense.dtype, pruned.dtype
    dense.float()
    pruned.float()
    try:
        return _recover(dense, pruned, keep_masks, calib_ids, recovery, settings, device, method)
    finally:
        dense.to(dense_dtype)
        pruned.to(stored)


def _recover(dense, pruned, keep_masks, calib_ids, recovery, settings, device, method=None) -> dict:
    train = {k: v for k, v in settings.items() if k in TRAIN_FIELDS}
    subsets, adapter_kind = split_trainable(recovery.trainable)
    adapter = AdapterConfig(adapter_kind, **{k: v for k, v in settings.items() if k in ADAPTER_FIELDS}) if adapter_kind else None
    if recovery.mode == "retrain":
        return retrain(pruned, keep_masks, calib_ids, subsets, adapter, TrainConfig.retraining(**train), device)
    trainable = "all" if recovery.trainable == "all" else (subsets or "none")
    options = dict(trainable=trainable, adapter=adapter, targets=settings.get("targets", RECON_DEFAULTS["targets"]),
                   damp=settings.get("damping", RECON_DEFAULTS["damping"]), device=device)
    if recovery.interleaved:
        if method is None:
            raise ValueError(f"recovery {recovery.spec!r} prunes as it goes: it needs the pruning method")
        masks, summary = prune_and_reconstruct(dense, pruned, get_criterion(method.criterion), method.pattern, calib_ids,
                                               recovery.granularity, recovery.inputs, TrainConfig(**train), **options)
        return {**summary, "masks": masks}
    return reconstruct_model(dense, pruned, keep_masks, calib_ids, recovery.granularity, recovery.inputs,
                             TrainConfig(**train), **options)
