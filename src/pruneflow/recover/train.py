"""One small training loop for everything that repairs a pruned model by gradient descent:
whole-model retraining (PERP) and layer-wise reconstruction (A Free Lunch in LLM Compression).

The loop takes named parameters, a loss function of one micro-batch, and the micro-batches;
it keeps sparsity exactly by masking gradients before each step and weights after it.
"""

from __future__ import annotations

import math
import resource
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("linear", "cosine", "constant")
LOSSES = ("mse", "cosine")


class TrainConfigError(ValueError):
    pass


class NonFiniteError(RuntimeError):
    """Training produced NaN or infinite values; the message names the unit (layer) being trained."""


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings. The defaults are layer-wise reconstruction's (Free Lunch); use
    :meth:`retraining` for PERP's.

    Free Lunch (Wagner, Roux, Zimmer, Pokutta 2025; public code): AdamW without weight decay, a linear
    warmup over the first 10% of the steps then linear decay to 0 (``get_linear_schedule_with_warmup``
    with ``int(0.1 · steps)`` warmup steps), batch size 2, epochs over the 128 calibration samples per
    reconstruction unit, MSE loss, no gradient clipping. The paper tunes
    the learning rate per granularity on a grid. With the short budgets of a CPU run a larger rate
    is needed: on SmolLM2-135M (Wanda 50%, 32 × 256 calibration tokens, one epoch per sublayer)
    lr 1e-3 took perplexity from 37.8 to 34.2, lr 1e-4 only to 37.7; so pass ``lr`` explicitly.

    - ``steps``: optimiser steps; 0 means one pass over the micro-batches (an epoch).
    - ``batch_size``: samples per micro-batch (callers split their data with it).
    - ``grad_accum``: micro-batches per optimiser step.
    - ``warmup``: fraction of ``steps`` with a linearly rising learning rate.
    - ``max_grad_norm``: clip the global gradient norm (None: no clipping).
    - ``loss``: reconstruction loss between unit outputs, ``mse`` or ``cosine`` (1 - cosine
      similarity per token); whole-model training always uses next-token cross-entropy.
    - ``seed``: seeds the data order, dropout and adapter initialisation.
    """

    optimizer: str = "adamw"
    lr: float = 1e-5
    weight_decay: float = 0.0
    schedule: str = "linear"
    warmup: float = 0.1
    steps: int = 0
    batch_size: int = 2
    grad_accum: int = 1
    max_grad_norm: float | None = None
    loss: str = "mse"
    seed: int = 0
    momentum: float = 0.9  # SGD only

    def __post_init__(self):
        for name, value, allowed in (
            ("optimizer", self.optimizer, OPTIMIZERS),
            ("schedule", self.schedule, SCHEDULES),
            ("loss", self.loss, LOSSES),
        ):
            if value not in allowed:
                raise TrainConfigError(f"train.{name}: unknown value {value!r}; allowed: {', '.join(allowed)}")
        if not 0 <= self.warmup < 1:
            raise TrainConfigError(f"train.warmup: {self.warmup!r} must be a fraction in [0, 1)")
        if self.lr <= 0 or self.steps < 0 or self.batch_size < 1 or self.grad_accum < 1:
            raise TrainConfigError(
                f"train: lr={self.lr!r} must be > 0, steps={self.steps!r} >= 0, batch_size={self.batch_size!r} >= 1, "
                f"grad_accum={self.grad_accum!r} >= 1"
            )

    @classmethod
    def retraining(cls, **overrides) -> "TrainConfig":
        """PERP's retraining defaults (Zimmer, Andoni, Spiegel, Pokutta; public code defaults):
        AdamW, lr 5e-4, no weight decay, linear decay, batch size 1 with 2 accumulation steps.
        The 10% warmup is ours (PERP uses the Hugging Face linear schedule; warmup is not fixed there)."""
        base = dict(optimizer="adamw", lr=5e-4, weight_decay=0.0, schedule="linear", warmup=0.1, batch_size=1, grad_accum=2)
        return cls(**{**base, **overrides})

    def to_dict(self) -> dict:
        return asdict(self)


FUSED_DEVICES = ("cpu", "cuda")  # where torch has fused optimiser kernels for Adam, AdamW and SGD


def reconstruction_loss(pred: torch.Tensor, target: torch.Tensor, kind: str = "mse") -> torch.Tensor:
    """Loss between a unit's output and its target, both [..., features]."""
    pred, target = pred.float(), target.float()
    if kind == "mse":
        return F.mse_loss(pred, target)
    if kind == "cosine":
        return (1 - F.cosine_similarity(pred, target, dim=-1)).mean()
    raise TrainConfigError(f"loss {kind!r}: allowed {', '.join(LOSSES)}")


def lr_factor(step: int, total: int, warmup_steps: int, schedule: str) -> float:
    """Multiplier of the base learning rate at ``step`` (0-based); never 0, so every step updates."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = (step - warmup_steps) / max(1, total - warmup_steps)
    if schedule == "linear":
        return 1.0 - progress
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def make_optimizer(params: list[torch.Tensor], cfg: TrainConfig) -> torch.optim.Optimizer:
    # torch's fused kernels do a step in one pass over each tensor instead of a dozen: 3.5x faster AdamW
    # steps on CPU (bench/job_overhead.py), the same update up to float rounding.
    fused = all(p.is_floating_point() and p.device.type in FUSED_DEVICES for p in params)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, fused=fused)


def train(
    params: Mapping[str, torch.Tensor],
    loss_fn: Callable[[object], torch.Tensor],
    batches: Sequence,
    cfg: TrainConfig,
    keep_masks: Mapping[str, torch.Tensor] | None = None,
    desc: str = "train",
) -> dict:
    """Minimise ``loss_fn`` over ``batches`` by updating ``params`` in place.

    ``params``: {name: leaf tensor with requires_grad}. ``keep_masks``: {name: bool tensor shaped
    like that parameter} for the parameters that must stay sparse (True = kept): their gradients
    are masked before each step and their values after it, so pruned entries stay exactly zero
    whatever the optimiser (weight decay, momentum) does. Each element of ``batches`` is one
    micro-batch handed to ``loss_fn``; they are visited in a seeded random order, epoch after epoch.

    Returns {losses: mean loss per optimiser step, seconds, steps, trainable_params}.
    """
    masks = _checked_masks(params, keep_masks, batches)

    steps = cfg.steps or max(1, len(batches) // cfg.grad_accum)
    warmup_steps = int(cfg.warmup * steps)
    tensors = list(params.values())
    optimizer = make_optimizer(tensors, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, steps, warmup_steps, cfg.schedule))
    torch.manual_seed(cfg.seed)  # dropout inside loss_fn
    order = _batch_order(len(batches), cfg.seed)

    with torch.no_grad():
        for name, mask in masks.items():
            params[name].mul_(mask)
    losses = []
    start = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    for step in tqdm(range(steps), desc=desc, unit="step", leave=False):
        total = _accumulate(loss_fn, batches, order, cfg.grad_accum)
        if not math.isfinite(total):
            raise NonFiniteError(
                f"{desc}: the loss became {total} at step {step} of {steps}; lower the learning rate "
                f"(lr={cfg.lr:g}) or set max_grad_norm. Nothing was saved for this job; earlier artifacts are kept."
            )
        _masked_step(params, masks, optimizer, cfg.max_grad_norm)
        scheduler.step()
        losses.append(total)
    optimizer.zero_grad(set_to_none=True)
    for name, p in params.items():
        if not torch.isfinite(p).all():
            raise NonFiniteError(f"{desc}: parameter {name} holds non-finite values after training; lower the learning rate (lr={cfg.lr:g})")
    return {
        "losses": losses,
        "seconds": time.perf_counter() - start,
        "steps": steps,
        "trainable_params": sum(p.numel() for p in tensors),
    }


def _checked_masks(params, keep_masks, batches) -> dict[str, torch.Tensor]:
    """The keep-masks in each parameter's device and dtype; bad inputs raise naming the parameter."""
    if not batches:
        raise TrainConfigError("train: no batches to train on")
    keep_masks = dict(keep_masks or {})
    unknown = set(keep_masks) - set(params)
    if unknown:
        raise TrainConfigError(f"train: keep masks for unknown parameters {sorted(unknown)[:3]}")
    for name, p in params.items():
        if not p.requires_grad:
            raise TrainConfigError(f"train: parameter {name!r} does not require gradients")
        if name in keep_masks and keep_masks[name].shape != p.shape:
            raise TrainConfigError(f"train: mask of {name!r} has shape {tuple(keep_masks[name].shape)}, parameter {tuple(p.shape)}")
    return {name: keep_masks[name].to(device=p.device, dtype=p.dtype) for name, p in params.items() if name in keep_masks}


def _accumulate(loss_fn, batches, order, grad_accum: int) -> float:
    """Gradients of ``grad_accum`` micro-batches (fresh, then summed); returns their mean loss."""
    total = 0.0
    for _ in range(grad_accum):
        loss = loss_fn(batches[next(order)])
        (loss / grad_accum).backward()
        total += loss.item() / grad_accum
    return total


def _masked_step(params, masks, optimizer, max_grad_norm) -> None:
    """One optimiser step with pruned entries' gradients masked before it and their values after it."""
    with torch.no_grad():
        for name, mask in masks.items():
            if params[name].grad is not None:
                params[name].grad.mul_(mask)
    if max_grad_norm is not None:
        torch.nn.utils.clip_grad_norm_(list(params.values()), max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    with torch.no_grad():
        for name, mask in masks.items():
            params[name].mul_(mask)


def _batch_order(n: int, seed: int):
    """Endless seeded shuffles of range(n), one permutation per epoch."""
    generator = torch.Generator().manual_seed(seed)
    while True:
        yield from torch.randperm(n, generator=generator).tolist()


def peak_memory() -> dict:
    """Peak memory so far: the process's resident set (a lifetime high-water mark, in MiB) and,
    on CUDA, the allocator's peak since the last ``torch.cuda.reset_peak_memory_stats``."""
    out = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if torch.cuda.is_available():
        out["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out
