"""LIAR (linear interpolation-based adaptive recovery): the removed input channels x_R of the output projection
regressed on the kept ones x_K by ridge least squares, x_R ≈ Bᵀ x_K + c, and the fit folded into the layer:
W_K' = W_K + W_R Bᵀ, b' = b + W_R c.

- ``liar``: with an intercept, from the covariance Σ over the calibration tokens:
  B = (Σ_KK + λ·mean(diag Σ_KK)·I)⁻¹ Σ_KR, c = E[x_R] − Bᵀ E[x_K]. With B = 0 this is bias compensation; when x_R is
  exactly affine in x_K and λ = 0 the repaired layer reproduces y exactly. Needs a bias on the output projection.
- ``liar_weight`` (LIAR's weight-only ablation): without an intercept, from the uncentred second moments S = E[x xᵀ]:
  B = (S_KK + λ·mean(diag S_KK)·I)⁻¹ S_KR; the bias is left alone, so any family can store it.

Damping λ: a number, or ``auto``: chosen per layer from :data:`DAMPING_GRID` by the held-out output error on the last
25% of the calibration samples, fitted on the rest, then refitted on all (``structured.liar.choose_damping``).
"""

from pruneflow.spec.registry import Entry, Param, register

DAMPING_GRID = (0.001, 0.01, 0.1, 0.3, 1.0)  # candidates for damping "auto" (× the mean diagonal)


def fit(stats, keep, removed, *, damping, consume=False):
    """(B [k, r], c [r]) float64 from the covariance. ``consume``: the statistics are used this once, so the moment is
    made in place of their Gram sums and freed before the solve."""
    return _fit(stats, keep, removed, damping, consume, centred=True)


def fit_weight(stats, keep, removed, *, damping, consume=False):
    """(B [k, r], None) float64 from the second moments."""
    return _fit(stats, keep, removed, damping, consume, centred=False)


def _fit(stats, keep, removed, damping, consume, centred):
    mean = stats.mean.cpu()
    moment = stats.take_moment(centred=centred) if consume else (stats.covariance if centred else stats.second_moment)
    moment = moment.cpu()
    # M_KK and M_KR: one gather each, no [k, n] intermediate (an FFN-wide matrix is large)
    m_kk, m_kr = moment[keep[:, None], keep], moment[keep[:, None], removed]
    del moment  # consumed: nothing else holds the [n, n] moment now, freed before the solve
    coef = ridge_solve(m_kk, m_kr, damping)
    return (coef, mean[removed] - coef.T @ mean[keep]) if centred else (coef, None)


def ridge_solve(m_kk, m_kr, damping: float):
    """B [k, r] = (M_KK + damping·mean(diag M_KK)·I)⁻¹ M_KR, overwriting ``m_kk``; minimum-norm least squares when
    ``damping`` is 0 (a singular M_KK, e.g. a dead kept channel)."""
    import torch

    if damping < 0:
        raise ValueError(f"damping {damping!r} must be >= 0")
    if damping > 0:
        m_kk.diagonal().add_(damping * m_kk.diagonal().mean())  # in place: no identity matrix
        return torch.linalg.solve(m_kk, m_kr)
    return torch.linalg.lstsq(m_kk, m_kr, driver="gelsd").solution


PARAMS = (Param("damping", "auto", float, minimum=0.0, words=("auto",),
                doc="ridge factor λ (× the mean diagonal); auto: chosen per layer on held-out calibration samples"),)
NEEDS = {"calibration", "gram"}
OPTIONS = {"grid": DAMPING_GRID}
ENTRY = register(Entry("structured_repair", "liar", "pruneflow.methods.liar:fit", needs=NEEDS, params=PARAMS, options=OPTIONS,
                       doc="removed channels regressed on the kept ones (ridge, with intercept), folded into weights and bias (LIAR)"))
WEIGHT_ENTRY = register(Entry("structured_repair", "liar_weight", "pruneflow.methods.liar:fit_weight", needs=NEEDS, params=PARAMS,
                              options=OPTIONS, doc="LIAR's fit without intercept: the kept weights only, no bias needed"))
