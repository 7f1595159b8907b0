"""Keep-masks on disk, bit-packed (8 weights a byte) so a mask costs 1/32 of its float32 matrix."""

from __future__ import annotations

import numpy as np
import torch
from safetensors.torch import load_file

from .io import save_tensors


def pack_mask(keep: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(np.packbits(keep.cpu().numpy().astype(np.uint8), axis=-1))


def unpack_mask(packed: torch.Tensor, in_features: int) -> torch.Tensor:
    return torch.from_numpy(np.unpackbits(packed.numpy(), axis=-1, count=in_features).astype(bool))


def save_block_masks(path, masks: dict[str, torch.Tensor]) -> None:
    """Save {linear name: bool [out, in]} with the shapes needed to unpack."""
    tensors = {name: pack_mask(keep) for name, keep in masks.items()}
    shapes = {f"{name}.shape": f"{keep.shape[0]},{keep.shape[1]}" for name, keep in masks.items()}
    save_tensors(path, tensors, metadata=shapes)


def load_block_masks(path) -> dict[str, torch.Tensor]:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    return {
        name: unpack_mask(packed, int(meta[f"{name}.shape"].split(",")[1]))
        for name, packed in load_file(str(path)).items()
    }
