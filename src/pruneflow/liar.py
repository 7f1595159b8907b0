"""Repair an output projection after some of its input channels were removed (structured pruning).

An output projection (``o_proj`` for heads, ``down_proj`` for FFN neurons) computes
y = W x + b with W [out, n]. Removing the input channels R and keeping K leaves y ≈ W_K x_K + b.

- ``none``: just drop W_R.
- ``bias`` (bias compensation): replace x_R by its calibration mean, b' = b + W_R E[x_R].
- ``liar`` (LIAR): regress x_R on x_K by ridge least squares with an intercept,
  x_R ≈ Bᵀ x_K + c, B = (Σ_KK + λ·mean(diag Σ_KK)·I)⁻¹ Σ_KR, c = E[x_R] − Bᵀ E[x_K],
  where Σ is the covariance of the channels over the calibration tokens; then
  W_K' = W_K + W_R Bᵀ and b' = b + W_R c. With B = 0 this is bias compensation.

When x_R is exactly an affine function of x_K and λ = 0 the repaired layer reproduces y exactly.
"""

from __future__ import annotations

import torch
from torch import nn

from .activations import BlockInputs, run_block
from .architectures import in_features

RECONSTRUCTIONS = ("none", "bias", "liar")


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
        self.sum += xs.sum(0).double()
        self.sq_sum += xs.pow(2).sum(0).double()
        if self.gram is not None:
            self.gram += (xs.T @ xs).double()

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
        if self.gram is None:
            raise ValueError("covariance needs ChannelStats(..., gram=True)")
        m = self.sum / self.count
        return self.gram / self.count - torch.outer(m, m)


@torch.no_grad()
def collect_channel_stats(block: nn.Module, layer: nn.Module, inputs: BlockInputs, gram: bool) -> ChannelStats:
    """Run ``block`` over ``inputs`` and accumulate the statistics of ``layer``'s input channels."""
    stats = ChannelStats(in_features(layer), gram, device=layer.weight.device)
    handle = layer.register_forward_hook(lambda _m, args, _out: stats.add(args[0]))
    try:
        run_block(block, inputs)
    finally:
        handle.remove()
    return stats


def check_reconstruction(reconstruction: str) -> None:
    if reconstruction not in RECONSTRUCTIONS:
        raise ValueError(f"unknown reconstruction {reconstruction!r}; allowed: {', '.join(RECONSTRUCTIONS)}")


@torch.no_grad()
def reconstruct(
    reconstruction: str,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    keep: torch.Tensor,
    stats: ChannelStats | None,
    damping: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The repaired output projection restricted to the kept input channels.

    ``weight`` [out, n], ``bias`` [out] or None, ``keep`` sorted kept channel indices [k] (long).
    Returns (weight [out, k], bias [out]); the bias is None only if it was None and nothing
    changes it (``none``, or no channel removed). Computed in float64 on the CPU.
    """
    check_reconstruction(reconstruction)
    n = weight.shape[1]
    keep = keep.cpu()
    removed = torch.ones(n, dtype=torch.bool)
    removed[keep] = False
    removed = removed.nonzero().squeeze(1)
    if reconstruction == "none" or removed.numel() == 0:
        return weight[:, keep.to(weight.device)].clone(), bias
    if stats is None:
        raise ValueError(f"reconstruction {reconstruction!r} needs calibration statistics")
    w = weight.detach().double().cpu()
    w_keep, w_rem = w[:, keep], w[:, removed]
    b = torch.zeros(w.shape[0], dtype=torch.float64) if bias is None else bias.detach().double().cpu()
    mean = stats.mean.cpu()
    if reconstruction == "bias":
        b = b + w_rem @ mean[removed]
    else:
        coef, intercept = ridge_affine_fit(stats.covariance.cpu(), mean, keep, removed, damping)
        w_keep = w_keep + w_rem @ coef.T
        b = b + w_rem @ intercept
    return w_keep.to(weight), b.to(weight)


def ridge_affine_fit(
    cov: torch.Tensor, mean: torch.Tensor, keep: torch.Tensor, removed: torch.Tensor, damping: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Least squares x_R ≈ Bᵀ x_K + c from moments: returns B [k, r] and c [r] (float64).

    Ridge term ``damping``·mean(diag Σ_KK) on the diagonal; with zero damping a singular Σ_KK
    (e.g. a dead kept channel) gets the minimum-norm solution.
    """
    if damping < 0:
        raise ValueError(f"damping {damping!r} must be >= 0")
    cov_kk = cov[keep][:, keep]
    cov_kr = cov[keep][:, removed]
    if damping > 0:
        cov_kk = cov_kk + damping * cov_kk.diagonal().mean() * torch.eye(len(keep), dtype=cov.dtype)
        coef = torch.linalg.solve(cov_kk, cov_kr)
    else:
        coef = torch.linalg.lstsq(cov_kk, cov_kr, driver="gelsd").solution
    intercept = mean[removed] - coef.T @ mean[keep]
    return coef, intercept
