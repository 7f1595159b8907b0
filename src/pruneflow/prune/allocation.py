"""The allocation artifact: how much to prune each block, written by every allocation (OWL, AlphaPruning, a
plugin's; their math lives in their method modules) and read by every method with one.

In the workflow the allocation is its own small artifact (``allocation.json``: block sparsities and what made
them) between its inputs (the dense-stream activation cache for OWL, the weights alone for AlphaPruning) and the
masks, so a changed setting reruns the allocation, the masks and below, never the cache.
"""

from __future__ import annotations

from pathlib import Path

from pruneflow.core.artifacts import load_json, verify_folder
from pruneflow.core.atomic import write_json


class AllocationError(ValueError):
    pass


def skeleton_of(model):
    """A model in memory, or a :class:`~pruneflow.core.stream.ModelStream`'s skeleton (its shapes are the model's)."""
    from pruneflow.core.stream import ModelStream

    return model.model if isinstance(model, ModelStream) else model


def block_sizes(model) -> list[int]:
    """Prunable weights of every block (what the allocation's mean is weighted by; shapes only, so a stream's
    skeleton, whose blocks are empty shells, serves as well)."""
    from pruneflow.core.architectures import architecture_of

    model = skeleton_of(model)
    arch = architecture_of(model)
    return [sum(arch.weight(layer).numel() for layer in arch.block_linears(b).values()) for b in arch.get_blocks(model)]


ALLOCATION_FILE = "allocation.json"


def write_allocation(folder, allocation: dict) -> None:
    """Into an artifact folder being written (``artifacts.artifact_folder``)."""
    write_json(Path(folder) / ALLOCATION_FILE, allocation)


def read_allocation(folder, n_blocks: int | None = None) -> dict:
    """An allocation artifact, verified against its manifest (and the model's number of blocks)."""
    verify_folder(folder)
    data = load_json(Path(folder) / ALLOCATION_FILE)
    if n_blocks is not None and len(data["block_sparsities"]) != n_blocks:
        raise AllocationError(
            f"{folder}: {len(data['block_sparsities'])} block sparsities for a model of {n_blocks} blocks; delete {folder} and rerun"
        )
    return data


def method_block_sparsities(method, folder, model) -> list[float] | None:
    """The per-block sparsities a pruning ``method`` (``naming.Method``) asks of ``model``: None when uniform, else
    its allocation artifact's, checked to be the one made for this method's allocation, settings and sparsity."""
    from pruneflow.core.architectures import architecture_of

    if method.allocation is None:
        return None
    model = skeleton_of(model)
    n_blocks = len(architecture_of(model).get_blocks(model))
    if not folder:
        raise AllocationError(f"method {method.id!r} needs its allocation artifact (allocation/<calib>/{method.allocation.token}-...)")
    data = read_allocation(folder, n_blocks)
    settings = method.allocation.settings
    made = (data["allocation"], data.get("settings", settings), data["sparsity"])  # older OWL artifacts: settings in the path
    if made != (method.allocation.name, settings, method.pattern.sparsity):
        raise AllocationError(
            f"{folder} was made for {made[0]} {made[1]} at sparsity {made[2]:g}, not for method {method.id!r}; delete {folder} and rerun"
        )
    return data["block_sparsities"]
