"""S' = 5: Gaussian mass of a polyhedron as a 1-D scale mixture of the S' = 4 cone decomposition of its facets.

Theorem 1 (eq. 5) needs ``Phi_omega(mu, Sigma_omega)``: in whitened, pointed coordinates the mass of ``y ~ N(0, I_5)``
on ``P = {Nrm y <= D}`` (unit rows ``n_i``). As at S' = 4 (``cones``, NOTES §6), along each ray from the mean P is
an interval entered through facets with ``d_i < 0`` and left through those with ``d_i > 0``, so

    P = 1{0 in P} - sum_i sign(d_i) B_i,     B_i = mass of {lam f : f in facet F_i, lam >= 1}.

Write ``y = t n_i + v`` (``v`` in the facet's hyperplane, measured from the foot ``f_i = d_i n_i``). A point of the
cone has ``t >= |d_i|`` and ``v in (t / |d_i|) F_i'``, ``F_i'`` the facet in its hyperplane seen from its foot, so

    B_i = int_{|d_i|}^inf phi(t) M_4((t / |d_i|) F_i') dt,

``M_4`` the standard 4-D Gaussian mass, which ``cones.cone_log_mass`` computes by the S' = 4 flag decomposition
(facet > ridge > edge: the S' = 5 flag facet > 3-face > 2-face > edge, its terms ``Q``, ``W``, one 1-D integral per
edge flag, all scaled by ``t / |d_i|``). The flags of ``F_i'`` do not change with the scale (one ``cone_shape`` per
facet), so each node of the outer rule is one more row of the S' = 4 batch. Per S' = 5 flag this is a 2-D smooth
integral (the outer ``t`` and the S' = 4 edge integral): the (S' - 2)-dimensional count of NOTES §6 less the one
integral the S' = 4 arctangent exchange removes.

The outer integral is a graded Gauss-Legendre rule in ``t`` (geometric panels from ``|d_i|``, widths capped where the
Gaussian factor changes by more than ``_DMAX`` nats, cut ``WINDOW`` nats down), evaluated with 16 and with 8 nodes
per panel; ``|G16 - G8|`` (the 8-node rule's error, an over-estimate of the 16-node rule's for these analytic
integrands) plus the S' = 4 bars and the window goes into the bar. Pairs with a flagged S' = 4 row, the mean on a
facet plane, or a bar above the caller's tolerance are flagged (the caller keeps its QMC route for them).
"""

from __future__ import annotations

import math

import numpy as np

from .cones import cone_log_mass, cone_moments, cone_shape

_G16 = np.polynomial.legendre.leggauss(16)
_G8 = np.polynomial.legendre.leggauss(8)
WINDOW = 45.0  # nats of the Gaussian factor kept beyond each facet's plane (the rest bounded into the bar)
_DMAX = 8.0  # largest change of the integrand's Gaussian bound across one outer panel (4: bars 1e-11, 1.5x the
# time; 16: bars up to 2.3e-10 on the 5-D boxes)
_INC = 1e-9  # vertex-facet incidence tolerance (relative to 1 + |D|)
_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)
_EPS = np.finfo(float).eps
USE_CONES5 = True  # False: S' = 5 pairs by RQMC alone (``polytopes.solve_high_dimensional``), the route before


def facet_in_plane(Nrm, D, Yv, Yr, i):
    """Facet ``i`` of ``P = {Nrm y <= D}`` (vertices ``Yv`` (V, 5), unit rays ``Yr`` (R, 5)) in an orthonormal basis of
    its hyperplane with the foot ``D_i n_i`` at the origin: unit rows ``(F', 4)``, offsets, vertices, unit rays."""
    n = Nrm[i]
    U = np.linalg.svd(n[None, :])[2][1:].T  # (5, 4) orthonormal basis of n's complement
    foot = D[i] * n
    rows = Nrm @ U
    nrm = np.linalg.norm(rows, axis=1)
    keep = (nrm > 1e-12) & (np.arange(Nrm.shape[0]) != i)
    N4 = rows[keep] / nrm[keep, None]
    D4 = (D[keep] - Nrm[keep] @ foot) / nrm[keep]
    on = np.abs(Yv @ n - D[i]) <= _INC * (1.0 + abs(D[i]))
    V4 = (Yv[on] - foot) @ U
    R4 = np.zeros((0, 4))
    if Yr.size:
        ron = np.abs(Yr @ n) <= _INC
        R4 = Yr[ron] @ U
        R4 = R4 / np.linalg.norm(R4, axis=1, keepdims=True)
    return N4, D4, V4, R4


def _panels(d, kappa):
    """Edges of the outer panels on ``[d, sqrt(d^2 + 2 WINDOW / kappa)]`` (``d = |d_i| > 0``; ``kappa = 1 +
    delta^2 / d^2 >= 1`` the curvature of the integrand's exponent, ``delta`` a lower bound of the foot's distance
    from ``F'``, since ``M_4(s F') <= Q(s delta)``): geometric from ``d`` (first width ``min(d, 1) / 8``), each at
    most ``_DMAX / (kappa t)`` wide (the Gaussian bound changes <= ``_DMAX`` nats across a panel)."""
    end = math.sqrt(d * d + 2.0 * WINDOW / kappa)
    edges, w = [d], min(d, 1.0) / 8.0
    while edges[-1] < end:
        t = edges[-1]
        step = min(w, _DMAX / (kappa * max(t, 1.0)))
        edges.append(min(t + step, end))
        w *= 2.0
    return np.array(edges)


def _nodes(edges, rule):
    x, w = rule
    lo, hi = edges[:-1, None], edges[1:, None]
    return ((lo + hi) / 2 + (hi - lo) / 2 * x[None]).ravel(), ((hi - lo) / 2 * w[None]).ravel()


def _lse(a):
    m = np.max(a)
    return m + math.log(np.sum(np.exp(a - m))) if np.isfinite(m) else -np.inf


def facet_term(N4, D4, V4, R4, d):
    """``log B_i``, its absolute error bound (relative to ``B_i``: returned as a relative number) and ``flagged`` for
    the facet at distance ``d > 0`` from the mean: ``int_d^inf phi(t) M_4((t/d) F') dt`` by the graded rule."""
    shape = cone_shape(N4, D4, V4, R4)
    delta = max(0.0, float(-D4.min()))  # the foot violates constraint j by -D4_j: its distance from F' is larger
    kappa = 1.0 + (delta / d) ** 2
    edges = _panels(d, kappa)
    t16, w16 = _nodes(edges, _G16)
    t8, w8 = _nodes(edges, _G8)
    t = np.concatenate([t16, t8])
    s = t / d
    lm, rel, fl = cone_log_mass(N4, D4[None] * s[:, None], V4[None] * s[:, None, None], R4, shape=shape)
    if fl.any() or not np.all(np.isfinite(lm)):
        return -np.inf, np.inf, True
    lf = -0.5 * t * t - _LOG_SQRT_2PI + lm
    n = t16.size
    l16, l8 = _lse(np.log(w16) + lf[:n]), _lse(np.log(w8) + lf[n:])
    quad = abs(math.expm1(l8 - l16))
    s4 = float(np.sum(np.exp(np.log(w16) + lf[:n] - l16) * rel[:n]))
    # beyond the window: int_end^inf phi(t) Q(t delta / d) dt <= Q(end) Q(end delta / d), relative to B
    end = edges[-1]
    tail = math.exp(_log_q(end) + _log_q(end * delta / d) - l16)
    return l16, quad + s4 + tail + 16 * _EPS * t16.size, False


def _log_q(x):
    from scipy.special import log_ndtr
    return float(log_ndtr(-x))


def cone5_log_mass(Nrm, D, Yv, Yr, tol=1e-6):
    """``(log_mass, rel, flagged)`` of ``N(0, I_5)`` on ``{Nrm y <= D}`` (unit rows ``Nrm`` (F, 5), offsets ``D``
    (F,), vertices ``Yv`` (V, 5) relative to the mean, unit rays ``Yr`` (R, 5); pointed) by the scale mixture of the
    module docstring. ``rel`` bounds the relative error of the mass; flagged when it exceeds ``tol``, a facet plane
    passes within ``1e-8`` of the mean, or an S' = 4 row is flagged."""
    Nrm, D = np.asarray(Nrm, dtype=np.float64), np.asarray(D, dtype=np.float64)
    Yv, Yr = np.asarray(Yv, dtype=np.float64), np.asarray(Yr, dtype=np.float64).reshape(-1, 5)
    if np.min(np.abs(D)) < 1e-8:
        return -np.inf, np.inf, True
    pos, neg, err = [], [], 0.0  # log |B_i| of each sign, absolute error in units of exp(logs)
    errs = []
    for i in range(Nrm.shape[0]):
        N4, D4, V4, R4 = facet_in_plane(Nrm, D, Yv, Yr, i)
        if V4.shape[0] == 0 or np.linalg.matrix_rank(np.vstack([V4 - V4[0], R4]), tol=1e-9) < 4:
            continue  # not a facet (redundant row, or a lower-dimensional face)
        lb, rb, fl = facet_term(N4, D4, V4, R4, abs(D[i]))
        if fl:
            return -np.inf, np.inf, True
        (neg if D[i] > 0 else pos).append(lb)  # P = 1{0 in P} - sum sign(d_i) B_i
        errs.append((lb, rb))
    if np.all(D > 0):
        pos.append(0.0)
    lp, ln = _lse(np.array(pos + [-np.inf])), _lse(np.array(neg + [-np.inf]))
    if not lp > ln:
        return -np.inf, np.inf, True
    lm = lp + math.log1p(-math.exp(ln - lp))
    err = sum(math.exp(lb - lm) * rb for lb, rb in errs)
    rel = err + 8 * _EPS * (math.exp(lp - lm) + math.exp(ln - lm))
    return lm, rel, bool(rel > tol)


def cone5_moments(Nrm, D, Yv, Yr, tol=1e-6):
    """``(log_mass, mean (5,), cov (5, 5), rel, flagged)`` of ``N(0, I_5)`` on ``{Nrm y <= D}``: the mass by
    :func:`cone5_log_mass`, the moments by the divergence theorem (NOTES §3) over the facets, each an S' = 4 problem
    at its foot (``cones.cone_moments``): ``E[y 1_P] = -sum_i n_i phi(d_i) M_4(F_i')`` and ``E[y y^T 1_P] = P I -
    sum_i phi(d_i) M_4(F_i') n_i (d_i n_i + U_i m_i)^T`` (``m_i`` the facet's in-plane mean), symmetrised. The moments'
    bar is the facets' mass bars (relative) carried through; flagged like the mass or when an S' = 4 facet row is."""
    Nrm, D = np.asarray(Nrm, dtype=np.float64), np.asarray(D, dtype=np.float64)
    Yv, Yr = np.asarray(Yv, dtype=np.float64), np.asarray(Yr, dtype=np.float64).reshape(-1, 5)
    lm, rel, fl = cone5_log_mass(Nrm, D, Yv, Yr, tol)
    if fl:
        return lm, np.zeros(5), np.zeros((5, 5)), rel, True
    m1, m2, mbar = np.zeros(5), np.zeros((5, 5)), 0.0
    for i in range(Nrm.shape[0]):
        N4, D4, V4, R4 = facet_in_plane(Nrm, D, Yv, Yr, i)
        if V4.shape[0] == 0 or np.linalg.matrix_rank(np.vstack([V4 - V4[0], R4]), tol=1e-9) < 4:
            continue
        U = np.linalg.svd(Nrm[i][None, :])[2][1:].T
        l4, mu4, _, r4, _, f4 = cone_moments(N4, D4[None], V4[None], R4, moments=1)
        if f4[0] or not r4[0] <= 1e-6:
            return lm, np.zeros(5), np.zeros((5, 5)), rel, True
        w = math.exp(-0.5 * D[i] * D[i] - _LOG_SQRT_2PI + l4[0] - lm)  # phi(d_i) M_4(F_i') / P
        m1 -= w * Nrm[i]
        m2 -= w * np.outer(Nrm[i], D[i] * Nrm[i] + U @ mu4[0])
        mbar += w * (r4[0] + rel)
    m2 = np.eye(5) + 0.5 * (m2 + m2.T)
    return lm, m1, m2 - np.outer(m1, m1), rel + mbar, False
