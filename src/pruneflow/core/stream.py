"""A model as a stream of blocks: what every job holds instead of a whole model.

:func:`open_stream` reads a variant folder lazily. Its ``model`` is a skeleton: the modules outside the
decoder blocks (embeddings, final norm, head, rotary tables) hold their stored tensors, and every block
is an empty shell on the meta device. :meth:`ModelStream.load` reads block i from disk with the variant's
changes applied (the parent's block, then its masks, stored values and parameters; a structured
variant's slices), casts it to the compute dtype and moves it to the device; :meth:`ModelStream.release`
drops it again, first handing it to the stream's ``sink`` if one is set (a :class:`~pruneflow.core.variants.VariantWriter`
writes block i as it is released). So a job's memory is the skeleton plus the blocks it works on, whatever
the model's size. :meth:`ModelStream.load_all` materialises every block, for the methods that need a
whole model (full retraining, a dispatched zero-shot model, export).

Forward passes over the whole model need no real blocks: :func:`pruneflow.core.activations.capture_block_inputs`
and :func:`~pruneflow.core.activations.head_logits` replace the blocks' forwards, so the skeleton serves them.

:meth:`ModelStream.wrap` gives the same interface over a model already in memory (tests, library callers):
``load`` moves its own block to the device and ``release`` moves it back.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch
from torch import nn

from pruneflow.core.architectures import Architecture, architecture_of, default_dtype, find_blocks, remember_architecture
from pruneflow.core.experts import unfuse_experts
from pruneflow.core.runtime import return_freed_memory
from pruneflow.core.variants import open_source
from pruneflow.core.weights import CONFIG_DIR, rest_state


class LazyMasks(Mapping):
    """{block index: {linear: keep-mask}} read from disk block by block when asked (never all at once)."""

    def __init__(self, stream: "ModelStream"):
        self.stream = stream
        self._last: tuple[int, dict] | None = None  # a block's masks are asked for once per linear

    def __getitem__(self, index):
        if self._last is not None and self._last[0] == index:
            return self._last[1]
        masks = self.stream.masks(index) if isinstance(index, int) and 0 <= index < self.stream.num_blocks else None
        if masks is None:
            raise KeyError(index)
        self._last = (index, masks)
        return masks

    def __iter__(self):
        return iter(range(self.stream.num_blocks))

    def __len__(self):
        return self.stream.num_blocks


class ModelStream:
    """A model whose decoder blocks are read, worked on and written one (or a few) at a time."""

    def __init__(self, model: nn.Module, source, tokenizer=None, arch: Architecture | None = None):
        self.model, self.source, self.tokenizer = model, source, tokenizer
        self.blocks_path = arch.blocks if arch is not None else find_blocks(model)
        self._templates = list(model.get_submodule(self.blocks_path))
        self._live: dict[int, nn.Module] = {}
        self._written: set[int] = set()
        self._placed: set[int] = set()
        self.compute_dtype: torch.dtype | None = None  # blocks cast to it while loaded (float32 master weights)
        self.sink = None  # called as sink(index, block) when a loaded block is released (a variant writer)
        if arch is None:
            with self.loaded(0, place=True, from_root=True):  # discovery traces block 0's forward: its structure, not its values
                arch = architecture_of(model)
        remember_architecture(model, arch)
        self.arch = arch
        source.arch = arch

    # --- what the stream is -----------------------------------------------------------------

    @classmethod
    def wrap(cls, model: nn.Module, keep_masks: Mapping | None = None, arch: Architecture | None = None) -> "ModelStream":
        """A stream over a model already in memory: its blocks are loaded in place (moved, cast, moved back).
        ``arch``: the model's architecture, when the caller has it."""
        if isinstance(model, ModelStream):
            return model
        return cls(model, _InMemory(model, keep_masks), arch=arch or architecture_of(model))

    @property
    def in_memory(self) -> bool:
        return isinstance(self.source, _InMemory)

    @property
    def num_blocks(self) -> int:
        return len(self._templates)

    @property
    def config(self):
        return self.model.config

    @property
    def dtype(self) -> torch.dtype:
        """The stored dtype (of the weights on disk, or of the model in memory)."""
        return self.source.dtype

    def masks(self, index: int) -> dict[str, torch.Tensor] | None:
        """Block ``index``'s keep-masks {linear: bool [out, in]} (the variant's own or inherited), or None."""
        return self.source.masks(index)

    @property
    def keep_masks(self) -> Mapping | None:
        """Every block's keep-masks, read when asked (None if the variant has none)."""
        return LazyMasks(self) if self.source.has_masks else None

    # --- blocks -------------------------------------------------------------------------------

    def blocks_list(self) -> nn.ModuleList:
        return self.model.get_submodule(self.blocks_path)

    def fresh_block(self, index: int) -> nn.Module:
        """Block ``index`` as stored (changes of the variant applied), apart from the skeleton."""
        return self.source.block(index, type(self._templates[index])).eval()

    def load(self, index: int, device="cpu", place: bool = False, from_root: bool = False) -> nn.Module:
        """Block ``index`` on ``device`` in the compute dtype (loaded once until released); ``place`` puts it
        into the skeleton too, for a forward pass of the whole model (two streams may share one skeleton
        when neither places)."""
        if index in self._live:
            return self._live[index]
        if index in self._written:
            raise RuntimeError(f"block {index} was already released to the writer; it cannot be loaded again")
        if self.in_memory:
            block = self.source.model_block(index)
        else:
            source = self.source.root if from_root else self.source
            block = source.block(index, type(self._templates[index])).eval()
            if place:
                self.blocks_list()[index] = block
                self._placed.add(index)
        if self.compute_dtype is not None:
            block.to(self.compute_dtype)
        block.to(device).requires_grad_(False)  # frozen: whatever trains is unfrozen by the trainer
        self._live[index] = block
        return block

    def replace(self, index: int, block: nn.Module) -> nn.Module:
        """A loaded block rebuilt (structured pruning makes it smaller): the new one is what is released."""
        if index not in self._live:
            raise RuntimeError(f"block {index} is not loaded")
        self._live[index] = block
        if index in self._placed or self.in_memory:
            self.blocks_list()[index] = block
        return block

    def is_loaded(self, index: int) -> bool:
        return index in self._live

    def release(self, index: int) -> None:
        """Done with block ``index``: hand it to the sink (if any), then drop it (in memory: back to the CPU)."""
        block = self._live.pop(index)
        if self.sink is not None:
            self.sink(index, block)
            self._written.add(index)
        if self.in_memory:  # as it was: on the CPU, in its dtype, trainable
            block.to("cpu").requires_grad_(True)
            if self.compute_dtype is not None:
                block.to(self.source.dtype)
        else:
            if index in self._placed:
                self._placed.discard(index)
                self.blocks_list()[index] = self._templates[index]
            # freed now, though the caller's loop variable still names it until the next block is loaded
            block.to("meta")
            return_freed_memory()  # a wrapped model keeps its blocks: nothing to give back

    @contextlib.contextmanager
    def loaded(self, index: int, device="cpu", place: bool = False, from_root: bool = False):
        """Block ``index`` loaded for the body of the ``with``; released after it (not handed to the sink on an error)."""
        block = self.load(index, device, place, from_root)
        try:
            yield block
        except BaseException:
            self._live.pop(index, None)
            if index in self._placed:
                self._placed.discard(index)
                self.blocks_list()[index] = self._templates[index]
            raise
        self.release(index)

    def blocks(self, device="cpu") -> Iterator[tuple[int, nn.Module]]:
        """(index, block) for every block in turn, each loaded for the loop body and released after it."""
        for index in range(self.num_blocks):
            with self.loaded(index, device) as block:
                yield index, block

    def load_all(self, device="cpu") -> nn.Module:
        """Every block loaded: the whole model (for methods that need it); :meth:`release_all` ends it."""
        for index in range(self.num_blocks):
            self.load(index, device, place=True)
        return self.model

    def release_all(self) -> None:
        for index in sorted(self._live):
            self.release(index)

    # --- the rest of the model ----------------------------------------------------------------------

    def stored_rest(self) -> dict[str, torch.Tensor]:
        """Every tensor outside the blocks as stored (for a writer to compare against)."""
        return self.source.rest() if not self.in_memory else rest_state(self.model, self.blocks_path)


def open_stream(folder, tokenizer: bool = True, arch: Architecture | None = None, skeleton_of: ModelStream | None = None) -> ModelStream:
    """A :class:`ModelStream` over the variant in ``folder`` (verified against its manifest).

    ``skeleton_of``: another stream; where this variant's config and tensors outside the blocks are the
    same as its, its skeleton is shared, so the embeddings are held once (recovery holds the dense model and
    the pruned one side by side)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = open_source(folder)
    tok = AutoTokenizer.from_pretrained(Path(source.root.folder) / CONFIG_DIR) if tokenizer else None
    other = skeleton_of
    if other is not None and not other.in_memory and _same_config(other.source.config, source.config):
        source.adopt(other.model.config, other.blocks_path)
        if other.source.rest_signature() == source.rest_signature():
            return ModelStream(other.model, source, tok, arch or other.arch)
    from accelerate import init_empty_weights

    with init_empty_weights(include_buffers=False), default_dtype(source.dtype):
        model = AutoModelForCausalLM.from_config(source.config, dtype=source.dtype)
    model.eval()
    unfuse_experts(model, source.config)  # the working parameter names: one linear per expert
    source.adopt(model.config, find_blocks(model))
    _load_rest(model, source.rest(), folder)
    return ModelStream(model, source, tok, arch)


def _same_config(a, b) -> bool:
    ignore = {"_name_or_path", "transformers_version", "dtype", "torch_dtype"}
    return {k: v for k, v in a.to_dict().items() if k not in ignore} == {k: v for k, v in b.to_dict().items() if k not in ignore}


def _load_rest(model: nn.Module, rest: dict[str, torch.Tensor], folder) -> None:
    """Put the stored tensors outside the blocks into the skeleton; tie the head again where the config ties it."""
    from pruneflow.core.variants import VariantError

    missing, unexpected = model.load_state_dict(rest, strict=False, assign=True)
    if unexpected:
        raise VariantError(f"{folder}: stored tensors {unexpected[:3]} are not in the model its config builds; delete {folder} and rerun")
    blocks = find_blocks(model) + "."
    tied = set((getattr(model, "_tied_weights_keys", None) or {}))
    left = [k for k in missing if not k.startswith(blocks) and k not in tied]
    if left:
        raise VariantError(f"{folder}: no stored value for {left[:3]}; delete {folder} and rerun")
    if getattr(model.config, "tie_word_embeddings", False):
        model.tie_weights()
    still_meta = [n for n, p in model.named_parameters() if p.is_meta and not n.startswith(blocks)]
    if still_meta:
        raise VariantError(f"{folder}: parameters {still_meta[:3]} were not filled; delete {folder} and rerun")


class _InMemory:
    """The source of a wrapped in-memory model: its own blocks, the masks it was given."""

    has_masks = property(lambda self: self._masks is not None)

    def __init__(self, model: nn.Module, keep_masks: Mapping | None):
        self._model, self._masks, self.arch = model, keep_masks, None
        self.dtype = model.dtype
        self.root = self

    def model_block(self, index: int) -> nn.Module:
        return self._model.get_submodule(self.arch.blocks)[index]

    def masks(self, index: int):
        return None if self._masks is None else self._masks.get(index)

    def block(self, index: int, block_class) -> nn.Module:
        raise RuntimeError("a model in memory has no stored copy of its blocks; write it first")


def load_variant(folder):
    """(model, tokenizer) of a variant as a whole model in memory, rebuilt from its parent and verified."""
    model, tok, _ = load_variant_with_masks(folder)
    return model, tok


def load_variant_with_masks(folder):
    """(model, tokenizer, masks): the whole model, and {block: {linear: keep}} (the variant's own or inherited; None if none)."""
    stream = open_stream(folder)
    model = stream.load_all()
    masks = {i: stream.masks(i) for i in range(stream.num_blocks)} if stream.source.has_masks else None
    return model, stream.tokenizer, masks
