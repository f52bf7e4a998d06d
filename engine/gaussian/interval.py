"""Closed-form Gaussian mass and moments on an interval (S = 1), accurate in relative terms.

For ``s ~ N(0, 1)`` truncated to ``[alpha, beta]`` we need ``log Z = log(Phi(beta) - Phi(alpha))``, the
conditional mean and the conditional variance, for intervals anywhere: deep in a tail (Z = 1e-300
and far below, which the marginal of eq. 5 needs in relative terms, NOTES §3), straddling the mode,
or very narrow. Differences of CDFs lose everything in the first and last cases, so the interval is
first reflected to the side where the density grows towards its upper end ``beta``, and the
integral is written about that end, ``s = beta - u``, ``u in [0, w]``, ``w = beta - alpha``:

    Z = phi(beta) * M0,   M0 = int_0^w exp(-a u - u^2/2) du,   a = -beta,

    M0 = sqrt(pi/2) * (erfcx(a/sqrt2) - E_w erfcx((a+w)/sqrt2)),   E_w = exp(-a w - w^2/2),
    E[u] = (1 - E_w)/M0 - a,   Var[u] = 1 - E[u] (1 - E_w)/M0 - w E_w/M0   (integration by parts).

Both terms of M0 are positive, so ``log Z`` keeps full relative accuracy in any tail; the moment
formulas would lose ``eps * a^4`` relative, hence the two special paths below. Intervals that
straddle the mode use ``Z = (erf(beta/sqrt2) - erf(alpha/sqrt2))/2``, a sum of two positive terms.
Narrow intervals (``w (1 + |a|) <= 1/2``), where every closed form cancels, and deep finite tail
intervals (``a >= 4``, ``a w + w^2/2 < 40``) are integrated by 64-point Gauss-Legendre quadrature
of the smooth factor ``exp(-a u - u^2/2)``, exact to rounding there (the exponent spans at most 40).
Deep half-infinite tails take their moments from Laplace's continued fraction for the Mills ratio.
"""

from __future__ import annotations

import numba
import numpy as np
from scipy.special import erf, erfcx

from . import constants as C

_SQRT2, _HALF_LOG_2PI, _SQRT_HALF_PI = C.SQRT2, C.LOG_SQRT_2PI, C.SQRT_HALF_PI
_GL_TIERS = [((C.X12, C.W12), C.GL_SPAN_12), ((C.X24, C.W24), C.GL_SPAN_24), ((C.X64, C.W64), np.inf)]
_NARROW = C.INTERVAL_NARROW  # w (1 + |a|) below this: the interval is narrow
_DEEP = C.INTERVAL_DEEP  # a above this: moments by continued fraction or quadrature
_NEGLIGIBLE_EXPONENT = C.NEGLIGIBLE_EXPONENT  # exp(-a w - w^2/2) below e^-40: the far end does not matter
# The quadrature's sums compiled (_gl_sums: the same bits, 2.2 -> 1.4 ms on an S = 1 circle evaluate); False: the
# numpy form (the reference).
USE_COMPILED_QUADRATURE = True


def _log_phi(x):
    """log phi(x); -inf beyond |x| = 1e154, where x * x would overflow (and the density is below e^-5e307)."""
    x = np.asarray(x, dtype=np.float64)
    small = np.abs(x) < 1e154
    xs = np.where(small, x, 0.0)
    return np.where(small, -0.5 * xs * xs - _HALF_LOG_2PI, -np.inf)


def _mills_tail_moments(a, depth: int = C.MILLS_DEPTH):
    """E[u] and Var[u] for the density ``exp(-a u - u^2/2)`` on ``[0, inf)``, for a >= 4.

    Laplace's continued fraction of the Mills ratio, ``1/R(a) = a + T_1`` with ``T_k = k/(a + T_{k+1})``,
    gives ``E[u] = T_1 = 1/(a + T_2)`` and ``E[u^2] = 1 - a E[u] = T_2/(a + T_2)`` without cancellation.
    """
    t = np.zeros_like(a)
    for k in range(depth, 1, -1):
        t = k / (a + t)
    eu = 1.0 / (a + t)
    return eu, t * eu - eu * eu


@numba.njit(cache=True, nogil=True, inline="always")
def _pairwise_sum(x, k):  # pragma: no cover - compiled
    """``x[:k].sum()`` as numpy sums a contiguous row of up to 128 (eight running sums, then the rest in order)."""
    if k < 8:
        res = 0.0
        for i in range(k):
            res += x[i]
        return res
    r0, r1, r2, r3, r4, r5, r6, r7 = x[0], x[1], x[2], x[3], x[4], x[5], x[6], x[7]
    i = 8
    while i < k - (k % 8):
        r0, r1, r2, r3 = r0 + x[i], r1 + x[i + 1], r2 + x[i + 2], r3 + x[i + 3]
        r4, r5, r6, r7 = r4 + x[i + 4], r5 + x[i + 5], r6 + x[i + 6], r7 + x[i + 7]
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < k:
        res += x[i]
        i += 1
    return res


@numba.njit(cache=True, nogil=True)
def _gl_sums(f, u):  # pragma: no cover - compiled
    """Per row of the weighted integrand ``f`` at nodes ``u``: ``M0 = sum f``, ``E[u] = sum f u / M0``,
    ``Var[u] = sum f (u - E[u])^2 / M0``, each sum as numpy's (:func:`_pairwise_sum`), without temporaries."""
    n, k = f.shape
    m0, eu, vu = np.empty(n), np.empty(n), np.empty(n)
    t = np.empty(k)
    for i in range(n):
        s0 = _pairwise_sum(f[i], k)
        for j in range(k):
            t[j] = f[i, j] * u[i, j]
        mean = _pairwise_sum(t, k) / s0
        for j in range(k):
            d = u[i, j] - mean
            t[j] = f[i, j] * (d * d)
        m0[i], eu[i], vu[i] = s0, mean, _pairwise_sum(t, k) / s0
    return m0, eu, vu


def _numpy_sums(f, u):
    """:func:`_gl_sums` in numpy (``USE_COMPILED_QUADRATURE = False``; the reference)."""
    m0 = f.sum(axis=1)
    eu = (f * u).sum(axis=1) / m0
    return m0, eu, (f * (u - eu[:, None]) ** 2).sum(axis=1) / m0


def _quadrature_moments(a, w, beta):
    """log Z, mean, variance by Gauss-Legendre on ``u in [0, w]`` of ``exp(-a u - u^2/2)``.

    The number of nodes follows the span of the exponent over the interval (12, 24 or 64 nodes for
    spans up to 2, 12 or 40): the rule is exact to rounding for that smooth factor in each tier. The
    integrand is numpy's (its exp); the three sums per row are compiled (:func:`_gl_sums`) in numpy's order,
    so the numbers are those of :func:`_numpy_sums` bit for bit (tests/test_interval.py).
    """
    sums = _gl_sums if USE_COMPILED_QUADRATURE else _numpy_sums
    log_z = np.empty(a.shape)
    mean = np.empty(a.shape)
    var = np.empty(a.shape)
    span = np.abs(a) * w + 0.5 * w * w
    lower = 0.0
    for (nodes, weights), upper in _GL_TIERS:
        sel = (span > lower) & (span <= upper) if lower else span <= upper
        lower = upper
        if not sel.any():
            continue
        ws, as_ = w[sel], a[sel]
        u = 0.5 * ws[:, None] * (nodes + 1.0)
        f = np.exp(-as_[:, None] * u - 0.5 * u * u) * weights
        m0, eu, vu = sums(f, u)
        with np.errstate(divide="ignore"):  # w = 0: an interval below the rounding of its standardised ends
            log_z[sel] = _log_phi(beta[sel]) + np.log(0.5 * ws * m0)
        mean[sel] = beta[sel] - eu
        var[sel] = vu
    return log_z, mean, var


def standard_interval_moments(alpha, beta):
    """``log Z``, mean and variance of ``N(0, 1)`` truncated to ``[alpha, beta]`` (arrays, alpha < beta)."""
    alpha, beta = np.broadcast_arrays(np.asarray(alpha, dtype=np.float64), np.asarray(beta, dtype=np.float64))
    alpha, beta = alpha.astype(np.float64, copy=True), beta.astype(np.float64, copy=True)
    # Reflect so that the interval's centre is at or below 0: the density then grows towards beta
    # (or the interval straddles the mode).
    with np.errstate(invalid="ignore"):
        flip = (alpha + beta) > 0
    alpha[flip], beta[flip] = -beta[flip], -alpha[flip].copy()
    log_z = np.empty(alpha.shape)
    mean = np.empty(alpha.shape)
    var = np.empty(alpha.shape)

    w = beta - alpha
    a = -beta
    finite_w = np.isfinite(w)
    with np.errstate(invalid="ignore", over="ignore"):
        far_exponent = np.where(finite_w, a * w + 0.5 * w * w, np.inf)
        narrow = finite_w & (w * (1.0 + np.abs(a)) <= _NARROW)
    straddle = (~narrow) & (beta > 0)
    tail = (~narrow) & ~straddle
    deep = tail & (a >= _DEEP)
    quadrature = narrow | (deep & (far_exponent < _NEGLIGIBLE_EXPONENT))
    half_line = deep & ~quadrature

    if np.any(quadrature):
        log_z[quadrature], mean[quadrature], var[quadrature] = _quadrature_moments(
            a[quadrature], w[quadrature], beta[quadrature])

    if np.any(straddle):
        al, be = alpha[straddle], beta[straddle]
        z = 0.5 * (erf(be / _SQRT2) - erf(al / _SQRT2))
        fin_a, fin_b = np.isfinite(al), np.isfinite(be)
        pa = np.where(fin_a, np.exp(_log_phi(np.where(fin_a, al, 0.0))), 0.0)
        pb = np.where(fin_b, np.exp(_log_phi(np.where(fin_b, be, 0.0))), 0.0)
        apa = np.where(fin_a, np.where(fin_a, al, 0.0) * pa, 0.0)
        bpb = np.where(fin_b, np.where(fin_b, be, 0.0) * pb, 0.0)
        m = (pa - pb) / z
        log_z[straddle] = np.log(z)
        mean[straddle] = m
        var[straddle] = 1.0 + (apa - bpb) / z - m * m

    if np.any(tail & ~quadrature):
        sel = tail & ~quadrature
        at, wt, bt, fin = a[sel], w[sel], beta[sel], finite_w[sel]
        wt0 = np.where(fin, wt, 0.0)
        # a >= 0 here (beta <= 0); the exponent is clipped where it is beyond e^-1e300 anyway (no overflow)
        wc, ac = np.minimum(wt0, 1e150), np.minimum(at, 1e150)
        e_w = np.where(fin, np.exp(-ac * wc - 0.5 * wc * wc), 0.0)
        m0 = _SQRT_HALF_PI * (erfcx(at / _SQRT2) - e_w * np.where(fin, erfcx(at / _SQRT2 + wt0 / _SQRT2), 0.0))
        log_z[sel] = _log_phi(bt) + np.log(m0)
        # Moments: closed forms for a < 4 (they lose at most ~a^4 eps), the continued fraction deeper
        # (the closed forms are evaluated only where they are used: deep rows would overflow in eu * r).
        deep_here = half_line[sel]
        eu, vu = np.empty(at.shape), np.empty(at.shape)
        near = ~deep_here
        if np.any(near):
            r = (1.0 - e_w[near]) / m0[near]
            eu[near] = r - at[near]
            vu[near] = 1.0 - eu[near] * r - wt0[near] * e_w[near] / m0[near]
        if np.any(deep_here):
            eu[deep_here], vu[deep_here] = _mills_tail_moments(at[deep_here])
        mean[sel] = bt - eu
        var[sel] = vu

    mean[flip] = -mean[flip]
    np.maximum(var, 0.0, out=var)
    return log_z, mean, var


def interval_moments(mu, sd, lo, hi, moments: int = 2):
    """Mass and conditional moments of ``N(mu, sd^2)`` on ``[lo, hi]`` (broadcasting arrays).

    Returns ``(log_mass, mean, var)``; mean and var are None when ``moments`` < 1 or < 2.
    """
    mu = np.asarray(mu, dtype=np.float64)
    sd = np.asarray(sd, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        alpha = (np.asarray(lo, dtype=np.float64) - mu) / sd
        beta = (np.asarray(hi, dtype=np.float64) - mu) / sd
    log_z, m, v = standard_interval_moments(alpha, beta)
    mean = mu + sd * m if moments >= 1 else None
    var = sd * sd * v if moments >= 2 else None
    return log_z, mean, var
