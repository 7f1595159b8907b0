"""A whole model's weights on disk, one safetensors file a block: what a model stream reads lazily.

A full variant (the dense model, say) stores::

    model/                       config.json, generation_config.json and the tokenizer's files: no weights
    weights/rest.safetensors     every tensor outside the decoder blocks (a tied head once), by model-level name
    weights/block<i>.safetensors block i's state (parameters and persistent buffers), by names inside the block,
                                 in PruneFlow's working layout (experts unfused, one linear each)

so a job reads the embeddings and head, and one block at a time, never the whole file. Names follow the
model's own modules, not a checkpoint's conventions (transformers 5 saves some families under other
names than its modules carry): a Hugging Face folder is written on demand by ``export``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from pruneflow.core.artifacts import block_file, load_tensors, save_tensors

CONFIG_DIR = "model"
WEIGHTS_DIR = "weights"
REST = "rest.safetensors"


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def write_config(folder, config, tokenizer=None, generation_config=None, dtype: torch.dtype | None = None) -> None:
    """``model/``: the config (with the stored dtype), the generation config, the tokenizer."""
    out = Path(folder) / CONFIG_DIR
    out.mkdir(parents=True, exist_ok=True)
    if dtype is not None:
        config.dtype = dtype_name(dtype)
    config.save_pretrained(out)
    if generation_config is not None:
        generation_config.save_pretrained(out)
    if tokenizer is not None:
        tokenizer.save_pretrained(out)


def block_state(block: nn.Module) -> dict[str, torch.Tensor]:
    """What a block file holds: its parameters and persistent buffers, by names inside the block."""
    return {name: t.detach() for name, t in block.state_dict().items()}


def rest_state(model: nn.Module, blocks_path: str) -> dict[str, torch.Tensor]:
    """Every tensor of the model outside its blocks, by model-level name; a tensor shared by two names (a
    head tied to the embeddings) is kept under its first name only."""
    prefix = blocks_path + "."
    seen, out = set(), {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        if name.startswith(prefix) or id(tensor) in seen:
            continue
        seen.add(id(tensor))
        out[name] = tensor.detach()
    return out


def write_block(folder, index: int, state: dict[str, torch.Tensor]) -> Path:
    path = block_file(Path(folder) / WEIGHTS_DIR, index)
    save_tensors(path, state)
    return path


def write_rest(folder, state: dict[str, torch.Tensor]) -> None:
    save_tensors(Path(folder) / WEIGHTS_DIR / REST, state)


def write_model(folder, model: nn.Module, blocks: nn.ModuleList, blocks_path: str, tokenizer=None) -> None:
    """An in-memory model in the layout above."""
    write_config(folder, model.config, tokenizer, getattr(model, "generation_config", None), model.dtype)
    for i, block in enumerate(blocks):
        write_block(folder, i, block_state(block))
    write_rest(folder, rest_state(model, blocks_path))


def read_block(folder, index: int) -> dict[str, torch.Tensor]:
    """Block ``index``'s state (checksum verified)."""
    return load_tensors(block_file(Path(folder) / WEIGHTS_DIR, index))[0]


def read_rest(folder) -> dict[str, torch.Tensor]:
    return load_tensors(Path(folder) / WEIGHTS_DIR / REST)[0]


def has_weights(folder) -> bool:
    return (Path(folder) / WEIGHTS_DIR / REST).is_file()
