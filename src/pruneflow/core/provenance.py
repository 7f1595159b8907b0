"""What a job read, as it was when read, and what made an artifact.

Inside a job (:func:`pruneflow.core.runtime.job`) every file read through PruneFlow's readers is noted with its
size, modification and change times and xxh3-128 checksum, taken when it was read: sources (a local model's
files, corpus files) and artifacts (corpus splits, calibration windows, variants). :func:`check_reads`
compares each with its state now; it runs before a result is put in place and when the job ends, so a file
changed while the job ran (a corpus appended, a ``config.json`` edited, an evaluation text replaced) fails the
job, naming the file, and Snakemake discards the job's outputs. The change time catches an edit whose
modification time was set back; a file only touched is checksummed again and passes.

:func:`record` is what every manifest carries: the sources read (as noted), the pruneflow version and
``code``, a checksum of the pruneflow modules the job had loaded (their bytes: the exact code that ran).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import xxhash

from pruneflow.core.atomic import in_temporary

CHUNK = 1 << 24
MANIFEST = "manifest.json"  # a folder artifact's, inside it
SIDECAR = ".manifest"  # a file artifact's: <name>.manifest beside it (JSON; not *.json, so a glob for results finds none)
_READS: dict[str, dict] | None = None  # path -> what was noted; None outside a job: nothing is noted
_SOURCES: set[str] = set()


class InputChangedError(RuntimeError):
    """A file a job read changed before the job ended; the message names the file."""


def file_checksum(path) -> str:
    h = xxhash.xxh3_128()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def sidecar(path) -> Path:
    """The manifest of the file artifact ``path``: ``<name>.manifest`` beside it."""
    path = Path(path)
    return path.with_name(path.name + SIDECAR)


def manifest_of(artifact) -> Path:
    """Where ``artifact``'s manifest is: inside it (a folder) or beside it (a file)."""
    artifact = Path(artifact)
    return artifact / MANIFEST if artifact.is_dir() else sidecar(artifact)


def _stat(path, st: os.stat_result | None = None) -> dict:
    st = st or os.stat(path)
    return {"bytes": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns}


def start_job() -> None:
    """From now on, reads are noted (a job's start; :func:`end_job` stops it)."""
    global _READS
    _READS = {}
    _SOURCES.clear()


def end_job() -> None:
    global _READS
    _READS = None
    _SOURCES.clear()


def note_read(path, data: bytes | None = None, checksum: str | None = None, stat: os.stat_result | None = None,
              source: bool = False, hashed: bool = True) -> None:
    """Note ``path`` as read now, with ``stat`` taken before it was read (else now) and its checksum: of ``data``
    (its bytes as read), ``checksum`` (one already taken), or of the file, hashed here. ``hashed=False``: no
    file checksum (any later change of size or times counts as a change). ``source``: a file from outside the
    workflow's results, recorded in every manifest the job writes."""
    if _READS is None or in_temporary(path):  # the job's own work in progress, renamed when done
        return
    key = record_name(path)
    if data is not None:
        checksum = xxhash.xxh3_128(data).hexdigest()
    elif checksum is None and hashed:
        stat = stat or os.stat(key)
        checksum = file_checksum(key)
    _READS[key] = {**_stat(key, stat), "xxh3_128": checksum}
    if source:
        _SOURCES.add(key)


def record_name(path) -> str:
    """How records name a file: relative to the working directory when inside it (a workflow's folder may move),
    else absolute."""
    path = os.path.abspath(path)
    inside = os.path.relpath(path)
    return path if inside.startswith(os.pardir) else inside


def note_sources(paths) -> None:
    for path in paths:
        note_read(path, source=True)


def changed_reads() -> list[str]:
    """One line for every noted file whose bytes differ now from when it was read (or that is gone)."""
    changed = []
    for path, was in (_READS or {}).items():
        try:
            now = _stat(path)
        except FileNotFoundError:
            changed.append(f"{path}: removed")
            continue
        if all(now[k] == was[k] for k in ("bytes", "mtime_ns", "ctime_ns")):
            continue
        if was["xxh3_128"] is None or now["bytes"] != was["bytes"] or file_checksum(path) != was["xxh3_128"]:
            changed.append(f"{path}: {was['bytes']} bytes when read, {now['bytes']} bytes with other contents now")
    return changed


def check_reads() -> None:
    """Fail if a file the job read has changed since: its result would mix the old and the new contents."""
    if changed := changed_reads():
        raise InputChangedError(
            "a file this job read changed before the job ended, so its result is discarded: "
            + "; ".join(changed) + ". Rerun once nothing writes to it (a plain rerun reads it anew)."
        )


def record() -> dict:
    """What made the artifact being written: the sources read, the pruneflow version, the code."""
    from pruneflow import __version__

    sources = {p: {k: v for k, v in (_READS or {})[p].items() if k != "ctime_ns"} for p in sorted(_SOURCES)}
    return {"pruneflow": __version__, "code": code_digest(loaded_modules()), "sources": sources}


# ---------------------------------------------------------------- code


def loaded_modules() -> list[Path]:
    """Files of the pruneflow modules this process has imported."""
    files = {getattr(m, "__file__", None) for name, m in list(sys.modules.items()) if name.split(".")[0] == "pruneflow"}
    return sorted(Path(f) for f in files if f)


def code_digest(files) -> str:
    """One checksum of the bytes of several modules, each named by its path below the ``pruneflow`` package."""
    h = xxhash.xxh3_128()
    for path in sorted(map(Path, files)):
        h.update(f"{module_name(path)}:{file_checksum(path)}\n".encode())
    return h.hexdigest()


def module_name(path: Path) -> str:
    """``pruneflow/core/atomic.py`` for any checkout's copy of it."""
    parts = Path(path).parts
    return "/".join(parts[len(parts) - 1 - parts[::-1].index("pruneflow"):]) if "pruneflow" in parts else Path(path).name
