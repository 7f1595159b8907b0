"""Mixture-of-experts layers as one small MLP of ``nn.Linear`` per expert, while PruneFlow works.

transformers 5 stores the experts of a layer fused: ``gate_up_proj`` [experts, 2·f, h] (gate rows
first) and ``down_proj`` [experts, h, f]. Pruning wants each expert's matrices as linears, each seeing
only the tokens routed to it: :func:`unfuse_experts` swaps such a module for :class:`UnfusedExperts`
(same call, same result; the linears are views of the fused storage, so nothing is copied), and
:func:`experts_fused` puts fused tensors back for ``save_pretrained``. Routers are never touched.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from pruneflow.core.errors import UnsupportedModelError


class ExpertMLP(nn.Module):
    """One expert: down(act(gate(x)) · up(x))."""

    def __init__(self, gate: torch.Tensor, up: torch.Tensor, down: torch.Tensor, act_fn):
        super().__init__()
        self.gate_proj, self.up_proj, self.down_proj = (_linear(w) for w in (gate, up, down))
        self.act_fn = act_fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


def _linear(weight: torch.Tensor) -> nn.Linear:
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=False, device="meta")
    layer.weight = nn.Parameter(weight)
    return layer


class UnfusedExperts(nn.ModuleList):
    """The experts of one layer as ``[ExpertMLP]``, called like the fused module it replaces:
    ``(hidden_states [tokens, h], top_k_index [tokens, k], top_k_weights [tokens, k])``."""

    GROUPS = (("gate_proj", "up_proj"), ("down_proj",))  # linears that read one input

    def __init__(self, fused: nn.Module):
        gate_up, down = fused.gate_up_proj.data, fused.down_proj.data
        f = down.shape[2]
        super().__init__(ExpertMLP(gate_up[e, :f], gate_up[e, f:], down[e], fused.act_fn) for e in range(gate_up.shape[0]))
        fused.gate_up_proj = fused.down_proj = None  # the linears hold the storage now; no second copy
        object.__setattr__(self, "fused", fused)  # kept unregistered, to be filled again by fuse()

    def forward(self, hidden_states, top_k_index, top_k_weights):
        out = torch.zeros_like(hidden_states)
        for index, expert in enumerate(self):
            token, slot = torch.where(top_k_index == index)
            if token.numel():
                y = expert(hidden_states[token]) * top_k_weights[token, slot, None]
                out.index_add_(0, token, y.to(out.dtype))
        return out

    def fuse(self) -> nn.Module:
        """The original module with fused tensors built from the experts' current weights."""
        stack = lambda ws: nn.Parameter(torch.stack(ws), requires_grad=False)  # noqa: E731
        self.fused.gate_up_proj = stack([torch.cat([e.gate_proj.weight, e.up_proj.weight]) for e in self])
        self.fused.down_proj = stack([e.down_proj.weight for e in self])
        return self.fused


def fused_layout_error(module: nn.Module) -> str | None:
    """Why a fused experts module cannot be unfused, or None if it can (read from its own layout flags)."""
    flags = {k: getattr(module, k, d) for k, d in
             (("has_gate", True), ("has_bias", False), ("is_transposed", False), ("is_concatenated", True), ("has_post_expert_norm", False))}
    if flags != {"has_gate": True, "has_bias": False, "is_transposed": False, "is_concatenated": True, "has_post_expert_norm": False}:
        return f"{type(module).__name__} stores its experts as {flags}; PruneFlow reads gate|up concatenated, untransposed, bias-free"
    gate_up, down = module.gate_up_proj, module.down_proj
    if gate_up.dim() != 3 or down.dim() != 3 or gate_up.shape[1] != 2 * down.shape[2] or gate_up.shape[2] != down.shape[1]:
        return f"{type(module).__name__}: gate_up_proj {tuple(gate_up.shape)} and down_proj {tuple(down.shape)} are not [E, 2f, h] and [E, h, f]"
    if not hasattr(module, "act_fn"):
        return f"{type(module).__name__} has no act_fn"
    return None


def is_fused_experts(module: nn.Module) -> bool:
    """An experts module holding 3-D [experts, out, in] weights (not a convolution)."""
    params = module.named_parameters(recurse=False)
    return "expert" in type(module).__name__.lower() and any(p.dim() == 3 for _, p in params)


def unfuse_experts(model: nn.Module, config=None) -> int:
    """Replace every fused experts module of ``model`` in place; returns how many. A layout that cannot
    be read raises :class:`~pruneflow.core.errors.UnsupportedModelError`."""
    found = [(path, m) for path, m in model.named_modules() if is_fused_experts(m) and not isinstance(m, UnfusedExperts)]
    for path, module in found:
        if (reason := fused_layout_error(module)) is not None:
            raise UnsupportedModelError(f"experts at {path}: {reason}")
        _set(model, path, UnfusedExperts(module))
    return len(found)


@contextlib.contextmanager
def experts_fused(model: nn.Module):
    """Within the block the model's experts are fused as transformers stores them; unfused again after."""
    unfused = [(path, m) for path, m in model.named_modules() if isinstance(m, UnfusedExperts)]
    for path, module in unfused:
        _set(model, path, module.fuse())
    try:
        yield model
    finally:
        for path, _ in unfused:
            _set(model, path, UnfusedExperts(model.get_submodule(path)))


def _set(root: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(root.get_submodule(parent), name, module)
