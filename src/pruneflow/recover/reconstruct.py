"""Reconstruction after pruning at every granularity (A Free Lunch in LLM Compression:
Wagner, Roux, Zimmer, Pokutta).

A *unit* of the pruned model is trained, with its kept weights only, so that its output matches the
dense model's unit on the same inputs. Which units a reconstruction has is its granularity, a registry entry
of kind ``reconstruction`` in its own module (:mod:`pruneflow.spec.recovery` says what an entry declares):
``matrix`` and ``matrix-adam`` (each linear alone, closed form or Adam: :func:`reconstruct_matrices`),
``sublayer`` (attention and MLP with their norms), ``block`` and ``blocks:k`` (:func:`reconstruct_units`) and
``full`` (the whole model on the next-token loss). This module is what they share: the streams of inputs, a
unit's training and the order.

``inputs``: ``pruned`` (our default) feeds every unit what the already reconstructed pruned model
before it produces; ``dense`` feeds the dense model's stream, which is the Free Lunch reference
code's default (``propagate_sparse_activations_reconstruct=False``). ``targets``: ``same`` applies the
dense unit to the unit's own inputs (the reference's default); ``dense`` takes the dense model's stream
(the dense unit on dense inputs). Both input choices are rows of the reconstruction table.

Order. :func:`reconstruct_model` reconstructs a model pruned beforehand, with its masks fixed (every
block's pruning statistics came from the pruned, not yet reconstructed, stream). The reference code
interleaves: block by block it prunes with statistics from the pruned *and reconstructed* stream
(``propagate_sparse_activations_prune=True``), then reconstructs the block's units, so block i+1's
masks already see the repaired block i: :func:`prune_and_reconstruct`.

Free Lunch defaults (public code): AdamW, linear decay after a 10% linear warmup, batch size 2, MSE
loss, one or more epochs over 128 calibration samples per unit; the learning rate is tuned per
granularity. See :class:`pruneflow.recover.train.TrainConfig`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from pruneflow.core import fallbacks
from pruneflow.core.activations import (
    BlockInputs,
    block_output,
    call_arguments,
    capture_block_inputs,
    collect_stats,
    feed_inputs,
    input_groups,
    run_block,
    run_hooked,
)
from pruneflow.core.architectures import Architecture, StopForward, Sublayer
from pruneflow.core.stream import ModelStream
from pruneflow.prune.criteria import Criterion, prune_block_layers
from pruneflow.prune.masks import Pattern
from pruneflow.recover.adapters import AdapterConfig, merge_adapters, parse_subsets, subset_parameters, wrap_block_linears
from pruneflow.recover.least_squares import SOLVERS, linear_output_error
from pruneflow.recover.train import TrainConfig, peak_memory, reconstruction_loss, train
from pruneflow.spec.naming import RECON_INPUTS as INPUTS
from pruneflow.spec.naming import RECON_TARGETS as TARGETS
from pruneflow.spec.recovery import granularity_entry, granularity_problem


class ReconstructionError(ValueError):
    pass


def find_granularity(text: str):
    """The registry entry of a granularity and its parameters (``"blocks:3"`` → (entry, {"k": 3})); a bad one
    raises ReconstructionError naming it and the allowed ones."""
    try:
        entry, params = granularity_entry(text)
        problem = granularity_problem(text)
    except ValueError as err:
        raise ReconstructionError(str(err)) from None
    if problem:
        raise ReconstructionError(f"granularity {text!r}: {problem}")
    return entry, params


@torch.no_grad()
def capture_linear_inputs(block: nn.Module, arch, names: Sequence[str], inputs: BlockInputs) -> dict[str, list[torch.Tensor]]:
    """Inputs [batch, seqlen, in] of the named linears of ``block`` for every chunk of ``inputs``.

    The block runs only until the last of them has its input, so later layers cost nothing.
    """
    linears = arch.block_linears(block)
    captured: dict[str, list[torch.Tensor]] = {name: [] for name in names}
    feed_inputs(block, inputs, [linears[name] for name in names], lambda i, x: captured[names[i]].append(x.detach()))
    return captured


def _gram(xs: list[torch.Tensor], zs: list[torch.Tensor] | None = None) -> torch.Tensor:
    """Σ_t x_t z_tᵀ over all chunks, float32 [in, in] (z = x when ``zs`` is None)."""
    total = None
    for i, x in enumerate(xs):
        x = x.reshape(-1, x.shape[-1]).float()
        z = x if zs is None else zs[i].reshape(-1, zs[i].shape[-1]).float()
        total = x.T @ z if total is None else total.addmm_(x.T, z)
    return total


def reconstruct_matrices(ctx: "Context", calib_ids, solve, chunk: int) -> list[dict]:
    """Each linear layer of each block alone, block after block, towards the dense layer's output on the same
    inputs. ``solve(ctx, layer, dense_weight, keep, xs, zs, gram, cross, name) -> (steps, trainable)`` updates the
    layer's weight in place: ``dense_weight`` and ``keep`` [out, in], ``xs`` its inputs per chunk, ``zs`` the dense
    layer's (None: the same), ``gram`` Σ xxᵀ and ``cross`` Σ xzᵀ (None: the Gram). ``chunk``: calibration samples per
    chunk of the streams. Returns one record per linear."""
    stream_p, stream_d = _streams(ctx, calib_ids, chunk)
    records = []
    for index in tqdm(range(ctx.p.num_blocks), desc=f"reconstruct {ctx.granularity}", unit="block"):
        ctx.prune_before([index], stream_p)
        p_block, d_block = ctx.p.load(index, ctx.device), ctx.d.load(index, ctx.device)
        records += _reconstruct_matrices(ctx, index, p_block, d_block, stream_p, stream_d, solve)
        stream_p, stream_d = _advance(ctx, [index], stream_p, stream_d)
    return records


def _reconstruct_matrices(ctx: "Context", index: int, p_block, d_block, stream_p, stream_d, solve) -> list[dict]:
    """One block's linears: layer groups that share an input (q/k/v, o, gate/up, down) in forward order, so each
    group sees the outputs of the groups already reconstructed."""
    arch, records = ctx.arch, []
    groups = arch.groups
    p_linears, d_linears = arch.block_linears(p_block), arch.block_linears(d_block)
    for group in groups:
        src_block, src_stream = (p_block, stream_p) if ctx.inputs == "pruned" else (d_block, stream_d)
        xs = capture_linear_inputs(src_block, arch, group, src_stream)
        zs = capture_linear_inputs(d_block, arch, group, stream_d) if ctx.cross_targets else None
        grams: dict[int, tuple] = {}
        for name in group:
            start = time.perf_counter()
            if not xs[name]:  # an expert no calibration token was routed to: nothing to fit
                records.append({"unit": f"{index}.{name}", "before": 0.0, "after": 0.0, "steps": 0, "trainable_params": 0, "seconds": 0.0})
                continue
            keep = ctx.keep_masks[index][name].to(xs[name][0].device)
            weight, dense = arch.weight(p_linears[name]), arch.weight(d_linears[name]).detach()
            key = id(xs[name][0])  # q/k/v (gate/up) read the same tensor: one Gram for the group
            if key not in grams:
                grams[key] = (
                    _gram(xs[name]),
                    _gram(xs[name], zs[name]) if zs else None,
                    _gram(zs[name]) if zs else None,
                    sum(x.numel() // x.shape[-1] for x in xs[name]),
                )
            gram, cross, target_gram, tokens = grams[key]
            before = linear_output_error(weight, dense, gram, cross, target_gram, tokens)
            steps, trainable = solve(ctx, p_linears[name], dense, keep, xs[name], zs[name] if zs else None, gram, cross,
                                     f"{index}.{name}")
            after = linear_output_error(weight, dense, gram, cross, target_gram, tokens)
            records.append({"unit": f"{index}.{name}", "before": before, "after": after, "steps": steps,
                            "trainable_params": trainable, "seconds": time.perf_counter() - start})
    return records


# ---------------------------------------------------------------- sublayer / block / blocks:k units


@dataclass
class Unit:
    """What one reconstruction trains: ``part`` of ``blocks`` ("attn" or "mlp" of one block, or "blocks": the
    blocks run in turn). ``finishes``: the streams move past its blocks once it is done."""

    name: str
    blocks: list[int]
    part: str
    finishes: bool = True


@dataclass
class UnitInputs:
    """What a unit reads for every chunk: its input x and the arguments its module is called with
    (one dict, or one per block for a run of blocks)."""

    x: list[torch.Tensor]
    kwargs: list


@torch.no_grad()
def capture_sublayer_inputs(block: nn.Module, sub: Sublayer, stream: BlockInputs) -> UnitInputs:
    """Run ``block`` on ``stream`` until the sublayer's module is called; record the sublayer's input
    (what its first norm, or the module itself, reads) and the module's other arguments, per chunk."""
    entry = block.get_submodule(sub.entry)
    target = block.get_submodule(sub.module) if sub.module else entry
    xs, kws = [], []

    def grab_entry(_module, args, kwargs):
        xs.append(args[0] if args else next(iter(kwargs.values())))

    def grab_call(module, args, kwargs):
        if sub.module:
            kws.append(call_arguments(module, args, kwargs)[1])
        raise StopForward

    handles = [entry.register_forward_pre_hook(grab_entry, with_kwargs=True),
               target.register_forward_pre_hook(grab_call, with_kwargs=True)]
    run_hooked(block, stream, handles)
    return UnitInputs(xs, kws or [{} for _ in xs])


def _unit_inputs(ctx: "Context", unit: Unit, blocks, stream: BlockInputs) -> UnitInputs:
    if unit.part == "blocks":
        per_block = [stream.kwargs_at(j) for j in range(len(unit.blocks))]
        return UnitInputs(list(stream.hidden), [list(kws) for kws in zip(*per_block)])
    return capture_sublayer_inputs(blocks[0], ctx.arch.sublayer(unit.part), stream)


def unit_forward(arch, blocks: Sequence[nn.Module], part: str, x: torch.Tensor, kwargs) -> torch.Tensor:
    """A unit's output: ``blocks`` run in turn (``kwargs`` one dict per block), or one sublayer
    pre_norm → attention/MLP → post_norm of ``blocks[0]`` (its residual add is left out: it adds the
    same input to output and target)."""
    if part == "blocks":
        for block, kw in zip(blocks, kwargs):
            x = block_output(block(x, **kw))
        return x
    return arch.sublayer(part).forward(blocks[0], x, kwargs)


@torch.no_grad()
def _apply(arch, blocks, part, inputs: UnitInputs) -> list[torch.Tensor]:
    return [unit_forward(arch, blocks, part, x, kw) for x, kw in zip(inputs.x, inputs.kwargs)]


# A unit's loss before and after training is a diagnostic (how much the unit gained): measured on every
# chunk it cost two of the unit's ~five passes over them, a fifth of a sublayer reconstruction.
PROBE_CHUNKS = 4


@torch.no_grad()
def _mean_loss(outputs, targets, kind) -> float:
    return sum(float(reconstruction_loss(o, t, kind)) for o, t in zip(outputs, targets)) / len(outputs)


def _reconstruct_unit(ctx: "Context", unit: Unit, stream_p: BlockInputs | None, stream_d: BlockInputs | None) -> dict:
    """Train one unit of the pruned model (in place) to match the dense one; returns its record."""
    arch = ctx.arch
    start = time.perf_counter()
    p_blocks = [ctx.p.load(i, ctx.device) for i in unit.blocks]
    d_blocks = [ctx.d.load(i, ctx.device) for i in unit.blocks]
    source = _unit_inputs(ctx, unit, p_blocks, stream_p) if ctx.inputs == "pruned" else _unit_inputs(ctx, unit, d_blocks, stream_d)
    if ctx.inputs == "dense" or ctx.targets == "dense":  # the dense unit on the dense stream
        dense_inputs = source if ctx.inputs == "dense" else _unit_inputs(ctx, unit, d_blocks, stream_d)
        targets = _apply(arch, d_blocks, unit.part, dense_inputs)
    else:  # the dense unit on the unit's own inputs
        targets = _apply(arch, d_blocks, unit.part, source)
    if stream_d is None:  # the targets are all the dense unit gives: its blocks need not wait beside the training
        del d_blocks
        for i in unit.blocks:
            ctx.d.release(i)
    probe = UnitInputs(source.x[:PROBE_CHUNKS], source.kwargs[:PROBE_CHUNKS])
    before = _mean_loss(_apply(arch, p_blocks, unit.part, probe), targets, ctx.cfg.loss)

    params, masks, wrapped = _unit_trainables(ctx, unit, p_blocks)
    for p in params.values():
        p.requires_grad_(True)

    def loss_fn(i):
        return reconstruction_loss(unit_forward(arch, p_blocks, unit.part, source.x[i], source.kwargs[i]), targets[i], ctx.cfg.loss)

    try:
        history = train(params, loss_fn, list(range(len(source.x))), ctx.cfg, masks, desc=f"reconstruct {unit.name}")
    finally:
        for p in params.values():
            p.requires_grad_(False)
        if wrapped:
            for block in p_blocks:
                merge_adapters(block)
    after = _mean_loss(_apply(arch, p_blocks, unit.part, probe), targets, ctx.cfg.loss)
    return {"unit": unit.name, "before": before, "after": after, "steps": history["steps"],
            "trainable_params": history["trainable_params"], "seconds": time.perf_counter() - start}


def _unit_modules(arch, block: nn.Module, part: str) -> list[tuple[str, nn.Module]]:
    """(path in the block, module) whose parameters a unit trains in ``block``: all of it, or a sublayer with its norms."""
    if part == "blocks":
        return [("", block)]
    sub = arch.sublayer(part)
    paths = [p for p in (sub.pre_norm, sub.module, sub.post_norm) if p] + ([] if sub.module else list(sub.linears))
    return [(p, block.get_submodule(p)) for p in paths]


def _unit_linears(arch, part: str) -> tuple[str, ...]:
    return arch.linears if part == "blocks" else arch.sublayer(part).linears


def _unit_trainables(ctx, unit: Unit, p_blocks) -> tuple[dict, dict, bool]:
    """{name: parameter}, {name: keep-mask in the parameter's layout}, whether adapters were added."""
    arch = ctx.arch
    params: dict[str, nn.Parameter] = {}
    for i, block in zip(unit.blocks, p_blocks):
        for path, module in _unit_modules(arch, block, unit.part):
            found, _ = subset_parameters(module, ctx.subsets)
            params.update({".".join(x for x in (str(i), path, n) if x): p for n, p in found.items()})
    wrapped = False
    if ctx.adapter is not None:
        generator = torch.Generator().manual_seed(ctx.cfg.seed + unit.blocks[0])
        for i, block in zip(unit.blocks, p_blocks):
            adapters = wrap_block_linears(block, arch, ctx.keep_masks.get(i), ctx.adapter, generator, names=_unit_linears(arch, unit.part))
            for name, adapter in adapters.items():
                params[f"{i}.{name}.lora_A"] = adapter.lora_A
                params[f"{i}.{name}.lora_B"] = adapter.lora_B
        wrapped = True
    masks = {}
    for i, block in zip(unit.blocks, p_blocks):
        linears = arch.block_linears(block)
        for name in _unit_linears(arch, unit.part):
            mask = ctx.keep_masks.get(i, {}).get(name)
            if mask is None:  # a layer left dense
                continue
            weight = getattr(linears[name], "base", linears[name]).weight
            mask = mask.T if arch.transposed else mask
            masks.update({n: mask for n, p in params.items() if p is weight})
    if not params:
        raise ReconstructionError(f"unit {unit.name}: nothing to train with trainable={list(ctx.subsets)} and no adapter")
    return params, masks, wrapped


# ---------------------------------------------------------------- entry point


@dataclass
class Context:
    """What a granularity's ``reconstruct(ctx, calib_ids, **params)`` works with."""

    arch: object
    p: ModelStream  # the pruned model, reconstructed in place (its blocks loaded a unit at a time)
    d: ModelStream  # the dense model
    keep_masks: Mapping
    granularity: str  # as spelled (blocks:2): progress bars say it
    inputs: str
    targets: str
    cfg: TrainConfig
    subsets: tuple[str, ...]
    adapter: AdapterConfig | None
    damp: float
    solver: str
    device: object
    notes: list  # said in the summary
    pruner: object = None  # interleaved order: prunes blocks (in place, filling keep_masks) before their units

    def prune_before(self, indices: list[int], stream_p: BlockInputs | None) -> None:
        """Interleaved order: prune the blocks of ``indices`` not pruned yet, from the pruned stream."""
        todo = [i for i in indices if i not in self.keep_masks]
        if self.pruner is not None and todo:
            self.pruner(self, todo, stream_p)  # the stream feeds todo[0]: units start where the stream stands

    @property
    def cross_targets(self) -> bool:
        """Targets come from the dense stream while inputs come from the pruned one."""
        return self.inputs == "pruned" and self.targets == "dense"


def prune_and_reconstruct(
    dense: nn.Module,
    model: nn.Module,
    criterion: Criterion,
    pattern: Pattern,
    calib_ids: torch.Tensor,
    granularity: str = "sublayer",
    inputs: str = "pruned",
    cfg: TrainConfig | None = None,
    masks: dict | None = None,
    **kwargs,
) -> tuple[dict[int, dict[str, torch.Tensor]], dict]:
    """The Free Lunch reference's order: ``model`` (a dense copy) is pruned and reconstructed in place,
    block by block. Block i is pruned with ``criterion`` and ``pattern`` from the statistics of the
    pruned and reconstructed stream (blocks 0..i-1 already repaired), then its units are reconstructed
    towards ``dense`` as in :func:`reconstruct_model` (``kwargs``: trainable, adapter, targets, damp,
    solver, device). ``masks``: the dict to fill (a variant writer saving each block's masks as it is released).
    Returns (keep-masks {block: {linear: bool [out, in]}}, summary)."""
    if find_granularity(granularity)[0].options["whole_model"]:
        raise ReconstructionError(f"granularity {granularity} trains the whole model at once: it cannot be interleaved with "
                                  "pruning block by block")

    def prune_blocks(ctx: Context, indices: list[int], stream: BlockInputs) -> None:
        for j, i in enumerate(indices):
            block = ctx.p.load(i, ctx.device)
            linears = ctx.arch.block_linears(block)
            stats = {}
            if criterion.needs_calibration:
                stats, _ = collect_stats(block, linears, stream, criterion.needs_gram, input_groups(ctx.arch), outputs=False)
            with fallbacks.layer(f"{ctx.arch.blocks}.{i}"):  # a fallback's log line names its block
                ctx.keep_masks[i] = prune_block_layers(criterion, ctx.arch, block, stats, pattern)
            if j + 1 < len(indices):  # blocks:k: the next block of the unit sees this pruned one
                stream = stream.replace(run_block(block, stream))

    masks = {} if masks is None else masks
    summary = reconstruct_model(dense, model, masks, calib_ids, granularity, inputs, cfg, _pruner=prune_blocks, **kwargs)
    summary["order"] = "interleaved"
    return masks, summary


def reconstruct_model(
    dense: nn.Module,
    pruned: nn.Module,
    keep_masks: Mapping[int, Mapping[str, torch.Tensor]],
    calib_ids: torch.Tensor,
    granularity: str = "sublayer",
    inputs: str = "pruned",
    cfg: TrainConfig | None = None,
    trainable: str | Sequence[str] = "all",
    adapter: AdapterConfig | None = None,
    targets: str = "same",
    damp: float = 0.01,
    solver: str = "cg",
    device="cpu",
    arch: Architecture | None = None,
    _pruner=None,
) -> dict:
    """Reconstruct ``pruned`` (in place) towards ``dense`` on ``calib_ids`` [nsamples, seqlen].

    ``keep_masks``: {block index: {linear name: bool [out, in]}}. ``trainable``: ``"all"`` (every
    parameter of the unit, pruned weights held at zero) or PERP subsets (``"norms+biases"``,
    ``["norms"]``, ``"none"``) combined with an ``adapter`` on the unit's linears (merged, masked,
    after each unit). ``lm_head``/``embeddings`` only exist for ``full``. ``damp`` and ``solver``:
    the closed form's ridge factor and solver (``matrix`` only; see :func:`masked_least_squares`:
    ``cg`` reaches the exact ``cholesky`` solution to a relative tolerance, several times faster).
    ``arch``: the models' architecture (found here when not given).

    Returns a summary: seconds, peak memory, the most trainable parameters held at once, and per
    unit the loss before and after (``matrix``: mean squared output error over all calibration tokens;
    other units: their loss over the first :data:`PROBE_CHUNKS` chunks; ``full``: calibration cross-entropy).
    """
    entry, params = find_granularity(granularity)
    cfg = cfg or TrainConfig()
    subsets = _check_options(inputs, targets, trainable, adapter, solver)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    summary = {"granularity": granularity, "inputs": inputs, "targets": targets, "trainable": list(subsets), "solver": solver,
               "adapter": adapter.to_dict() if adapter else None, "config": cfg.to_dict(), "notes": []}
    if entry.options["whole_model"]:  # ``pruned`` is a whole model in memory; no dense targets
        p, d = ModelStream.wrap(pruned, arch=arch), None
    else:
        skipped = [s for s in subsets if s in ("lm_head", "embeddings")]
        if skipped:
            summary["notes"].append(f"subsets {skipped} are outside the blocks: only a whole-model granularity trains them")
        subsets = tuple(s for s in subsets if s not in skipped)
        p, d = ModelStream.wrap(pruned), ModelStream.wrap(dense)
        # shapes suffice to tell which subsets the model has: a stream's skeleton answers too
        summary["notes"] += [f"subset {s} unavailable: the model has none" for s in subset_parameters(p.model, subsets)[1]]
    ctx = Context(arch or p.arch, p, d, keep_masks, granularity, inputs, targets, cfg, subsets, adapter, damp, solver, device,
                  summary["notes"], _pruner)
    units = entry.load()(ctx, calib_ids, **params)
    return _finish(summary, units, start)


def _check_options(inputs, targets, trainable, adapter, solver) -> tuple[str, ...]:
    """The PERP subsets to train; a bad option raises naming it and what is allowed."""
    for name, value, allowed in (("inputs", inputs, INPUTS), ("targets", targets, TARGETS)):
        if value not in allowed:
            raise ReconstructionError(f"{name} {value!r}: allowed {', '.join(allowed)}")
    if solver not in SOLVERS:
        raise ReconstructionError(f"solver {solver!r}: allowed {', '.join(SOLVERS)}")
    if trainable == "all" or trainable == ("all",):
        if adapter is not None:
            raise ReconstructionError(
                "trainable='all' already trains every weight; with an adapter name subsets such as 'norms' or 'none'"
            )
        return ("full",)
    return parse_subsets(trainable)


def reconstruct_units(ctx: Context, calib_ids, units: list[Unit]) -> list[dict]:
    """Train ``units`` in order (sublayers or blocks, forward order), the block inputs propagated as units finish;
    returns one record per unit."""
    stream_p, stream_d = _streams(ctx, calib_ids, ctx.cfg.batch_size)
    records = []
    for unit in tqdm(units, desc=f"reconstruct {ctx.granularity}", unit="unit"):
        ctx.prune_before(unit.blocks, stream_p)
        records.append(_reconstruct_unit(ctx, unit, stream_p, stream_d))
        if unit.finishes:
            stream_p, stream_d = _advance(ctx, unit.blocks, stream_p, stream_d)
    return records


def _streams(ctx: Context, calib_ids, chunk: int) -> tuple[BlockInputs | None, BlockInputs | None]:
    """The inputs of block 0 in chunks of ``chunk`` samples, through the pruned model and the dense one (each None
    when nothing reads it). Each block of either model is then loaded (in float32 when the streams compute in it) for
    its units and released once both streams have moved past it (:func:`_advance`)."""
    # The pruned stream also feeds the interleaved order's pruning statistics.
    need_p = ctx.inputs == "pruned" or ctx.pruner is not None
    need_d = ctx.inputs == "dense" or ctx.targets == "dense"
    stream_p = capture_block_inputs(ctx.p.model, calib_ids, chunk, ctx.device, ctx.p.compute_dtype, arch=ctx.arch) if need_p else None
    if not need_d:
        return stream_p, None
    if stream_p is not None and ctx.d.model is ctx.p.model:  # one skeleton (the same embeddings) gives the same inputs to both
        return stream_p, stream_p
    return stream_p, capture_block_inputs(ctx.d.model, calib_ids, chunk, ctx.device, ctx.d.compute_dtype, arch=ctx.d.arch)


@torch.no_grad()
def _advance(ctx: "Context", indices: list[int], stream_p, stream_d):
    """Both streams past the blocks ``indices`` (the pruned one through the reconstructed blocks), which are
    released then (the pruned stream's writer stores them)."""
    for i in indices:
        if stream_p is not None:
            stream_p = stream_p.replace(run_block(ctx.p.load(i, ctx.device), stream_p))
        if stream_d is not None:
            stream_d = stream_d.replace(run_block(ctx.d.load(i, ctx.device), stream_d))
        ctx.p.release(i)
        if ctx.d.is_loaded(i):
            ctx.d.release(i)
    return stream_p, stream_d


def _finish(summary: dict, units: list[dict], start: float) -> dict:
    summary.update(
        units=units,
        seconds=time.perf_counter() - start,
        max_trainable_params=max(u["trainable_params"] for u in units),
        loss_before=sum(u["before"] for u in units) / len(units),
        loss_after=sum(u["after"] for u in units) / len(units),
        **peak_memory(),
    )
    return summary
