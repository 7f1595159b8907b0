"""Repair an output projection after some of its input channels were removed (structured pruning).

An output projection (``o_proj`` for heads, ``down_proj`` for FFN neurons) computes
y = W x + b with W [out, n]. Removing the input channels R and keeping K leaves y ≈ W_K x_K + b.
Reconstruction ``none`` just drops W_R. A repair (a registry entry of kind ``structured_repair``, one module in
``pruneflow.methods``: ``bias`` compensation, ``liar``, ``liar_weight``) fits x_R ≈ Bᵀ x_K + c from the
calibration statistics of the channels (:class:`ChannelStats`); this module folds the fit into the layer,
W_K' = W_K + W_R Bᵀ and b' = b + W_R c (B or c may be absent: weights or bias left alone).

Damping ``auto`` (a repair whose ``damping`` may be auto): λ is chosen per layer on calibration data only. The
statistics are gathered separately over the first 75% of the calibration samples (fit) and the last 25% (held
out); for each λ of the repair's ``grid`` the fit on the first part is scored by the repaired layer's mean squared
output error on the held-out part (from its moments); the best λ is then refitted on all samples. Nothing of the
evaluation corpus is read.
"""

from __future__ import annotations

import torch
from torch import nn

from pruneflow.core.activations import BlockInputs, add_by_rows, feed_inputs
from pruneflow.core.architectures import in_features
from pruneflow.spec.naming import DAMPING, damped_repairs, repair_entry

HOLDOUT_FRACTION = 0.25  # of the calibration samples, held out to choose the damping


class ChannelStats:
    """Mean and covariance of a layer's input channels X [tokens, n] over the calibration tokens.

    Sums are taken of X − s, with s the first chunk's mean: the covariance then does not lose
    precision when a channel's mean is large against its spread. Chunk products are float32,
    the running sums float64. ``gram`` (n × n) is only kept when the covariance is needed.
    """

    def __init__(self, n: int, gram: bool, device="cpu"):
        self.count = 0
        self.shift = None
        self.sum = torch.zeros(n, dtype=torch.float64, device=device)
        self.sq_sum = torch.zeros(n, dtype=torch.float64, device=device)
        self.gram = torch.zeros(n, n, dtype=torch.float64, device=device) if gram else None

    def add(self, x: torch.Tensor) -> None:
        x = x.reshape(-1, x.shape[-1]).float()
        if self.shift is None:
            self.shift = x.mean(0)
        xs = x - self.shift
        self.count += x.shape[0]
        self.sum += xs.sum(0)  # in-place: float32 added into float64 (no float64 copy of an n x n product)
        self.sq_sum += xs.pow(2).sum(0)
        if self.gram is not None:
            add_by_rows(self.gram, xs.T @ xs)  # by bands: no float64 copy of the [n, n] product

    @property
    def mean(self) -> torch.Tensor:
        """E[x_j], [n] float64."""
        return self.shift.double() + self.sum / self.count

    @property
    def variance(self) -> torch.Tensor:
        """Var(x_j) over tokens (population), [n] float64."""
        m = self.sum / self.count
        return (self.sq_sum / self.count - m.pow(2)).clamp_min(0)

    @property
    def col_norms(self) -> torch.Tensor:
        """‖X_j‖₂ over all calibration tokens, [n] float64 (Wanda's input norm)."""
        s = self.shift.double()
        sq = self.sq_sum + 2 * s * self.sum + self.count * s.pow(2)
        return sq.clamp_min(0).sqrt()

    @property
    def covariance(self) -> torch.Tensor:
        """Cov(x) [n, n] float64 (needs ``gram=True``)."""
        return self._moment(centred=True, take=False)

    @property
    def second_moment(self) -> torch.Tensor:
        """E[x xᵀ] [n, n] float64 (needs ``gram=True``)."""
        return self._moment(centred=False, take=False)

    def take_moment(self, centred: bool) -> torch.Tensor:
        """:attr:`covariance` (``centred``) or :attr:`second_moment`, made in place of the Gram sums, which it
        takes (this object holds none after): a fit that uses the statistics once holds one [n, n] matrix, not two."""
        return self._moment(centred, take=True)

    def _moment(self, centred: bool, take: bool) -> torch.Tensor:
        if self.gram is None:
            raise ValueError("the covariance needs ChannelStats(..., gram=True), whose Gram sums were not taken")
        m, mean = self.sum / self.count, self.mean
        moment = self.gram.div_(self.count) if take else self.gram / self.count
        if take:
            self.gram = None
        _add_outer(moment, m, m, subtract=True)  # Cov = E[(x−s)(x−s)ᵀ] − E[x−s] E[x−s]ᵀ
        if not centred:
            _add_outer(moment, mean, mean)  # E[x xᵀ] = Cov + E[x] E[x]ᵀ
        return moment

    def combined(self, other: "ChannelStats") -> "ChannelStats":
        """The statistics of both token sets together (exact: ``other``'s sums are moved to this shift)."""
        out = ChannelStats.__new__(ChannelStats)
        delta = (other.shift - self.shift).double()
        n = other.count
        out.count, out.shift = self.count + n, self.shift
        out.sum = self.sum + other.sum + n * delta
        out.sq_sum = self.sq_sum + other.sq_sum + 2 * delta * other.sum + n * delta.pow(2)
        out.gram = None
        if self.gram is not None and other.gram is not None:
            cross = torch.outer(other.sum, delta)
            out.gram = self.gram + other.gram + cross + cross.T + n * torch.outer(delta, delta)
        return out


def _add_outer(total: torch.Tensor, a: torch.Tensor, b: torch.Tensor, subtract: bool = False, rows: int = 256) -> None:
    """``total ± outer(a, b)`` in place, a band of rows at a time: the same values as the whole expression,
    without two more [n, n] float64 matrices (254 MB each for a 5632-wide FFN)."""
    for start in range(0, total.shape[0], rows):
        band = torch.outer(a[start:start + rows], b)
        if subtract:
            total[start:start + rows] -= band
        else:
            total[start:start + rows] += band


@torch.no_grad()
def collect_channel_stats(block: nn.Module, layer: nn.Module, inputs: BlockInputs, gram: bool) -> ChannelStats:
    """Run ``block`` over ``inputs`` as far as ``layer`` and accumulate the statistics of its input channels."""
    stats = ChannelStats(in_features(layer), gram, device=layer.weight.device)
    feed_inputs(block, inputs, [layer], lambda _i, x: stats.add(x))
    return stats


def holdout_samples(nsamples: int) -> int:
    """Calibration samples held out to choose the damping: the last 25%, at least one, never all."""
    if nsamples < 2:
        raise ValueError(f"damping 'auto' needs at least 2 calibration samples to hold some out; got {nsamples}")
    return min(nsamples - 1, max(1, round(HOLDOUT_FRACTION * nsamples)))


@torch.no_grad()
def collect_split_channel_stats(block: nn.Module, layer: nn.Module, inputs: BlockInputs, nsamples: int) -> tuple[ChannelStats, ChannelStats]:
    """Statistics of ``layer``'s input over the first samples (fit) and the last :func:`holdout_samples`
    (held out), split by sample index, so the split does not depend on how samples are batched."""
    n = in_features(layer)
    fit, held = (ChannelStats(n, True, device=layer.weight.device) for _ in range(2))
    first_held = nsamples - holdout_samples(nsamples)
    seen = 0

    def add(_i, x):
        nonlocal seen
        if x.dim() < 3:
            raise ValueError("damping 'auto' needs the layer's input as [batch, seqlen, channels]")
        cut = min(max(first_held - seen, 0), x.shape[0])
        if cut:
            fit.add(x[:cut])
        if cut < x.shape[0]:
            held.add(x[cut:])
        seen += x.shape[0]

    feed_inputs(block, inputs, [layer], add)
    return fit, held


def check_reconstruction(reconstruction: str):
    """The repair's entry (None for none); ValueError naming the value and the allowed ones."""
    return repair_entry(reconstruction)


@torch.no_grad()
def reconstruct(
    reconstruction: str,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    keep: torch.Tensor,
    stats: ChannelStats | None,
    damping: float = 0.0,
    consume: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The repaired output projection restricted to the kept input channels.

    ``weight`` [out, n], ``bias`` [out] or None, ``keep`` sorted kept channel indices [k] (long).
    Returns (weight [out, k], bias [out]); the bias is None only if it was None and nothing
    changes it (``none``, a fit without intercept, or no channel removed). Computed in float64 on the CPU.
    ``consume``: ``stats`` are not used again, so the fit may take their Gram sums (:func:`affine_fit`).
    """
    repair = check_reconstruction(reconstruction)
    keep, removed = keep.cpu(), _removed(weight.shape[1], keep)
    if repair is None or removed.numel() == 0:
        return weight[:, keep.to(weight.device)].clone(), bias
    if stats is None:
        raise ValueError(f"reconstruction {reconstruction!r} needs calibration statistics")
    w = weight.detach().double().cpu()
    w_keep, w_rem = w[:, keep], w[:, removed]
    coef, intercept = affine_fit(reconstruction, stats, keep, removed, damping, consume)
    if coef is not None:
        w_keep = w_keep + w_rem @ coef.T
    if intercept is None:
        return w_keep.to(weight), bias
    b = torch.zeros(w.shape[0], dtype=torch.float64) if bias is None else bias.detach().double().cpu()
    return w_keep.to(weight), (b + w_rem @ intercept).to(weight)


def _removed(n: int, keep: torch.Tensor) -> torch.Tensor:
    removed = torch.ones(n, dtype=torch.bool)
    removed[keep.cpu()] = False
    return removed.nonzero().squeeze(1)


def affine_fit(reconstruction: str, stats: ChannelStats, keep: torch.Tensor, removed: torch.Tensor, damping: float,
               consume: bool = False):
    """(B [k, r] or None, c [r] or None) with x_R ≈ Bᵀ x_K + c, as repair ``reconstruction`` fits it (float64);
    ``damping`` is passed to a repair that takes one. ``consume``: the statistics are used this once (the fit may
    take their Gram sums)."""
    entry = repair_entry(reconstruction)
    params = {DAMPING: damping} if DAMPING in entry.defaults else {}
    return entry.load()(stats, keep, removed, consume=consume, **params)


def output_error(w_rem: torch.Tensor, coef, intercept, stats: ChannelStats, keep: torch.Tensor, removed: torch.Tensor) -> float:
    """Mean squared output error E‖W_R (x_R − Bᵀx_K − c)‖² of the repaired layer over the tokens
    ``stats`` describes (from their moments), for a fit (B, c) (either may be None: zero)."""
    s2, mean = stats.second_moment.cpu(), stats.mean.cpu()
    s_rr, s_rk = s2[removed][:, removed], s2[removed][:, keep]
    resid = s_rr.clone()  # E[r rᵀ], r = x_R − Bᵀ x_K − c
    r_mean = mean[removed].clone()
    if coef is not None:
        cross = s_rk @ coef
        resid += coef.T @ (s2[keep][:, keep] @ coef) - cross - cross.T
        r_mean -= coef.T @ mean[keep]
    if intercept is not None:
        outer = torch.outer(r_mean, intercept)
        resid += torch.outer(intercept, intercept) - outer - outer.T
    m = w_rem.T @ w_rem
    return float((m * resid).sum())


def choose_damping(
    reconstruction: str, weight: torch.Tensor, keep: torch.Tensor, fit: ChannelStats, heldout: ChannelStats, grid=None,
) -> tuple[float, dict[float, float]]:
    """The damping of ``grid`` (default: the repair's option ``grid``) whose fit on ``fit`` gives the smallest output
    error on ``heldout``; returns (damping, {damping: held-out error})."""
    if reconstruction not in (damped := damped_repairs()):
        raise ValueError(f"reconstruction {reconstruction!r} has no damping to choose; allowed: {', '.join(damped)}")
    grid = repair_entry(reconstruction).options.get("grid") if grid is None else grid
    if not grid:
        raise ValueError(f"reconstruction {reconstruction!r}: damping auto needs the values to choose from (the entry's option 'grid')")
    keep = keep.cpu()
    removed = _removed(weight.shape[1], keep)
    w_rem = weight.detach().double().cpu()[:, removed]
    errors = {}
    for damping in grid:
        coef, intercept = affine_fit(reconstruction, fit, keep, removed, damping)
        errors[damping] = output_error(w_rem, coef, intercept, heldout, keep, removed)
    return min(errors, key=errors.get), errors
