"""Error bars on the posterior mean and covariance of eq. 6 (Prop. 2, Sec. 4.1): ``Evaluation.posterior_mean_error``
and ``posterior_cov_error``, absolute bounds on the max-norm of the errors (over the entries of the mean and of the
covariance).

The true posterior is ``sum_r pi_r q_r`` over every region (weights ``pi_r = p_r / p``, conditionals ``q_r`` with
means ``m_r`` and covariances ``C_r``); the engine's is ``sum_I w_r q^_r`` over the pairs it integrated (weights ``w``
normalised over them, moments ``m^_r``, ``C^_r``), mean ``mu^`` and covariance ``C^ = sum_I w_r G^_r`` with
``G_r = E_r[(z - mu^)(z - mu^)^T] = C_r + (m_r - mu^)(m_r - mu^)^T``. With ``p_r = p^_r e^{d_r}`` and
``Z = p / p^ = sum_I w_r e^{d_r} + sigma`` (``sigma``: the pairs not integrated, over p^), ``|log Z| <= E``
(``log_marginal_error``) and ``pi_r = w_r e^{d_r} / Z`` on I. Split I into the resolved pairs I' (finite mass bars
``|d_r| <= err_r``) and the unresolved U, and call K the pairs not integrated. Then, exactly,

    mu - mu^ = sum_I' pi_r (m_r - m^_r) + sum_I' (pi_r - w_r)(m^_r - mu^) + sum_{U+K} pi_r (m_r - mu^)
               - sum_U w_r (m^_r - mu^)

and ``sum_I' (pi_r - w_r) x_r = (1/Z) sum_I' w_r (e^{d_r} - 1) x_r + ((1 - Z)/Z) sum_I' w_r x_r`` with
``sum_I' w_r (m^_r - mu^) = -sum_U w_r (m^_r - mu^)`` (the mean of the estimate is ``mu^``) and
``sum_I' w_r G^_r = C^ - sum_U w_r G^_r``. ``C - C^ = (S2 - S2^) - (mu - mu^)(mu - mu^)^T`` with
``S2 = E[(z - mu^)(z - mu^)^T] = sum_r pi_r G_r``, and ``G_r - G^_r = (C_r - C^_r) + e D^T + D e^T + D D^T``
(``e = m^_r - mu^``, ``D = m_r - m^_r``). So, with the pairs' own bounds ``em_r``, ``ec_r``
(``PairResult.moment_error``), ``|e^{d} - 1| <= expm1(err)`` and ``1/Z <= e^E``,

    |mu - mu^| <= e^E sum_I' w_r e^{err_r} em_r + e^E sum_I' w_r expm1(err_r) |m^_r - mu^|
                  + e^E sum_U w_r |m^_r - mu^| + T1
    |C - C^|   <= e^E sum_I' w_r e^{err_r} (ec_r + 2 |e_r| em_r + em_r^2) + e^E sum_I' w_r expm1(err_r) |G^_r|
                  + expm1(E) |C^| + e^E sum_U w_r |G^_r| + T2 + |mu - mu^|^2

(max-norms; ``|G|_max <= max_i G_ii`` for a PSD G). ``T1``, ``T2`` bound ``sum_{U+K} pi_r E_r|z_i - mu^_i|`` and
``sum_{U+K} pi_r E_r (z_i - mu^_i)^2``: pair r's term of eq. 5 is ``p_r = e^{l_r} int_omega N(z; mu_r, Sigma_r)``
(``l_r`` = ``log_norm``) and its mass is at most ``B_r`` (the bound that let it be skipped: the most violated
half-space, the closest point's half-space ``Q(d*)`` or the volume bound, ``highdim.budget``). With
``z_i - mu^_i = a + sigma t``, ``a = (mu_r - mu^)_i``, ``sigma^2 = (Sigma_r)_ii`` and ``t`` standard normal, the
image of ``N(mu_r, Sigma_r)`` restricted to omega under ``t`` has density at most ``phi`` and mass at most ``B_r``;
for ``g`` increasing in ``|t|`` the largest ``int g`` over such measures is over ``|t| >= t_B``, ``2 Q(t_B) = B_r``
(the bathtub principle), a half-space pair of 1-D truncated normal moments:

    int_omega |z_i - mu^_i| N <= |a| B + 2 sigma phi(t_B)
    int_omega (z_i - mu^_i)^2 N <= a^2 B + 4 |a| sigma phi(t_B) + 2 sigma^2 (t_B phi(t_B) + B / 2)

times ``e^{l_r} / p <= e^{l_r - log p^ + E}``. ``t_B`` is taken a little small (that only enlarges the bound).
Float64 enters through ``err_r`` (the rounding part of ``E``, ``engine.conditioning``, on the weights: at most
``expm1(2 rho)`` of their spread) and the mixture sums' rounding (``n eps`` of the sums of magnitudes). The S = 3
pairs' ``em``, ``ec`` are their stated contract (``gaussian.polytopes.solid_contract``); S = 4's come from the cones'
and the slices' bounds (``highdim.cones.moment_bounds``, ``highdim.sliced.moment_error_bounds``), S = 5's from the
cones' (``highdim.cones5._moment_bound``). The split of the integrated pairs into I' and U is free: a pair integrated
with a finite mass bar but no moment bound (RQMC, the per-region fallbacks) is counted with U, its mass at most
``p^_r e^{err_r}`` in the bathtub.
"""

from __future__ import annotations

import numpy as np
from scipy.special import log_ndtr, ndtri_exp

_LOG_SQRT_2PI = 0.5 * np.log(2.0 * np.pi)
_EPS = np.finfo(float).eps


def half_space_moments(log_w, a, sigma, log_mass):
    """Bathtub bounds (module docstring) of ``w int_omega |z - c| N`` and ``w int_omega (z - c)^2 N`` (per
    coordinate) for a pair of log weight factor ``log_w`` (..., 1), offset ``a = |mu_r - c|`` (..., S), standard
    deviation ``sigma`` (..., S) and log mass bound ``log_mass`` (..., 1) (clipped at 0). Returns two (..., S)."""
    lb = np.minimum(log_mass, 0.0)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        t = -ndtri_exp(lb - np.log(2.0))  # 2 Q(t) = B
        t = np.maximum(np.where(np.isnan(t), 0.0, t) * (1.0 - 1e-12) - 1e-12, 0.0)  # smaller t: larger bound
        lq = np.log(2.0) + log_ndtr(-t)  # log 2 Q(t) >= log B
        lphi = -0.5 * t * t - _LOG_SQRT_2PI
        wq = np.exp(log_w + lq)
        wphi = np.exp(log_w + lphi)
        tphi = np.where(wphi > 0, t * wphi, 0.0)
        first = a * wq + 2.0 * sigma * wphi
        second = a * a * wq + 4.0 * a * sigma * wphi + 2.0 * sigma * sigma * (tphi + 0.5 * wq)
    return first, second


VERTEX_ERR = 1e-9  # the partition's vertices are within this of the true ones, relative to 1 + max |v| (budget's)
_BOXES: list = [None, None]  # (weakref to the last partition, its vertex boxes)


def vertex_boxes(part):
    """(R, S) lowest and highest vertex coordinates of each region, widened by ``VERTEX_ERR (1 + max |v|)``; -inf /
    +inf for unbounded regions (rays or lineality). Kept for the last partition."""
    import weakref

    ref, boxes = _BOXES
    if ref is not None and ref() is part:
        return boxes
    R, S = len(part), part[0].polytope.vertices.shape[1] if len(part) else 0
    lo, hi = np.full((R, S), -np.inf), np.full((R, S), np.inf)
    for r, region in enumerate(part):
        P = region.polytope
        if P.rays.size or P.lineality.size or not P.vertices.size:
            continue
        pad = VERTEX_ERR * (1.0 + np.abs(P.vertices).max())
        lo[r], hi[r] = P.vertices.min(axis=0) - pad, P.vertices.max(axis=0) + pad
    _BOXES[:] = [weakref.ref(part), (lo, hi)]
    return lo, hi


REFINE_ABOVE = 1e-18  # skipped pairs whose bathtub terms exceed this get the exact half-space moments too
_SQRT_2_PI = float(np.sqrt(2.0 / np.pi))


def _facet_half_space(st, n, r, post_mean, log_w):
    """(P, S) twice: the pairs' weighted first and second absolute moments about ``post_mean`` over the half-space of
    their region's most violated facet (``distributions.log_mass_upper_bound``'s): the region lies in it, so these
    bound its terms. In the pair's whitened coordinates the half-space is ``t >= d`` along a unit normal (``t``
    standard normal, ``d`` minus the standardised slack), ``z_i - c_i = a_i + alpha_i t + beta_i s`` with ``s``
    standard normal independent of ``t``, ``alpha = -Sigma h / sqrt(h^T Sigma h)`` and
    ``beta_i^2 = Sigma_ii - alpha_i^2``; with ``int_d^inf t phi = phi(d)`` and ``int_d^inf t^2 phi = d phi(d) + Q(d)``:

        int |z_i - c_i| <= int_d^inf |a_i + alpha_i t| phi dt + |beta_i| sqrt(2 / pi) Q(d)   (split at t = -a / alpha)
        int (z_i - c_i)^2 = (a_i^2 + beta_i^2) Q(d) + 2 a_i alpha_i phi(d) + alpha_i^2 (d phi(d) + Q(d))

    (the 1-D truncated normal along the normal, the standard normal across; NOTES section 3's half-spaces), each
    plus ``1e-12`` of its terms' magnitudes for rounding. ``log_w`` (P, 1): log of the pairs' weight factors."""
    from .distributions import _scaled_half_spaces

    Hs, sc = _scaled_half_spaces(st.part, st.cov)
    if Hs.shape[1] == 0:  # no region has a facet (one region, the whole space): no half-space to refine by
        return np.full(st.mu[n, r].shape, np.inf), np.full(st.mu[n, r].shape, np.inf)
    mu = st.mu[n, r]
    slack = sc[r] - np.einsum("pfs,ps->pf", Hs[r], mu)
    f = np.argmin(np.where(np.isnan(slack), np.inf, slack), axis=1)
    d = -slack[np.arange(n.size), f][:, None]
    cov = st.cov[r]
    alpha = -np.einsum("pst,pt->ps", cov, Hs[r, f])
    beta = np.sqrt(np.maximum(np.diagonal(cov, axis1=1, axis2=2) - alpha * alpha, 0.0))
    a = mu - post_mean[n]
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        wq = np.exp(log_w + log_ndtr(-d))  # w Q(d)
        wp = np.exp(log_w - 0.5 * d * d - _LOG_SQRT_2PI)  # w phi(d)
        whole = a * wq + alpha * wp  # w int_d^inf (a + alpha t) phi
        t0 = np.where(alpha != 0.0, -a / alpha, -np.inf)
        split = t0 > d
        t0s = np.where(split, t0, d)
        wq0 = np.exp(log_w + log_ndtr(-t0s))
        wp0 = np.exp(log_w - 0.5 * t0s * t0s - _LOG_SQRT_2PI)
        tail = a * wq0 + alpha * wp0  # w int_t0^inf (a + alpha t) phi
        j1 = np.where(split, np.abs(whole - tail) + np.abs(tail), np.abs(whole))
        mag1 = np.abs(a) * wq + np.abs(alpha) * wp
        g1 = j1 + beta * _SQRT_2_PI * wq + 1e-12 * (mag1 + np.where(split, np.abs(a) * wq0 + np.abs(alpha) * wp0, 0.0))
        dwp = np.where(wp > 0, d * wp, 0.0)
        j2 = (a * a + beta * beta) * wq + 2.0 * a * alpha * wp + alpha * alpha * (dwp + wq)
        mag2 = (a * a + beta * beta) * wq + 2.0 * np.abs(a * alpha) * wp + alpha * alpha * (np.abs(dwp) + wq)
        g2 = np.maximum(j2, 0.0) + 1e-12 * mag2
    bad = ~np.isfinite(d[:, 0])
    return np.where(bad[:, None], np.inf, g1), np.where(bad[:, None], np.inf, g2)


def _skipped_terms(st, log_px, E, post_mean, skip, own_caps):
    """(N, S) per-coordinate sums of the bathtub bounds over the pairs ``skip`` (N, R) (not integrated, unresolved,
    or without a moment bound), from their log term caps ``st.term_caps`` (``log_norm + log B``) and ``own_caps``
    (N, R): ``log_norm + log_mass + err`` where the pair was integrated with a finite mass bar (its true mass is at
    most ``e^err`` times the estimate), ``+inf`` elsewhere; rows with a pair of unknown ``log_norm`` (never computed:
    screened) get ``inf``."""
    N, R, S = st.mu.shape
    T1 = np.zeros((N, S))
    T2 = np.zeros((N, S))
    n, r = np.nonzero(skip)
    if not n.size:
        return T1, T2
    ln = st.log_norm[n, r]
    caps = np.minimum(st.term_caps[n, r], ln + 0.0) if st.term_caps is not None else ln + 0.0
    caps = np.minimum(caps, own_caps[n, r])
    unknown = ~np.isfinite(ln)
    sigma = np.sqrt(np.maximum(np.diagonal(st.cov, axis1=1, axis2=2), 0.0))[r]
    a = np.abs(st.mu[n, r] - post_mean[n])
    lo, hi = vertex_boxes(st.part)
    with np.errstate(invalid="ignore", over="ignore"):
        log_w = (ln - log_px[n] + E[n])[:, None]
        f1, f2 = half_space_moments(log_w, a, sigma, (caps - ln)[:, None])
        # a bounded region: |z_i - mu^_i| <= its vertex box's farthest end, so the terms are at most B times that
        reach = np.maximum(np.abs(hi[r] - post_mean[n]), np.abs(lo[r] - post_mean[n]))
        wb = np.exp(caps - log_px[n] + E[n])[:, None]
        f1 = np.minimum(f1, np.where(np.isfinite(reach), wb * reach, np.inf))
        f2 = np.minimum(f2, np.where(np.isfinite(reach), wb * reach * reach, np.inf))
    big = ~unknown & ((f1 > REFINE_ABOVE) | (f2 > REFINE_ABOVE)).any(axis=1)
    if big.any():
        g1, g2 = _facet_half_space(st, n[big], r[big], post_mean, log_w[big])
        f1[big], f2[big] = np.minimum(f1[big], g1), np.minimum(f2[big], g2)
    f1 = np.where(unknown[:, None], np.inf, f1)
    f2 = np.where(unknown[:, None], np.inf, f2)
    np.add.at(T1, n, f1)
    np.add.at(T2, n, f2)
    return T1, T2


def posterior_moment_errors(st, w, log_px, E, post_mean, post_cov, means, covs):
    """(N,) bounds on ``max |mu - mu^|`` and ``max |C - C^|`` (module docstring) for :func:`distributions._finish`:
    ``st`` its first pass (``moment_error`` (N, R, 2), ``mass_err``, ``rounding``, ``term_caps``, ``log_norm``,
    ``mu``, ``cov``), ``w`` (N, R) the weights, ``E`` (N,) ``log_marginal_error``, the estimate's mean and
    covariance, and the pairs' conditional moments ``means`` (N, R, S), ``covs`` (N, R, S, S)."""
    N, R, S = means.shape
    me = st.moment_error
    err = st.mass_err
    rho = np.zeros(N) if st.rounding is None else st.rounding
    E = np.where(np.isnan(E), np.inf, E)
    known = np.isfinite(err)
    with np.errstate(invalid="ignore"):
        # (a pair never integrated has log_mass -inf and error 0: its cap is the term cap alone)
        own_caps = np.where(known & np.isfinite(st.log_mass), st.log_norm + st.log_mass + err, np.inf)
        # a pair without a moment bound (RQMC, per-region fallbacks) is counted with U: its true moments by the
        # bathtub over its mass bound, its estimated ones through w_r |m^_r - mu^| (module docstring: any split of
        # the integrated pairs into I' and U holds)
        known &= np.isfinite(me).all(axis=-1)
    resolved = (w > 0) & known
    unresolved = (w > 0) & ~known
    skip = ~np.isfinite(st.log_mass) | unresolved  # K and U
    with np.errstate(invalid="ignore", over="ignore"):
        dev = np.abs(means - post_mean[:, None, :]).max(axis=2)  # |m^_r - mu^| (N, R)
        diag = np.diagonal(covs, axis1=2, axis2=3)
        G = np.max(diag + (means - post_mean[:, None, :]) ** 2, axis=2)  # |G^_r|_max (N, R)
        eE = np.exp(E)
        wr = np.where(resolved, w, 0.0)
        wu = np.where(unresolved, w, 0.0)
        errr = np.where(resolved, err, 0.0)
        em = np.where(resolved, me[..., 0], 0.0)
        ec = np.where(resolved, me[..., 1], 0.0)
        wgt = wr * np.exp(errr)
        spread = np.where(resolved, dev, 0.0).max(axis=1)
        gmax = np.where(resolved, G, 0.0).max(axis=1)
        rnd = np.expm1(2.0 * rho)
        nz = (w > 0).sum(axis=1)
        T1, T2 = _skipped_terms(st, log_px, E, post_mean, skip, own_caps)
        mean_err = (eE * ((wgt * em).sum(axis=1) + (wr * np.expm1(errr) * dev).sum(axis=1) + rnd * spread
                          + (wu * dev).sum(axis=1))
                    + T1.max(axis=1) + nz * _EPS * (w * np.abs(means).max(axis=2)).sum(axis=1))
        cov_err = (eE * ((wgt * (ec + 2.0 * dev * em + em * em)).sum(axis=1) + (wr * np.expm1(errr) * G).sum(axis=1)
                        + rnd * gmax + (wu * G).sum(axis=1))
                   + np.expm1(E) * np.abs(post_cov).max(axis=(1, 2)) + T2.max(axis=1) + mean_err * mean_err
                   + 2.0 * nz * _EPS * (w * G).sum(axis=1))
    return np.where(np.isnan(mean_err), np.inf, mean_err), np.where(np.isnan(cov_err), np.inf, cov_err)
