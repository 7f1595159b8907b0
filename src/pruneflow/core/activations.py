"""Calibration activations: capture what every block receives, run blocks one at a time,
and accumulate the per-linear input statistics that the criteria need.

Only one block's weights and one block's inputs need to sit on the compute device at once.
"""

from __future__ import annotations

import contextlib
import inspect
from dataclasses import dataclass, field

import torch
from torch import nn

from pruneflow.core.architectures import Architecture, StopForward, architecture_of, in_features
from pruneflow.core.stream import ModelStream


@dataclass
class BlockInputs:
    """Inputs of one block for all calibration samples, in chunks of ``batch_size`` samples.

    ``hidden[c]`` is [batch, seqlen, hidden_size]; ``layer_kwargs[l][c]`` holds what the model passes to
    block ``l`` alongside (attention mask, rotary position embeddings, ...): families with sliding-window
    and global layers (Gemma 2/3, ...) give each layer its own mask and rotary tables. ``layer`` is the
    block these hidden states feed; :meth:`replace` with that block's outputs moves to the next one.
    """

    hidden: list[torch.Tensor]
    layer_kwargs: list[list[dict]] = field(default_factory=list)
    layer: int = 0
    store: str = "device"  # "cpu": chunks wait on the CPU and visit the device one at a time

    def keep(self, hidden: torch.Tensor) -> torch.Tensor:
        """A chunk as it is stored between blocks."""
        return hidden.to("cpu") if self.store == "cpu" else hidden

    @property
    def kwargs(self) -> list[dict]:
        """The current block's arguments, one dict per chunk."""
        return self.layer_kwargs[self.layer]

    def kwargs_at(self, offset: int) -> list[dict]:
        """The arguments of the block ``offset`` places after the current one."""
        return self.layer_kwargs[self.layer + offset]

    def replace(self, hidden: list[torch.Tensor]) -> "BlockInputs":
        """The next block's inputs: ``hidden`` are the current block's outputs."""
        return BlockInputs(hidden=[self.keep(h) for h in hidden], layer_kwargs=self.layer_kwargs, layer=self.layer + 1,
                           store=self.store)

    def same_layer(self, hidden: list[torch.Tensor]) -> "BlockInputs":
        """Other hidden states for the same block (e.g. the dense stream beside the pruned one)."""
        return BlockInputs(hidden=hidden, layer_kwargs=self.layer_kwargs, layer=self.layer, store=self.store)

    def chunks(self, device=None):
        """(hidden, kwargs) of every chunk, the hidden states on ``device`` (where the kwargs are)."""
        for hidden, kwargs in zip(self.hidden, self.kwargs):
            yield (hidden if device is None else hidden.to(device)), kwargs


# Arguments that carry a decoding cache; calibration runs without one.
_CACHE_ARGS = ("past_key_values", "past_key_value", "cache", "layer_past")


def _to(value, device, moved: dict):
    """``value`` on ``device``; a tensor shared by several layers (mask, rotary tables) is moved once."""
    if isinstance(value, torch.Tensor):
        if id(value) not in moved:
            moved[id(value)] = (value, value.to(device))
        return moved[id(value)][1]
    if isinstance(value, tuple):
        return tuple(_to(v, device, moved) for v in value)
    if isinstance(value, dict):
        return {k: _to(v, device, moved) for k, v in value.items()}
    return value


def call_arguments(module_or_signature, args: tuple, kwargs: dict) -> tuple[torch.Tensor, dict]:
    """(hidden states, every other argument by name) of a module call: positional arguments (GPT-2
    passes its mask positionally) are named from the signature, so the call replays with keywords."""
    signature = module_or_signature if isinstance(module_or_signature, inspect.Signature) else inspect.signature(module_or_signature.forward)
    bound = signature.bind(*args, **kwargs).arguments
    named = {}
    for name, value in bound.items():
        kind = signature.parameters[name].kind
        if kind is inspect.Parameter.VAR_KEYWORD:
            named.update(value)
        elif kind is not inspect.Parameter.VAR_POSITIONAL:
            named[name] = value
    first = next(iter(signature.parameters))
    hidden = named.pop(first)
    return hidden, {k: v for k, v in named.items() if k not in _CACHE_ARGS and not _is_cache(v)}


def _is_cache(value) -> bool:
    return type(value).__name__.endswith("Cache")


@torch.no_grad()
def capture_block_inputs(model: nn.Module, input_ids: torch.Tensor, batch_size: int, device="cpu",
                         dtype: torch.dtype | None = None, store="device", arch: Architecture | None = None) -> BlockInputs:
    """Run the embeddings only and record what every block receives: the first block's hidden
    states and each block's own arguments.

    Every block's forward is swapped for a recorder that passes its input through, so one cheap pass
    per chunk yields all layers' arguments; the last block stops the pass (no final norm, no head), and
    the blocks themselves may be empty shells (a :class:`~pruneflow.core.stream.ModelStream`'s skeleton).
    Only the modules outside the blocks are moved to ``device``, and back where they were after.
    ``dtype``: the hidden states (and the masks and rotary tables made from them) in that dtype, as a
    model cast to it would give them (blocks computing in float32 over a bfloat16 model). ``store``:
    ``"cpu"`` keeps the hidden states on the CPU between blocks (activations that do not fit the device).
    ``arch``: the model's architecture, when the caller has it.
    """
    arch = arch or architecture_of(model)
    blocks = arch.get_blocks(model)
    captured = BlockInputs(hidden=[], layer_kwargs=[[] for _ in blocks], store=store)
    moved: dict = {}
    embed = model.get_input_embeddings()
    cast = dtype is not None and dtype != embed.weight.dtype

    def recorder(index, signature):
        def forward(*args, **kwargs):
            hidden, named = call_arguments(signature, args, kwargs)
            if index == 0:
                captured.hidden.append(captured.keep(hidden))
            captured.layer_kwargs[index].append({k: _to(v, device, moved) for k, v in named.items()})
            if index == len(blocks) - 1:
                raise StopForward
            return (hidden, None) if arch.returns_tuple else hidden

        return forward

    for index, block in enumerate(blocks):
        block.forward = recorder(index, inspect.signature(block.forward))
    home = embed.weight.device
    _move_non_block_modules(model, arch, device)
    try:
        for chunk in input_ids.split(batch_size):
            with contextlib.suppress(StopForward):
                if cast:  # the embeddings' output in ``dtype``: what follows computes in it
                    model(inputs_embeds=embed(chunk.to(device)).to(dtype), use_cache=False)
                else:
                    model(chunk.to(device), use_cache=False)
    finally:
        for block in blocks:
            del block.forward  # the class's forward again
        _move_non_block_modules(model, arch, home)
    return captured


def _move_non_block_modules(model, arch, device) -> None:
    """Move everything but the blocks (embeddings, rotary tables, final norm, head) to ``device``."""
    with arch.blocks_detached(model):
        model.to(device)


def block_output(out) -> torch.Tensor:
    return out[0] if isinstance(out, (tuple, list)) else out


def activation_store(nbytes: int, device) -> str:
    """Where hidden states of ``nbytes`` (inputs and outputs of a block) wait between blocks: on the device,
    unless they would take more than a quarter of its free memory (then on the CPU, visiting it a chunk at a time)."""
    device = torch.device(device)
    if device.type != "cuda":
        return "device"
    free, _ = torch.cuda.mem_get_info(device)
    return "cpu" if 2 * nbytes > free / 4 else "device"


def _device_of(block: nn.Module):
    return next(block.parameters()).device


@torch.no_grad()
def run_block(block: nn.Module, inputs: BlockInputs) -> list[torch.Tensor]:
    """The block's outputs for every chunk (the next block's inputs, stored as ``inputs`` stores them)."""
    device = _device_of(block)
    return [inputs.keep(block_output(block(hidden, **kwargs))) for hidden, kwargs in inputs.chunks(device)]


def run_hooked(block: nn.Module, inputs: BlockInputs, handles) -> None:
    """Run ``block`` on every chunk of ``inputs`` for its hooks (which may raise :class:`StopForward` to end a
    chunk early), then remove the hooks."""
    try:
        for hidden, kwargs in inputs.chunks(_device_of(block)):
            with contextlib.suppress(StopForward):
                block(hidden, **kwargs)
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def feed_inputs(block: nn.Module, inputs: BlockInputs, layers, on_input) -> None:
    """Run ``block`` on every chunk of ``inputs`` only until each of ``layers`` has been handed its input:
    ``on_input(i, x)`` gets layer ``i``'s input, and once all have had theirs the chunk stops, so the rest
    of the block, those layers' own products included, is never computed (a block's last linear, the
    MLP's down projection, is a quarter of its work). A layer the chunk never calls (an expert no token
    was routed to) lets the block run to its end."""
    seen: set[int] = set()

    def hook(i):
        def grab(_module, args):
            on_input(i, args[0])
            seen.add(i)
            if len(seen) == len(layers):
                raise StopForward

        return grab

    handles = [block.register_forward_pre_hook(lambda *_: seen.clear())]  # each chunk starts with none seen
    handles += [layer.register_forward_pre_hook(hook(i)) for i, layer in enumerate(layers)]
    run_hooked(block, inputs, handles)


class InputStats:
    """Running statistics of a linear layer's input X (tokens × in_features).

    ``sq_sum[j]`` = Σ_t X[t, j]² (Wanda's ‖X_j‖² up to the sample count);
    ``gram`` = XᵀX (SparseGPT's Hessian up to a factor 2/n) when requested; both float32 (float64 for
    float64 inputs: the exact arbiter, a model stored in float64). ``channel_sum[j]`` = Σ_t X[t, j] and the number
    of ``samples`` give each channel's mean and variance (DSnoT's statistics).

    Float order. Each calibration sample's products are computed in float32 on its own, and the
    samples are summed in float64, rounded to float32 once when read. So the statistics do not depend
    on how samples are batched, on their order or on the thread count (float32 sums over a whole batch
    did: a 1e-7 difference in a Hessian flips near-tied 2:4 choices, and 30 sequential blocks amplify
    that into perplexities several percent apart; ``bench/noise_band.py``).
    """

    def __init__(self, in_features: int, gram: bool, device="cpu"):
        self.count, self.dtype = 0, torch.float32  # products and results: float32, or float64 for float64 inputs
        self.samples = 0  # calibration samples (a [tokens, in] input counts as one)
        self._sq_sum = torch.zeros(in_features, dtype=torch.float64, device=device)
        self._sum = torch.zeros(in_features, dtype=torch.float64, device=device)
        self._gram = torch.zeros(in_features, in_features, dtype=torch.float64, device=device) if gram else None
        self._upper_only = False  # the Gram sums hold their upper triangle only (samples added since it was read)

    @classmethod
    def from_tensors(cls, count: int, sq_sum: torch.Tensor, gram: torch.Tensor | None = None,
                     channel_sum: torch.Tensor | None = None, samples: int = 0) -> "InputStats":
        """Statistics read back from storage (the dense-stream activation cache): float32, as they are read."""
        stats = cls.__new__(cls)
        stats.count, stats._sq_sum, stats._gram, stats.dtype = count, sq_sum, gram, torch.float32
        stats._sum, stats.samples = channel_sum, samples
        stats._upper_only = False
        return stats

    def add(self, x: torch.Tensor) -> None:
        """Add the inputs ``x`` [batch, seqlen, in] (one product per sample) or [tokens, in] (one product)."""
        samples = x.unbind(0) if x.dim() == 3 else [x]
        self.dtype = torch.promote_types(x.dtype, torch.float32)
        for sample in samples:
            sample = sample.reshape(-1, sample.shape[-1]).to(self.dtype)
            self.count += sample.shape[0]
            self.samples += 1
            self._sq_sum += sample.pow(2).sum(0)  # in-place: float32 added into float64, no float64 copy
            self._sum += sample.sum(0)
            if self._gram is not None:
                add_upper_gram(self._gram, sample)
                self._upper_only = True

    def _final_gram(self) -> torch.Tensor | None:
        """The Gram sums, their lower triangle filled from the upper one (once, when they are read)."""
        if self._upper_only:
            mirror_upper(self._gram)
            self._upper_only = False
        return self._gram

    @property
    def sq_sum(self) -> torch.Tensor:
        """Σ_t X[t, j]² [in], float32."""
        return self._sq_sum.to(self.dtype, copy=True)  # a copy: callers may change it in place

    @property
    def gram(self) -> torch.Tensor | None:
        """XᵀX [in, in], float32 (None unless requested)."""
        return None if self._gram is None else self._final_gram().to(self.dtype, copy=True)

    def take_gram(self) -> torch.Tensor | None:
        """:attr:`gram` without the copy, for its last use: the statistics hold no Gram afterwards."""
        gram, self._gram = (None if self._gram is None else self._final_gram().to(self.dtype)), None
        return gram

    def round_gram(self) -> None:
        """The Gram matrix rounded once to the dtype, as :attr:`gram` returns it (the same values), so a block's
        statistics hold half as much while its layers are pruned; the squared sums stay float64."""
        if self._gram is not None and self._gram.dtype != self.dtype:
            self._gram = self._final_gram().to(self.dtype)

    def export(self, name: str, channel_sums: bool = False) -> dict[str, torch.Tensor]:
        """``{name.sq_sum, name.gram}`` in the statistics' dtype for storage, and with ``channel_sums`` ``name.sum``
        (float64, as summed: DSnoT's means); frees the float64 sums (the statistics are final)."""
        out = {f"{name}.sq_sum": self.sq_sum}
        self._sq_sum = None
        if channel_sums:
            out[f"{name}.sum"], self._sum = self._sum, None
        if self._gram is not None:
            out[f"{name}.gram"], self._gram = self._final_gram().to(self.dtype), None
        return out

    @property
    def col_norms(self) -> torch.Tensor:
        """‖X_j‖₂ over all calibration tokens, float32."""
        return self._sq_sum.sqrt().to(self.dtype)

    @property
    def channel_sum(self) -> torch.Tensor | None:
        """Σ_t X[t, j] [in], float64 (None for statistics stored without it)."""
        return None if self._sum is None else self._sum.to(torch.float64, copy=True)

    @property
    def channel_var(self) -> torch.Tensor | None:
        """Each channel's variance over all calibration tokens, Σ_t X² / n − mean², float64 (≥ 0)."""
        if self._sum is None or not self.count:
            return None
        mean = self._sum.double() / self.count
        return (self._sq_sum.double() / self.count - mean.pow(2)).clamp_min(0)


def add_upper_gram(total: torch.Tensor, x: torch.Tensor, chunk_bytes: int = 16 * 2**20) -> None:
    """``total += xᵀx`` on and above the diagonal, for ``x`` [tokens, n]: a band of rows a..b times the
    columns from a on, so about half the products and float64 adds of a whole xᵀx (:func:`mirror_upper` fills
    the lower triangle once the sums are final). Bands of equal height: MKL then sums each entry over the tokens
    as in the whole product, so the float32 values are the same (a band of a few rows takes another kernel that
    rounds differently). float64 products, the exact arbiter's, differ from whole ones in their last bits."""
    n = x.shape[-1]
    bands = max(min(8, n // 64), -(-n * total.element_size() * n // chunk_bytes), 1)  # ≥ 64 rows, ≤ chunk_bytes
    rows = -(-n // bands)
    for start in range(0, n, rows):
        stop = min(start + rows, n)
        total[start:stop, start:] += x[:, start:stop].T @ x[:, start:]


def mirror_upper(total: torch.Tensor, chunk_bytes: int = 16 * 2**20) -> None:
    """Copy the upper triangle of a square ``total`` onto its lower one, in place, by bands of rows."""
    n = total.shape[0]
    rows = max(1, chunk_bytes // (total.element_size() * max(1, n)))
    for start in range(0, n, rows):
        stop = min(start + rows, n)
        total[start:stop, :start] = total[:start, start:stop].T  # left of the band's diagonal block
        block = total[start:stop, start:stop]
        block.copy_(torch.triu(block) + torch.triu(block, 1).T)


def add_by_rows(total: torch.Tensor, part: torch.Tensor, chunk_bytes: int = 16 * 2**20) -> None:
    """``total += part`` a band of rows at a time: an in-place add of a float32 matrix into a float64 one
    first casts the whole matrix (a float64 copy, 243 MiB for a 5632-wide Gram); by bands it is a band."""
    rows = max(1, chunk_bytes // (total.element_size() * max(1, total.shape[-1])))
    for start in range(0, total.shape[0], rows):
        total[start:start + rows] += part[start:start + rows]


def input_groups(arch) -> list[tuple[str, ...]]:
    """Linears that read the same input tensor (q/k/v, gate/up): their statistics are identical,
    so each group's are computed and stored once, under the first name."""
    return list(arch.groups)


@torch.no_grad()
def collect_stats(
    block: nn.Module, linears: dict[str, nn.Module], inputs: BlockInputs, gram: bool, groups=None, outputs: bool = True
) -> tuple[dict[str, InputStats], list[torch.Tensor] | None]:
    """One pass of ``block`` over ``inputs``: per-linear input statistics, and the block's outputs
    (``outputs=False``: None, and the pass stops once every linear has its input).

    Linears in one of ``groups`` share one :class:`InputStats` object (hooked on the group's first linear).
    """
    groups = groups or [(name,) for name in linears]
    stats = {}
    shared = [InputStats(in_features(linears[g[0]]), gram, device=linears[g[0]].weight.device) for g in groups]
    for group, s in zip(groups, shared):
        stats.update({name: s for name in group})
    leaders = [linears[g[0]] for g in groups]
    if not outputs:
        feed_inputs(block, inputs, leaders, lambda i, x: shared[i].add(x))
        return stats, None
    handles = [leader.register_forward_hook(lambda _m, args, _out, s=s: s.add(args[0])) for leader, s in zip(leaders, shared)]
    try:
        return stats, run_block(block, inputs)
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def final_hidden_states(model, input_ids: torch.Tensor, batch_size: int = 8, device="cpu", store="device") -> BlockInputs:
    """The last block's outputs for ``input_ids``, computed the way pruning and reconstruction see the model:
    captured block inputs, then one block at a time (loaded, run over every chunk, released) with each
    block's own arguments. ``model``: a model in memory or a :class:`~pruneflow.core.stream.ModelStream`."""
    stream = ModelStream.wrap(model)
    inputs = capture_block_inputs(stream.model, input_ids, batch_size, device, store=store)
    for _, block in stream.blocks(device):
        inputs = inputs.replace(run_block(block, inputs))
    return inputs


@torch.no_grad()
def forward_by_blocks(model, input_ids: torch.Tensor, batch_size: int = 8) -> torch.Tensor:
    """Logits [n, seqlen, vocab] from :func:`final_hidden_states` and the model's own head (final norm,
    output layer, any logit soft-capping)."""
    stream = ModelStream.wrap(model)
    final = final_hidden_states(stream, input_ids, batch_size)
    return torch.cat([head_logits(stream.model, chunk, h) for chunk, h in zip(input_ids.split(batch_size), final.hidden)])


@torch.no_grad()
def head_logits(model: nn.Module, input_ids: torch.Tensor, final: torch.Tensor) -> torch.Tensor:
    """Logits of the model's own head (final norm, output layer, any soft-capping) on ``final``, the last
    block's outputs [batch, seqlen, hidden] for ``input_ids``: the model runs with every block passing its
    input through and the last handing over ``final``, so only the embeddings and the head compute."""
    arch = architecture_of(model)
    blocks = arch.get_blocks(model)
    last = len(blocks) - 1
    for index, block in enumerate(blocks):
        block.forward = (lambda h, *a, _f=final, **k: (_f, None) if arch.returns_tuple else _f) if index == last else (
            lambda h, *a, **k: (h, None) if arch.returns_tuple else h)
    try:
        return model(input_ids, use_cache=False).logits
    finally:
        for block in blocks:
            del block.forward
