"""Structured pruning: remove whole attention heads and FFN neurons, repair the output projections
(:mod:`pruneflow.structured.liar`), and leave a physically smaller model that saves and loads as usual.

Units. A neuron j of the MLP owns row j of every input projection (rows j and f + j of a fused
gate|up projection) and column j of the output projection. Attention heads are removed as whole
key/value groups (grouped-query attention): a group is one KV head with all query heads that read
it, so the pruned model still has ``num_heads / num_kv_heads`` query heads per KV head. A group owns
a contiguous slice of every input projection's rows (q, k and v alike, and GPT-NeoX's or Falcon's
per-head interleaved query_key_value), or one slice of each part of a projection that concatenates
q|k|v (Phi-3's qkv_proj; ``architectures.CONCATENATED``), and its heads' columns of the output
projection. The ratio rounds to whole groups: SmolLM2 (9 query heads in 3 KV groups) can only lose 0,
1/3 or 2/3 of its heads; 0.2 removes one group of three query heads. With plain multi-head attention
a group is a single head. Norms inside the attention over all heads' channels (OLMo 2's q_norm and
k_norm) lose the same channels.

Ratios are uniform: every layer removes ``round(ratio · units)`` units (half rounds up), but always
keeps at least one unit.

Criteria score each unit (registry kind ``structured_criterion``, one module each in ``pruneflow.methods``: the
weights' magnitude, Wanda-sp, FLAP's fluctuation); the lowest-scoring units go. Those that need calibration read
the statistics of the output projection's input channels (:class:`pruneflow.structured.liar.ChannelStats`).

Calibration is sequential: each block's statistics come from inputs that went through the
already-pruned blocks before it, and within a block the MLP statistics are taken after its heads
were pruned.

Export. After each step the block is rebuilt by its own class from a config with the new sizes
(``num_attention_heads``, the key/value head count, an explicit ``head_dim``, the MLP width) and
loaded with the pruned weights, strictly: so the model stays consistent while pruning goes on, and
a family whose config cannot describe the pruned shapes (GPT-2, OPT, GPT-NeoX and Falcon derive the
head width from hidden size / heads) fails at the first block with one clear error. Where
reconstruction gives the output projection a bias it had not, a config flag that gives it one
(``attention_bias``, ``mlp_bias``, ``bias``, ...) is switched on and every projection that flag
governs gets a zero bias, so ``save_pretrained`` / ``from_pretrained`` round-trip exactly.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from pruneflow.core.activations import capture_block_inputs, run_block
from pruneflow.core.architectures import (
    CONCATENATED,
    Architecture,
    AttentionShape,
    attention_shape,
    is_transposed,
    new_block,
    out_features,
    rebuild_block,
    set_config,
)
from pruneflow.core.stream import ModelStream
from pruneflow.spec.naming import DAMPING, is_damped, structured_criteria
from pruneflow.spec.naming import STRUCTURED_TARGETS as TARGETS
from pruneflow.structured.liar import (
    ChannelStats,
    check_reconstruction,
    choose_damping,
    collect_channel_stats,
    collect_split_channel_stats,
    reconstruct,
)

KV_HEADS_KEYS = ("num_key_value_heads", "num_kv_heads")
MLP_WIDTH_KEYS = ("intermediate_size", "ffn_dim", "n_inner", "ffn_hidden_size")
BIAS_KEYS = ("attention_bias", "mlp_bias", "bias", "use_bias", "add_bias_linear")


class StructuredError(ValueError):
    """Structured pruning cannot be done as asked; the message says why and what is allowed."""


@dataclass
class Units:
    """The prunable units of one block's attention (``heads``: KV groups) or MLP (``neurons``)."""

    kind: str
    block: nn.Module
    in_names: tuple[str, ...]
    out_name: str
    units: int
    parts: dict[str, tuple[int, ...]]  # input projection -> row count of each concatenated part
    norms: dict[str, str]  # 1-D parameter inside the attention -> the projection whose rows it follows

    @property
    def out_layer(self) -> nn.Module:
        return self.block.get_submodule(self.out_name)

    @property
    def out_weight(self) -> torch.Tensor:
        """The output projection's weight [out, channels] (transposed layers read as [out, in])."""
        return _weight(self.out_layer)

    def in_weight(self, name: str) -> torch.Tensor:
        """Input projection ``name``'s weight [rows, in]."""
        return _weight(self.block.get_submodule(name))

    @property
    def out_width(self) -> int:
        """Input channels of the output projection per unit."""
        return _weight(self.out_layer).shape[1] // self.units

    def rows(self, name: str, kept: torch.Tensor) -> torch.Tensor:
        """Rows of input projection ``name`` owned by the ``kept`` units."""
        out, offset = [], 0
        for size in self.parts[name]:
            out.append(offset + unit_channels(kept, size // self.units))
            offset += size
        return torch.cat(out)


def _weight(layer: nn.Module) -> torch.Tensor:
    return layer.weight.T if is_transposed(layer) else layer.weight


def units_of(arch: Architecture, block: nn.Module, kind: str, shape: AttentionShape) -> Units:
    """The units of ``kind`` in ``block``; a clear error where the family's projections do not allow it."""
    if kind not in ("heads", "neurons"):
        raise StructuredError(f"unknown unit kind {kind!r}; allowed: heads, neurons")
    sub = arch.attn if kind == "heads" else arch.mlp
    if sub.output is None or not sub.inputs or set(sub.inputs) | {sub.output} != set(sub.linears):
        raise StructuredError(
            f"structured pruning of {kind} is not supported for model family {arch.family!r}: its "
            f"{'attention' if kind == 'heads' else 'MLP'} is not input projections {sub.inputs} feeding one output "
            f"projection ({'mixture of experts' if arch.has_experts and kind == 'neurons' else sub.linears})"
        )
    out_in = _weight(block.get_submodule(sub.output)).shape[1]
    units = shape.num_kv_heads if kind == "heads" else out_in
    if kind == "heads" and out_in != shape.num_heads * shape.head_dim:
        raise StructuredError(f"model family {arch.family!r}: {sub.output} reads {out_in} channels, not heads × head_dim = "
                              f"{shape.num_heads} × {shape.head_dim}; structured heads are not supported")
    parts = {}
    for name in sub.inputs:
        rows = out_features(block.get_submodule(name))
        leaf = name.rsplit(".", 1)[-1]
        if leaf in CONCATENATED and kind == "heads":
            q, kv = shape.num_heads * shape.head_dim, shape.num_kv_heads * shape.head_dim
            parts[name] = (q, kv, kv)
        elif leaf in CONCATENATED:
            parts[name] = (units,) * len(CONCATENATED[leaf])
        else:
            parts[name] = (rows,)
        if sum(parts[name]) != rows or any(p % units for p in parts[name]):
            raise StructuredError(f"model family {arch.family!r}: cannot split the {rows} rows of {name} into {units} {kind} units")
    norms = {}
    if kind == "heads":  # norms over all heads' channels follow the rows of the projection of that width
        module = block.get_submodule(sub.module)
        widths = {out_features(block.get_submodule(n)): n for n in sub.inputs}
        for pname, p in module.named_parameters():
            owner = pname.rpartition(".")[0]
            if p.dim() == 1 and f"{sub.module}.{owner}" not in sub.linears and p.shape[0] in widths and len(parts[widths[p.shape[0]]]) == 1:
                norms[f"{sub.module}.{pname}"] = widths[p.shape[0]]
    return Units(kind, block, sub.inputs, sub.output, units, parts, norms)


def unit_channels(units: torch.Tensor, width: int) -> torch.Tensor:
    """Channel indices [len(units) · width] owned by ``units`` [u] when each owns ``width`` channels."""
    return (units.reshape(-1, 1) * width + torch.arange(width)).reshape(-1)


def check_criterion(criterion: str):
    """The criterion's entry; StructuredError naming the value and the allowed ones."""
    if criterion not in (found := structured_criteria()):
        raise StructuredError(f"unknown structured criterion {criterion!r}; allowed: {', '.join(found)}")
    return found[criterion]


@torch.no_grad()
def unit_scores(criterion: str, units: Units, stats: ChannelStats | None) -> torch.Tensor:
    """One score per unit [units] (float64); the lowest are removed."""
    entry = check_criterion(criterion)
    if entry.needs_calibration and stats is None:
        raise StructuredError(f"criterion {criterion!r} needs calibration statistics")
    return entry.load()(units, stats, **entry.defaults)


def units_to_remove(units: int, ratio: float) -> int:
    """round(ratio · units), half up, leaving at least one unit."""
    return min(math.floor(ratio * units + 0.5), units - 1)


def kept_units(scores: torch.Tensor, ratio: float) -> torch.Tensor:
    """Sorted indices [kept] of the units that survive; ties broken by index (deterministic)."""
    n_remove = units_to_remove(len(scores), ratio)
    order = torch.sort(scores, stable=True).indices
    return order[n_remove:].sort().values


def _set_weight(layer: nn.Module, weight: torch.Tensor) -> None:
    """Give ``layer`` the [out, in] ``weight`` in its own layout."""
    layer.weight = nn.Parameter((weight.T if is_transposed(layer) else weight).contiguous())


@torch.no_grad()
def remove_units(units: Units, kept: torch.Tensor, reconstruction: str, stats: ChannelStats | None, damping: float = 0.0,
                 selections: dict | None = None, consume_stats: bool = False) -> bool:
    """Slice the block down to the ``kept`` units [k] in place, repairing its output projection;
    returns whether the output projection gained a bias it did not have.

    Layers keep their classes with smaller tensors; :func:`prune_structured` then rebuilds the block
    from a config with the new sizes, so attributes that cache sizes are right again. ``selections``,
    if given, receives {parameter name in the block: (dim, kept indices)} in the parameters' own
    layout: the variant stores these instead of the smaller tensors (``variants.write_structured_variant``).
    ``consume_stats``: ``stats`` are not used again, so the fit may take their Gram sums (less memory).
    """
    block = units.block
    record = selections if selections is not None else {}
    for name in units.in_names:
        layer = block.get_submodule(name)
        rows = units.rows(name, kept).to(layer.weight.device)
        _set_weight(layer, _weight(layer)[rows].clone())
        record[f"{name}.weight"] = (1 if is_transposed(layer) else 0, rows.cpu())
        if layer.bias is not None:
            layer.bias = nn.Parameter(layer.bias[rows].clone())
            record[f"{name}.bias"] = (0, rows.cpu())
    for pname, source in units.norms.items():
        owner, _, attr = pname.rpartition(".")
        module = block.get_submodule(owner)
        rows = units.rows(source, kept).to(getattr(module, attr).device)
        setattr(module, attr, nn.Parameter(getattr(module, attr)[rows].clone()))
        record[pname] = (0, rows.cpu())
    out = units.out_layer
    had_bias = out.bias is not None
    cols = unit_channels(kept, units.out_width)
    record[f"{units.out_name}.weight"] = (0 if is_transposed(out) else 1, cols)
    weight, bias = reconstruct(reconstruction, _weight(out), out.bias, cols, stats, damping, consume_stats)
    _set_weight(out, weight)
    out.bias = None if bias is None else nn.Parameter(bias)
    return bias is not None and not had_bias


def count_parameters(model: nn.Module) -> int:
    """Parameters of the model (tied embeddings counted once)."""
    return sum(p.numel() for p in model.parameters())


def check_ratio(ratio) -> float:
    try:
        value = float(ratio)
    except (TypeError, ValueError):
        value = float("nan")
    if not 0 <= value < 1:
        raise StructuredError(f"structured ratio {ratio!r} must be a number in [0, 1) (the fraction of units removed per layer)")
    return value


@dataclass(frozen=True)
class _Plan:
    """What every block of one structured pruning does (see :func:`prune_structured`)."""

    criterion: str
    ratio: float
    reconstruction: str
    damping: float | str
    damped: bool  # the repair takes a damping
    choose: bool  # damping "auto": chosen per layer on held-out calibration samples
    needs_stats: bool
    gram: bool  # the statistics keep their Gram sums (the repair fits from the channels' moments)
    nsamples: int


def _remove_and_repair(plan: _Plan, units: Units, inputs, record: dict, kind: str, selections: dict | None):
    """Score the units of one kind in one block, keep the best, repair the output projection; returns
    (kept unit indices, whether a bias was added). The damping chosen, if any, goes into ``record``."""
    block, reconstruction = units.block, plan.reconstruction
    damping = plan.damping if plan.damped else 0.0
    if plan.choose:  # fit and held-out samples apart, for the choice; together for the scores and the fit
        fit, held = collect_split_channel_stats(block, units.out_layer, inputs, plan.nsamples)
        stats = fit.combined(held)
    else:
        stats = collect_channel_stats(block, units.out_layer, inputs, gram=plan.gram) if plan.needs_stats else None
    kept = kept_units(unit_scores(plan.criterion, units, stats), plan.ratio)
    if plan.choose:
        cols = unit_channels(kept, units.out_width)
        damping, errors = choose_damping(reconstruction, _weight(units.out_layer), cols, fit, held)
        record[f"{kind}_damping"] = damping
        record[f"{kind}_heldout_error"] = {f"{k:g}": v for k, v in errors.items()}
    return kept, remove_units(units, kept, reconstruction, stats, damping, selections, consume_stats=True)


@torch.no_grad()
def prune_structured(
    model,
    calib_ids: torch.Tensor | None,
    target: str,
    ratio: float,
    criterion: str,
    reconstruction: str,
    damping: float | str = "auto",
    batch_size: int = 8,
    device="cpu",
    selections: dict | None = None,
) -> dict:
    """Remove ``ratio`` of the heads and/or FFN neurons of every block in place; return a summary.

    ``calib_ids`` [n, seqlen] (None allowed only for a criterion and reconstruction that need no calibration);
    ``target`` heads | neurons | both; ``damping`` is the ridge factor λ (× mean diagonal) of a repair that
    takes one (LIAR's), or ``"auto"``: chosen per layer and unit kind on a held-out slice of the calibration
    samples (:func:`pruneflow.structured.liar.choose_damping`; a fixed λ chosen on evaluation perplexity would tune on
    the reported split). The summary has params_before/after, the new config fields and, per layer, the
    kept KV groups, the kept head and neuron counts and any damping chosen. ``selections``, if given, receives per block index the
    kept indices of every sliced parameter (see :func:`remove_units`).
    """
    if target not in TARGETS:
        raise StructuredError(f"unknown structured target {target!r}; allowed: {', '.join(TARGETS)}")
    scorer, repair = check_criterion(criterion), check_reconstruction(reconstruction)
    ratio = check_ratio(ratio)
    stream = ModelStream.wrap(model)
    model, arch = stream.model, stream.arch
    shape = attention_shape(model)
    kinds = [k for k in ("heads", "neurons") if target in (k, "both")]
    first = stream.blocks_list()[0]  # its shapes are every block's (an empty shell of a stream will do)
    for kind in kinds:
        units_of(arch, first, kind, shape)  # unsupported layouts fail before any work
    needs = scorer.needs | (repair.needs if repair else frozenset())
    damped = is_damped(reconstruction)
    choose = damped and damping == "auto"
    if damped:
        param = next(p for p in repair.params if p.name == DAMPING)
        try:
            param.check(damping)
        except ValueError:
            raise StructuredError(f"damping {damping!r} is not allowed; allowed: {param.allowed}") from None
    needs_stats = bool(needs)
    if needs_stats and calib_ids is None:
        raise StructuredError(f"criterion {criterion!r} with reconstruction {reconstruction!r} needs calibration samples")

    plan = _Plan(criterion, ratio, reconstruction, damping, damped, choose, needs_stats, "gram" in needs,
                 0 if calib_ids is None else len(calib_ids))
    params_before = params_after = count_parameters(model)  # shapes only: a skeleton counts too
    resized = _Resized(model.config, arch, shape, first)
    inputs = capture_block_inputs(model, calib_ids, batch_size, device) if needs_stats else None
    layers = []
    for index in tqdm(range(stream.num_blocks), desc=f"structured {target} {criterion} {reconstruction}", unit="block"):
        block = stream.load(index, device)
        params_after -= count_parameters(block)
        record = {"layer": index}
        for step, kind in enumerate(kinds):
            units = units_of(arch, block, kind, shape)
            block_selections = None if selections is None else selections.setdefault(index, {})
            kept, added_bias = _remove_and_repair(plan, units, inputs, record, kind, block_selections)
            resized.set(kind, len(kept), added_bias)
            block = stream.replace(index, resized.rebuild(block, index, kinds[: step + 1]))
            record["kv_groups_kept" if kind == "heads" else "neurons_kept"] = kept.tolist() if kind == "heads" else len(kept)
        if inputs is not None and index + 1 < stream.num_blocks:
            inputs = inputs.replace(run_block(block, inputs))  # the next block sees the pruned one
        params_after += count_parameters(block)
        stream.release(index)  # a stream's writer stores the block now
        layers.append(record)
    set_config(model, resized.config(kinds))
    chosen = [r[f"{k}_damping"] for r in layers for k in kinds if f"{k}_damping" in r]
    return {
        "target": target,
        "ratio": ratio,
        "criterion": criterion,
        "reconstruction": reconstruction,
        "damping": damping if damped else None,
        "damping_chosen": {f"{d:g}": chosen.count(d) for d in sorted(set(chosen))},  # auto: how often each λ won
        "params_before": params_before,
        "params_after": params_after,
        "config": resized.changes(kinds),
        "layers": layers,
    }


class _Resized:
    """Config fields for the pruned sizes, and rebuilding a block from them."""

    def __init__(self, config, arch: Architecture, shape: AttentionShape, block: nn.Module):
        self.base, self.arch, self.shape = config, arch, shape
        self.block_class = type(block)
        self.mlp_width = _weight(block.get_submodule(arch.mlp.output)).shape[1] if arch.mlp.output else None
        self.fields: dict[str, dict] = {"heads": {}, "neurons": {}}

    def set(self, kind: str, kept: int, added_bias: bool) -> None:
        fields = {}
        if kind == "heads":
            fields["num_attention_heads"] = kept * self.shape.group_size
            fields.update({k: kept for k in KV_HEADS_KEYS if getattr(self.base, k, None) is not None})
            fields["head_dim"] = self.shape.head_dim
        else:
            fields[self._width_key()] = kept
        if added_bias:
            fields.update(self._bias_flag(kind))
        if self.fields[kind] and self.fields[kind] != fields:
            raise StructuredError(f"structured pruning left blocks of different sizes ({self.fields[kind]} vs {fields}); the config cannot describe them")
        self.fields[kind] = fields

    def _width_key(self) -> str:
        """The config field that sets the MLP width: the one whose change resizes the MLP's output projection."""
        for key in MLP_WIDTH_KEYS:
            if hasattr(self.base, key) and self.mlp_width and self.mlp_width > 1:
                probe = self._build(0, {key: self.mlp_width - 1})
                if _weight(probe.get_submodule(self.arch.mlp.output)).shape[1] == self.mlp_width - 1:
                    return key
        raise StructuredError(
            f"model family {self.arch.family!r}: no config field sets the MLP width (looked for {', '.join(MLP_WIDTH_KEYS)})"
        )

    def _bias_flag(self, kind: str) -> dict:
        """The config flag that gives this kind's output projection a bias."""
        sub = self.arch.attn if kind == "heads" else self.arch.mlp
        for key in BIAS_KEYS:
            if hasattr(self.base, key) and not getattr(self.base, key):
                probe = self._build(0, {key: True})
                if probe.get_submodule(sub.output).bias is not None:
                    return {key: True}
        raise StructuredError(
            f"reconstruction adds a bias to {sub.output}, which model family {self.arch.family!r} cannot store "
            f"(no config flag among {', '.join(BIAS_KEYS)} gives it one); use reconstruction 'none'"
        )

    def config(self, kinds) -> object:
        config = copy.deepcopy(self.base)
        for kind in kinds:
            for key, value in self.fields[kind].items():
                try:
                    setattr(config, key, value)
                except AttributeError:  # a derived field (a property): the rebuild will tell
                    pass
        return config

    def changes(self, kinds) -> dict:
        return {k: v for kind in kinds for k, v in self.fields[kind].items()}

    def _build(self, index: int, extra: dict | None = None, kinds=()) -> nn.Module:
        config = self.config(kinds)
        for key, value in (extra or {}).items():
            setattr(config, key, value)
        return new_block(self.block_class, config, index)

    def rebuild(self, block: nn.Module, index: int, kinds) -> nn.Module:
        """A fresh block of the same class from the resized config, holding ``block``'s tensors."""
        template = self._build(index, kinds=kinds)
        state = block.state_dict()
        for name, p in template.state_dict().items():
            if name not in state and name.endswith("bias"):  # a bias the flag added: zero
                weight = state[name.removesuffix("bias") + "weight"]
                state[name] = torch.zeros(p.shape, dtype=weight.dtype, device=weight.device)
        try:
            return rebuild_block(block, self.config(kinds), index, state)
        except RuntimeError as err:
            raise StructuredError(
                f"structured pruning of {', '.join(kinds)}: model family {self.arch.family!r} cannot describe the pruned "
                f"shapes in its config ({str(err).splitlines()[-1].strip()}); its config derives them from other sizes"
            ) from None
