"""Run the public reference implementation of Wanda (locuslab/wanda ``lib/prune.py``: ``prune_wanda`` and its
``prune_sparsegpt``) in this process, on the CPU.

The reference is never copied into PruneFlow: bring it with ``git clone https://github.com/locuslab/wanda`` (or an
archive of it) and pass its folder. Besides :mod:`reference_shims`, what it needs here is supplied in
:func:`reference_prune`: its ``get_loaders`` (C4 from the hub) is replaced by the given token windows, one per
sample, and ``model.hf_device_map`` is set empty, ``model.seqlen`` to the windows' length.
"""

from __future__ import annotations

import types
from pathlib import Path

import torch

from reference_shims import Reference, checkout_version, import_module, reference_environment

SOURCE = "locuslab/wanda"


def load_reference(folder: str | Path) -> Reference:
    """The reference's Wanda and SparseGPT from ``folder`` (a checkout of locuslab/wanda)."""
    ref = import_module(folder, "lib.prune", "lib/prune.py", SOURCE)
    version = checkout_version(folder, ["lib/prune.py", "lib/sparsegpt.py", "lib/layerwrapper.py"])
    return Reference(SOURCE, version, ("wanda", "sparsegpt"), lambda *a: reference_prune(ref, *a))


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
        with reference_environment(model):
            prune(args, model, None, torch.device("cpu"), prune_n=n, prune_m=m)
    finally:
        ref.get_loaders = loaders
