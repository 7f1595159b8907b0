"""Keep-masks on disk, bit-packed (8 weights a byte) so a mask costs 1/32 of its float32 matrix.

One file per block, ``block<i>.safetensors``, keyed by the linear names the architecture adapter
returns; the unpacked shape [out, in] of each mask is in the file's metadata.
"""

from __future__ import annotations

import numpy as np
import torch

from pruneflow.core.artifacts import ArtifactError, block_count, block_file, block_files, fix, load_tensors, save_tensors


def pack_mask(keep: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(np.packbits(keep.cpu().numpy().astype(np.uint8), axis=-1))


def unpack_mask(packed: torch.Tensor, in_features: int) -> torch.Tensor:
    # unpackbits gives 0/1 bytes: viewing them as bool costs no copy
    return torch.from_numpy(np.unpackbits(packed.numpy(), axis=-1, count=in_features).view(bool))


def save_block_masks(path, masks: dict[str, torch.Tensor]) -> None:
    """Save {linear name: bool [out, in]} with the shapes needed to unpack."""
    tensors = {name: pack_mask(keep) for name, keep in masks.items()}
    shapes = {f"{name}.shape": f"{keep.shape[0]},{keep.shape[1]}" for name, keep in masks.items()}
    save_tensors(path, tensors, metadata=shapes)


def load_block_masks(path) -> dict[str, torch.Tensor]:
    """{linear name: bool [out, in]} from one block's file (checksum verified)."""
    packed, meta = load_tensors(path)
    out = {}
    for name, bits in packed.items():
        shape = meta.get(f"{name}.shape")
        if shape is None:
            raise ArtifactError(f"{path}: mask {name!r} has no recorded shape; {fix(path)}")
        rows, cols = map(int, shape.split(","))
        if tuple(bits.shape) != (rows, (cols + 7) // 8):
            raise ArtifactError(f"{path}: mask {name!r} holds {tuple(bits.shape)} bytes, not the packed shape of {rows}x{cols}; {fix(path)}")
        out[name] = unpack_mask(bits, cols)
    return out


def save_masks(folder, index: int, masks: dict[str, torch.Tensor]) -> None:
    save_block_masks(block_file(folder, index), masks)


def load_masks(folder, count: int | None = None) -> dict[int, dict[str, torch.Tensor]]:
    """{block index: {linear name: keep-mask}}, matched to blocks by the index in each file name.

    ``count`` (the model's number of blocks) makes a missing last block an error too.
    """
    count = block_count(folder) if count is None else count
    return {i: load_block_masks(path) for i, path in enumerate(block_files(folder, count))}
