"""The one module that knows model architectures, found from the model itself.

No list of families: for any decoder-only model transformers can build,

- the decoder blocks are the ``ModuleList`` whose class ``_no_split_modules`` names (else the longest
  ``ModuleList`` of one class);
- the prunable linears are every ``nn.Linear`` (and GPT-2 ``Conv1D``) inside a block, routers excepted;
- the attention sublayer is the block's child whose class name says attention; the MLP sublayer is
  the block's other child holding linears; the norms before and after each, which linears read one
  tensor, and whether the block returns a tuple are read off one traced forward of block 0, by tensor
  identity, not by names.

What structure cannot tell lives in :data:`EXCEPTIONS`, a few lines per family (see the
families table of docs/models.md). Mixture-of-experts weights stored fused (transformers 5 keeps every expert of a layer
in one 3-D tensor) are unfused into one small MLP of ``nn.Linear`` per expert while PruneFlow works on
the model (:mod:`pruneflow.core.experts`), and fused back to save. Everything else asks an
:class:`Architecture` and never branches on ``config.model_type``.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from pruneflow.core.errors import UnsupportedModelError
from pruneflow.core.experts import UnfusedExperts, experts_fused, unfuse_experts

HOW_TO_ADD = (
    "PruneFlow finds blocks, attention, MLP and norms from the module tree; where a family hides one, "
    "add a few lines for it to pruneflow.core.architectures.EXCEPTIONS and a tiny config to tests/families.py"
)

# What structure cannot tell, per model_type (keep each entry a few lines, with a test in tests/families.py).
EXCEPTIONS: dict[str, dict] = {
    # OPT keeps fc1/fc2 on the block with no MLP module: its MLP sublayer is called by hand.
    "opt": {"mlp_call": lambda block, x: block.fc2(block.activation_fn(block.fc1(x)))},
    # Falcon: key/value heads come from num_kv_heads, or one shared head in the multi-query layout.
    "falcon": {"kv_heads": lambda c: c.num_kv_heads if c.new_decoder_architecture or not c.multi_query else 1},
}

# Projections that concatenate their parts along the rows (q|k|v, gate|up), by layer name. Others,
# q_proj or GPT-NeoX's per-head interleaved query_key_value, give each head group a contiguous slice.
CONCATENATED = {"qkv_proj": ("q", "k", "v"), "c_attn": ("q", "k", "v"), "gate_up_proj": ("gate", "up")}


def is_linear(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D"


def is_transposed(layer: nn.Module) -> bool:
    """GPT-2's Conv1D stores its weight as [in, out]."""
    return type(layer).__name__ == "Conv1D"


def is_norm(module: nn.Module) -> bool:
    return "norm" in type(module).__name__.lower()


def out_features(layer: nn.Module) -> int:
    return layer.weight.shape[1] if is_transposed(layer) else layer.weight.shape[0]


def in_features(layer: nn.Module) -> int:
    return layer.weight.shape[0] if is_transposed(layer) else layer.weight.shape[1]


@dataclass(frozen=True)
class Sublayer:
    """The attention or the MLP of a block: ``pre_norm`` → ``module`` → ``post_norm`` (paths in the block).

    ``inputs`` are the linears that read the sublayer's input, ``output`` the one that writes its
    output (None when several do, as experts); ``module`` is "" where the layers hang off the block.
    """

    kind: str
    module: str
    pre_norm: str | None
    post_norm: str | None
    linears: tuple[str, ...]
    inputs: tuple[str, ...]
    output: str | None
    call: Callable | None = field(default=None, compare=False)  # (block, x) -> y where module is ""

    @property
    def entry(self) -> str:
        """The first module of the chain: where the sublayer's input is read."""
        return self.pre_norm or self.module or self.inputs[0]

    def forward(self, block: nn.Module, x: torch.Tensor, kwargs: dict) -> torch.Tensor:
        """post_norm(module(pre_norm(x), **kwargs)): the sublayer without its residual add."""
        if self.pre_norm:
            x = block.get_submodule(self.pre_norm)(x)
        if self.module:
            y = first_tensor(block.get_submodule(self.module)(x, **kwargs))
        elif self.call is not None:
            y = self.call(block, x)
        else:
            raise UnsupportedModelError(f"the {self.kind} layers {self.linears} have no module to call; {HOW_TO_ADD}")
        return block.get_submodule(self.post_norm)(y) if self.post_norm else y


@dataclass(frozen=True)
class Architecture:
    """Where a model keeps its parts (paths relative to the model or to a block)."""

    family: str
    blocks: str
    attn: Sublayer
    mlp: Sublayer
    groups: tuple[tuple[str, ...], ...]  # every prunable linear, in forward order; a group reads one tensor
    returns_tuple: bool  # a block returns (hidden, ...) rather than hidden
    parallel_residual: bool  # the MLP reads the block's input, not the attention's output
    transposed: bool  # the block's linears are Conv1D ([in, out])
    has_experts: bool

    @property
    def linears(self) -> tuple[str, ...]:
        """Names (relative to a block) of every prunable linear layer, in forward order."""
        return tuple(name for group in self.groups for name in group)

    def sublayer(self, kind: str) -> Sublayer:
        if kind not in ("attn", "mlp"):
            raise ValueError(f"sublayer {kind!r}: allowed attn, mlp")
        return self.attn if kind == "attn" else self.mlp

    def get_blocks(self, model: nn.Module) -> nn.ModuleList:
        return model.get_submodule(self.blocks)

    @contextlib.contextmanager
    def blocks_detached(self, model: nn.Module):
        """Temporarily remove the block list, e.g. to move only the rest of the model to a device."""
        parent, _, attr = self.blocks.rpartition(".")
        holder = model.get_submodule(parent)
        blocks = getattr(holder, attr)
        setattr(holder, attr, nn.ModuleList())
        try:
            yield model
        finally:
            setattr(holder, attr, blocks)

    def block_linears(self, block: nn.Module) -> dict[str, nn.Module]:
        return {name: block.get_submodule(name) for name in self.linears}

    def weight(self, layer: nn.Module) -> torch.Tensor:
        """The layer's weight as [out_features, in_features] (a view: edits write through)."""
        return layer.weight.T if is_transposed(layer) else layer.weight


_KNOWN: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def architecture_of(model: nn.Module) -> Architecture:
    """The :class:`Architecture` of a model, found once per model object (fused experts are unfused
    in place the first time); :class:`UnsupportedModelError` says what is missing and how to add it."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"architecture_of needs a model, got {type(model).__name__}; for a config use check_supported")
    if model not in _KNOWN:
        unfuse_experts(model, _config(model))
        _KNOWN[model] = _discover(model)
    return _KNOWN[model]


def remember_architecture(model: nn.Module, arch: Architecture) -> None:
    """Record ``arch`` as ``model``'s (a skeleton whose blocks are loaded later, a stream sharing another's)."""
    _KNOWN[model] = arch


prepare = architecture_of  # call after loading: unfuses experts so parameter names are the working ones


@contextlib.contextmanager
def saveable(model: nn.Module):
    """The model with its experts fused back as transformers stores them (for ``save_pretrained``)."""
    with experts_fused(model):
        yield model


# ---------------------------------------------------------------- discovery


def _config(model):
    return getattr(model, "config", None)


def family_of(model_or_config) -> str:
    config = getattr(model_or_config, "config", model_or_config)
    return str(getattr(config, "model_type", None) or type(model_or_config).__name__)


def find_blocks(model: nn.Module) -> str:
    """Path of the decoder blocks: the ModuleList of the class ``_no_split_modules`` names, else the longest of one class."""
    named = set(getattr(model, "_no_split_modules", None) or ())
    candidates = []
    for path, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) and not isinstance(module, UnfusedExperts):
            classes = {type(m).__name__ for m in module}
            if len(classes) == 1:
                candidates.append((classes <= named, len(module), path))
    if not candidates:
        raise UnsupportedModelError(f"model family {family_of(model)!r}: no list of decoder blocks (a ModuleList of one class) found; {HOW_TO_ADD}")
    return max(candidates, key=lambda c: (c[0], c[1]))[2]


def _is_router(layer: nn.Module, config) -> bool:
    """Expert routers (and shared-expert gates) score experts; they are never pruned."""
    experts = getattr(config, "num_experts", None) or getattr(config, "num_local_experts", None)
    return bool(experts) and out_features(layer) in (1, experts)


def _children_roles(block: nn.Module, config, family: str):
    """(attention child name, MLP child name or "", prunable linear names) from the module tree."""
    linears = [n for n, m in block.named_modules() if n and is_linear(m) and not _is_router(m, config)]
    children = dict(block.named_children())
    holders = [n for n in children if any(name.startswith(n + ".") for name in linears)]
    attn = [n for n in holders if "attention" in type(children[n]).__name__.lower()]
    if len(attn) != 1:
        raise UnsupportedModelError(
            f"model family {family!r}: expected one attention module among the block's children "
            f"{[type(c).__name__ for c in children.values()]}, found {len(attn)}; {HOW_TO_ADD}"
        )
    others = [n for n in holders if n != attn[0]]
    direct = [name for name in linears if "." not in name]
    if len(others) + bool(direct) != 1:
        raise UnsupportedModelError(
            f"model family {family!r}: expected one MLP module (or MLP linears on the block), found modules {others} "
            f"and block linears {direct}; {HOW_TO_ADD}"
        )
    return attn[0], (others[0] if others else ""), linears, direct


class StopForward(Exception):
    """Raised by a hook to end a forward pass early (caught by the pass that installed the hook)."""


def first_tensor(value):
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)):
        return next((v for v in value if isinstance(v, torch.Tensor)), None)
    return getattr(value, "last_hidden_state", None)


@torch.no_grad()
def first_block_call(model: nn.Module, block: nn.Module, input_ids: torch.Tensor) -> tuple[tuple, dict]:
    """(args, kwargs) with which the model calls ``block`` for ``input_ids`` (the blocks after it never run)."""
    seen = {}

    def grab(_module, args, kwargs):
        seen["call"] = (args, kwargs)
        raise StopForward

    handle = block.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        with contextlib.suppress(StopForward):
            model(input_ids, use_cache=False)
    finally:
        handle.remove()
    if "call" not in seen:
        raise UnsupportedModelError(f"model family {family_of(model)!r}: a forward pass never reached the blocks")
    return seen["call"]


@torch.no_grad()
def _trace(model: nn.Module, block: nn.Module, watched: dict[str, nn.Module]) -> tuple[list, object, object]:
    """Run block 0 on a short input; record (name, input tensor, output tensor) of every watched
    module call in order, plus the block's input and output."""
    vocab = model.get_input_embeddings().weight.shape[0]
    ids = (torch.arange(3, 11) % vocab).unsqueeze(0).to(next(model.parameters()).device)
    was_training = model.training
    model.eval()
    calls, handles = [], []
    try:
        args, kwargs = first_block_call(model, block, ids)
        for name, module in watched.items():
            handles.append(module.register_forward_hook(
                lambda m, a, kw, out, name=name: calls.append((name, _input_tensor(a, kw), first_tensor(out))), with_kwargs=True))
        output = block(*args, **kwargs)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return calls, _input_tensor(args, kwargs), output


def _input_tensor(args, kwargs):
    return args[0] if args and isinstance(args[0], torch.Tensor) else kwargs.get("hidden_states", first_tensor(list(kwargs.values())))


def _discover(model: nn.Module) -> Architecture:
    config, family = _config(model), family_of(model)
    blocks_path = find_blocks(model)
    block = model.get_submodule(blocks_path)[0]
    attn_name, mlp_name, linears, direct = _children_roles(block, config, family)
    norms = [n for n, c in block.named_children() if is_norm(c)]
    watched = {n: block.get_submodule(n) for n in [*linears, *norms, attn_name] + ([mlp_name] if mlp_name else [])}
    calls, block_in, block_out = _trace(model, block, watched)
    first_call = {}
    for i, (name, x, y) in enumerate(calls):
        first_call.setdefault(name, (i, x, y))

    def chain(kind, module, layer_names):
        layer_names = tuple(sorted(layer_names, key=lambda n: first_call.get(n, (len(calls),))[0]))
        if module:
            _, x, y = first_call[module]
        else:  # the layers hang off the block: from the first one's input to the last one's output
            x, y = first_call[layer_names[0]][1], first_call[layer_names[-1]][2]
        pre = next((n for n in norms if n in first_call and first_call[n][2] is x), None)
        post = next((n for n in norms if n in first_call and first_call[n][1] is y), None)
        inputs = tuple(n for n in layer_names if n in first_call and first_call[n][1] is x)
        experts = module and any(isinstance(m, UnfusedExperts) for m in block.get_submodule(module).modules())
        called = [n for n in layer_names if n in first_call]
        output = None if experts or not called else called[-1]
        call = EXCEPTIONS.get(family, {}).get("mlp_call") if kind == "mlp" and not module else None
        return Sublayer(kind, module, pre, post, layer_names, inputs, output, call), x

    attn, attn_x = chain("attn", attn_name, [n for n in linears if n.startswith(attn_name + ".")])
    mlp_linears = [n for n in linears if not n.startswith(attn_name + ".")]
    if not mlp_linears:
        raise UnsupportedModelError(f"model family {family!r}: no MLP linears found in a block; {HOW_TO_ADD}")
    mlp, mlp_x = chain("mlp", mlp_name, mlp_linears)
    mlp_reads = first_call[mlp.pre_norm][1] if mlp.pre_norm else mlp_x
    return Architecture(
        family=family,
        blocks=blocks_path,
        attn=attn,
        mlp=mlp,
        groups=_input_groups(block, linears, calls),
        returns_tuple=isinstance(block_out, (tuple, list)),
        parallel_residual=mlp_reads is block_in or mlp_reads is attn_x,
        transposed=any(is_transposed(block.get_submodule(n)) for n in linears),
        has_experts=any(isinstance(m, UnfusedExperts) for m in block.modules()),
    )


def _input_groups(block: nn.Module, linears: list[str], calls: list) -> tuple[tuple[str, ...], ...]:
    """Linears grouped by the tensor they read, in forward order. Experts the trace's few tokens did
    not reach are grouped by their own structure (gate and up read one input) after those it did."""
    groups: list[tuple[object, list[str]]] = []
    for name, x, _ in calls:
        if name not in linears or any(name in g for _, g in groups):
            continue
        group = next((g for t, g in groups if t is x), None)
        if group is None:
            groups.append((x, [name]))
        else:
            group.append(name)
    seen = {n for _, g in groups for n in g}
    for experts_path, experts in ((p, m) for p, m in block.named_modules() if isinstance(m, UnfusedExperts)):
        for index in range(len(experts)):
            for part in UnfusedExperts.GROUPS:
                names = [f"{experts_path}.{index}.{p}" for p in part]
                if not seen.intersection(names):
                    groups.append((None, names))
    missing = [n for n in linears if n not in {m for _, g in groups for m in g}]
    groups += [(None, [n]) for n in missing]
    return tuple(tuple(g) for _, g in groups)


# ---------------------------------------------------------------- before any job: the config alone


def check_supported(config) -> dict:
    """Find the parts PruneFlow needs in a model built from ``config`` on the meta device (no weights,
    no memory); raise :class:`UnsupportedModelError` naming the family, what is missing and how to add it.
    Returns a short description (family, blocks path, linears per block)."""
    from transformers import AutoModelForCausalLM

    family = family_of(config)
    try:
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
    except (ValueError, KeyError) as err:
        raise UnsupportedModelError(f"model family {family!r}: transformers cannot build it as a causal LM ({err})") from None
    unfuse_experts(model, config)
    blocks = find_blocks(model)
    attn, mlp, linears, _ = _children_roles(model.get_submodule(blocks)[0], config, family)
    return {"family": family, "blocks": blocks, "attention": attn, "mlp": mlp or "(on the block)", "linears_per_block": len(linears)}


# ---------------------------------------------------------------- attention heads


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
    """Head counts and head width from a config (``head_dim`` defaults to hidden / heads)."""
    config = getattr(model_or_config, "config", model_or_config)
    heads = config.num_attention_heads
    kv_rule = EXCEPTIONS.get(family_of(config), {}).get("kv_heads")
    kv_heads = kv_rule(config) if kv_rule else (getattr(config, "num_key_value_heads", None) or heads)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return AttentionShape(heads, kv_heads, head_dim)


# ---------------------------------------------------------------- building one block from a config


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype | None):
    """Modules built inside get floating tensors of ``dtype`` (None: unchanged)."""
    old = torch.get_default_dtype()
    if dtype is not None:
        torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def share_implementation(config, source) -> None:
    """Give ``config`` how ``source`` runs (attention and experts implementations are not saved in a config,
    and a block built from a config without them would fall back to eager attention)."""
    for key, value in vars(source).items():
        if key.startswith("_") and "implementation" in key:
            setattr(config, key, value)


def new_block(block_class, config, index: int, buffers: bool = False, dtype: torch.dtype | None = None) -> nn.Module:
    """An empty block of ``block_class`` for ``config`` (parameters on the meta device; buffers too unless
    ``buffers``, when tables a block computes at construction, as rotary frequencies, are real, built in
    ``dtype`` as ``from_pretrained`` builds them), experts unfused as PruneFlow works."""
    from accelerate import init_empty_weights

    context = init_empty_weights(include_buffers=False) if buffers else torch.device("meta")
    with context, default_dtype(dtype):
        try:
            block = block_class(config, index)
        except TypeError:
            block = block_class(config)
    unfuse_experts(block, config)
    return block


def rebuild_block(block: nn.Module, config, index: int, state: dict) -> nn.Module:
    """``block``'s class built from ``config`` and loaded strictly with ``state`` (a RuntimeError if the
    config does not describe those shapes); buffers that are not saved (rotary tables) come from ``block``."""
    new = new_block(type(block), config, index)
    new.load_state_dict(state, strict=True, assign=True)
    old_buffers = dict(block.named_buffers())
    for name, buf in list(new.named_buffers()):
        if buf.is_meta:
            owner, _, attr = name.rpartition(".")
            new.get_submodule(owner).register_buffer(attr, old_buffers[name], persistent=False)
    new.train(block.training)
    return new


def set_config(model: nn.Module, config) -> None:
    """Give ``model`` and every submodule that shared its config the new ``config``, keeping how it
    runs (attention and experts implementations are not part of a saved config)."""
    old = model.config
    share_implementation(config, old)
    for module in model.modules():
        if getattr(module, "config", None) is old:
            module.config = config
