"""Parameter-efficient retraining after pruning (PERP: Zimmer, Andoni, Spiegel, Pokutta).

Trainable parameter subsets, selectable and combinable:

- ``biases``: every bias outside the normalisation layers (unavailable for bias-free families
  such as LLaMA/SmolLM2: reported, never added);
- ``norms``: every parameter of LayerNorm/RMSNorm modules;
- ``lm_head``: a LoRA adapter on the output head (it is not pruned, so plain LoRA);
- ``embeddings``: the input token embedding matrix;
- ``full``: every weight, with the pruned weights held at zero.

Adapters on every prunable linear layer of the blocks (rank r, scaling α/r, mask M = keep-mask):

- ``lora``: W + (α/r)·BA while training; merged masked, W + (α/r)·(BA ⊙ M), so sparsity survives
  but the merged model differs from the trained one;
- ``masklora``: W + (α/r)·(BA ⊙ M) while training too, so merging changes nothing;
- ``scalelora``: W ⊙ (BA), A and B initialised to 1/√r so BA starts as all ones.

:func:`merge_adapters` folds adapters back into the original layers (plain ``nn.Linear`` /
``Conv1D``), so the model saves and loads with ``from_pretrained`` without PruneFlow. The training that uses
them lives beside: :mod:`pruneflow.recover.whole_model` (PERP retraining, ``recon:full``) and the layer-wise
units of :mod:`pruneflow.recover.reconstruct`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from pruneflow.core.architectures import Architecture, architecture_of
from pruneflow.spec.naming import ADAPTER_NAMES as ADAPTERS
from pruneflow.spec.naming import SUBSET_NAMES as SUBSETS


class PeftError(ValueError):
    pass


@dataclass(frozen=True)
class AdapterConfig:
    """A low-rank adapter; PERP's defaults: rank 16, alpha 32, no dropout."""

    kind: str = "masklora"
    rank: int = 16
    alpha: float = 32.0
    dropout: float = 0.0

    def __post_init__(self):
        if self.kind not in ADAPTERS:
            raise PeftError(f"adapter {self.kind!r}: allowed {', '.join(ADAPTERS)}")
        if self.rank < 1 or not 0 <= self.dropout < 1:
            raise PeftError(f"adapter: rank={self.rank!r} must be >= 1 and dropout={self.dropout!r} in [0, 1)")
        if self.kind == "scalelora" and self.dropout:
            raise PeftError("adapter scalelora multiplies the weights (W ⊙ BA): input dropout is not defined for it; set dropout: 0")

    def to_dict(self) -> dict:
        return asdict(self)


def parse_subsets(value) -> tuple[str, ...]:
    """``"biases+norms"`` / ``"biases,norms"`` / ``["biases", "norms"]`` → ("biases", "norms"); ``none``/empty → ()."""
    items = re.split(r"[+,\s]+", value) if isinstance(value, str) else list(value or ())
    items = [s for s in (str(i).strip() for i in items) if s and s != "none"]
    for s in items:
        if s not in SUBSETS:
            raise PeftError(f"trainable subset {s!r}: allowed {', '.join(SUBSETS)} (combine with '+')")
    return tuple(dict.fromkeys(items))


class AdapterLinear(nn.Module):
    """A frozen linear layer ``base`` (nn.Linear, or GPT-2's Conv1D) with low-rank factors.

    ``lora_A`` is [r, in], ``lora_B`` is [out, r]; ``keep`` is the bool keep-mask [out, in] (None: every weight
    kept, as on the unpruned head). A mask equal to W != 0 (every mask of a pruned layer whose kept weights
    are non-zero) is not stored: it is read off the frozen weight when used, so the adapters hold no byte per
    weight of the model.
    """

    def __init__(self, base: nn.Module, cfg: AdapterConfig, keep: torch.Tensor | None, transposed: bool, generator: torch.Generator):
        super().__init__()
        self.base, self.kind, self.transposed = base, cfg.kind, transposed
        weight = self.base_weight()
        out_f, in_f = weight.shape
        self.scaling = cfg.alpha / cfg.rank
        self.dropout = cfg.dropout
        self.lora_A = nn.Parameter(torch.empty(cfg.rank, in_f, dtype=weight.dtype, device=weight.device))
        self.lora_B = nn.Parameter(torch.empty(out_f, cfg.rank, dtype=weight.dtype, device=weight.device))
        with torch.no_grad():
            if cfg.kind == "scalelora":
                self.lora_A.fill_(1 / math.sqrt(cfg.rank))
                self.lora_B.fill_(1 / math.sqrt(cfg.rank))
            else:  # the usual LoRA start: A like nn.Linear, B = 0, so the adapter starts as a no-op
                nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5), generator=generator)
                self.lora_B.zero_()
        if keep is not None and keep.shape != (out_f, in_f):
            raise PeftError(f"keep-mask of shape {tuple(keep.shape)} for a layer of shape {(out_f, in_f)}")
        self.masked = keep is not None
        keep = None if keep is None else keep.to(weight.device, torch.bool)
        stored = None if keep is None or torch.equal(keep, weight != 0) else keep
        self.register_buffer("stored_keep", stored, persistent=False)

    def base_weight(self) -> torch.Tensor:
        """The frozen weight as [out, in]."""
        return self.base.weight.T if self.transposed else self.base.weight

    @property
    def keep(self) -> torch.Tensor | None:
        if not self.masked:
            return None
        return self.stored_keep if self.stored_keep is not None else self.base_weight() != 0

    def delta(self) -> torch.Tensor:
        """(α/r)·BA (masked for MaskLoRA) [out, in], the additive update."""
        ba = self.lora_B @ self.lora_A
        return self.scaling * (_masked(ba, self.keep) if self.kind == "masklora" else ba)

    def effective_weight(self, lora_A=None, lora_B=None, dtype=None) -> torch.Tensor:
        """The weight the layer computes with while training, [out, in], made in one buffer: W + (α/r)·(BA ⊙ M)
        (MaskLoRA) or W ⊙ BA (ScaleLoRA); the factors cast to ``dtype`` first (default: the weight's)."""
        weight = self.base_weight()
        dtype = dtype or weight.dtype
        w = (lora_B if lora_B is not None else self.lora_B).to(dtype) @ (lora_A if lora_A is not None else self.lora_A).to(dtype)
        if self.kind == "scalelora":
            return w.mul_(weight)
        if self.kind == "masklora":
            w = _masked(w, self.keep, inplace=True)
        return w.mul_(self.scaling).add_(weight)

    def merged_weight(self) -> torch.Tensor:
        """The weight folded back into the base layer, [out, in]; zero wherever ``keep`` is False."""
        if self.kind == "scalelora":
            merged = self.base_weight() * (self.lora_B @ self.lora_A)
        else:
            merged = self.base_weight() + _masked(self.scaling * (self.lora_B @ self.lora_A), self.keep)
        return _masked(merged, self.keep)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "lora":  # cheap path: never materialise BA
            h = F.dropout(x, self.dropout, self.training)
            return self.base(x) + self.scaling * F.linear(F.linear(h, self.lora_A), self.lora_B)
        if self.kind == "masklora" and self.dropout and self.training:
            return self.base(x) + F.linear(F.dropout(x, self.dropout, True), self.delta())
        return _AdaptedLinear.apply(x, self.lora_A, self.lora_B, self.base.bias, self)


def _masked(t: torch.Tensor, keep: torch.Tensor | None, inplace: bool = False) -> torch.Tensor:
    if keep is None:
        return t
    return t.mul_(keep) if inplace else t * keep


class _AdaptedLinear(torch.autograd.Function):
    """F.linear(x, W') for MaskLoRA's and ScaleLoRA's effective weight W' (:meth:`AdapterLinear.effective_weight`),
    without autograd's graph through W': that graph made four [out, in] temporaries per layer and kept W' for the
    backward pass (on CPU, glibc kept the freed temporaries' pages: a 0.46B model's MaskLoRA retraining peaked
    1.2 GB above norms-only retraining). Here W' is one buffer, remade in the backward pass; the gradients are
    the same products autograd forms, in the same dtype (the frozen weight's, as autocast computes them)."""

    @staticmethod
    def forward(ctx, x, lora_A, lora_B, bias, adapter: AdapterLinear):
        dtype = adapter.base_weight().dtype
        ctx.adapter, ctx.x_dtype = adapter, x.dtype
        ctx.save_for_backward(x, lora_A, lora_B, bias)
        return F.linear(x.to(dtype), adapter.effective_weight(lora_A, lora_B, dtype), None if bias is None else bias.to(dtype))

    @staticmethod
    def backward(ctx, grad):
        x, lora_A, lora_B, bias = ctx.saved_tensors
        adapter = ctx.adapter
        weight = adapter.base_weight()
        g = grad.to(weight.dtype)
        grad_x = grad_a = grad_b = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_x = (g @ adapter.effective_weight(lora_A, lora_B, weight.dtype)).to(ctx.x_dtype)
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            g2 = g.reshape(-1, g.shape[-1])
            grad_w = g2.T @ x.reshape(-1, x.shape[-1]).to(weight.dtype)  # dL/dW' [out, in]
            # dW'/d(BA): (α/r)·M for MaskLoRA, W for ScaleLoRA
            grad_ba = grad_w.mul_(weight) if adapter.kind == "scalelora" else _masked(grad_w.mul_(adapter.scaling), adapter.keep, inplace=True)
            grad_a = (lora_B.to(weight.dtype).T @ grad_ba).to(lora_A.dtype)
            grad_b = (grad_ba @ lora_A.to(weight.dtype).T).to(lora_B.dtype)
        if bias is not None and ctx.needs_input_grad[3]:
            grad_bias = g.reshape(-1, g.shape[-1]).sum(0).to(bias.dtype)
        return grad_x, grad_a, grad_b, grad_bias, None


def _set_module(root: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, attr = path.rpartition(".")
    setattr(root.get_submodule(parent), attr, module)


def wrap_block_linears(
    block: nn.Module,
    arch,
    masks: Mapping[str, torch.Tensor] | None,
    cfg: AdapterConfig,
    generator: torch.Generator,
    names: Iterable[str] | None = None,
) -> dict[str, AdapterLinear]:
    """Replace the prunable linears of ``block`` (all, or ``names``) by :class:`AdapterLinear`; returns {linear name: adapter}.

    ``masks``: {linear name: keep-mask [out, in]}; a missing mask is read off the weight (W != 0).
    """
    wrapped = {}
    linears = arch.block_linears(block)
    for name in names if names is not None else linears:
        layer = linears[name]
        if isinstance(layer, AdapterLinear):
            raise PeftError(f"linear {name!r} already carries an adapter")
        weight = arch.weight(layer)
        keep = masks.get(name) if masks else None
        adapter = AdapterLinear(layer, cfg, weight != 0 if keep is None else keep, arch.transposed, generator)
        adapter.train()  # dropout on; the base model itself stays in eval mode
        _set_module(block, name, adapter)
        wrapped[name] = adapter
    return wrapped


def add_adapters(
    model, keep_masks: Mapping[int, Mapping[str, torch.Tensor]] | None, cfg: AdapterConfig, seed: int = 0,
    arch: Architecture | None = None,
) -> dict[str, AdapterLinear]:
    """Wrap the prunable linears of every block; returns {"<block>.<linear>": adapter}. ``arch``: the model's
    (found here when not given)."""
    arch = arch or architecture_of(model)
    generator = torch.Generator().manual_seed(seed)
    wrapped = {}
    for index, block in enumerate(arch.get_blocks(model)):
        masks = (keep_masks or {}).get(index)
        for name, adapter in wrap_block_linears(block, arch, masks, cfg, generator).items():
            wrapped[f"{index}.{name}"] = adapter
    return wrapped


def add_head_adapter(model, cfg: AdapterConfig, seed: int = 0) -> AdapterLinear:
    """Plain LoRA on the output head (``lm_head``): the head is never pruned."""
    head = model.get_output_embeddings()
    if isinstance(head, AdapterLinear):
        raise PeftError("the output head already carries an adapter")
    lora = AdapterConfig("lora", cfg.rank, cfg.alpha, cfg.dropout)
    adapter = AdapterLinear(head, lora, None, False, torch.Generator().manual_seed(seed + 1))
    adapter.train()
    model.set_output_embeddings(adapter)
    return adapter


@torch.no_grad()
def merge_adapters(model) -> nn.Module:
    """Fold every adapter into its base layer and put the base layer back (in place; returns ``model``).

    Block layers: every entry outside the keep-mask is exactly zero afterwards. A LoRA on a head
    tied to the input embeddings unties it (the merged head gets its own weight and
    ``config.tie_word_embeddings`` becomes False), so the embeddings stay untouched.
    """
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None  # a block has none
    for path, module in list(model.named_modules()):
        if not isinstance(module, AdapterLinear):
            continue
        merged = module.merged_weight().detach()
        merged = merged.T if module.transposed else merged
        base = module.base
        if module is head:
            tied = base.weight is model.get_input_embeddings().weight
            if tied:
                base.weight = nn.Parameter(merged.to(base.weight.dtype).contiguous())
                model.config.tie_word_embeddings = False
                if hasattr(model.config, "get_text_config"):
                    model.config.get_text_config().tie_word_embeddings = False
            else:
                base.weight.copy_(merged)
            model.set_output_embeddings(base)
        else:
            base.weight.copy_(merged)
            _set_module(model, path, base)
    return model


def _is_norm(module: nn.Module) -> bool:
    return "norm" in type(module).__name__.lower()


def subset_parameters(model, subsets: Iterable[str], within: nn.Module | None = None) -> tuple[dict[str, nn.Parameter], list[str]]:
    """Parameters of the named subsets, as {model-level name: parameter}, and the subsets that have none.

    ``within`` restricts the search to one module (a block, a sublayer); ``lm_head`` is an adapter,
    not a parameter subset, and is left to :func:`add_head_adapter`. Adapter factors are never included.
    """
    names = {id(p): n for n, p in model.named_parameters()}
    root = within if within is not None else model
    found: dict[str, nn.Parameter] = {}
    unavailable = []
    for subset in subsets:
        if subset == "lm_head":
            continue
        params = []
        for module in root.modules():
            own = dict(module.named_parameters(recurse=False))
            if isinstance(module, AdapterLinear):
                continue
            if subset == "biases" and not _is_norm(module):
                params += [own["bias"]] if "bias" in own else []
            elif subset == "norms" and _is_norm(module):
                params += list(own.values())
            elif subset == "full":
                params += list(own.values())
        if subset == "embeddings":
            emb = model.get_input_embeddings().weight
            params = [emb] if any(p is emb for p in root.parameters()) else []
        if not params:
            unavailable.append(subset)
        found.update({names[id(p)]: p for p in params if id(p) in names})
    return found, unavailable


def adapter_parameters(model) -> dict[str, nn.Parameter]:
    return {n: p for n, p in model.named_parameters() if n.rsplit(".", 1)[-1] in ("lora_A", "lora_B")}


def weight_masks(model, arch: Architecture, keep_masks: Mapping[int, Mapping[str, torch.Tensor]] | None,
                 names: Iterable[str]) -> dict[str, torch.Tensor]:
    """{parameter name: keep-mask in that parameter's layout} for the pruned block weights among ``names``."""
    if not keep_masks:
        return {}
    params = dict(model.named_parameters())
    wanted = {id(params[n]) for n in names if n in params}
    by_id = {}
    for index, block in enumerate(arch.get_blocks(model)):
        for name, layer in arch.block_linears(block).items():
            base = layer.base if isinstance(layer, AdapterLinear) else layer
            if id(base.weight) not in wanted:
                continue  # read only the masks of weights that train (a whole model's are a byte per weight)
            mask = keep_masks.get(index, {}).get(name)
            if mask is not None:
                by_id[id(base.weight)] = mask.T if arch.transposed else mask
    return {n: by_id[id(params[n])] for n in names if n in params and id(params[n]) in by_id}


def trainable_fraction(model) -> dict:
    """Trainable parameters (adapters included) over the model's own parameters (adapters excluded)."""
    adapters = {id(p) for p in adapter_parameters(model).values()}
    params = list(model.parameters())
    trainable = sum(p.numel() for p in params if p.requires_grad)
    total = sum(p.numel() for p in params if id(p) not in adapters)
    return {"trainable_params": trainable, "total_params": total, "trainable_fraction": trainable / total}


def prepare_retraining(model, keep_masks, subsets, adapter: AdapterConfig | None, seed: int = 0,
                       arch: Architecture | None = None) -> dict:
    """Freeze ``model``, add the adapters, unfreeze the subsets; returns {params, masks, unavailable, fraction}.
    ``arch``: the model's (found here when not given)."""
    subsets = parse_subsets(subsets)
    arch = arch or architecture_of(model)
    for p in model.parameters():
        p.requires_grad_(False)
    if adapter is not None:
        add_adapters(model, keep_masks, adapter, seed, arch)
    if "lm_head" in subsets:
        add_head_adapter(model, adapter or AdapterConfig("lora"), seed)
    params, unavailable = subset_parameters(model, subsets)
    params.update(adapter_parameters(model))
    if not params:
        raise PeftError(f"nothing to train: subsets {list(subsets)} ({', '.join(unavailable) or 'none'} unavailable) and no adapter")
    for p in params.values():
        p.requires_grad_(True)
    return {
        "params": params,
        "masks": weight_masks(model, arch, keep_masks, params),
        "unavailable": unavailable,
        **trainable_fraction(model),
    }
