"""S = 2: mass and moments of the standard normal on a polygon, relative accuracy in the tails.

Everything here works in whitened coordinates, ``y ~ N(0, I_2)``, on a polygon given only by its
H-representation ``{y : n_i^T y <= d_i}`` (unit rows ``n_i``, or zero rows = constraints ``0 <= d_i``),
redundant rows allowed. Edges come from the H-representation: on the line ``n_i^T y = d_i``,
``y = d_i n_i + s e_i`` with ``e_i = rot90(n_i)``, every other row bounds ``s``; edge ``i`` is the
interval ``[s_lo, s_hi]`` (possibly infinite, possibly empty).

Mass (NOTES §3, Owen's T in 2-D). Decomposing the polygon into the signed triangles (origin, edge)
plus the sector at infinity, the angular parts add up to the winding number, and

    P = 1{0 in polygon} - sum_i sign(d_i) B_i,
    B_i = int_{s_lo}^{s_hi} phi(d_i) phi(s) |d_i| / (d_i^2 + s^2) ds
        = (1/2pi) int_{theta_lo}^{theta_hi} exp(-d_i^2 sec^2(theta) / 2) dtheta,

``B_i = T(|d_i|, s_hi/|d_i|) - T(|d_i|, s_lo/|d_i|)`` being the mass beyond edge i inside its angular
sector. Each ``B_i`` is computed in log space with its maximum ``exp(-rho_i^2/2)`` factored out
(``rho_i`` = distance from 0 to the edge), by 2 x 20-point Gauss-Legendre over the window where the
integrand is within e^-40 of that maximum -- in the angle variable when ``|d_i| >= 1``, in ``s`` when
``|d_i| < 1`` and the edge stays 2 away from the foot of the perpendicular, and by
``scipy.special.owens_t`` when ``|d_i| < 1`` near the foot (there B_i is not small). When the origin is
outside, only the signed sum over near and far edges remains (no big constant cancels); its
cancellation factor ``sum |B_i| / P`` is measured per item, and items whose relative error bound exceeds
``_FALLBACK_REL`` are recomputed by nested quadrature of exact 1-D slice masses (``quad1d``).

Moments by the divergence theorem (NOTES §3): ``E[y 1] = -sum_i n_i phi(d_i) Z_i`` and
``E[y y^T 1] = P I - sum_i n_i phi(d_i) Z_i (d_i n_i + m_i e_i)^T`` with ``Z_i``, ``m_i`` the 1-D
truncated-normal mass and mean of ``s`` on edge i (``interval.standard_interval_moments``).
"""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp, owens_t

from .interval import standard_interval_moments
from .quad1d import integrate_logconcave

_X, _W = np.polynomial.legendre.leggauss(20)
_LOG_2PI = np.log(2.0 * np.pi)
_LOG_SQRT_2PI = 0.5 * _LOG_2PI
_EPS = np.finfo(np.float64).eps
_WINDOW = 40.0  # nats kept below each edge integrand's maximum
_PARALLEL = 1e-12  # |n_j . e_i| below this: rows i and j are parallel
_ZERO_ROW = 0.5  # squared norm below this: a zero row
_FALLBACK_REL = 1e-12  # relative error bound above which the slice quadrature is used


def planar_edges(Nrm: np.ndarray, D: np.ndarray):
    """Edges of ``{y : Nrm y <= D}`` for each row of D (M, F): ``(s_lo, s_hi, active, empty)``."""
    F = Nrm.shape[0]
    zero = (Nrm * Nrm).sum(axis=1) < _ZERO_ROW
    E = np.stack([-Nrm[:, 1], Nrm[:, 0]], axis=1)
    G = E @ Nrm.T  # G[i, j] = n_j . e_i
    C = Nrm @ Nrm.T  # C[i, j] = n_i . n_j
    R = D[:, None, :] - D[:, :, None] * C[None]  # R[m, i, j] = d_j - d_i n_i . n_j
    upper = G > _PARALLEL
    lower = G < -_PARALLEL
    par = ~(upper | lower)
    with np.errstate(divide="ignore", invalid="ignore"):
        Q = R / np.where(par, 1.0, G)[None]
    s_hi = np.min(np.where(upper[None], Q, np.inf), axis=2)
    s_lo = np.max(np.where(lower[None], Q, -np.inf), axis=2)
    idx = np.arange(F)
    other = idx[None, :] != idx[:, None]
    tol = 1e-12 * (1.0 + np.abs(D[:, None, :]) + np.abs(D[:, :, None]))
    same = par & (C > 0.5) & other
    violated = (par & other)[None] & (R < -tol)
    duplicate = (same & (idx[None, :] < idx[:, None]))[None] & (np.abs(R) <= tol)
    blocked = np.any(violated | duplicate, axis=2)
    # a zero row with a negative offset, or two antiparallel rows that do not overlap: empty polygon
    empty = np.any(zero[None] & (D < -1e-300), axis=1)
    active = (~zero)[None] & ~blocked & (s_lo < s_hi) & ~empty[:, None]
    return s_lo, s_hi, active, empty


def _edge_log_B(h, s_lo, s_hi):
    """log B for edges with |d| = h >= 0 and s-interval [s_lo, s_hi]; returns (log_B, abs_err_rel)."""
    s_star = np.clip(0.0, s_lo, s_hi)
    half = np.sqrt(s_star * s_star + 2.0 * _WINDOW)
    wa = np.maximum(s_lo, -half)
    wb = np.minimum(s_hi, half)
    use_theta = h >= 1.0
    use_owen = (~use_theta) & (np.abs(s_star) < 2.0)
    hs = np.where(use_theta, h, 1.0)
    xa = np.where(use_theta, np.arctan(wa / hs), wa)
    xb = np.where(use_theta, np.arctan(wb / hs), wb)
    straddle = (wa < 0.0) & (wb > 0.0)
    xm = np.where(straddle, 0.0, 0.5 * (xa + xb))
    lo2 = np.stack([xa, xm], axis=-1)
    len2 = np.stack([xm - xa, xb - xm], axis=-1)
    x = lo2[..., None] + 0.5 * len2[..., None] * (_X + 1.0)  # (..., 2, 20)
    w = 0.5 * len2[..., None] * _W
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        s = np.where(use_theta[..., None, None], hs[..., None, None] * np.tan(x), x)
        hh = h[..., None, None]
        fac = np.where(use_theta[..., None, None], 1.0, hh / (hh * hh + s * s))
        val = np.exp(-0.5 * (s * s - s_star[..., None, None] ** 2)) * fac
        integral = (val * w).sum(axis=(-1, -2))
        log_B = -0.5 * (h * h + s_star * s_star) - _LOG_2PI + np.log(integral)
    rel = np.full(h.shape, 1e-15)
    if np.any(use_owen):
        ho = h[use_owen]
        with np.errstate(divide="ignore", invalid="ignore"):
            th = owens_t(ho, np.where(ho > 0, s_hi[use_owen] / ho, np.sign(s_hi[use_owen]) * np.inf))
            tl = owens_t(ho, np.where(ho > 0, s_lo[use_owen] / ho, np.sign(s_lo[use_owen]) * np.inf))
            diff = th - tl
            log_B[use_owen] = np.log(np.maximum(diff, 0.0))
            rel[use_owen] = 4.0 * _EPS * (np.abs(th) + np.abs(tl)) / np.abs(diff) + 1e-15
    return log_B, rel


def _tangent_angle(Nrm, on_line):
    """Interior angle at 0 of ``{y : n_i^T y <= 0, i in on_line}`` (2-D), in turns (fraction of 2 pi)."""
    ang = np.sort(np.arctan2(Nrm[on_line, 1], Nrm[on_line, 0]))
    if ang.size == 0:
        return 1.0
    gaps = np.diff(np.concatenate([ang, ang[:1] + 2.0 * np.pi]))
    spread = 2.0 * np.pi - gaps.max()
    return max(0.0, np.pi - spread) / (2.0 * np.pi)


def planar_log_mass(Nrm: np.ndarray, D: np.ndarray, *, fallback: bool = True, return_edges: bool = False):
    """log P(y in {Nrm y <= D}), y ~ N(0, I_2), per row of D (M, F): (log_mass, rel_err[, edges])."""
    D = np.atleast_2d(np.asarray(D, dtype=np.float64))
    M, F = D.shape
    s_lo, s_hi, active, empty = planar_edges(Nrm, D)
    h = np.abs(D)
    log_B = np.full((M, F), -np.inf)
    rel_B = np.zeros((M, F))
    if np.any(active):
        lb, rb = _edge_log_B(h[active], s_lo[active], s_hi[active])
        log_B[active] = lb
        rel_B[active] = rb
    nonzero = (Nrm * Nrm).sum(axis=1) >= _ZERO_ROW
    Dn = np.where(nonzero[None], D, np.inf)
    outside = np.any(Dn < 0.0, axis=1) | empty
    inside = np.all(Dn > 0.0, axis=1) & ~empty
    ind = np.where(inside, 1.0, 0.0)
    boundary = ~outside & ~inside
    for m in np.nonzero(boundary)[0]:
        ind[m] = _tangent_angle(Nrm, nonzero & (D[m] == 0.0))
    with np.errstate(divide="ignore"):
        log_pos = logsumexp(np.concatenate([np.log(ind)[:, None], np.where(D < 0.0, log_B, -np.inf)], axis=1),
                            axis=1)
    log_neg = logsumexp(np.where(D > 0.0, log_B, -np.inf), axis=1)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        ratio = np.exp(log_neg - log_pos)
        log_mass = log_pos + np.log1p(-np.minimum(ratio, 1.0))
        abs_terms = logsumexp(np.concatenate([np.log(ind)[:, None], log_B + np.log(rel_B + _EPS)], axis=1),
                              axis=1)
        rel_err = np.exp(abs_terms - log_mass) + 4.0 * _EPS * (1.0 + ratio) / np.maximum(1.0 - ratio, 1e-300)
    rel_err = np.where(np.isfinite(log_mass), rel_err, np.where(empty | ~np.any(active, axis=1), 0.0, np.inf))
    log_mass = np.where(empty | ~np.any(active, axis=1) & ~inside, -np.inf, log_mass)
    if fallback:
        bad = rel_err > _FALLBACK_REL
        bad &= ~empty
        if np.any(bad):
            edges_bad = (s_lo[bad], s_hi[bad], active[bad])
            log_mass[bad], rel_err[bad] = planar_slice_log_mass(Nrm, D[bad], edges_bad)
    if return_edges:
        return log_mass, rel_err, (s_lo, s_hi, active)
    return log_mass, rel_err


def planar_slice_log_mass(Nrm, D, edges=None):
    """Nested quadrature: outer ``quad1d`` along the direction of the closest point, exact 1-D slices."""
    M, F = D.shape
    if edges is None:
        edges = planar_edges(Nrm, D)[:3]
    s_lo, s_hi, active = edges
    E = np.stack([-Nrm[:, 1], Nrm[:, 0]], axis=1)
    base = D[:, :, None] * Nrm[None]  # (M, F, 2) feet of the perpendiculars
    sc = np.clip(0.0, s_lo, s_hi)
    closest = base + sc[:, :, None] * E[None]
    dist = np.where(active, np.linalg.norm(closest, axis=2), np.inf)
    k = np.argmin(dist, axis=1)
    p = closest[np.arange(M), k]
    pn = np.linalg.norm(p, axis=1)
    u = np.where(pn[:, None] > 1e-8, p / np.maximum(pn, 1e-300)[:, None], np.array([1.0, 0.0]))
    v = np.stack([-u[:, 1], u[:, 0]], axis=1)
    a = np.einsum("fk,mk->mf", Nrm, u)
    b = np.einsum("fk,mk->mf", Nrm, v)
    with np.errstate(invalid="ignore"):
        v_lo = base + np.where(np.isfinite(s_lo), s_lo, 0.0)[:, :, None] * E[None]
        v_hi = base + np.where(np.isfinite(s_hi), s_hi, 0.0)[:, :, None] * E[None]
    t_lo = np.where(active & np.isfinite(s_lo), np.einsum("mfk,mk->mf", v_lo, u), np.nan)
    t_hi = np.where(active & np.isfinite(s_hi), np.einsum("mfk,mk->mf", v_hi, u), np.nan)
    breaks = np.concatenate([t_lo, t_hi], axis=1)
    ue = np.einsum("fk,mk->mf", E, u)  # direction of +e_i along u
    up = np.any(active & ((np.isinf(s_hi) & (ue > 1e-14)) | (np.isinf(s_lo) & (ue < -1e-14))), axis=1)
    down = np.any(active & ((np.isinf(s_hi) & (ue < -1e-14)) | (np.isinf(s_lo) & (ue > 1e-14))), axis=1)
    with np.errstate(invalid="ignore"):
        lo = np.where(down, -np.inf, np.nanmin(np.where(np.isnan(breaks), np.inf, breaks), axis=1))
        hi = np.where(up, np.inf, np.nanmax(np.where(np.isnan(breaks), -np.inf, breaks), axis=1))
    lo = np.where(np.isnan(lo) | (lo == np.inf), -np.inf, lo)
    hi = np.where(np.isnan(hi) | (hi == -np.inf), np.inf, hi)
    pos = b > _PARALLEL
    neg = b < -_PARALLEL
    bsafe = np.where(pos | neg, b, 1.0)

    def logf(T):
        R = D[:, None, :] - T[:, :, None] * a[:, None, :]  # (M, Q, F)
        Q = R / bsafe[:, None, :]
        shi = np.min(np.where(pos[:, None, :], Q, np.inf), axis=2)
        slo = np.max(np.where(neg[:, None, :], Q, -np.inf), axis=2)
        feas = np.all(np.where((pos | neg)[:, None, :], True, R >= 0.0), axis=2) & (slo < shi)
        lz = np.full(T.shape, -np.inf)
        if np.any(feas):
            lz[feas] = standard_interval_moments(slo[feas], shi[feas])[0]
        return -0.5 * T * T - _LOG_SQRT_2PI + lz

    total, _, _ = integrate_logconcave(logf, lo, hi, breaks)
    return total, np.full(M, 1e-13)


def planar_moments(Nrm: np.ndarray, D: np.ndarray, moments: int = 2):
    """log mass, conditional mean (M, 2) and covariance (M, 2, 2) of N(0, I_2) on {Nrm y <= D}."""
    D = np.atleast_2d(np.asarray(D, dtype=np.float64))
    log_mass, rel, (s_lo, s_hi, active) = planar_log_mass(Nrm, D, return_edges=True)
    if moments < 1:
        return log_mass, None, None, rel
    M, F = D.shape
    E = np.stack([-Nrm[:, 1], Nrm[:, 0]], axis=1)
    log_z = np.full((M, F), -np.inf)
    m_s = np.zeros((M, F))
    if np.any(active):
        lz, ms, _ = standard_interval_moments(s_lo[active], s_hi[active])
        log_z[active], m_s[active] = lz, ms
    with np.errstate(invalid="ignore", over="ignore"):
        q = np.exp(-0.5 * D * D - _LOG_SQRT_2PI + log_z - log_mass[:, None])
    q = np.where(active & np.isfinite(q), q, 0.0)
    mean = -np.einsum("mf,fk->mk", q, Nrm)
    if moments < 2:
        return log_mass, mean, None, rel
    face = D[:, :, None] * Nrm[None] + m_s[:, :, None] * E[None]  # (M, F, 2) mean of y on each edge
    second = np.eye(2)[None] - np.einsum("mf,fj,mfk->mjk", q, Nrm, face)
    cov = second - mean[:, :, None] * mean[:, None, :]
    cov = 0.5 * (cov + np.swapaxes(cov, 1, 2))
    return log_mass, mean, cov, rel
