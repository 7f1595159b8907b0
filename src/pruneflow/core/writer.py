"""Writing variants block by block (the format is :mod:`pruneflow.core.variants`).

A :class:`VariantWriter` is set as the ``sink`` of the stream a job works on: each block the stream
releases is compared with the parent's stored block and its changes are written at once, so a job
never holds its parent whole. Writers run inside ``artifacts.artifact_folder(final)`` and get its
temporary folder ``out``; ``at`` is ``final``, where the folder will live (the parent is recorded
relative to it).

Kinds: ``full`` (every tensor: the dense model), ``masks`` (the parent's blocks × the masks in
``out/masks``: magnitude and Wanda change no weight), ``compact`` (the kept values that changed and every
other changed parameter: SparseGPT, reconstruction, retraining) and ``structured`` (the kept indices of
every sliced parameter and every tensor that is not such a slice).
"""

from __future__ import annotations

import gc
import os
from collections.abc import Mapping
from pathlib import Path

import torch

from pruneflow.core.architectures import architecture_of
from pruneflow.core.artifacts import artifact_folder, block_file, manifest_digest, save_tensors
from pruneflow.core.atomic import write_json
from pruneflow.core.experts import experts_fused
from pruneflow.core.mask_files import load_block_masks, save_masks
from pruneflow.core.runtime import return_freed_memory
from pruneflow.core.sparsity import block_sparsity, check_block_masks_kept, check_sparsity, combine_blocks
from pruneflow.core.stream import ModelStream, load_variant, open_stream
from pruneflow.core.variants import FORMAT, RECORD, VariantError
from pruneflow.core.weights import block_state, dtype_name, rest_state, write_block, write_config, write_rest

KINDS = ("full", "masks", "compact", "structured")


class VariantWriter:
    """Writes a variant into ``out`` as changes to ``parent`` (the stream over the parent folder), a block at a time.

    ``masks``: keep-masks of the variant's own chosen while it is written (interleaved reconstruction), saved
    with each block; otherwise own masks are those the job wrote to ``out/masks``, else the parent's.
    ``selections`` (structured): {block: {parameter: (dim, kept indices)}}.
    """

    def __init__(self, out, parent: ModelStream | None, at=None, kind: str = "compact", masks: Mapping | None = None,
                 selections: dict | None = None, arch=None):
        if kind not in KINDS:
            raise ValueError(f"writer kind {kind!r}: allowed {', '.join(KINDS)}")
        if (kind == "full") != (parent is None) or (parent is not None and parent.in_memory):
            raise ValueError(f"a {kind} variant is written {'alone' if kind == 'full' else 'against a stored parent'}")
        self.out, self.parent, self.at, self.kind = Path(out), parent, at, kind
        self.arch = parent.arch if parent is not None else arch
        self.explicit_masks = masks
        self.selections = {} if selections is None else selections  # filled by the job as it goes: keep the same dict
        self.blocks: dict[int, dict] = {}  # per block: its sparsity report
        self.values: list[int] = []
        self.sliced: list[int] = []
        self.params: dict[str, torch.Tensor] = {}
        self.checked = 0
        self.own_masks = False

    def __call__(self, index: int, block) -> None:  # as a stream's sink
        self.add_block(index, block)

    # --- blocks -------------------------------------------------------------------------------

    def masks(self, index: int) -> dict[str, torch.Tensor] | None:
        if self.explicit_masks is not None:
            masks = self.explicit_masks.get(index)
            if masks is not None:
                save_masks(self.out / "masks", index, masks)
                self.own_masks = True
            return masks
        path = block_file(self.out / "masks", index)
        if path.is_file():
            self.own_masks = True
            return load_block_masks(path)
        return self.parent.masks(index) if self.parent is not None else None

    @torch.no_grad()
    def add_block(self, index: int, block) -> None:
        """Write block ``index`` (``block`` as the job leaves it; cast here to the stored dtype)."""
        if index in self.blocks:
            raise VariantError(f"block {index} was written twice to {self.out}")
        arch = self.arch
        block.to("cpu")  # compared with the parent's block as read, and stored: on the CPU
        if self.parent is not None:
            block.to(self.parent.dtype)
        masks = self.masks(index)
        if self.kind == "full":
            write_block(self.out, index, block_state(block))
        elif self.kind == "masks":
            self.checked += sum(int((~k).sum()) for k in (masks or {}).values())
        elif self.kind == "compact":
            self._compact_block(index, block, masks)
        else:
            self._structured_block(index, block)
        if masks is not None and self.kind != "masks":
            self.checked += check_block_masks_kept(arch, block, index, masks)
        self.blocks[index] = block_sparsity(arch, block, index, masks)

    def _compact_block(self, index: int, block, masks) -> None:
        arch, ref = self.parent.arch, self.parent.fresh_block(index)
        linears, ref_linears = arch.block_linears(block), arch.block_linears(ref)
        _check_same_parameters(block, ref, index, self.out)
        changed, masked = {}, set()
        for name, keep in (masks or {}).items():
            masked.add(id(linears[name].weight))
            kept = arch.weight(linears[name])[keep]
            if not torch.equal(kept, arch.weight(ref_linears[name])[keep]):
                changed[name] = kept
        if changed:
            save_tensors(block_file(self.out / "values", index), changed)
            self.values.append(index)
        ref_params = dict(ref.named_parameters())
        prefix = f"{arch.blocks}.{index}."
        for name, p in block.named_parameters():
            if id(p) not in masked and not torch.equal(p, ref_params[name]):
                self.params[prefix + name] = p.detach().clone()

    def _structured_block(self, index: int, block) -> None:
        ref = self.parent.fresh_block(index)
        ref_state, picks, values = ref.state_dict(), {}, {}
        for name, value in block.state_dict().items():
            dim, kept = self.selections.get(index, {}).get(name, (None, None))
            source = ref_state.get(name)
            if source is not None and kept is not None:
                source = source.index_select(dim, kept.to(source.device))
            if source is not None and source.shape == value.shape and torch.equal(source, value):
                if kept is not None:
                    picks[name] = (dim, kept)
            else:
                values[name] = value
        if picks:
            save_tensors(block_file(self.out / "slices", index), {n: k.to(torch.int64).clone() for n, (_, k) in picks.items()},
                         metadata={n: str(d) for n, (d, _) in picks.items()})
            self.sliced.append(index)
        if values:
            save_tensors(block_file(self.out / "values", index), values)
            self.values.append(index)

    # --- the end ------------------------------------------------------------------------------

    def finish(self, model, summary: dict, tokenizer=None, requested: float | None = None,
               block_requested: list[float] | None = None) -> dict:
        """Write what is outside the blocks, the record, summary and sparsity; ``model`` is the skeleton (or
        whole model) whose embeddings, head and config are the variant's. Every block must have been written."""
        count = len(model.get_submodule(self.arch.blocks))
        missing = sorted(set(range(count)) - set(self.blocks))
        if missing:
            raise VariantError(f"{self.out}: blocks {missing[:5]} were never written")
        sparsity = combine_blocks([self.blocks[i] for i in range(count)])
        if requested is not None:
            sparsity["requested"] = requested
            if block_requested is not None:
                sparsity["requested_per_block"] = list(block_requested)
            check_sparsity(sparsity, requested, block_requested)
        if self.checked or self.own_masks or (self.parent is not None and self.parent.source.has_masks):
            sparsity["masked_weights_checked"] = self.checked
        blocks_path = self.arch.blocks
        if self.kind == "full":
            write_config(self.out, model.config, tokenizer, getattr(model, "generation_config", None), model.dtype)
            write_rest(self.out, rest_state(model, blocks_path))
            record = {"format": FORMAT, "kind": "full", "parent": None, "parent_manifest": None,
                      "dtype": dtype_name(model.dtype), "masks": "none"}
        else:
            record = self._child_record(model, blocks_path)
        write_json(self.out / RECORD, record)
        write_json(self.out / "summary.json", summary)
        write_json(self.out / "sparsity.json", sparsity)
        return record

    def _child_record(self, model, blocks_path: str) -> dict:
        if self.kind != "masks":
            stored = self.parent.stored_rest()
            for name, tensor in rest_state(model, blocks_path).items():
                tensor = tensor.to(self.parent.dtype) if tensor.is_floating_point() else tensor
                if name not in stored or not torch.equal(tensor, stored[name]):
                    self.params[name] = tensor.detach().clone()
        if self.params:
            save_tensors(self.out / "params.safetensors", self.params)
        masks = "own" if self.own_masks else ("inherited" if self.parent.source.has_masks else "none")
        record = {
            "format": FORMAT, "kind": "structured" if self.kind == "structured" else "compact",
            "parent": os.path.relpath(os.path.abspath(self.parent.source.folder), os.path.abspath(self.at)),
            "parent_manifest": manifest_digest(self.parent.source.folder), "dtype": dtype_name(self.parent.dtype),
            "masks": "none" if self.kind == "structured" else masks, "values": sorted(self.values), "params": sorted(self.params),
        }
        if self.kind == "structured":
            record["slices"] = sorted(self.sliced)
        if self.kind == "structured" or not _same_config(model.config, self.parent.source.config):
            record["config"] = model.config.to_dict()
        return record


def _same_config(a, b) -> bool:
    ignore = {"_name_or_path", "transformers_version", "dtype", "torch_dtype"}
    return {k: v for k, v in a.to_dict().items() if k not in ignore} == {k: v for k, v in b.to_dict().items() if k not in ignore}


def _check_same_parameters(block, ref, index: int, out) -> None:
    ours, theirs = dict(block.named_parameters()), dict(ref.named_parameters())
    if ours.keys() != theirs.keys() or any(ours[n].shape != theirs[n].shape or ours[n].dtype != theirs[n].dtype for n in ours):
        raise VariantError(f"{out}: block {index} has other parameters than its parent's (names, shapes or dtypes); "
                           "a compact variant changes values only")


# --- a model in memory ---------------------------------------------------------------------------


def _write_all(writer: VariantWriter, model) -> None:
    for index, block in enumerate(writer.arch.get_blocks(model)):
        writer.add_block(index, block)


def write_full_variant(out, model, tokenizer, summary: dict, requested: float | None = None,
                       block_requested: list[float] | None = None) -> dict:
    """An in-memory model as a full variant (the dense model)."""
    writer = VariantWriter(out, None, kind="full", arch=architecture_of(model))
    _write_all(writer, model)
    return writer.finish(model, summary, tokenizer, requested, block_requested)


def write_masked_variant(out, parent_model, parent, at, summary: dict, requested: float | None = None,
                         block_requested: list[float] | None = None) -> dict:
    """Parent × keep-masks: the masks already written to ``out/masks``, ``parent_model`` the parent, unchanged."""
    writer = VariantWriter(out, open_stream(parent, tokenizer=False, arch=architecture_of(parent_model)), at, kind="masks")
    _write_all(writer, parent_model)
    return writer.finish(parent_model, summary, requested=requested, block_requested=block_requested)


def write_variant(out, model, tokenizer, parent, at, summary: dict, requested: float | None = None,
                  block_requested: list[float] | None = None) -> dict:
    """An in-memory ``model`` as changes to the variant at ``parent``: its masks (written to ``out/masks`` by the
    pruning loop, else the parent's), the kept values of every matrix that changed, every other changed parameter.
    Fails if a pruned weight is not zero."""
    writer = VariantWriter(out, open_stream(parent, tokenizer=False, arch=architecture_of(model)), at, kind="compact")
    _write_all(writer, model)
    return writer.finish(model, summary, requested=requested, block_requested=block_requested)


def write_structured_variant(out, model, tokenizer, parent, at, summary: dict, selections: dict) -> dict:
    """A structured variant as its parent's blocks sliced by ``selections`` ({block: {parameter: (dim, kept
    indices)}}, from ``prune_structured``) plus every tensor that is not such a slice, and the new config."""
    writer = VariantWriter(out, open_stream(parent, tokenizer=False, arch=architecture_of(model)), at, kind="structured",
                           selections=selections)
    _write_all(writer, model)
    return writer.finish(model, summary)


# --- export ----------------------------------------------------------------------------------


def export_variant(folder, out) -> None:
    """Write a variant as a self-contained Hugging Face folder (plain safetensors, pruned weights stored
    as zeros) that ``from_pretrained`` loads without PruneFlow; with a manifest of its own."""
    with artifact_folder(out) as tmp:
        write_hf_folder(folder, tmp)


def write_hf_folder(folder, out) -> dict:
    """Write the variant in ``folder`` into the existing folder ``out`` as a Hugging Face folder (a structured
    variant physically smaller); return its ``parameters`` (tied embeddings once) and stored ``dtype``. It holds
    the whole model once, in its stored dtype (``save_pretrained`` needs it), and frees it before returning."""
    model, tok = load_variant(folder)
    facts = {"parameters": sum(p.numel() for p in model.parameters()), "dtype": dtype_name(model.dtype)}
    with experts_fused(model):
        model.save_pretrained(out)
        tok.save_pretrained(out)
    del model, tok
    gc.collect()  # a module graph holds cycles: freed now, before a study's export loads its next variant
    return_freed_memory()
    return facts


def stored_bytes(folder) -> int:
    """Bytes of a variant's own files (what it adds to the disk beyond its parent)."""
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())
