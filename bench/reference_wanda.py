"""Run the public reference implementation (locuslab/wanda ``lib/prune.py``) in this process, on the CPU.

The reference is never copied into PruneFlow: bring it with ``git clone https://github.com/locuslab/wanda``
(or an archive of it) and pass its folder. Its files stay untouched; what it needs to run here is supplied
around it, in :func:`reference_prune`:

- calibration: its ``get_loaders`` (C4 from the hub) is replaced by the given token windows, one per sample;
- transformers 5: decoder layers take rotary ``position_embeddings``; the reference passes only
  ``position_ids``, so each layer of the model gets them computed from ``position_ids`` by the model's
  own rotary module (once per distinct ``position_ids`` tensor);
- CPU: ``model.hf_device_map`` is set empty, ``model.seqlen`` to the windows' length, and
  ``torch.cuda.synchronize`` (called after every SparseGPT layer) does nothing when there is no GPU.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
import types
from pathlib import Path

import torch


def load_reference(folder: str | Path):
    """The reference's ``lib.prune`` module from ``folder`` (a checkout of locuslab/wanda)."""
    folder = Path(folder).resolve()
    if not (folder / "lib" / "prune.py").is_file():
        raise FileNotFoundError(f"{folder}: not a locuslab/wanda checkout (no lib/prune.py)")
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    return importlib.import_module("lib.prune")


@contextlib.contextmanager
def _position_embeddings(model):
    """Every decoder layer called without ``position_embeddings`` gets them from its ``position_ids``."""
    rotary, cache = model.model.rotary_emb, {}
    layers = list(model.model.layers)

    def wrap(layer):
        forward = layer.forward

        def call(hidden, *args, position_ids=None, position_embeddings=None, **kwargs):
            if position_embeddings is None and position_ids is not None:
                key = (position_ids.data_ptr(), tuple(position_ids.shape), hidden.dtype)
                if key not in cache:
                    cache[key] = rotary(hidden, position_ids)
                position_embeddings = cache[key]
            return forward(hidden, *args, position_ids=position_ids, position_embeddings=position_embeddings, **kwargs)

        return call

    for layer in layers:
        layer.forward = wrap(layer)
    try:
        yield
    finally:
        for layer in layers:
            del layer.forward


@contextlib.contextmanager
def _cpu_sync():
    sync = torch.cuda.synchronize
    if not torch.cuda.is_available():
        torch.cuda.synchronize = lambda *a, **k: None
    try:
        yield
    finally:
        torch.cuda.synchronize = sync


def reference_prune(ref, model, criterion: str, pattern, calib: torch.Tensor) -> None:
    """Prune ``model`` in place with the reference's ``prune_wanda`` or ``prune_sparsegpt`` (sequential,
    as its defaults), ``pattern`` a PruneFlow pattern, ``calib`` [nsamples, seqlen] token ids."""
    prune = {"wanda": ref.prune_wanda, "sparsegpt": ref.prune_sparsegpt}[criterion]
    n, m = (pattern.n, pattern.m) if pattern.is_nm else (0, 0)
    args = types.SimpleNamespace(sparsity_ratio=0.5 if pattern.is_nm else pattern.ratio, nsamples=calib.shape[0],
                                 seed=0, use_variant=False)
    windows = [(calib[i : i + 1], None) for i in range(calib.shape[0])]
    model.seqlen, model.hf_device_map = calib.shape[1], {}
    loaders = ref.get_loaders
    ref.get_loaders = lambda *a, **k: (windows, None)
    try:
        with _position_embeddings(model), _cpu_sync(), torch.no_grad():
            prune(args, model, None, torch.device("cpu"), prune_n=n, prune_m=m)
    finally:
        ref.get_loaders = loaders
