"""One home for how artifacts sit on disk: atomic folders, checksums, and their verification.

- A folder artifact is written under a temporary name and ends with ``manifest.json`` (every file's
  size and xxh3-128 checksum), written last; the folder is renamed into place only then. A folder
  without a manifest is incomplete; a listed file that is missing, shorter or changed fails on read.
- A safetensors file written here carries a checksum of its tensors in its own metadata, so a
  standalone file (calibration windows) is verified too, and so is every block file in a folder.
- Block files are named by their index (``block007.safetensors``); readers ask for block i by name,
  never by sort order, so a missing block is an error, not a shifted list.
- A file artifact (a result JSON, a table CSV, a corpus split) has its manifest beside it,
  ``<name>.manifest``; :func:`load_file` is the one reader of both kinds of small files (in a folder
  artifact or alone), and :func:`load_json` decodes one. Every manifest also records what made the artifact
  (:func:`pruneflow.core.provenance.record`: the sources a job read, the library version, its code).

Every failure names the file and the fix: delete the artifact that holds it and rerun.
xxh3-128 is not a cryptographic hash: it detects corruption and truncation at ~10 GB/s, which keeps
verification cheap beside loading a model (it does not guard against deliberate tampering).
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import torch
import xxhash
from safetensors import safe_open
from safetensors.torch import save_file as save_safetensors

from pruneflow.core import provenance
from pruneflow.core.atomic import atomic_path
from pruneflow.core.provenance import MANIFEST, file_checksum, sidecar

CHECKSUM_KEY = "pruneflow.xxh3_128"
CHUNK = 1 << 24


class ArtifactError(RuntimeError):
    """A stored artifact is missing, incomplete or corrupt; the message names the file and the fix."""


def artifact_of(path) -> Path:
    """The artifact that holds ``path``: the nearest folder above it with a manifest, else ``path`` itself."""
    path = Path(path)
    for folder in path.parents:
        if (folder / MANIFEST).is_file():
            return folder
    return path


def fix(path) -> str:
    return f"delete {artifact_of(path)} and rerun"


# --- folders ---------------------------------------------------------------------------------


@contextlib.contextmanager
def artifact_folder(path):
    """Yield an empty temporary folder; on success write its manifest and rename it onto ``path``."""
    with atomic_path(path) as tmp:
        tmp.mkdir(parents=True)
        yield tmp
        provenance.check_reads()  # what the job read is unchanged: else nothing is put in place
        write_manifest(tmp)


def write_manifest(folder) -> dict:
    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p != folder / MANIFEST)
    manifest = {
        "algorithm": "xxh3_128",
        "files": {p.relative_to(folder).as_posix(): {"bytes": p.stat().st_size, "xxh3_128": file_checksum(p)} for p in files},
        "made_by": provenance.record(),
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return manifest


def read_manifest(folder) -> dict:
    path = Path(folder) / MANIFEST
    if not path.is_file():
        what = "is not a folder" if not Path(folder).is_dir() else f"has no {MANIFEST}"
        raise ArtifactError(
            f"{folder} {what}: the artifact is missing or incomplete (or was written by an older PruneFlow); "
            f"delete {folder} and rerun"
        )
    try:
        return json.loads(path.read_text())
    except ValueError as err:
        raise ArtifactError(f"{path}: unreadable ({err}); delete {folder} and rerun") from None


def verify_folder(folder, only: list[str] | None = None) -> dict:
    """Check every file the manifest lists (or those in ``only``): present, same size, same checksum.

    Returns the manifest. Sizes of all files are checked first (cheap), then checksums.
    """
    folder = Path(folder)
    manifest = read_manifest(folder)
    listed = manifest["files"]
    names = list(listed) if only is None else only
    for name in names:
        path = folder / name
        record = listed.get(name)
        if record is None:
            raise ArtifactError(f"{path}: not listed in {folder / MANIFEST}; delete {folder} and rerun")
        if not path.is_file():
            raise ArtifactError(f"{path}: missing (listed in {folder / MANIFEST}); delete {folder} and rerun")
        size = path.stat().st_size
        if size != record["bytes"]:
            raise ArtifactError(
                f"{path}: {size} bytes, {record['bytes']} recorded in {folder / MANIFEST} (truncated or changed); "
                f"delete {folder} and rerun"
            )
    for name in names:
        path = folder / name
        before = os.stat(path)  # noted as read before it is hashed: a change while hashing shows at the job's end
        if file_checksum(path) != listed[name]["xxh3_128"]:
            raise ArtifactError(
                f"{path}: checksum differs from {folder / MANIFEST} (corrupt, or changed after it was "
                f"written); delete {folder} and rerun"
            )
        provenance.note_read(path, checksum=listed[name]["xxh3_128"], stat=before)
    return manifest


def manifest_digest(folder) -> str:
    """A checksum of the whole artifact: its manifest's bytes (every file's checksum is in it)."""
    read_manifest(folder)
    return file_checksum(Path(folder) / MANIFEST)


def block_file(folder, index: int) -> Path:
    return Path(folder) / f"block{index:03d}.safetensors"


def block_files(folder, count: int) -> list[Path]:
    """The files of blocks 0..count-1, by index; a missing one is an error naming it."""
    files = [block_file(folder, i) for i in range(count)]
    for path in files:
        if not path.is_file():
            raise ArtifactError(f"{path}: missing (block {files.index(path)} of {count}); {fix(path)}")
    return files


def block_count(folder) -> int:
    """Blocks stored in ``folder``: one more than the highest index; gaps are found by :func:`block_files`."""
    indices = [int(p.stem.removeprefix("block")) for p in Path(folder).glob("block*.safetensors")]
    if not indices:
        raise ArtifactError(f"{folder}: no block files; {fix(folder)}")
    return max(indices) + 1


# --- small files: results, tables, corpus splits ----------------------------------------------------


def save_file(path, data: bytes) -> None:
    """Write the file artifact ``path`` atomically, then its manifest beside it (its size and checksum, and what
    made it); nothing is put in place if a file the job read has changed."""
    path = Path(path)
    provenance.check_reads()
    manifest = {"algorithm": "xxh3_128", "files": {path.name: {"bytes": len(data), "xxh3_128": xxhash.xxh3_128(data).hexdigest()}},
                "made_by": provenance.record()}
    with atomic_path(path) as tmp:  # a crash between the two leaves a file its manifest does not match: refused
        tmp.write_bytes(data)
    with atomic_path(sidecar(path)) as tmp:
        tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")


def load_file(path) -> bytes:
    """The bytes of a file PruneFlow wrote, checked against the manifest of the folder artifact that holds it,
    or against its own manifest beside it; noted as read (:mod:`pruneflow.core.provenance`). A missing,
    changed or unlisted file, or a missing or unreadable manifest, raises :class:`ArtifactError` naming the
    file and the fix."""
    path = Path(path)
    holder = artifact_of(path)
    if holder != path:
        manifest_path, name = holder / MANIFEST, path.relative_to(holder).as_posix()
        listed = read_manifest(holder)["files"].get(name)
    else:
        manifest_path, name = sidecar(path), path.name
        listed = _read_sidecar(path).get("files", {}).get(name)
    if listed is None:
        raise ArtifactError(f"{path}: not listed in {manifest_path}; {fix(path)}")
    try:
        before = os.stat(path)
        data = path.read_bytes()
    except FileNotFoundError:
        raise ArtifactError(f"{path}: missing (listed in {manifest_path}); {fix(path)}") from None
    if len(data) != listed["bytes"] or xxhash.xxh3_128(data).hexdigest() != listed["xxh3_128"]:
        raise ArtifactError(f"{path}: {len(data)} bytes whose checksum differs from {manifest_path} (corrupt, truncated, "
                            f"or changed after it was written); {fix(path)}")
    provenance.note_read(path, data=data, stat=before)
    return data


def _read_sidecar(path: Path) -> dict:
    manifest = sidecar(path)
    if not manifest.is_file():
        what = "missing" if not path.is_file() else f"no {manifest.name} beside it (incomplete, or written by an older PruneFlow)"
        raise ArtifactError(f"{path}: {what}; delete {path} and rerun")
    try:
        return json.loads(manifest.read_text())
    except ValueError as err:
        raise ArtifactError(f"{manifest}: unreadable ({err}); delete {path} and rerun") from None


def decode_text(path, data: bytes) -> str:
    """UTF-8 text of a checked file; bytes that are not (a writer's fault) name the file and the fix."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ArtifactError(f"{path}: not UTF-8 text ({err}); {fix(path)}") from None


def save_json(path, data: dict) -> None:
    """A JSON file artifact (a result), with its manifest beside it."""
    save_file(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())


def load_json(path) -> dict:
    """A JSON file PruneFlow wrote (alone, or in a folder artifact), checked (:func:`load_file`) and decoded."""
    text = decode_text(path, load_file(path))
    try:
        return json.loads(text)
    except ValueError as err:
        raise ArtifactError(f"{path}: not JSON ({err}); {fix(path)}") from None


# --- tensor files ------------------------------------------------------------------------------


def tensors_checksum(tensors: dict[str, torch.Tensor]) -> str:
    """xxh3-128 over names, dtypes, shapes and bytes, in name order (independent of the file layout)."""
    h = xxhash.xxh3_128()
    for name in sorted(tensors):
        _hash_tensor(h, name, tensors[name])
    return h.hexdigest()


def _hash_tensor(h, name: str, tensor: torch.Tensor) -> None:
    t = tensor.detach().contiguous().cpu()
    h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
    h.update(t.reshape(-1).view(torch.uint8).numpy())


_DTYPES = {"BOOL": torch.bool, "U8": torch.uint8, "I8": torch.int8, "I16": torch.int16, "I32": torch.int32,
           "I64": torch.int64, "F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32, "F64": torch.float64}


def _file_checksum(path: Path) -> str:
    """:func:`tensors_checksum` of a safetensors file, from its header and bytes (a tensor's bytes in the file
    are its bytes in memory)."""
    h = xxhash.xxh3_128()
    buffer = memoryview(bytearray(CHUNK))
    with open(path, "rb") as f:
        size = int.from_bytes(f.read(8), "little")
        if size > path.stat().st_size:
            raise EOFError(f"its header length {size} exceeds the file's size")
        header = json.loads(f.read(size))
        for name in sorted(k for k in header if k != "__metadata__"):
            info = header[name]
            h.update(f"{name}|{_DTYPES[info['dtype']]}|{tuple(info['shape'])}|".encode())
            begin, end = info["data_offsets"]
            f.seek(8 + size + begin)
            while begin < end:
                got = f.readinto(buffer[:min(CHUNK, end - begin)])
                if not got:
                    raise EOFError(f"tensor {name!r} ends past the end of the file")
                h.update(buffer[:got])
                begin += got
    return h.hexdigest()


def save_tensors(path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Write a safetensors file atomically, its tensors' checksum in its metadata."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    meta = {**(metadata or {}), CHECKSUM_KEY: tensors_checksum(tensors)}
    with atomic_path(path) as tmp:
        try:
            save_safetensors(tensors, str(tmp), metadata=meta)
        except Exception as err:  # safetensors' own error names no file (a full disk: "File too large (os error 27)")
            raise ArtifactError(f"could not write {path}: {err}; free space where it goes (nothing of it is kept) and rerun") from err


def load_tensors(path, device="cpu", keep=None) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a file written by :func:`save_tensors`, verify its checksum; returns (tensors, metadata).

    The tensors are memory-mapped (safetensors' ``safe_open``): a page is read when it is first touched, so a
    lookup into an embedding holds the rows it reads, not the matrix. The checksum is taken from the file's
    bytes with plain reads, which leave nothing mapped. ``keep``: a test on tensor names; the others are checked,
    never returned."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: missing; {fix(path)}")
    try:
        before = os.stat(path)
        checksum = _file_checksum(path)
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in sorted(f.keys()) if keep is None or keep(name)}
    except Exception as err:  # truncated or garbled files raise several kinds of errors
        raise ArtifactError(f"{path}: unreadable ({err.__class__.__name__}: {err}): truncated or corrupt; {fix(path)}") from None
    recorded = meta.get(CHECKSUM_KEY)
    if recorded is None:
        raise ArtifactError(f"{path}: no checksum in its metadata (written by an older PruneFlow); {fix(path)}")
    if checksum != recorded:
        raise ArtifactError(f"{path}: checksum of its tensors differs from the one recorded in it (corrupt); {fix(path)}")
    provenance.note_read(path, stat=before, hashed=False)  # its bytes' checksum is not taken: a change fails
    if str(device) != "cpu":
        tensors = {k: v.to(device) for k, v in tensors.items()}
    return tensors, meta
