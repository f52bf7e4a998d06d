"""S = 2: mass and moments of the standard normal on a polygon, relative accuracy in the tails.

This is ``Phi_omega(mu_omega(x), Sigma_omega)`` of Theorem 1 (eq. 5) and the conditional moments of Sec. 4.1, per
region, in the numpy reference form that the compiled kernel (``planar.kernel``) follows branch for branch.

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
``PLANAR_SLICE_FALLBACK_REL`` are recomputed by nested quadrature of exact 1-D slice masses (``quad1d``).

Moments by the divergence theorem (NOTES §3): ``E[y 1] = -sum_i n_i phi(d_i) Z_i`` and
``E[y y^T 1] = P I - sum_i n_i phi(d_i) Z_i (d_i n_i + m_i e_i)^T`` with ``Z_i``, ``m_i`` the 1-D
truncated-normal mass and mean of ``s`` on edge i (``interval.standard_interval_moments``).
"""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp, owens_t

from ..constants import (
    COV_TOL,
    EPS,
    LOG_SQRT_2PI,
    NEAR_FOOT,
    OWEN_H,
    OWEN_REL,
    PLANAR_SLICE_FALLBACK_REL,
    g_rounding,
    vertex_error_terms,
)
from ..constants import end_rounding as _end_rounding
from ..interval import standard_interval_moments
from ..quad1d import integrate_logconcave
from .kernel import _COV_UNIT_ERR
from .kernel import edges_many as _edges_many

_PARALLEL = 1e-12  # |n_j . e_i| below this: rows i and j are parallel
SLICE_RULE_REL = 1e-13  # the nested slice quadrature's own rule error, relative (quad1d; before its conditioning)
_ZERO_ROW = 0.5  # squared norm below this: a zero row
_SWEEP = np.array([-6.0, -3.0, -1.5, 0.0, 1.5, 3.0, 6.0])  # inner abscissae where slice ends split the outer rule


def planar_edges(Nrm: np.ndarray, D: np.ndarray):
    """Edges of ``{y : Nrm y <= D}`` for each row of D (M, F): ``(s_lo, s_hi, active, empty, ds_lo, ds_hi, gs_lo,
    gs_hi)``.

    ``Nrm``: the normals (F, 2) of one polygon, or per row (M, F, 2) (polygons of different regions with the same
    row count, ``polytopes._planar_flagged``); each row's numbers are those of a call with its own normals.
    ``ds_lo``, ``ds_hi`` bound the rounding of the computed ends but for ``g``'s own (:func:`end_rounding`), ``gs_lo``,
    ``gs_hi`` the rest (``constants.g_rounding``)."""
    F = Nrm.shape[-2]
    E = np.stack([-Nrm[..., 1], Nrm[..., 0]], axis=-1)
    # G[., i, j] = n_j . e_i and C[., i, j] = n_i . n_j written out elementwise, not by matmul: BLAS rounds a
    # 2-term dot product with or without an FMA depending on the shape and alignment of the stack, and a row's
    # numbers must not depend on which other polygons share its call (tests/test_gaussian_batch.py)
    Nb = Nrm if Nrm.ndim == 3 else Nrm[None]
    Eb = E if E.ndim == 3 else E[None]
    G = Eb[:, :, None, 0] * Nb[:, None, :, 0] + Eb[:, :, None, 1] * Nb[:, None, :, 1]
    C = Nb[:, :, None, 0] * Nb[:, None, :, 0] + Nb[:, :, None, 1] * Nb[:, None, :, 1]
    zero = ((Nrm * Nrm).sum(axis=-1) < _ZERO_ROW).reshape(-1, F)  # (1 or M, F)
    R = D[:, None, :] - D[:, :, None] * C  # R[m, i, j] = d_j - d_i n_i . n_j
    upper = G > _PARALLEL
    lower = G < -_PARALLEL
    par = ~(upper | lower)
    with np.errstate(divide="ignore", invalid="ignore"):
        Q = R / np.where(par, 1.0, G)
    jh = np.argmin(np.where(upper, Q, np.inf), axis=2)
    jl = np.argmax(np.where(lower, Q, -np.inf), axis=2)
    s_hi = np.take_along_axis(np.where(upper, Q, np.inf), jh[..., None], axis=2)[..., 0]
    s_lo = np.take_along_axis(np.where(lower, Q, -np.inf), jl[..., None], axis=2)[..., 0]
    Gb = np.broadcast_to(G, R.shape)
    ds_hi = end_rounding(np.take_along_axis(D, jh, axis=1), D, s_hi, np.take_along_axis(Gb, jh[..., None], 2)[..., 0])
    ds_lo = end_rounding(np.take_along_axis(D, jl, axis=1), D, s_lo, np.take_along_axis(Gb, jl[..., None], 2)[..., 0])
    with np.errstate(invalid="ignore", divide="ignore"):
        gs_hi = g_rounding(s_hi, np.take_along_axis(Gb, jh[..., None], 2)[..., 0])
        gs_lo = g_rounding(s_lo, np.take_along_axis(Gb, jl[..., None], 2)[..., 0])
    idx = np.arange(F)
    other = idx[None, :] != idx[:, None]
    tol = 1e-12 * (1.0 + np.abs(D[:, None, :]) + np.abs(D[:, :, None]))
    same = par & (C > 0.5) & other
    violated = (par & other) & (R < -tol)
    duplicate = (same & (idx[None, :] < idx[:, None])) & (np.abs(R) <= tol)
    blocked = np.any(violated | duplicate, axis=2)
    # a zero row with a negative offset, or two antiparallel rows that do not overlap: empty polygon
    empty = np.any(zero & (D < -1e-300), axis=1)
    active = ~zero & ~blocked & (s_lo < s_hi) & ~empty[:, None]
    return s_lo, s_hi, active, empty, ds_lo, ds_hi, gs_lo, gs_hi


def end_rounding(d_j, d_i, s, g):
    """Rounding bound of an edge end ``s = (d_j - d_i n_i.n_j) / g`` (``g = n_j . e_i``), on arrays."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return _end_rounding(d_j, d_i, s, g)


def vertex_log_error(h, s, ds):
    """log of the mass error that an error ``ds`` in an edge end ``s`` causes in the signed edge sum.

    Consecutive edges compute their shared vertex separately, so their angular sectors may overlap or
    leave a gap of angle ``dtheta = ds h / (h^2 + s^2)``, whose Gaussian mass beyond the vertex is
    ``exp(-(h^2 + s^2) / 2) dtheta / (2 pi)``: an absolute error that a small polygon's mass (a
    difference of much larger sector masses) does not scale down. Infinite ends contribute nothing.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        exponent, factor = vertex_error_terms(h, s, ds)
        out = exponent + np.log(factor)
    return np.where(np.isfinite(s) & (h > 0), out, -np.inf)




def _edge_log_B(h, s_lo, s_hi):
    """log B for edges with |d| = h >= 0 and s-interval [s_lo, s_hi]; returns (log_B, rel_err).

    Three rules, each used where it keeps ~1e-15 relative accuracy:
    * Owen's T (``h < 8``): ``B = T(h, s_hi/h) - T(h, s_lo/h)``, a sum of two positive terms when the
      edge straddles the foot ``s = 0``, a difference otherwise (used while its cancellation is < 1e-14,
      and only for one-sided edges within ``NEAR_FOOT`` of the origin, where the graded rule needs many
      panels to resolve the poles ``s = +-i h``);
    * edges straddling the foot with ``h >= 8``: 2 x 20-point Gauss-Legendre in the angle over the
      40-nat window (the integrand ``exp(-h^2 tan^2 / 2)`` is far from the poles of tan there);
    * edges on one side of the foot: ``s = a + u``, ``B = e^{-(h^2+a^2)/2}/(2 pi) int exp(-a u - u^2/2)
      h / (h^2 + (a+u)^2) du`` by 20-point Gauss-Legendre on geometric panels
      ``[rho (2^k - 1), rho (2^{k+1} - 1)]`` (``rho = sqrt(a^2 + h^2)``, the distance to the poles
      ``s = +-i h``, at most ``GAUSS_PANEL``; more than 8 panels only for ``rho < NEAR_FOOT``), so every panel is
      shorter than its distance to the poles and than the Gaussian factor's own scale; cut at 40 nats.
    """
    h = np.asarray(h, dtype=np.float64)
    s_lo = np.asarray(s_lo, dtype=np.float64)
    s_hi = np.asarray(s_hi, dtype=np.float64)
    log_B = np.full(h.shape, -np.inf)
    rel = np.full(h.shape, 1e-15)
    straddle = (s_lo < 0.0) & (s_hi > 0.0)
    with np.errstate(invalid="ignore"):
        near = np.minimum(np.abs(s_lo), np.abs(s_hi))
        small = (h < OWEN_H) & (straddle | (h * h + near * near < NEAR_FOOT ** 2))
    done = np.zeros(h.shape, dtype=bool)
    if np.any(small):
        ho = h[small]
        with np.errstate(divide="ignore", invalid="ignore"):
            th = owens_t(ho, np.where(ho > 0, s_hi[small] / ho, np.sign(s_hi[small]) * np.inf))
            tl = owens_t(ho, np.where(ho > 0, s_lo[small] / ho, np.sign(s_lo[small]) * np.inf))
            diff = th - tl
            r_o = 4.0 * EPS * (np.abs(th) + np.abs(tl)) / np.abs(diff) + 1e-15
            good = (straddle[small] | (r_o <= OWEN_REL)) & (diff > 0)
        sel = np.nonzero(small)[0][good]
        log_B[sel] = np.log(diff[good])
        rel[sel] = r_o[good]
        done[sel] = True
    theta = ~done & straddle
    if np.any(theta):
        log_B[theta] = _edge_theta(h[theta], s_lo[theta], s_hi[theta])
    side = ~done & ~straddle
    if np.any(side):
        log_B[side] = _edge_graded(h[side], s_lo[side], s_hi[side])
    return log_B, rel


def _edge_theta(h, s_lo, s_hi):
    """Straddling edges, h >= 8: Gauss-Legendre in the angle, split at the foot (``planar.kernel.edge_theta``,
    one compiled definition for both paths)."""
    return _edges_many(h, s_lo, s_hi, True)


def _edge_graded(h, s_lo, s_hi):
    """Edges on one side of the foot: geometric panels in s from the end closest to the foot
    (``planar.kernel.edge_graded``)."""
    return _edges_many(h, s_lo, s_hi, False)


def _tangent_angle(Nrm, on_line):
    """Interior angle at 0 of ``{y : n_i^T y <= 0, i in on_line}`` (2-D), in turns (fraction of 2 pi)."""
    ang = np.sort(np.arctan2(Nrm[on_line, 1], Nrm[on_line, 0]))
    if ang.size == 0:
        return 1.0
    gaps = np.diff(np.concatenate([ang, ang[:1] + 2.0 * np.pi]))
    spread = 2.0 * np.pi - gaps.max()
    return max(0.0, np.pi - spread) / (2.0 * np.pi)


def planar_log_mass(Nrm: np.ndarray, D: np.ndarray, *, fallback: bool = True, return_edges: bool = False):
    """log P(y in {Nrm y <= D}), y ~ N(0, I_2), per row of D (M, F): (log_mass, rel_err[, edges, rel_decide]).
    ``Nrm``: (F, 2), or per row (M, F, 2) (see :func:`planar_edges`). ``rel_decide``: the bar without the
    conditioning terms (``g_rounding``, the slices' ends), on which the callers' fallback decisions stay."""
    D = np.atleast_2d(np.asarray(D, dtype=np.float64))
    M, F = D.shape
    s_lo, s_hi, active, empty, ds_lo, ds_hi, gs_lo, gs_hi = planar_edges(Nrm, D)
    h = np.abs(D)
    log_B = np.full((M, F), -np.inf)
    rel_B = np.zeros((M, F))
    if np.any(active):
        lb, rb = _edge_log_B(h[active], s_lo[active], s_hi[active])
        log_B[active] = lb
        rel_B[active] = rb
    nonzero = ((Nrm * Nrm).sum(axis=-1) >= _ZERO_ROW).reshape(-1, F)  # (1 or M, F)
    Dn = np.where(nonzero, D, np.inf)
    outside = np.any(Dn < 0.0, axis=1) | empty
    inside = np.all(Dn > 0.0, axis=1) & ~empty
    ind = np.where(inside, 1.0, 0.0)
    boundary = ~outside & ~inside
    per_row = Nrm.ndim == 3
    for m in np.nonzero(boundary)[0]:
        i = m if per_row else 0
        ind[m] = _tangent_angle(Nrm[m] if per_row else Nrm, nonzero[i] & (D[m] == 0.0))
    with np.errstate(divide="ignore"):
        log_pos = logsumexp(np.concatenate([np.log(ind)[:, None], np.where(D < 0.0, log_B, -np.inf)], axis=1),
                            axis=1)
    log_neg = logsumexp(np.where(D > 0.0, log_B, -np.inf), axis=1)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        ratio = np.exp(log_neg - log_pos)
        log_mass = log_pos + np.log1p(-np.minimum(ratio, 1.0))
        # the indicator is exact; the rounding of 1 - sum B is the (1 + ratio) term below
        ends = np.where(active[..., None], np.stack([vertex_log_error(h, s_lo, ds_lo),
                                                     vertex_log_error(h, s_hi, ds_hi)], axis=-1), -np.inf)
        abs_terms = logsumexp(np.concatenate([log_B + np.log(rel_B + EPS), ends.reshape(M, 2 * F)], axis=1), axis=1)
        rel_err = np.exp(abs_terms - log_mass) + 4.0 * EPS * (1.0 + ratio) / np.maximum(1.0 - ratio, 1e-300)
        # g's rounding (constants.g_rounding): reported, not a reason for the slices (they are as conditioned)
        g_ends = np.where(active[..., None], np.stack([vertex_log_error(h, s_lo, gs_lo),
                                                       vertex_log_error(h, s_hi, gs_hi)], axis=-1), -np.inf)
        cond = np.exp(logsumexp(g_ends.reshape(M, 2 * F), axis=1) - log_mass)
    rel_err = np.where(np.isfinite(log_mass), rel_err, np.where(empty | ~np.any(active, axis=1), 0.0, np.inf))
    log_mass = np.where(empty | ~np.any(active, axis=1) & ~inside, -np.inf, log_mass)
    bad = (rel_err > PLANAR_SLICE_FALLBACK_REL) & ~empty if fallback else np.zeros(M, dtype=bool)
    # decisions (the slices here, the covariance's redo in planar_moments) on the bar without the conditioning terms,
    # as before 2026-12-08 (the same paths, the same bits); the bar reported has them
    rel_decide = rel_err.copy()
    rel_err = np.where(np.isfinite(log_mass) & ~bad, rel_err + cond, rel_err)
    if np.any(bad):
        edges_bad = (s_lo[bad], s_hi[bad], active[bad])
        log_mass[bad], rel_err[bad] = planar_slice_log_mass(Nrm[bad] if Nrm.ndim == 3 else Nrm, D[bad], edges_bad)
        rel_decide[bad] = SLICE_RULE_REL
    if return_edges:
        return log_mass, rel_err, (s_lo, s_hi, active), rel_decide
    return log_mass, rel_err


def _slice_problem(Nrm, D, edges):
    """Outer direction, bounds and slice function of the nested quadrature (rows: (F, 2) or (M, F, 2)).

    The outer variable is ``t = u^T y`` with ``u`` the direction of the polygon's point closest to the
    origin (any direction when the origin is inside); for each ``t`` the slice is the interval of
    ``v = w^T y`` (``w = rot90(u)``) allowed by every row. Returns ``(u, w, lo, hi, breaks, slices, ab)``
    where ``slices(T)`` maps (M, Q) abscissae to ``(v_lo, v_hi, feasible)`` and ``ab = (a, b)`` (M, F) are the rows
    in the ``(t, v)`` frame (``n_f . u``, ``n_f . w``).
    """
    M, F = D.shape
    Nrm = np.broadcast_to(Nrm, (M, F, 2)) if Nrm.ndim == 2 else Nrm
    s_lo, s_hi, active = edges
    E = np.stack([-Nrm[..., 1], Nrm[..., 0]], axis=-1)
    base = D[:, :, None] * Nrm  # (M, F, 2) feet of the perpendiculars
    sc = np.clip(0.0, s_lo, s_hi)
    closest = base + sc[:, :, None] * E
    dist = np.where(active, np.linalg.norm(closest, axis=2), np.inf)
    k = np.argmin(dist, axis=1)
    p = closest[np.arange(M), k]
    pn = np.linalg.norm(p, axis=1)
    u = np.where(pn[:, None] > 1e-8, p / np.maximum(pn, 1e-300)[:, None], np.array([1.0, 0.0]))
    v = np.stack([-u[:, 1], u[:, 0]], axis=1)
    a = np.einsum("mfk,mk->mf", Nrm, u)
    b = np.einsum("mfk,mk->mf", Nrm, v)
    with np.errstate(invalid="ignore"):
        v_lo = base + np.where(np.isfinite(s_lo), s_lo, 0.0)[:, :, None] * E
        v_hi = base + np.where(np.isfinite(s_hi), s_hi, 0.0)[:, :, None] * E
    t_lo = np.where(active & np.isfinite(s_lo), np.einsum("mfk,mk->mf", v_lo, u), np.nan)
    t_hi = np.where(active & np.isfinite(s_hi), np.einsum("mfk,mk->mf", v_hi, u), np.nan)
    breaks = np.concatenate([t_lo, t_hi], axis=1)
    # where a slice end sweeps across the inner Gaussian (v = 0, +-1.5, +-3, +-6), split the outer
    # integral: an end moving fast in v (|a / b| large: a thin polygon cut at an angle) makes the slice
    # mass vary on a t-scale of |b / a| << 1, which one Gauss-Legendre panel per vertex gap misses
    # (seen: 2.5e-6 relative on a long thin triangle)
    fast = active & (np.abs(a) > 0.3 * np.abs(b)) & (np.abs(b) > _PARALLEL)
    with np.errstate(invalid="ignore", divide="ignore"):
        sweep = (D[:, :, None] - _SWEEP[None, None, :] * b[:, :, None]) / np.where(fast, a, 1.0)[:, :, None]
    sweep = np.where(fast[:, :, None], sweep, np.nan).reshape(M, -1)
    ue = np.einsum("mfk,mk->mf", E, u)  # direction of +e_i along u
    up = np.any(active & ((np.isinf(s_hi) & (ue > 1e-14)) | (np.isinf(s_lo) & (ue < -1e-14))), axis=1)
    down = np.any(active & ((np.isinf(s_hi) & (ue < -1e-14)) | (np.isinf(s_lo) & (ue > 1e-14))), axis=1)
    with np.errstate(invalid="ignore"):
        lo = np.where(down, -np.inf, np.nanmin(np.where(np.isnan(breaks), np.inf, breaks), axis=1))
        hi = np.where(up, np.inf, np.nanmax(np.where(np.isnan(breaks), -np.inf, breaks), axis=1))
    lo = np.where(np.isnan(lo) | (lo == np.inf), -np.inf, lo)
    hi = np.where(np.isnan(hi) | (hi == -np.inf), np.inf, hi)
    with np.errstate(invalid="ignore"):
        sweep = np.where((sweep > lo[:, None]) & (sweep < hi[:, None]), sweep, np.nan)
    breaks = np.concatenate([breaks, sweep], axis=1)
    pos = b > _PARALLEL
    neg = b < -_PARALLEL
    bsafe = np.where(pos | neg, b, 1.0)

    def slices(T):
        R = D[:, None, :] - T[:, :, None] * a[:, None, :]  # (M, Q, F)
        Q = R / bsafe[:, None, :]
        shi = np.min(np.where(pos[:, None, :], Q, np.inf), axis=2)
        slo = np.max(np.where(neg[:, None, :], Q, -np.inf), axis=2)
        feas = np.all(np.where((pos | neg)[:, None, :], True, R >= 0.0), axis=2) & (slo < shi)
        return slo, shi, feas

    return u, v, lo, hi, breaks, slices, (a, b)


def _slice_log_density(slices):
    """``t -> log(phi(t) P(slice at t))``: the outer integrand of the nested slice quadrature."""

    def logf(T):
        slo, shi, feas = slices(T)
        lz = np.full(T.shape, -np.inf)
        if np.any(feas):
            lz[feas] = standard_interval_moments(slo[feas], shi[feas])[0]
        return -0.5 * T * T - LOG_SQRT_2PI + lz

    return logf


def planar_slice_log_mass(Nrm, D, edges=None):
    """Nested quadrature: outer ``quad1d`` along the direction of the closest point, exact 1-D slices. Returns
    ``(log_mass, rel_err)``: the rule's ``SLICE_RULE_REL`` plus the slice ends' conditioning
    (:func:`slice_conditioning`)."""
    D = np.atleast_2d(np.asarray(D, dtype=np.float64))
    if edges is None:
        edges = planar_edges(Nrm, D)[:3]
    _, _, lo, hi, breaks, slices, ab = _slice_problem(Nrm, D, edges)

    total, nodes, lw = integrate_logconcave(_slice_log_density(slices), lo, hi, breaks)
    return total, SLICE_RULE_REL + slice_conditioning(D, ab, slices, total, nodes, lw)


def _end_error(D, a, b, T, pick, rows):
    """Rounding bound of the slice ends ``Q_f = (D_f - T a_f) / b_f`` at the abscissae ``T`` (M, Q), the rows
    ``rows`` (M, Q) of ``pick`` (M, F) attaining them: ``eps (4 |T| + |D_f| + 3 |Q_f|) / |b_f|`` (see
    :func:`slice_conditioning`); 0 where no row bounds the end."""
    bs = np.where(pick, np.abs(b), 1.0)
    q = np.abs(D[:, None, :] - T[:, :, None] * a[:, None, :]) / bs[:, None, :]
    err = EPS * (4.0 * np.abs(T)[:, :, None] + np.abs(D)[:, None, :] + 3.0 * q) / bs[:, None, :]
    err = np.where(pick[:, None, :], err, 0.0)
    return np.take_along_axis(err, rows[..., None], axis=2)[..., 0]


def slice_conditioning(D, ab, slices, total, nodes, lw):
    """Relative error bound (M,) of the nested slice quadrature from the rounding of its slice ends and frame.

    The slices are exact 1-D masses ``Z(t) = Phi(v_hi) - Phi(v_lo)`` of computed ends ``v = Q_f(t) = (D_f - t a_f) /
    b_f`` (the rows in the frame ``(u, w)`` of :func:`_slice_problem`, ``a_f = n_f . u``, ``b_f = n_f . w``; ``Nrm``,
    ``D`` exact). Each 2-term dot product is off by at most ``2 eps`` (unit rows and frame), so, to first order,
    ``|dQ_f| <= (|t| |da_f| + eps |t a_f| + eps |D_f - t a_f| + |Q_f| |db_f|) / |b_f| + eps |Q_f| <= eps (4 |t| + |D_f|
    + 3 |Q_f|) / |b_f|``: where two nearly parallel rows bound a thin slice, its relative error ``|dQ| phi(v) / Z``
    grows like ``1 / sin(angle)`` (a wedge of angle 1e-6 at ``(6, 0.05)`` was 1.2e-9 off under the former flat
    1e-13: tests/test_s2_shallow_vertex.py). The mass moves by ``int phi(t) (phi(v_hi) |dv_hi| + phi(v_lo) |dv_lo|)
    dt``, summed here on the outer rule's own nodes as ``sum_k w_k phi(t_k) Z_k rho_k / P``, ``rho_k`` the node's
    relative end error (the integrand is as smooth between the breaks as the mass's own). The frame ``u`` is unit
    only to ``|u|^2 - 1 <= 4 eps``: the density ``phi(t) phi(v)`` is then off by ``2 eps (t^2 + v^2)`` relative plus
    the Jacobian's ``4 eps``; ``E[v^2 | slice] <= 2 + dist(slice, 0)^2`` (a truncated normal on ``[c, hi]``, ``c >=
    0``, is stochastically below the one on ``[c, inf)``, whose second moment is ``1 + c lambda(c) <= 2 + c^2``)."""
    a, b = ab
    slo, shi, feas = slices(nodes)
    pos = b > _PARALLEL
    neg = b < -_PARALLEL
    R = D[:, None, :] - nodes[:, :, None] * a[:, None, :]
    Q = R / np.where(pos | neg, b, 1.0)[:, None, :]
    jh = np.argmin(np.where(pos[:, None, :], Q, np.inf), axis=2)
    jl = np.argmax(np.where(neg[:, None, :], Q, -np.inf), axis=2)
    dhi = np.where(np.isfinite(shi), _end_error(D, a, b, nodes, pos, jh), 0.0)
    dlo = np.where(np.isfinite(slo), _end_error(D, a, b, nodes, neg, jl), 0.0)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        lz = np.full(nodes.shape, -np.inf)
        if np.any(feas):
            lz[feas] = standard_interval_moments(slo[feas], shi[feas])[0]
        phi_ends = (np.where(np.isfinite(shi), np.exp(-0.5 * shi * shi), 0.0) * dhi
                    + np.where(np.isfinite(slo), np.exp(-0.5 * slo * slo), 0.0) * dlo)
        rho = np.exp(np.log(phi_ends) - LOG_SQRT_2PI - lz)
        near = np.where(slo > 0.0, slo, np.where(shi < 0.0, -shi, 0.0))
        rho = rho + EPS * (4.0 + 2.0 * nodes * nodes + 2.0 * (2.0 + near * near))
        w = np.exp(lw - total[:, None])
        out = np.sum(np.where(feas & (w > 0.0), w * rho, 0.0), axis=1)
    return np.where(np.isfinite(total), out, 0.0)


def planar_slice_moments(Nrm, D, edges=None):
    """Mass, mean and covariance of N(0, I_2) on ``{Nrm y <= D}`` by nested quadrature, without cancellation.

    Same slices as :func:`planar_slice_log_mass` (``t`` along the closest point, exact 1-D slices in
    ``v``). The covariance is the law of total variance, ``Cov = E_t[Cov(y | t)] + Cov_t(E[y | t])``:
    the inner variance ``Var(v | t)`` comes from ``interval.standard_interval_moments`` (relative
    accuracy in any tail) and the outer terms are weighted sums of squares about the mean, so nothing
    cancels however small the covariance is compared with the distance to the origin (deep tails and
    small regions, where ``E[yy^T] - m m^T`` of the divergence-theorem formula loses ``|m|^2 / lambda``).
    ``Nrm`` is (F, 2) or per row (M, F, 2). Returns ``(log_mass, mean (M, 2), cov (M, 2, 2))``.
    """
    D = np.atleast_2d(np.asarray(D, dtype=np.float64))
    if edges is None:
        edges = planar_edges(Nrm, D)[:3]
    u, v, lo, hi, breaks, slices, _ = _slice_problem(Nrm, D, edges)

    total, nodes, lw = integrate_logconcave(_slice_log_density(slices), lo, hi, breaks)
    slo, shi, feas = slices(nodes)
    mv = np.zeros(nodes.shape)
    vv = np.zeros(nodes.shape)
    if np.any(feas):
        _, mv[feas], vv[feas] = standard_interval_moments(slo[feas], shi[feas])
    with np.errstate(invalid="ignore"):
        w = np.exp(lw - total[:, None])
    w = np.where(feas & np.isfinite(w), w, 0.0)
    w = w / np.maximum(w.sum(axis=1, keepdims=True), 1e-300)
    mt = (w * nodes).sum(axis=1)
    mvv = (w * mv).sum(axis=1)
    dt = nodes - mt[:, None]
    dv = mv - mvv[:, None]
    ctt = (w * dt * dt).sum(axis=1)
    ctv = (w * dt * dv).sum(axis=1)
    cvv = (w * (vv + dv * dv)).sum(axis=1)
    mean = mt[:, None] * u + mvv[:, None] * v
    U = np.stack([u, v], axis=2)  # (M, 2, 2): columns u, v
    C = np.stack([np.stack([ctt, ctv], 1), np.stack([ctv, cvv], 1)], 1)
    cov = np.einsum("mij,mjk,mlk->mil", U, C, U)
    fin = np.isfinite(total)
    return total, np.where(fin[:, None], mean, 0.0), np.where(fin[:, None, None], cov, 0.0)


def planar_moments(Nrm: np.ndarray, D: np.ndarray, moments: int = 2, *, relative: bool = True):
    """log mass, conditional mean (M, 2) and covariance (M, 2, 2) of N(0, I_2) on {Nrm y <= D}; covariances
    accurate relative to their smallest eigenvalue (``relative``) or to the whitened unit (:func:`cancels`).
    ``Nrm``: (F, 2), or per row (M, F, 2) (see :func:`planar_edges`)."""
    D = np.atleast_2d(np.asarray(D, dtype=np.float64))
    log_mass, rel, (s_lo, s_hi, active), rel_decide = planar_log_mass(Nrm, D, return_edges=True)
    if moments < 1:
        return log_mass, None, None, rel
    mean, cov = edge_divergence_moments(np.broadcast_to(Nrm, D.shape + (2,)), D, s_lo, s_hi, active, log_mass,
                                        moments)
    if moments < 2:
        return log_mass, mean, None, rel
    redo = cancels(mean, cov, log_mass, rel_decide, relative=relative)
    if np.any(redo):
        _, mean[redo], cov[redo] = planar_slice_moments(Nrm[redo] if Nrm.ndim == 3 else Nrm, D[redo],
                                                        (s_lo[redo], s_hi[redo], active[redo]))
    return log_mass, mean, cov, rel


def edge_divergence_moments(Nrm, D, s_lo, s_hi, active, log_mass, moments: int = 2):
    """Conditional mean and covariance of ``y ~ N(0, I_2)`` on a polygon by the divergence theorem.

    NOTES §3 in two dimensions: ``E[y 1] = -sum_i n_i phi(d_i) P(edge_i)`` and
    ``E[yy^T 1] = P I - sum_i n_i phi(d_i) E[y 1 | edge_i]^T``, each edge a 1-D interval problem
    ``[s_lo, s_hi]`` along its direction. Shapes: ``Nrm`` (P, F, 2), ``D``, ``s_lo``, ``s_hi``,
    ``active`` (P, F), ``log_mass`` (P,). Returns ``(mean (P, 2), cov (P, 2, 2) or None)``.
    """
    log_z = np.full(D.shape, -np.inf)
    m_s = np.zeros(D.shape)
    if np.any(active):
        lz, ms, _ = standard_interval_moments(s_lo[active], s_hi[active])
        log_z[active], m_s[active] = lz, ms
    with np.errstate(invalid="ignore", over="ignore"):
        q = np.exp(-0.5 * D * D - LOG_SQRT_2PI + log_z - log_mass[:, None])
    q = np.where(active & np.isfinite(q), q, 0.0)
    mean = -np.einsum("pf,pfk->pk", q, Nrm)
    if moments < 2:
        return mean, None
    E = np.stack([-Nrm[..., 1], Nrm[..., 0]], axis=-1)
    face = D[:, :, None] * Nrm + m_s[:, :, None] * E  # (P, F, 2) mean of y on each edge
    second = np.eye(2)[None] - np.einsum("pf,pfj,pfk->pjk", q, Nrm, face)
    cov = second - mean[:, :, None] * mean[:, None, :]
    return mean, 0.5 * (cov + np.swapaxes(cov, 1, 2))


_COV_TOL = COV_TOL  # estimated relative covariance error above which the slice moments replace it


def cancels(mean, cov, log_mass, rel=0.0, loosen=1.0, *, relative: bool = True):
    """Pairs whose divergence-theorem covariance ``E[yy^T] - m m^T`` cancels beyond ``_COV_TOL``.

    The relative error of the mass (common to every facet term) becomes an error ``eps (1 + |m|^2)`` of
    the covariance, so the relative error is ``eps * kappa`` (``eps``: the mass's error bound ``rel``
    plus ``_COV_UNIT_ERR``) with ``kappa = (1 + |m|^2) / lambda_min`` (``kappa = 1 + |m|^2`` under
    ``relative=False``, absolute accuracy: relative to the untruncated Sigma_omega, the whitened unit, which is
    what the mixture of eq. 6 needs for a region of small posterior weight).
    Measured against mpmath (tests/test_s2_against_quadrature.py) the error stays below
    ``_COV_UNIT_ERR * kappa``; pairs above ``_COV_TOL`` (times ``loosen``, per pair, for callers that need
    less accuracy on pairs of small posterior weight) are recomputed by :func:`planar_slice_moments`.
    """
    spread = 1.0 + (mean * mean).sum(axis=1)
    tr = cov[:, 0, 0] + cov[:, 1, 1]
    det = cov[:, 0, 0] * cov[:, 1, 1] - cov[:, 0, 1] * cov[:, 1, 0]
    with np.errstate(invalid="ignore", divide="ignore"):
        lam = det / (0.5 * tr + np.sqrt(np.maximum(0.25 * tr * tr - det, 0.0)))  # smaller eigenvalue
        scale = lam if relative else np.ones_like(lam)
        kappa = np.where(lam > 0.0, spread / scale, np.inf)  # lam <= 0: cancelled
    return np.isfinite(log_mass) & ~((_COV_UNIT_ERR + rel) * kappa <= _COV_TOL * loosen)
