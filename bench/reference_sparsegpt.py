"""Run the public reference implementation of SparseGPT (IST-DASLab/sparsegpt: ``llama.py``'s ``llama_sequential``
driving its ``SparseGPT`` class) in this process, on the CPU.

The reference is never copied into PruneFlow: bring it with ``git clone https://github.com/IST-DASLab/sparsegpt``
(or an archive of it) and pass its folder. ``llama_sequential`` reads its settings from the module's global
``args`` (set here to its command line's defaults: damping 1% of the mean Hessian diagonal, blocks of 128
columns, every linear of a block from one pass, as PruneFlow's sequential stream; no quantisation) and its
calibration from a loader of (token ids, target) pairs (here the given windows, one per sample). Besides
:mod:`reference_shims`, ``model.seqlen`` is set to the windows' length.
"""

from __future__ import annotations

import types
from pathlib import Path

import torch

from reference_shims import Reference, checkout_version, import_module, reference_environment

SOURCE = "IST-DASLab/sparsegpt"


def load_reference(folder: str | Path) -> Reference:
    """The reference's SparseGPT from ``folder`` (a checkout of IST-DASLab/sparsegpt)."""
    llama = import_module(folder, "llama", "sparsegpt.py", SOURCE)
    version = checkout_version(folder, ["sparsegpt.py", "llama.py", "modelutils.py"])
    return Reference(SOURCE, version, ("sparsegpt",), lambda *a: reference_prune(llama, *a))


def reference_prune(llama, model, criterion: str, pattern, calib: torch.Tensor) -> None:
    """Prune ``model`` (a LLaMA-architecture model) in place with the reference's ``llama_sequential``."""
    if criterion != "sparsegpt":
        raise ValueError(f"criterion {criterion!r}: {SOURCE} implements only 'sparsegpt'")
    n, m = (pattern.n, pattern.m) if pattern.is_nm else (0, 0)
    llama.args = types.SimpleNamespace(nsamples=calib.shape[0], sparsity=0.0 if pattern.is_nm else pattern.ratio,
                                       prunen=n, prunem=m, percdamp=0.01, blocksize=128, true_sequential=False,
                                       minlayer=-1, maxlayer=1000, prune_only="", invert=False, wbits=16)
    model.seqlen = calib.shape[1]
    with reference_environment(model):
        llama.llama_sequential(model, [(calib[i : i + 1], None) for i in range(calib.shape[0])], torch.device("cpu"))
