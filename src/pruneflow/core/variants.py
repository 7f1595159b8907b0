"""Variants on disk: a model state stored as its parent plus what changed, read block by block.

A variant folder (``results/<model>/<variant>/``) holds:

    variant.json                 format, kind (full | compact | structured), parent (a relative path), the
                                 parent's manifest checksum, dtype, and which blocks store what
    model/, weights/             full variants only (the dense model): its config and tokenizer, and its
                                 weights one file a block (:mod:`pruneflow.core.weights`)
    masks/block<i>.safetensors   bit-packed keep-masks {linear name: [out, in]}; absent when inherited
    values/block<i>.safetensors  the kept values [kept] of every matrix whose kept weights changed, in the
                                 model's dtype (SparseGPT, reconstruction, retraining); nothing for magnitude, Wanda
    params.safetensors           every other parameter that changed (norms, biases, head, embeddings), whole,
                                 keyed by ``model.named_parameters()`` names
    sparsity.json                measured sparsity of every prunable matrix and the mask check, computed when written
    summary.json                 how the variant was made
    manifest.json                size and checksum of every file (pruneflow.core.artifacts)

Masks and values are keyed by block index and the linear names of the architecture adapter, so the
format follows the adapter to new families. Block i of a compact variant is its parent's block i
(recursively, down to a full variant), multiplied by the variant's own masks, with the stored values
scattered into the kept positions and the stored parameters copied: bit for bit the block that was
written (tested). A compact variant whose config differs from its parent's (a LoRA merged into a tied
head unties it) records its config, and the head it now has of its own is among its parameters.

A structured variant (heads or FFN neurons removed: a physically smaller model) stores per block the
indices each sliced parameter keeps (``slices/block<i>.safetensors``) and the values of every parameter
that is not a slice of the parent's (``values/``: output projections that LIAR or bias compensation
repaired, biases they added), with the smaller model's config in ``variant.json``. Its block i is the
parent's block i sliced and rebuilt from that config.

This module reads (:func:`open_source`); :mod:`pruneflow.core.stream` holds a model as a stream of
these blocks, and :mod:`pruneflow.core.writer` writes them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from pruneflow.core.architectures import new_block, rebuild_block, share_implementation
from pruneflow.core.artifacts import ArtifactError, block_file, load_tensors, manifest_digest, verify_folder
from pruneflow.core.mask_files import load_block_masks
from pruneflow.core.weights import CONFIG_DIR, has_weights, read_block, read_rest

RECORD = "variant.json"
FORMAT = 2  # 2: full variants store their weights one file a block (format 1 kept a Hugging Face folder)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class VariantError(ArtifactError):
    """A variant cannot be rebuilt: its parent is missing or does not match its stored parts."""


def read_record(folder) -> dict:
    path = Path(folder) / RECORD
    if not path.is_file():
        raise VariantError(f"{folder}: no {RECORD}, so it is not a PruneFlow variant (or it is incomplete); delete it and rerun")
    return json.loads(path.read_text())


def parent_folder(folder, record: dict) -> Path | None:
    return None if record.get("parent") is None else Path(os.path.normpath(Path(folder) / record["parent"]))


def open_source(folder):
    """The stored variant in ``folder`` as a chain of levels down to its full ancestor, each verified
    against its manifest; a level gives block i with its changes applied (``block``), the tensors
    outside the blocks (``rest``) and block i's keep-masks (``masks``)."""
    folder = Path(folder)
    verify_folder(folder)
    record = read_record(folder)
    if record.get("format", 1) != FORMAT:
        raise VariantError(f"{folder} was written by an older PruneFlow (variant format {record.get('format', 1)}, "
                           f"this one reads {FORMAT}); delete {folder} and rerun")
    if record["kind"] == "full":
        return _Full(folder, record)
    parent = parent_folder(folder, record)
    if not (parent / RECORD).is_file():
        raise VariantError(
            f"{folder} is stored as changes to {parent}, which is missing; rerun it (snakemake {parent}) "
            f"or delete {folder} and rerun"
        )
    if manifest_digest(parent) != record["parent_manifest"]:
        raise VariantError(
            f"{folder} was made from another {parent}: the parent's manifest checksum differs from the one "
            f"recorded in {folder / RECORD}; delete {folder} and rerun"
        )
    return (_Structured if record["kind"] == "structured" else _Compact)(folder, record, open_source(parent))


def torch_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise VariantError(f"dtype {name!r}: allowed {', '.join(DTYPES)}")
    return DTYPES[name]


class _Level:
    """One variant of a lineage. The stream that reads it sets, on the lineage's root, ``blocks_path``
    (where the model keeps its blocks) and ``arch`` (its architecture, once found)."""

    arch = None
    blocks_path = None

    def __init__(self, folder: Path, record: dict):
        self.folder, self.record = folder, record
        self.dtype = torch_dtype(record["dtype"])
        self._params: dict | None = None

    def _own_masks(self, index: int) -> dict[str, torch.Tensor] | None:
        path = block_file(self.folder / "masks", index)
        if not path.is_file():
            raise VariantError(f"{path}: missing (block {index} of the variant's masks); delete {self.folder} and rerun")
        return load_block_masks(path)

    def params(self) -> dict[str, torch.Tensor]:
        """The stored parameters (read once)."""
        if self._params is None:
            self._params = load_tensors(self.folder / "params.safetensors")[0] if self.record.get("params") else {}
        return self._params

    def lineage(self) -> list["_Level"]:
        """This level and its ancestors, down to the full one."""
        return [self] + (self.parent.lineage() if hasattr(self, "parent") else [])

    def adopt(self, config, blocks_path: str) -> None:
        """Every level of the lineage runs as ``config`` does (attention implementation); blocks sit at ``blocks_path``."""
        for level in self.lineage():
            share_implementation(level.config, config)
        self.root.blocks_path = blocks_path

    def block_params(self, index: int) -> dict[str, torch.Tensor]:
        prefix = f"{self.root.blocks_path}.{index}."
        return {n.removeprefix(prefix): v for n, v in self.params().items() if n.startswith(prefix)}

    def rest_params(self) -> dict[str, torch.Tensor]:
        prefix = f"{self.root.blocks_path}."
        return {n: v for n, v in self.params().items() if not n.startswith(prefix)}


class _Full(_Level):
    """A whole model stored one file a block."""

    def __init__(self, folder: Path, record: dict):
        from transformers import AutoConfig

        super().__init__(folder, record)
        if not has_weights(folder):
            raise VariantError(f"{folder}: no weights/ folder (written by an older PruneFlow?); delete {folder} and rerun")
        self.config = AutoConfig.from_pretrained(folder / CONFIG_DIR)
        self.root = self
        self.has_masks = record.get("masks") == "own"

    def masks(self, index: int):
        return self._own_masks(index) if self.has_masks else None

    def block(self, index: int, block_class) -> torch.nn.Module:
        block = new_block(block_class, self.config, index, buffers=True, dtype=self.dtype)
        try:
            block.load_state_dict(read_block(self.folder, index), strict=True, assign=True)
        except RuntimeError as err:
            raise VariantError(f"{self.folder}: block {index} does not fit its config ({str(err).splitlines()[-1].strip()}); "
                               f"delete {self.folder} and rerun") from None
        return block

    def rest(self) -> dict[str, torch.Tensor]:
        return read_rest(self.folder)

    def rest_signature(self) -> tuple:
        return (str(self.folder.resolve()), manifest_digest(self.folder))


class _Child(_Level):
    def __init__(self, folder: Path, record: dict, parent: _Level):
        super().__init__(folder, record)
        self.parent, self.root = parent, parent.root
        self.config = type(parent.config).from_dict(record["config"]) if record.get("config") else parent.config

    @property
    def arch(self):
        return self.root.arch

    @arch.setter
    def arch(self, value):
        self.root.arch = value

    def rest_param_names(self) -> list[str]:
        """Names of the stored parameters outside the blocks (from the record: no tensor is read)."""
        prefix = f"{self.root.blocks_path}."
        return [n for n in self.record.get("params", []) if not n.startswith(prefix)]

    def rest(self) -> dict[str, torch.Tensor]:
        return {**self.parent.rest(), **self.rest_params()}

    def rest_signature(self) -> tuple:
        own = self.rest_param_names()
        return self.parent.rest_signature() + ((str(self.folder.resolve()), *own) if own else ())


class _Compact(_Child):
    """Parent × own keep-masks, stored values scattered into the kept positions, stored parameters."""

    @property
    def has_masks(self) -> bool:
        return self.record["masks"] == "own" or self.parent.has_masks

    def masks(self, index: int):
        return self._own_masks(index) if self.record["masks"] == "own" else self.parent.masks(index)

    @torch.no_grad()
    def block(self, index: int, block_class) -> torch.nn.Module:
        block = self.parent.block(index, block_class)
        arch, own = self.arch, self.record["masks"] == "own"
        masks = self.masks(index) or {}
        values_path = block_file(self.folder / "values", index)
        values = load_tensors(values_path)[0] if index in self.record["values"] else {}
        linears = arch.block_linears(block)
        for name, keep in masks.items():
            w = arch.weight(linears[name]) if name in linears else None
            if w is None or tuple(w.shape) != tuple(keep.shape):
                raise VariantError(
                    f"{block_file(self.folder / 'masks', index)}: mask {name!r} of shape {tuple(keep.shape)} does not fit the "
                    f"matrix {'(absent)' if w is None else tuple(w.shape)} of block {index} in {self.parent.folder}; "
                    f"delete {self.folder} and rerun"
                )
            if own:
                w.mul_(keep)
            if name in values:
                _scatter(w, keep, values[name], values_path, name, self)
        if set(values) - set(masks):
            raise VariantError(f"{values_path}: values without a mask; delete {self.folder} and rerun")
        _copy_params(block, self.block_params(index), self)
        return block


class _Structured(_Child):
    """The parent's blocks sliced by the stored indices, the stored values put in, rebuilt from the smaller config."""

    has_masks = False

    def masks(self, index: int):
        return None

    @torch.no_grad()
    def block(self, index: int, block_class) -> torch.nn.Module:
        parent_block = self.parent.block(index, block_class)
        state = parent_block.state_dict()
        slices_path = block_file(self.folder / "slices", index)
        slices, meta = load_tensors(slices_path) if index in self.record["slices"] else ({}, {})
        for name, kept in slices.items():
            if name not in state:
                raise VariantError(f"{slices_path}: {name!r} is not a parameter of block {index} in {self.parent.folder}; "
                                   f"delete {self.folder} and rerun")
            state[name] = state[name].index_select(int(meta[name]), kept)
        if index in self.record["values"]:
            state.update(load_tensors(block_file(self.folder / "values", index))[0])
        try:
            block = rebuild_block(parent_block, self.config, index, state)
        except RuntimeError as err:
            raise VariantError(f"{self.folder}: block {index} does not fit its stored config "
                               f"({str(err).splitlines()[-1].strip()}); delete {self.folder} and rerun") from None
        _copy_params(block, self.block_params(index), self)
        return block


def _scatter(w, keep, values, path, name, level) -> None:
    kept = int(keep.sum())
    if values.dtype != w.dtype or values.numel() != kept:
        raise VariantError(
            f"{path}: {name!r} holds {values.numel()} {values.dtype} values; the matrix in {level.parent.folder} keeps {kept} "
            f"{w.dtype} weights; delete {level.folder} and rerun"
        )
    w.masked_scatter_(keep, values)


def _copy_params(module, params: dict, level) -> None:
    own = dict(module.named_parameters())
    for name, value in params.items():
        p = own.get(name)
        if p is None or p.shape != value.shape or p.dtype != value.dtype:
            have = "absent" if p is None else f"{tuple(p.shape)} {p.dtype}"
            raise VariantError(
                f"{level.folder / 'params.safetensors'}: {name!r} is {tuple(value.shape)} {value.dtype}, the parameter in "
                f"{level.parent.folder} is {have}; delete {level.folder} and rerun"
            )
        p.copy_(value)

