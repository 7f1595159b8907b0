"""The one module that knows model architectures.

Every other module asks an :class:`Architecture` for a model's transformer blocks,
their linear layers and sublayers, and never branches on ``config.model_type``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn


class UnsupportedModelError(ValueError):
    """The model family is not described here."""


@dataclass(frozen=True)
class Architecture:
    """Where a family keeps its parts, as dotted attribute paths.

    ``attn_in``/``mlp_in`` read the normalised residual stream; ``attn_out``/``mlp_out``
    write back into it. Structured pruning removes input channels of the ``*_out`` layers.
    """

    family: str
    blocks: str
    attn: str
    mlp: str
    attn_norm: str
    mlp_norm: str
    attn_in: tuple[str, ...]
    attn_out: str
    mlp_in: tuple[str, ...]
    mlp_out: str
    final_norm: str
    transposed: bool = False  # GPT-2's Conv1D stores weights as [in, out]
    # Structured pruning (heads, FFN neurons) needs separate q/k/v/o and gate/up/down projections and
    # config fields num_attention_heads, num_key_value_heads, head_dim, intermediate_size.
    structured: bool = False
    # The config flag that gives the attention projections (q, k, v, o) / MLP projections (gate, up, down)
    # a bias, or None where the family has none; reconstruction may need a bias on o_proj / down_proj.
    attn_bias_flag: str | None = None
    mlp_bias_flag: str | None = None

    @property
    def linears(self) -> tuple[str, ...]:
        """Names (relative to a block) of every prunable linear layer, in forward order."""
        return (*self.attn_in, self.attn_out, *self.mlp_in, self.mlp_out)

    def get_blocks(self, model: nn.Module) -> nn.ModuleList:
        return _get(model, self.blocks)

    @contextlib.contextmanager
    def blocks_detached(self, model: nn.Module):
        """Temporarily remove the block list, e.g. to move only the rest of the model to a device."""
        parent, _, attr = self.blocks.rpartition(".")
        holder = _get(model, parent)
        blocks = getattr(holder, attr)
        setattr(holder, attr, nn.ModuleList())
        try:
            yield model
        finally:
            setattr(holder, attr, blocks)

    def block_linears(self, block: nn.Module) -> dict[str, nn.Module]:
        return {name: _get(block, name) for name in self.linears}

    def weight(self, layer: nn.Module) -> torch.Tensor:
        """The layer's weight as [out_features, in_features] (a view: edits write through)."""
        return layer.weight.T if self.transposed else layer.weight


_LLAMA_LIKE = dict(
    blocks="model.layers",
    attn="self_attn",
    mlp="mlp",
    attn_norm="input_layernorm",
    mlp_norm="post_attention_layernorm",
    attn_in=("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
    attn_out="self_attn.o_proj",
    mlp_in=("mlp.gate_proj", "mlp.up_proj"),
    mlp_out="mlp.down_proj",
    final_norm="model.norm",
    structured=True,
)
_BIAS_FLAGS = {
    "llama": dict(attn_bias_flag="attention_bias", mlp_bias_flag="mlp_bias"),
    "qwen3": dict(attn_bias_flag="attention_bias"),
    "gemma": dict(attn_bias_flag="attention_bias"),
}

FAMILIES: dict[str, Architecture] = {
    **{
        name: Architecture(family=name, **_LLAMA_LIKE, **_BIAS_FLAGS.get(name, {}))
        for name in ("llama", "mistral", "qwen2", "qwen3", "gemma")
    },
    "opt": Architecture(
        family="opt",
        blocks="model.decoder.layers",
        attn="self_attn",
        mlp="",  # OPT has no MLP module: fc1/fc2 hang off the block
        attn_norm="self_attn_layer_norm",
        mlp_norm="final_layer_norm",
        attn_in=("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
        attn_out="self_attn.out_proj",
        mlp_in=("fc1",),
        mlp_out="fc2",
        final_norm="model.decoder.final_layer_norm",
    ),
    "gpt2": Architecture(
        family="gpt2",
        blocks="transformer.h",
        attn="attn",
        mlp="mlp",
        attn_norm="ln_1",
        mlp_norm="ln_2",
        attn_in=("attn.c_attn",),
        attn_out="attn.c_proj",
        mlp_in=("mlp.c_fc",),
        mlp_out="mlp.c_proj",
        final_norm="transformer.ln_f",
        transposed=True,
    ),
}


def architecture_of(model_or_config) -> Architecture:
    """The :class:`Architecture` of a model (or its config); a clear error for unknown families."""
    config = getattr(model_or_config, "config", model_or_config)
    family = getattr(config, "model_type", None)
    if family not in FAMILIES:
        raise UnsupportedModelError(
            f"model family {family!r} is not supported; supported families: {', '.join(sorted(FAMILIES))}. "
            "Add an entry to pruneflow.architectures.FAMILIES to support it."
        )
    return FAMILIES[family]


@dataclass(frozen=True)
class AttentionShape:
    """Head layout of a model's attention: query heads, key/value heads (GQA) and the width of one head."""

    num_heads: int
    num_kv_heads: int
    head_dim: int

    @property
    def group_size(self) -> int:
        """Query heads that share one key/value head."""
        return self.num_heads // self.num_kv_heads


def attention_shape(model_or_config) -> AttentionShape:
    """Read the head counts and head width from a config (``head_dim`` defaults to hidden / heads)."""
    config = getattr(model_or_config, "config", model_or_config)
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return AttentionShape(heads, kv_heads, head_dim)


def _get(root: nn.Module, path: str) -> nn.Module:
    for part in filter(None, path.split(".")):
        root = getattr(root, part)
    return root
