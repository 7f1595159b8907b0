"""What the public reference implementations (locuslab/wanda, IST-DASLab/sparsegpt) need to run in this process, on
the CPU, with transformers 5: they are imported from a checkout given by path, never copied into PruneFlow, and
their files stay untouched; what differs in this environment is supplied around them.

- transformers 5: decoder layers take rotary ``position_embeddings``; the references pass ``position_ids`` (Wanda)
  or nothing (SparseGPT), so each layer gets them from its ``position_ids`` (0 … seqlen − 1 when none) by the
  model's own rotary module, once per distinct positions tensor;
- CPU: ``torch.cuda.synchronize`` (called after every layer SparseGPT prunes) does nothing when there is no GPU;
- the references print per-layer progress: it goes to stderr, so the benchmark's stdout stays one JSON line a run.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass
class Reference:
    """A reference checkout ready to prune: ``source`` (its repository), ``version`` (the checkout's git commit, or
    ``sha256:`` of the files it runs when the folder is no git checkout), the criteria it implements, and
    ``prune(model, criterion, pattern, calib)`` (in place; ``pattern`` a PruneFlow pattern, ``calib`` token ids
    [nsamples, seqlen])."""

    source: str
    version: str
    criteria: tuple[str, ...]
    prune: Callable


def import_module(folder: str | Path, name: str, needs: str, source: str):
    """Module ``name`` of the checkout ``folder`` (which must hold ``needs``), with the folder first on the path for
    the module's own imports."""
    folder = Path(folder).resolve()
    if not (folder / needs).is_file():
        raise FileNotFoundError(f"{folder}: not a {source} checkout (no {needs})")
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    return importlib.import_module(name)


def checkout_version(folder: str | Path, files: list[str]) -> str:
    """The git commit of ``folder``, or ``sha256:<12 hex>`` of ``files`` (an archive without its history)."""
    folder = Path(folder).resolve()
    head = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode == 0 and (folder / ".git").exists():
        return head.stdout.strip()
    digest = hashlib.sha256(b"".join((folder / f).read_bytes() for f in files))
    return f"sha256:{digest.hexdigest()[:12]}"


@contextlib.contextmanager
def position_embeddings(model):
    """Every decoder layer called without ``position_embeddings`` gets them from its ``position_ids`` (the
    positions 0 … seqlen − 1 when it is given none)."""
    rotary, cache = model.model.rotary_emb, {}
    layers = list(model.model.layers)

    def wrap(layer):
        forward = layer.forward

        def call(hidden, *args, position_ids=None, position_embeddings=None, **kwargs):
            if position_embeddings is None:
                if position_ids is None:
                    position_ids = torch.arange(hidden.shape[1], device=hidden.device).unsqueeze(0)
                key = (tuple(position_ids.flatten().tolist()), tuple(position_ids.shape), hidden.dtype)
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
def cpu_sync():
    sync = torch.cuda.synchronize
    if not torch.cuda.is_available():
        torch.cuda.synchronize = lambda *a, **k: None
    try:
        yield
    finally:
        torch.cuda.synchronize = sync


@contextlib.contextmanager
def reference_environment(model):
    """Everything above, and no gradients, while a reference prunes ``model``."""
    with position_embeddings(model), cpu_sync(), contextlib.redirect_stdout(sys.stderr), torch.no_grad():
        yield
