"""Calibration activations: capture the inputs of the first block, run blocks one at a time,
and accumulate the per-linear input statistics that the criteria need.

Only one block's weights and one block's inputs need to sit on the compute device at once.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch
from torch import nn

from .architectures import architecture_of


@dataclass
class BlockInputs:
    """Inputs of one block for all calibration samples, in chunks of ``batch_size`` samples.

    ``hidden[c]`` is [batch, seqlen, hidden_size]; ``kwargs[c]`` holds what the model passes to
    every block alongside (attention mask, rotary position embeddings, ...), shared by all blocks.
    """

    hidden: list[torch.Tensor]
    kwargs: list[dict] = field(default_factory=list)

    def replace(self, hidden: list[torch.Tensor]) -> "BlockInputs":
        return BlockInputs(hidden=hidden, kwargs=self.kwargs)


class _Stop(Exception):
    pass


def _to(value, device):
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, tuple):
        return tuple(_to(v, device) for v in value)
    return value


@torch.no_grad()
def capture_block_inputs(model: nn.Module, input_ids: torch.Tensor, batch_size: int, device="cpu") -> BlockInputs:
    """Run the embeddings only and record what the first block receives.

    Only the modules before the first block (embeddings, rotary tables) are moved to ``device``.
    """
    arch = architecture_of(model)
    first = arch.get_blocks(model)[0]
    captured = BlockInputs(hidden=[])

    def grab(_module, args, kwargs):
        hidden = args[0] if args else kwargs.pop("hidden_states")
        kwargs = {k: _to(v, device) for k, v in kwargs.items() if k not in ("hidden_states", "past_key_values", "past_key_value")}
        captured.hidden.append(hidden.to(device))
        captured.kwargs.append(kwargs)
        raise _Stop

    handle = first.register_forward_pre_hook(grab, with_kwargs=True)
    moved = _move_non_block_modules(model, arch, device)
    try:
        for chunk in input_ids.split(batch_size):
            with contextlib.suppress(_Stop):
                model(chunk.to(device), use_cache=False)
    finally:
        handle.remove()
        for module in moved:
            with arch.blocks_detached(module):
                module.to("cpu")
    return captured


def _move_non_block_modules(model, arch, device) -> list[nn.Module]:
    """Move everything but the blocks (embeddings, rotary tables, final norm) to ``device``."""
    if torch.device(device).type == "cpu":
        return []
    with arch.blocks_detached(model):
        model.to(device)
    return [model]


@torch.no_grad()
def run_block(block: nn.Module, inputs: BlockInputs) -> list[torch.Tensor]:
    """The block's outputs for every chunk (the next block's inputs)."""
    outs = []
    for hidden, kwargs in zip(inputs.hidden, inputs.kwargs):
        out = block(hidden, **kwargs)
        outs.append(out[0] if isinstance(out, tuple) else out)
    return outs


class InputStats:
    """Running statistics of a linear layer's input X (tokens × in_features), in float32.

    ``sq_sum[j]`` = Σ_t X[t, j]² (Wanda's ‖X_j‖² up to the sample count);
    ``gram`` = XᵀX (SparseGPT's Hessian up to a factor 2/n) when requested.
    """

    def __init__(self, in_features: int, gram: bool, device="cpu"):
        self.count = 0
        self.sq_sum = torch.zeros(in_features, dtype=torch.float32, device=device)
        self.gram = torch.zeros(in_features, in_features, dtype=torch.float32, device=device) if gram else None

    @classmethod
    def from_tensors(cls, count: int, sq_sum: torch.Tensor, gram: torch.Tensor | None = None) -> "InputStats":
        """Statistics read back from storage (the dense-stream activation cache)."""
        stats = cls.__new__(cls)
        stats.count, stats.sq_sum, stats.gram = count, sq_sum, gram
        return stats

    def add(self, x: torch.Tensor) -> None:
        x = x.reshape(-1, x.shape[-1]).float()
        self.count += x.shape[0]
        self.sq_sum += x.pow(2).sum(0)
        if self.gram is not None:
            self.gram.addmm_(x.T, x)

    @property
    def col_norms(self) -> torch.Tensor:
        """‖X_j‖₂ over all calibration tokens."""
        return self.sq_sum.sqrt()


def input_groups(arch) -> list[tuple[str, ...]]:
    """Linears that read the same input tensor (q/k/v, gate/up): their statistics are identical,
    so each group's are computed and stored once, under the first name."""
    return [g for g in (arch.attn_in, (arch.attn_out,), arch.mlp_in, (arch.mlp_out,)) if g]


def _in_features(layer: nn.Module) -> int:
    return layer.weight.shape[0] if type(layer).__name__ == "Conv1D" else layer.weight.shape[1]


@torch.no_grad()
def collect_stats(
    block: nn.Module, linears: dict[str, nn.Module], inputs: BlockInputs, gram: bool, groups=None
) -> tuple[dict[str, InputStats], list[torch.Tensor]]:
    """One pass of ``block`` over ``inputs``: per-linear input statistics, and the block's outputs.

    Linears in one of ``groups`` share one :class:`InputStats` object (hooked on the group's first linear).
    """
    groups = groups or [(name,) for name in linears]
    stats, handles = {}, []
    for group in groups:
        leader = linears[group[0]]
        shared = InputStats(_in_features(leader), gram, device=leader.weight.device)
        stats.update({name: shared for name in group})
        handles.append(leader.register_forward_hook(lambda _m, args, _out, s=shared: s.add(args[0])))
    try:
        outputs = run_block(block, inputs)
    finally:
        for h in handles:
            h.remove()
    return stats, outputs
