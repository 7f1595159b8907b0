"""Measured sparsity of the prunable matrices, and the checks that a variant kept what its masks say.

Measured one block at a time (a variant is written block by block), then summed up: per matrix, per
block and overall. Lives beside the masks, below every stage that writes or reads a variant.
"""

from __future__ import annotations

import torch

from pruneflow.core.architectures import architecture_of


class SparsityError(ValueError):
    """A variant's zeros do not match its request or its masks; the message names the matrix."""


@torch.no_grad()
def block_sparsity(arch, block, index: int, masks: dict[str, torch.Tensor] | None = None) -> dict:
    """Exact zeros of every prunable matrix of one block: {"per_matrix": {"<index>.<linear>": ...}, "zeros", "numel"};
    with ``masks`` ({linear: keep}), of the matrices as the keep-masks would leave them."""
    per_matrix, zeros, total = {}, 0, 0
    for name, layer in arch.block_linears(block).items():
        w = arch.weight(layer)
        keep = masks[name].to(w.device) if masks else None
        z = int((w == 0).sum()) if keep is None else int(((w == 0) | ~keep).sum())
        entry = {"zeros": z, "numel": w.numel(), "sparsity": z / w.numel(), "shape": list(w.shape)}
        if keep is not None:  # what the pruning chose, apart from zeros the dense weights already had
            entry["pruned_fraction"] = int((~keep).sum()) / w.numel()
        per_matrix[f"{index}.{name}"] = entry
        zeros += z
        total += w.numel()
    return {"per_matrix": per_matrix, "zeros": zeros, "numel": total}


def combine_blocks(blocks: list[dict]) -> dict:
    """The whole model's report from :func:`block_sparsity` of every block, in block order."""
    zeros, total = sum(b["zeros"] for b in blocks), sum(b["numel"] for b in blocks)
    return {
        "overall": zeros / max(total, 1), "zeros": zeros, "numel": total,
        "per_block": [{"zeros": b["zeros"], "numel": b["numel"], "sparsity": b["zeros"] / max(b["numel"], 1)} for b in blocks],
        "per_matrix": {k: v for b in blocks for k, v in b["per_matrix"].items()},
    }


@torch.no_grad()
def measured_sparsity(model, masks: dict[int, dict[str, torch.Tensor]] | None = None) -> dict:
    """Fraction of exact zeros in every prunable matrix of an in-memory model, per matrix, per block and
    overall; with ``masks``, of the matrices as the keep-masks would leave them (the model unchanged)."""
    arch = architecture_of(model)
    return combine_blocks([block_sparsity(arch, block, i, masks[i] if masks else None)
                           for i, block in enumerate(arch.get_blocks(model))])


def check_sparsity(measured: dict, requested: float, block_requested: list[float] | None = None) -> None:
    """Every matrix must be within one weight per row (1 / in_features) of the requested ratio, or of its
    block's ratio in ``block_requested`` (a non-uniform allocation); then the whole model's sparsity, the
    blocks' mean weighted by their sizes, must also be within one weight per row of ``requested``.

    Where the masks are known, the fraction they prune is checked: a quantised checkpoint has exact zeros of
    its own (Gemma 3's Q4_K_M GGUF), which a 2:4 group may keep, so its zeros can exceed the request."""
    widest, pruned, total = 0.0, 0.0, 0
    for name, m in measured["per_matrix"].items():
        tolerance = 1 / m["shape"][1] + 1e-9
        widest = max(widest, tolerance)
        target = requested if block_requested is None else block_requested[int(name.split(".", 1)[0])]
        fraction = m.get("pruned_fraction", m["sparsity"])
        pruned, total = pruned + fraction * m["numel"], total + m["numel"]
        if abs(fraction - target) > tolerance:
            whose = "" if block_requested is None else " (its block's allocation)"
            raise SparsityError(
                f"matrix {name}: measured sparsity {fraction:.6f} differs from the requested {target:.6g}{whose} "
                f"by more than one weight per row ({tolerance:.6f})"
            )
    if block_requested is not None and abs(pruned / max(total, 1) - requested) > widest:
        raise SparsityError(
            f"measured sparsity {pruned / max(total, 1):.6f} of the whole model differs from the requested mean "
            f"{requested} by more than one weight per row ({widest:.6f})"
        )


@torch.no_grad()
def check_block_masks_kept(arch, block, index: int, masks: dict[str, torch.Tensor]) -> int:
    """Every weight a keep-mask prunes in one block must be exactly zero; returns how many were checked."""
    checked = 0
    for name, layer in arch.block_linears(block).items():
        w = arch.weight(layer)
        pruned = ~masks[name].to(w.device)
        nonzero = int((w[pruned] != 0).sum())
        if nonzero:
            raise SparsityError(f"matrix {index}.{name}: {nonzero} pruned weights are no longer zero")
        checked += int(pruned.sum())
    return checked


def check_masks_kept(model, masks: dict[int, dict[str, torch.Tensor]]) -> int:
    """Every weight a keep-mask prunes must be exactly zero (after reconstruction or retraining) in an
    in-memory model; returns the number of pruned weights checked, raises naming the first matrix that lost sparsity."""
    arch = architecture_of(model)
    return sum(check_block_masks_kept(arch, block, i, masks[i]) for i, block in enumerate(arch.get_blocks(model)))
