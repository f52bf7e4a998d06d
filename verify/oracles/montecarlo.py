"""Monte-Carlo oracles for any S, from the raw model only, with distribution-free bounds.

Marginal (eq. 5). With ``z_i ~ p(z) = N(0, Sigma_z)`` the likelihoods ``p(x | z_i)`` are bounded by
``M = max_y N(y; y, Sigma_x) = (2 pi)^(-D/2) |Sigma_x|^(-1/2)``, so ``u_i = p(x|z_i) / M`` lies in [0, 1]
and ``p(x) = M E[u]``. The confidence interval for ``E[u]`` is the tighter of Hoeffding and empirical
Bernstein (:mod:`verify.statistics`), hence a rigorous interval for ``log p(x)``.

Posterior moments (eq. 6, Prop. 2). Accepting ``z_i`` with probability ``u_i`` (rejection sampling
from the prior, envelope M) gives EXACT i.i.d. draws from ``p(z | x)``, independent of the engine.
Moments of unbounded variables are bounded by clipping: ``E[clip(z_j, -B, B)]`` has a bounded-range
confidence interval, and the clipping bias is bounded rigorously because the posterior density is
at most ``(M / p(x)) p(z)``: ``E_post[(|z_j| - B)_+] <= (M / p_lo) E_prior[(|z_j| - B)_+]`` with
``p_lo`` the lower confidence bound of p(x) (closed-form Gaussian tail integrals). Second moments
use ``|z_j z_k| <= |z|^2 / 2 <= lambda_max(Sigma_z) chi2_S / 2`` in the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from engine.network import Network

from ..statistics import mean_confidence_interval

_CHUNK = 200_000


def _log_lik_and_bound(net: Network, x: np.ndarray, Z: np.ndarray) -> tuple[np.ndarray, float]:
    L = np.linalg.cholesky(net.cov_x)
    r = np.linalg.solve(L, (x[None, :] - net.forward(Z)).T)  # (D, n) whitened residuals
    log_m = -0.5 * net.data_dim * np.log(2 * np.pi) - np.log(np.diag(L)).sum()
    return log_m - 0.5 * np.einsum("dn,dn->n", r, r), float(log_m)


@dataclass
class MarginalMC:
    log_px_est: float
    log_px_lo: float
    log_px_hi: float
    n: int
    delta: float
    accepted: np.ndarray  # (K, S) exact posterior draws
    log_envelope: float


def marginal_mc(net: Network, x: np.ndarray, n: int, delta: float, rng: np.random.Generator) -> MarginalMC:
    """Interval for log p(x) holding with probability >= 1 - delta, plus exact posterior draws."""
    x = np.asarray(x, dtype=np.float64).ravel()
    chol_z = np.linalg.cholesky(net.cov_z)
    us, acc = [], []
    log_m = 0.0
    for s in range(0, n, _CHUNK):
        k = min(_CHUNK, n - s)
        Z = rng.standard_normal((k, net.latent_dim)) @ chol_z.T
        ll, log_m = _log_lik_and_bound(net, x, Z)
        u = np.exp(np.minimum(ll - log_m, 0.0))
        us.append(u)
        acc.append(Z[rng.random(k) < u])
    u = np.concatenate(us)
    est, lo, hi = mean_confidence_interval(u, delta, 0.0, 1.0)
    with np.errstate(divide="ignore"):
        return MarginalMC(
            float(log_m + np.log(est)),
            float(log_m + np.log(lo)),
            float(log_m + np.log(hi)),
            n,
            delta,
            np.vstack(acc),
            log_m,
        )


def _gauss_abs_excess(sd: np.ndarray, B: float) -> np.ndarray:
    """E[(|y| - B)_+] for y ~ N(0, sd^2)."""
    t = B / sd
    return 2.0 * (sd * stats.norm.pdf(t) - B * stats.norm.sf(t))


def _chi2_excess(S: int, t: float) -> float:
    """E[(X - t)_+] for X ~ chi2_S."""
    return float(S * stats.chi2.sf(t, S + 2) - t * stats.chi2.sf(t, S))


@dataclass
class MomentsMC:
    mean_lo: np.ndarray
    mean_hi: np.ndarray
    second_lo: np.ndarray  # bounds on E[z z^T | x]
    second_hi: np.ndarray
    n_accepted: int
    clip: float
    bias_mean: float
    bias_second: float


def posterior_moments_mc(net: Network, mc: MarginalMC, delta: float, clip: float | None = None) -> MomentsMC:
    """Intervals for E[z|x] and E[z z^T|x] from the exact posterior draws of :func:`marginal_mc`.

    All S + S(S+1)/2 intervals hold simultaneously with probability >= 1 - delta - mc.delta (the
    clipping-bias bound uses the lower confidence bound of p(x)).
    """
    Z = mc.accepted
    S = net.latent_dim
    K = Z.shape[0]
    sd = np.sqrt(np.diag(net.cov_z))
    lam = float(np.linalg.eigvalsh(net.cov_z).max())
    B = clip if clip is not None else 5.0 * float(sd.max())
    ratio = np.exp(mc.log_envelope - mc.log_px_lo) if np.isfinite(mc.log_px_lo) else np.inf
    bias_mean = float(ratio * _gauss_abs_excess(sd, B).max())
    bias_second = float(ratio * (lam / 2) * _chi2_excess(S, 2 * B * B / lam))
    n_stats = S + S * (S + 1) // 2
    d = delta / n_stats
    mean_lo, mean_hi = np.full(S, -np.inf), np.full(S, np.inf)
    sec_lo, sec_hi = np.full((S, S), -np.inf), np.full((S, S), np.inf)
    if K >= 2:
        Zc = np.clip(Z, -B, B)
        for j in range(S):
            _, lo, hi = mean_confidence_interval(Zc[:, j], d, -B, B)
            mean_lo[j], mean_hi[j] = lo - bias_mean, hi + bias_mean
        for j in range(S):
            for k in range(j, S):
                v = np.clip(Z[:, j] * Z[:, k], -B * B, B * B)
                _, lo, hi = mean_confidence_interval(v, d, -B * B, B * B)
                sec_lo[j, k] = sec_lo[k, j] = lo - bias_second
                sec_hi[j, k] = sec_hi[k, j] = hi + bias_second
    return MomentsMC(mean_lo, mean_hi, sec_lo, sec_hi, K, B, bias_mean, bias_second)


def sign_pattern_frequencies(net: Network, part, n: int, delta: float, rng: np.random.Generator):
    """Sampled sign patterns of z ~ p(z) against the partition (Prop. 1, Lemma 3).

    Returns (unknown_patterns, counts (R,), half_width) where ``unknown_patterns`` counts sampled
    points whose sign pattern is no region's, and every region's empirical frequency is within
    ``half_width`` of its true prior mass simultaneously with probability >= 1 - delta (Hoeffding
    with a Bonferroni split over the R regions).
    """
    chol_z = np.linalg.cholesky(net.cov_z)
    Z = rng.standard_normal((n, net.latent_dim)) @ chol_z.T
    signs = net.sign_patterns(Z)
    lookup = {np.packbits(s).tobytes(): i for i, s in enumerate(part.signs)}
    uniq, inverse = np.unique(np.packbits(signs, axis=1), axis=0, return_inverse=True)
    idx = np.array([lookup.get(u.tobytes(), -1) for u in uniq], dtype=int)[np.ravel(inverse)]
    unknown = int(np.sum(idx < 0))
    counts = np.bincount(idx[idx >= 0], minlength=len(part))
    inside = np.array(
        [part[i].polytope.contains(Z[idx == i][:2000], tol=1e-9).all() for i in range(len(part))]
    )
    from ..statistics import hoeffding_half_width

    hw = hoeffding_half_width(n, delta / max(1, len(part)))
    return unknown, counts, hw, bool(inside.all())
