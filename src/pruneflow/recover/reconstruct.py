"""Reconstruction after pruning at every granularity (A Free Lunch in LLM Compression:
Wagner, Roux, Zimmer, Pokutta).

A *unit* of the pruned model is trained, with its kept weights only, so that its output matches the
dense model's unit on the same inputs. Units, from finest to coarsest:

- ``matrix``: each linear layer alone, a convex least-squares problem solved in closed form per
  output row on the kept inputs, w_r = (X_Kᵀ X_K + λI)⁻¹ (X_Kᵀ y_r + λ w_r,dense), from the Gram XᵀX;
- ``matrix-adam``: the same problem solved by gradient descent (for comparison);
- ``sublayer``: the attention and the MLP of each block, one after the other, each with the norms
  around it (pre_norm → module → post_norm, as the architecture adapter finds them: one norm before
  for LLaMA, before and after for Gemma 2/3, after for OLMo 2); the paper's recommended unit;
- ``block``: one transformer block; ``blocks:k``: k consecutive blocks together;
- ``full``: the whole model on the next-token loss over the calibration windows.

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

import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from pruneflow.core.activations import (BlockInputs, block_output, call_arguments, capture_block_inputs, collect_stats, feed_inputs,
                                        input_groups, run_block, run_hooked)
from pruneflow.core.architectures import Architecture, StopForward, Sublayer, architecture_of
from pruneflow.core.stream import ModelStream
from pruneflow.prune.criteria import Criterion, prune_block_layers
from pruneflow.prune.masks import Pattern
from pruneflow.recover.least_squares import SOLVERS, linear_output_error, masked_least_squares
from pruneflow.recover.adapters import AdapterConfig, merge_adapters, parse_subsets, subset_parameters, wrap_block_linears
from pruneflow.recover.train import TrainConfig, peak_memory, reconstruction_loss, train
from pruneflow.recover.whole_model import next_token_loss, train_whole_model

GRANULARITIES = ("matrix", "matrix-adam", "sublayer", "block", "blocks:k", "full")
from pruneflow.spec.naming import RECON_INPUTS as INPUTS, RECON_TARGETS as TARGETS


class ReconstructionError(ValueError):
    pass


def parse_granularity(value: str) -> tuple[str, int]:
    """``"block"`` → ("blocks", 1); ``"blocks:3"`` → ("blocks", 3); others unchanged with k = 1."""
    text = str(value).strip()
    if m := re.fullmatch(r"blocks:(\d+)", text):
        if int(m.group(1)) < 1:
            raise ReconstructionError(f"granularity {text!r}: k must be >= 1")
        return "blocks", int(m.group(1))
    if text == "block":
        return "blocks", 1
    if text not in GRANULARITIES:
        raise ReconstructionError(f"granularity {text!r}: allowed {', '.join(GRANULARITIES)} (blocks:k with an integer k)")
    return text, 1


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


def _reconstruct_matrices(ctx: "_Context", index: int, p_block, d_block, stream_p, stream_d) -> list[dict]:
    """Matrix granularity for one block: layer groups that share an input (q/k/v, o, gate/up, down)
    in forward order, so each group sees the outputs of the groups already reconstructed."""
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
            if ctx.granularity == "matrix":
                with torch.no_grad():
                    weight.copy_(masked_least_squares(dense, keep, gram, cross, ctx.damp, ctx.solver))
                steps, trainable = 0, int(keep.sum())
            else:
                history = _train_linear(ctx, p_linears[name], dense, keep, xs[name], zs[name] if zs else xs[name], f"{index}.{name}")
                steps, trainable = history["steps"], history["trainable_params"]
            after = linear_output_error(weight, dense, gram, cross, target_gram, tokens)
            records.append({"unit": f"{index}.{name}", "before": before, "after": after, "steps": steps,
                            "trainable_params": trainable, "seconds": time.perf_counter() - start})
    return records


def _train_linear(ctx, layer: nn.Module, dense_weight, keep, xs, zs, name) -> dict:
    """Gradient-descent variant of the matrix problem: fit W x to W_dense z, W masked ([out, in] views)."""
    param = layer.weight
    param.requires_grad_(True)

    def loss_fn(i):
        with torch.no_grad():
            target = zs[i] @ dense_weight.T
        return reconstruction_loss(xs[i] @ ctx.arch.weight(layer).T, target, ctx.cfg.loss)

    mask = keep.T if ctx.arch.transposed else keep
    try:
        return train({name: param}, loss_fn, list(range(len(xs))), ctx.cfg, {name: mask}, desc=f"matrix {name}")
    finally:
        param.requires_grad_(False)


# ---------------------------------------------------------------- sublayer / block / blocks:k units


@dataclass
class _Unit:
    name: str
    blocks: list[int]
    part: str  # "attn", "mlp" or "blocks"


def _units(granularity: str, k: int, n_blocks: int) -> list[_Unit]:
    if granularity == "sublayer":
        return [_Unit(f"{i}.{part}", [i], part) for i in range(n_blocks) for part in ("attn", "mlp")]
    return [
        _Unit(f"{i}" if k == 1 else f"{i}-{min(i + k, n_blocks) - 1}", list(range(i, min(i + k, n_blocks))), "blocks")
        for i in range(0, n_blocks, k)
    ]


@dataclass
class _UnitInputs:
    """What a unit reads for every chunk: its input x and the arguments its module is called with
    (one dict, or one per block for a run of blocks)."""

    x: list[torch.Tensor]
    kwargs: list


@torch.no_grad()
def capture_sublayer_inputs(block: nn.Module, sub: Sublayer, stream: BlockInputs) -> _UnitInputs:
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
    return _UnitInputs(xs, kws or [{} for _ in xs])


def _unit_inputs(ctx: "_Context", unit: _Unit, blocks, stream: BlockInputs) -> _UnitInputs:
    if unit.part == "blocks":
        per_block = [stream.kwargs_at(j) for j in range(len(unit.blocks))]
        return _UnitInputs(list(stream.hidden), [list(kws) for kws in zip(*per_block)])
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
def _apply(arch, blocks, part, inputs: _UnitInputs) -> list[torch.Tensor]:
    return [unit_forward(arch, blocks, part, x, kw) for x, kw in zip(inputs.x, inputs.kwargs)]


# A unit's loss before and after training is a diagnostic (how much the unit gained): measured on every
# chunk it cost two of the unit's ~five passes over them, a fifth of a sublayer reconstruction.
PROBE_CHUNKS = 4


@torch.no_grad()
def _mean_loss(outputs, targets, kind) -> float:
    return sum(float(reconstruction_loss(o, t, kind)) for o, t in zip(outputs, targets)) / len(outputs)


def _reconstruct_unit(ctx: "_Context", unit: _Unit, stream_p: BlockInputs | None, stream_d: BlockInputs | None) -> dict:
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
    probe = _UnitInputs(source.x[:PROBE_CHUNKS], source.kwargs[:PROBE_CHUNKS])
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


def _unit_trainables(ctx, unit: _Unit, p_blocks) -> tuple[dict, dict, bool]:
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
class _Context:
    arch: object
    p: ModelStream  # the pruned model, reconstructed in place (its blocks loaded a unit at a time)
    d: ModelStream  # the dense model
    keep_masks: Mapping
    granularity: str
    inputs: str
    targets: str
    cfg: TrainConfig
    subsets: tuple[str, ...]
    adapter: AdapterConfig | None
    damp: float
    solver: str
    device: object
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
    if parse_granularity(granularity)[0] == "full":
        raise ReconstructionError("granularity full trains the whole model at once: it cannot be interleaved with pruning block by block")

    def prune_blocks(ctx: "_Context", indices: list[int], stream: BlockInputs) -> None:
        for j, i in enumerate(indices):
            block = ctx.p.load(i, ctx.device)
            linears = ctx.arch.block_linears(block)
            stats = {}
            if criterion.needs_calibration:
                stats, _ = collect_stats(block, linears, stream, criterion.needs_gram, input_groups(ctx.arch), outputs=False)
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
    granularity_name, k = parse_granularity(granularity)
    cfg = cfg or TrainConfig()
    subsets = _check_options(granularity_name, inputs, targets, trainable, adapter, solver, cfg)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    summary = {"granularity": granularity, "inputs": inputs, "targets": targets, "trainable": list(subsets), "solver": solver,
               "adapter": adapter.to_dict() if adapter else None, "config": cfg.to_dict(), "notes": []}
    if granularity_name == "full":  # ``pruned`` is a whole model in memory
        units = _reconstruct_full(pruned, arch or architecture_of(pruned), keep_masks, calib_ids, subsets, adapter, cfg, device, summary["notes"])
        return _finish(summary, units, start)
    skipped = [s for s in subsets if s in ("lm_head", "embeddings")]
    if skipped:
        summary["notes"].append(f"subsets {skipped} are outside the blocks: only granularity full trains them")
    block_subsets = tuple(s for s in subsets if s not in skipped)
    p, d = ModelStream.wrap(pruned), ModelStream.wrap(dense)
    # shapes suffice to tell which subsets the model has: a stream's skeleton answers too
    summary["notes"] += [f"subset {s} unavailable: the model has none" for s in subset_parameters(p.model, block_subsets)[1]]
    ctx = _Context(arch or p.arch, p, d, keep_masks, granularity_name, inputs, targets, cfg, block_subsets, adapter, damp, solver,
                   device, _pruner)
    units = _reconstruct_blocks(ctx, calib_ids, granularity, k)
    return _finish(summary, units, start)


def _check_options(granularity_name, inputs, targets, trainable, adapter, solver, cfg) -> tuple[str, ...]:
    """The PERP subsets to train; a bad option raises naming it and what is allowed."""
    for name, value, allowed in (("inputs", inputs, INPUTS), ("targets", targets, TARGETS)):
        if value not in allowed:
            raise ReconstructionError(f"{name} {value!r}: allowed {', '.join(allowed)}")
    if solver not in SOLVERS:
        raise ReconstructionError(f"solver {solver!r}: allowed {', '.join(SOLVERS)}")
    if granularity_name == "matrix" and cfg.loss != "mse":
        raise ReconstructionError(f"granularity matrix (closed form) minimises the squared error; loss {cfg.loss!r} needs matrix-adam")
    if trainable == "all" or trainable == ("all",):
        if adapter is not None:
            raise ReconstructionError(
                "trainable='all' already trains every weight; with an adapter name subsets such as 'norms' or 'none'"
            )
        return ("full",)
    return parse_subsets(trainable)


def _reconstruct_full(pruned, arch, keep_masks, calib_ids, subsets, adapter, cfg, device, notes: list) -> list[dict]:
    """Granularity full: retrain the whole model on next-token loss; one unit, its loss the calibration
    cross-entropy (before and after: on the first :data:`PROBE_CHUNKS` chunks). ``pruned``: a whole model (in
    memory, or a stream's, every block loaded)."""
    loss = next_token_loss(pruned, device)
    probe = calib_ids.split(cfg.batch_size)[:PROBE_CHUNKS]
    with torch.no_grad():
        pruned.to(device).eval()
        before = sum(float(loss(b)) * len(b) for b in probe) / sum(len(b) for b in probe)
    history = train_whole_model(pruned, arch, keep_masks, calib_ids, subsets, adapter, cfg, device)
    with torch.no_grad():
        after = sum(float(loss(b)) * len(b) for b in probe) / sum(len(b) for b in probe)
    notes += [f"subset {s} unavailable" for s in history["unavailable"]]
    return [{"unit": "model", "before": before, "after": after, "steps": history["steps"],
             "trainable_params": history["trainable_params"], "seconds": history["seconds"]}]


def _reconstruct_blocks(ctx: "_Context", calib_ids, granularity: str, k: int) -> list[dict]:
    """Matrices, sublayers or blocks, in forward order, with the block inputs propagated as units finish;
    each block of either model is loaded (in float32 when the streams compute in it) for its units and
    released once both streams have moved past it."""
    device, dtype = ctx.device, ctx.p.compute_dtype
    # Chunks are the micro-batches of training; the closed form only sums Grams, so bigger chunks are faster.
    chunk = max(ctx.cfg.batch_size, 8) if ctx.granularity == "matrix" else ctx.cfg.batch_size
    # The pruned stream also feeds the interleaved order's pruning statistics.
    need_p = ctx.inputs == "pruned" or ctx.pruner is not None
    need_d = ctx.inputs == "dense" or ctx.targets == "dense"
    stream_p = capture_block_inputs(ctx.p.model, calib_ids, chunk, device, dtype, arch=ctx.arch) if need_p else None
    if need_d:  # one skeleton (the same embeddings) gives the same inputs to both
        same = stream_p is not None and ctx.d.model is ctx.p.model
        stream_d = stream_p if same else capture_block_inputs(ctx.d.model, calib_ids, chunk, device, ctx.d.compute_dtype, arch=ctx.d.arch)
    else:
        stream_d = None
    units = []
    if ctx.granularity.startswith("matrix"):
        for index in tqdm(range(ctx.p.num_blocks), desc=f"reconstruct {granularity}", unit="block"):
            ctx.prune_before([index], stream_p)
            p_block, d_block = ctx.p.load(index, device), ctx.d.load(index, device)
            units += _reconstruct_matrices(ctx, index, p_block, d_block, stream_p, stream_d)
            stream_p, stream_d = _advance(ctx, [index], stream_p, stream_d)
    else:
        for unit in tqdm(_units(ctx.granularity, k, ctx.p.num_blocks), desc=f"reconstruct {granularity}", unit="unit"):
            ctx.prune_before(unit.blocks, stream_p)
            units.append(_reconstruct_unit(ctx, unit, stream_p, stream_d))
            if unit.part != "attn":  # the unit finished its blocks: the streams move past them
                stream_p, stream_d = _advance(ctx, unit.blocks, stream_p, stream_d)
    return units


@torch.no_grad()
def _advance(ctx: "_Context", indices: list[int], stream_p, stream_d):
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
