"""Parameter-efficient retraining after pruning (PERP: Zimmer, Andoni, Spiegel, Pokutta): the whole pruned
model on the next-token loss of the calibration windows, training only chosen parameter subsets and/or
adapters (:mod:`pruneflow.recover.adapters`), with PERP's optimiser defaults
(:meth:`pruneflow.recover.train.TrainConfig.retraining`).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from pruneflow.core.architectures import Architecture, architecture_of
from pruneflow.recover.adapters import AdapterConfig, parse_subsets
from pruneflow.recover.train import TrainConfig, peak_memory
from pruneflow.recover.whole_model import train_whole_model


def retrain(
    model,
    keep_masks: Mapping[int, Mapping[str, torch.Tensor]] | None,
    calib_ids: torch.Tensor,
    subsets=("biases", "norms"),
    adapter: AdapterConfig | None = None,
    cfg: TrainConfig | None = None,
    device="cpu",
    gradient_checkpointing: bool = False,
    arch: Architecture | None = None,
) -> dict:
    """PERP: next-token loss on the calibration windows [nsamples, seqlen], training only ``subsets``
    and ``adapter``; adapters are merged afterwards, pruned weights are exactly zero. In place.
    ``arch``: the model's architecture (found here when not given).

    Returns {losses, seconds, steps, trainable_params, total_params, trainable_fraction, unavailable, ...}.
    """
    cfg = cfg or TrainConfig.retraining()
    history = train_whole_model(model, arch or architecture_of(model), keep_masks, calib_ids, subsets, adapter, cfg, device,
                                gradient_checkpointing)
    return {
        **history,
        "subsets": list(parse_subsets(subsets)),
        "adapter": adapter.to_dict() if adapter else None,
        "config": cfg.to_dict(),
        **peak_memory(),
    }
