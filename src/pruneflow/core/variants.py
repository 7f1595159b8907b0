"""Variants on disk: a model state stored as its parent plus what changed, rebuilt on load.

A variant folder (``results/<model>/<variant>/``) holds:

    variant.json                 kind (full | compact), parent (a relative path), the parent's manifest checksum
    model/                       full variants only: a Hugging Face folder (the dense model; structured
                                 variants, which are physically smaller)
    masks/block<i>.safetensors   bit-packed keep-masks {linear name: [out, in]}; absent when inherited
    values/block<i>.safetensors  the kept values [kept] of every matrix whose kept weights changed, in the
                                 model's dtype (SparseGPT, reconstruction, retraining); nothing for magnitude, Wanda
    params.safetensors           every other parameter that changed (norms, biases, head, embeddings), whole,
                                 keyed by ``model.named_parameters()`` names
    sparsity.json                measured sparsity of every prunable matrix and the mask check, computed when written
    summary.json                 how the variant was made
    manifest.json                size and checksum of every file (pruneflow.core.artifacts)

Masks and values are keyed by block index and the linear names of the architecture adapter, so the
format follows the adapter to new families. Loading rebuilds the parent (recursively, down to a full
variant), multiplies each masked matrix by its mask, scatters the stored values into the kept
positions and copies the stored parameters: bit for bit the model that was written (tested).
A variant whose structure or config differs from its parent's (a LoRA merged into a tied head unties
it, say) is stored full.

A structured variant (heads or FFN neurons removed: a physically smaller model) is stored as its parent
plus, per block, the indices each sliced parameter keeps (``slices/block<i>.safetensors``) and the values
of every parameter that is not a slice of the parent's (``values/``: output projections that LIAR or bias
compensation repaired, biases they added), with the smaller model's config in ``variant.json``. Loading
slices the parent's blocks and rebuilds each from that config: a model with fewer heads and neurons, bit
for bit the one that was written.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from pruneflow.core.architectures import architecture_of
from pruneflow.core.artifacts import (
    ArtifactError, artifact_folder, block_file, load_tensors, manifest_digest, save_tensors, verify_folder,
)
from pruneflow.core.experts import experts_fused
from pruneflow.evaluate.perplexity import check_masks_kept, check_sparsity, measured_sparsity
from pruneflow.core.atomic import save_model, write_json
from pruneflow.core.mask_files import load_masks, save_masks
from pruneflow.core.models import load_model

RECORD = "variant.json"
FORMAT = 1


class VariantError(ArtifactError):
    """A variant cannot be rebuilt: its parent is missing or does not match its stored parts."""


# --- reading ---------------------------------------------------------------------------------


def read_record(folder) -> dict:
    path = Path(folder) / RECORD
    if not path.is_file():
        raise VariantError(f"{folder}: no {RECORD}, so it is not a PruneFlow variant (or it is incomplete); delete it and rerun")
    return json.loads(path.read_text())


def parent_folder(folder, record: dict) -> Path | None:
    return None if record.get("parent") is None else Path(os.path.normpath(Path(folder) / record["parent"]))


def load_variant(folder):
    """(model, tokenizer) of a variant, rebuilt from its parent and verified against its manifest."""
    model, tok, _ = load_variant_with_masks(folder)
    return model, tok


def load_variant_with_masks(folder):
    """(model, tokenizer, masks): masks {block: {linear: keep}} are the variant's own or inherited (None if none)."""
    folder = Path(folder)
    verify_folder(folder)
    record = read_record(folder)
    if record["kind"] == "full":
        model, tok = load_model(folder / "model")
        return model, tok, _own_masks(folder, model)
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
    model, tok, inherited = load_variant_with_masks(parent)
    if record["kind"] == "structured":
        _rebuild_structured(model, folder, parent, record)
        return model, tok, None
    own = _own_masks(folder, model)
    masks = own if own is not None else inherited
    _rebuild(model, folder, parent, record, own, masks)
    return model, tok, masks


def _own_masks(folder: Path, model) -> dict | None:
    if not (folder / "masks").is_dir():
        return None
    return load_masks(folder / "masks", len(architecture_of(model).get_blocks(model)))


@torch.no_grad()
def _rebuild(model, folder: Path, parent: Path, record: dict, own: dict | None, masks: dict | None) -> None:
    arch = architecture_of(model)
    blocks = arch.get_blocks(model)
    stored_values = set(record.get("values", []))
    for i, block in enumerate(blocks):
        linears = arch.block_linears(block)
        values = load_tensors(block_file(folder / "values", i))[0] if i in stored_values else {}
        for name, keep in (masks or {}).get(i, {}).items():
            w = arch.weight(linears[name]) if name in linears else None
            if w is None or tuple(w.shape) != tuple(keep.shape):
                raise VariantError(
                    f"{block_file(folder / 'masks', i)}: mask {name!r} of shape {tuple(keep.shape)} does not fit the "
                    f"matrix {'(absent)' if w is None else tuple(w.shape)} of block {i} in {parent}; delete {folder} and rerun"
                )
            if own is not None:
                w.mul_(keep)
            if name in values:
                _scatter(w, keep, values[name], block_file(folder / "values", i), name, parent, folder)
        if set(values) - set((masks or {}).get(i, {})):
            raise VariantError(f"{block_file(folder / 'values', i)}: values without a mask; delete {folder} and rerun")
    if record.get("params"):
        _copy_params(model, load_tensors(folder / "params.safetensors")[0], folder, parent)


def _scatter(w, keep, values, path, name, parent, folder) -> None:
    kept = int(keep.sum())
    if values.dtype != w.dtype or values.numel() != kept:
        raise VariantError(
            f"{path}: {name!r} holds {values.numel()} {values.dtype} values; the matrix in {parent} keeps {kept} "
            f"{w.dtype} weights; delete {folder} and rerun"
        )
    w.masked_scatter_(keep, values)


def _copy_params(model, params: dict, folder: Path, parent: Path) -> None:
    own = dict(model.named_parameters())
    for name, value in params.items():
        p = own.get(name)
        if p is None or p.shape != value.shape or p.dtype != value.dtype:
            have = "absent" if p is None else f"{tuple(p.shape)} {p.dtype}"
            raise VariantError(
                f"{folder / 'params.safetensors'}: {name!r} is {tuple(value.shape)} {value.dtype}, the parameter in "
                f"{parent} is {have}; delete {folder} and rerun"
            )
        p.copy_(value)


@torch.no_grad()
def _rebuild_structured(model, folder: Path, parent: Path, record: dict) -> None:
    """Slice the parent's blocks by the stored indices, put in the stored values, rebuild each block
    from the smaller model's config (in place)."""
    from pruneflow.structured.prune import rebuild_block, set_config

    arch = architecture_of(model)
    blocks = arch.get_blocks(model)
    config = type(model.config).from_dict(record["config"])
    set_config(model, config)  # first, so the blocks are built with how the parent runs (attention implementation)
    for i in range(len(blocks)):
        state = blocks[i].state_dict()
        slices, meta = load_tensors(block_file(folder / "slices", i)) if i in record["slices"] else ({}, {})
        values = load_tensors(block_file(folder / "values", i))[0] if i in record["values"] else {}
        for name, index in slices.items():
            if name not in state:
                raise VariantError(f"{block_file(folder / 'slices', i)}: {name!r} is not a parameter of block {i} in {parent}; delete {folder} and rerun")
            state[name] = state[name].index_select(int(meta[name]), index)
        state.update(values)
        try:
            blocks[i] = rebuild_block(blocks[i], config, i, state)
        except RuntimeError as err:
            raise VariantError(f"{folder}: block {i} does not fit its stored config ({str(err).splitlines()[-1].strip()}); delete {folder} and rerun") from None
    if record.get("params"):
        _copy_params(model, load_tensors(folder / "params.safetensors")[0], folder, parent)


# --- writing ---------------------------------------------------------------------------------
# Writers run inside ``artifacts.artifact_folder(final)`` and get its temporary folder ``out``;
# ``at`` is ``final``, where the folder will live (the parent is recorded relative to it).


def write_full_variant(out: Path, model, tokenizer, summary: dict, requested: float | None = None,
                       block_requested: list[float] | None = None) -> dict:
    """The model as a Hugging Face folder (the dense model, a structured variant)."""
    save_model(model, tokenizer, Path(out) / "model")
    masks = _own_masks(Path(out), model)
    record = {"format": FORMAT, "kind": "full", "parent": None, "parent_manifest": None, "dtype": _dtype(model),
              "masks": "own" if masks else "none"}
    return _finish(Path(out), record, summary, _sparsity(model, masks, requested, block_requested=block_requested))


def write_masked_variant(out: Path, parent_model, parent: Path, at: Path, summary: dict, requested: float | None = None,
                         block_requested: list[float] | None = None) -> dict:
    """Parent × keep-masks: the masks already written to ``out/masks``, ``parent_model`` the parent, unchanged."""
    masks = _own_masks(Path(out), parent_model)
    record = _compact_record(parent_model, parent, at, "own", [], [])
    return _finish(Path(out), record, summary, _sparsity(parent_model, masks, requested, apply=True, block_requested=block_requested))


@torch.no_grad()
def write_variant(out: Path, model, tokenizer, parent: Path, at: Path, summary: dict, requested: float | None = None,
                  block_requested: list[float] | None = None) -> dict:
    """``model`` as changes to the variant at ``parent``: its masks (written to ``out/masks`` by the
    pruning loop, else the parent's), the kept values of every matrix that changed, every other changed
    parameter. Stored full if its structure differs from the parent's. Fails if a pruned weight is not zero."""
    out = Path(out)
    reference, _, inherited = load_variant_with_masks(parent)
    if not _same_structure(model, reference):
        if inherited is not None and not (out / "masks").is_dir():
            for i, block_masks in inherited.items():
                save_masks(out / "masks", i, block_masks)
        return write_full_variant(out, model, tokenizer, summary, requested, block_requested)
    own = _own_masks(out, model)
    masks = own if own is not None else inherited
    sparsity = _sparsity(model, masks, requested, block_requested=block_requested)
    arch = architecture_of(model)
    masked, values = set(), []
    for i, (block, ref_block) in enumerate(zip(arch.get_blocks(model), arch.get_blocks(reference))):
        linears, ref_linears = arch.block_linears(block), arch.block_linears(ref_block)
        changed = {}
        for name, keep in (masks or {}).get(i, {}).items():
            masked.add(id(linears[name].weight))
            kept = arch.weight(linears[name])[keep]
            if not torch.equal(kept, arch.weight(ref_linears[name])[keep]):
                changed[name] = kept
        if changed:
            save_tensors(block_file(out / "values", i), changed)
            values.append(i)
    ref_params = dict(reference.named_parameters())
    params = {n: p for n, p in model.named_parameters() if id(p) not in masked and not torch.equal(p, ref_params[n])}
    if params:
        save_tensors(out / "params.safetensors", params)
    record = _compact_record(model, parent, at, "own" if own is not None else ("inherited" if masks else "none"), values, sorted(params))
    return _finish(out, record, summary, sparsity)


@torch.no_grad()
def write_structured_variant(out: Path, model, tokenizer, parent: Path, at: Path, summary: dict, selections: dict) -> dict:
    """A structured variant as its parent's blocks sliced by ``selections`` ({block: {parameter: (dim,
    kept indices)}}, from ``prune_structured``) plus every tensor that is not such a slice, and the new config."""
    out = Path(out)
    reference, _ = load_variant(parent)
    arch = architecture_of(model)
    sliced, stored = [], []
    for i, (block, ref_block) in enumerate(zip(arch.get_blocks(model), arch.get_blocks(reference))):
        ref_state, picks, values = ref_block.state_dict(), {}, {}
        for name, value in block.state_dict().items():
            dim, index = selections.get(i, {}).get(name, (None, None))
            source = ref_state.get(name)
            if source is not None and index is not None:
                source = source.index_select(dim, index.to(source.device))
            if source is not None and source.shape == value.shape and torch.equal(source, value):
                if index is not None:
                    picks[name] = (dim, index)
            else:
                values[name] = value
        if picks:
            save_tensors(block_file(out / "slices", i), {n: ix.to(torch.int64).clone() for n, (_, ix) in picks.items()},
                         metadata={n: str(d) for n, (d, _) in picks.items()})
            sliced.append(i)
        if values:
            save_tensors(block_file(out / "values", i), values)
            stored.append(i)
    in_blocks = {id(p) for p in arch.get_blocks(model).parameters()}
    ref_params = dict(reference.named_parameters())
    params = {n: p for n, p in model.named_parameters()
              if id(p) not in in_blocks and (n not in ref_params or not torch.equal(p, ref_params[n]))}
    if params:
        save_tensors(out / "params.safetensors", params)
    record = {**_compact_record(model, parent, at, "none", stored, sorted(params)), "kind": "structured",
              "slices": sliced, "config": model.config.to_dict()}
    return _finish(out, record, summary, _sparsity(model, None, None))


def _compact_record(model, parent: Path, at: Path, masks: str, values: list[int], params: list[str]) -> dict:
    return {
        "format": FORMAT, "kind": "compact", "parent": os.path.relpath(os.path.abspath(parent), os.path.abspath(at)),
        "parent_manifest": manifest_digest(parent), "dtype": _dtype(model), "masks": masks, "values": values, "params": params,
    }


def _same_structure(model, reference) -> bool:
    ignore = {"_name_or_path", "transformers_version"}
    if {k: v for k, v in model.config.to_dict().items() if k not in ignore} != {
        k: v for k, v in reference.config.to_dict().items() if k not in ignore
    }:
        return False
    ours, theirs = dict(model.named_parameters()), dict(reference.named_parameters())
    return ours.keys() == theirs.keys() and all(
        ours[n].shape == theirs[n].shape and ours[n].dtype == theirs[n].dtype for n in ours
    )


def _sparsity(model, masks, requested: float | None, apply: bool = False, block_requested: list[float] | None = None) -> dict:
    """Measured sparsity (of the model, or of model × masks when ``apply``), checked against the request
    (per block when ``block_requested`` holds a non-uniform allocation, whose mean is ``requested``);
    every weight a mask prunes must be exactly zero."""
    result = measured_sparsity(model, masks)  # the same zeros either way once check_masks_kept passes
    if requested is not None:
        result["requested"] = requested
        if block_requested is not None:
            result["requested_per_block"] = list(block_requested)
        check_sparsity(result, requested, block_requested)
    if masks is not None and not apply:
        result["masked_weights_checked"] = check_masks_kept(model, masks)
    elif masks is not None:
        result["masked_weights_checked"] = sum(int((~k).sum()) for m in masks.values() for k in m.values())
    return result


def _finish(out: Path, record: dict, summary: dict, sparsity: dict) -> dict:
    write_json(out / RECORD, record)
    write_json(out / "summary.json", summary)
    write_json(out / "sparsity.json", sparsity)
    return record


def _dtype(model) -> str:
    return str(model.dtype).removeprefix("torch.")


# --- export ----------------------------------------------------------------------------------


def export_variant(folder, out) -> None:
    """Write a variant as a self-contained Hugging Face folder (plain safetensors, pruned weights stored
    as zeros) that ``from_pretrained`` loads without PruneFlow; with a manifest of its own."""
    model, tok = load_variant(folder)
    with artifact_folder(out) as tmp, experts_fused(model):
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)


def stored_bytes(folder) -> int:
    """Bytes of a variant's own files (what it adds to the disk beyond its parent)."""
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())

