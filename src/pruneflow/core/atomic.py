"""Atomic writes: a killed job leaves a temporary name, never a half-written result.

A temporary sibling is named ``.<name>.<pid>@<host>.<random>.tmp`` after the process that writes it,
so what a killed job left behind can be told from what a running job is writing: the next job that
writes the same result removes it (Snakemake's locks let only one job write a path at a time), and
:func:`remove_stale_temporaries` (run when a workflow starts) removes any whose process on this host
is gone.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import re
import shutil
import socket
import tempfile
from pathlib import Path

_HOST = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname()) or "host"
_OWNER = re.compile(r"\.(\d+)@([A-Za-z0-9_-]+)\.[A-Za-z0-9_]+\.tmp$")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary sibling path; rename it onto ``path`` only if the block succeeds.

    Works for files and folders alike; an existing target is replaced. Temporaries of ``path`` that
    a killed writer left behind are removed first.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        if not _owner_alive(stale):
            shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}@{_HOST}.", suffix=".tmp", dir=path.parent))
    target = tmp / path.name
    try:
        yield target
        if path.is_dir():
            shutil.rmtree(path)
        os.replace(target, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def scratch_folder(near: str | os.PathLike, name: str = "scratch"):
    """A temporary folder beside ``near`` (same disk as the results), removed afterwards; one a killed job
    left behind is removed by :func:`remove_stale_temporaries` like any temporary."""
    near = Path(near)
    near.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{near.name}-{name}.{os.getpid()}@{_HOST}.", suffix=".tmp", dir=near.parent))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def in_temporary(path) -> bool:
    """Whether ``path`` lies in a temporary of :func:`atomic_path` or :func:`scratch_folder` (work in progress)."""
    return any(_OWNER.search(part) for part in Path(path).parts)


def _owner_alive(tmp: Path) -> bool:
    """Whether the process that made a temporary may still be writing it: only a live process on this
    host counts (a temporary from another host or of the old unnamed form has no checkable owner)."""
    m = _OWNER.search(tmp.name)
    if not m or m.group(2) != _HOST:
        return False
    try:
        os.kill(int(m.group(1)), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


def remove_stale_temporaries(root: str | os.PathLike = "results") -> list[Path]:
    """Remove temporaries under ``root`` whose writer was a process of this host that is gone
    (a job killed by SIGKILL or a crashed node); returns what was removed. Temporaries of live
    processes, and of other hosts (their jobs may still run), are left alone."""
    removed = []
    for folder, dirs, _files in os.walk(root):
        for name in list(dirs):
            if not name.startswith(".") or not name.endswith(".tmp"):
                continue
            dirs.remove(name)  # never walk into a temporary
            m = _OWNER.search(name)
            tmp = Path(folder) / name
            if m and m.group(2) == _HOST and not _owner_alive(tmp):
                shutil.rmtree(tmp, ignore_errors=True)
                removed.append(tmp)
    return removed


def write_json(path, data: dict) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def save_model(model, tokenizer, folder) -> None:
    """Save a Hugging Face model and tokenizer folder atomically (experts fused as transformers stores them)."""
    from pruneflow.core.experts import experts_fused

    with atomic_path(folder) as tmp, experts_fused(model):
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
