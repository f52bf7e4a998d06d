"""S' = 5: Gaussian mass of a polyhedron by the S' = 4 cone decomposition of its facets, one 1-D integral per flag.

Theorem 1 (eq. 5) needs ``Phi_omega(mu, Sigma_omega)``: in whitened, pointed coordinates the mass of ``y ~ N(0, I_5)``
on ``P = {Nrm y <= D}`` (unit rows ``n_i``). As at S' = 4 (``cones``, NOTES §6), along each ray from the mean P is
an interval entered through facets with ``d_i < 0`` and left through those with ``d_i > 0``, so

    P = 1{0 in P} - sum_i sign(d_i) B_i,     B_i = mass of {lam f : f in facet F_i, lam >= 1}.

Write ``y = t n_i + v`` (``v`` in the facet's hyperplane, measured from the foot ``f_i = d_i n_i``). A point of the
cone has ``t >= |d_i|`` and ``v in (t / |d_i|) F_i'``, ``F_i'`` the facet in its hyperplane seen from its foot, so

    B_i = int_{|d_i|}^inf phi(t) M_4((t / |d_i|) F_i') dt,

``M_4`` the standard 4-D Gaussian mass, which ``cones`` computes by the S' = 4 flag decomposition (facet > ridge >
edge: terms ``Q``, ``W``, one 1-D integral per edge flag). Every one of those terms depends on the scale only through a
Gaussian factor, so the outer integral closes term by term (the section "the outer integral in closed form" below):
the S' = 5 mass is a signed sum of ONE smooth 1-D integral of elementary functions per S' = 5 flag (facet > 3-face >
2-face > edge), by the same graded Gauss-Legendre rules as ``cones`` -- NOTES §6's (S - 2)-dimensional orthoscheme
integral less the two integrals that close (the S' = 4 arctangent exchange and this one). The flags of each
``F_i'`` are translation invariant: one ``cones.cone_shape`` per facet and region (:func:`shape5`), shared by every
point. Bar: ``TERM_ULPS eps (1 + |log term|)`` per term (measured against mpmath, ``tests/test_highdim_cones5.py``),
the dropped edges' and the windows' bounds, the geometry's rounding where a term sees it amplified (``geom_term``: the
mean near a face of P), and the signed sums' rounding (each facet's terms summed relative to ``Q(|d_i|)`` and added
to the pair's sum as one term, ``merge_side``, both levels bounded: ``sum_rounding``). Pairs with the mean on a plane
of the flags, an unresolved integral, inconsistent incidences or a bar above the caller's tolerance are flagged (the
caller keeps its RQMC route for them). Moments by the divergence theorem over the facets: each facet's S' = 4 mass and
mean come from the same edge nodes as its S' = 5 flags (``_facet_pass_fused``).

The first construction of this module (:func:`facet_term`, :func:`mixture_log_mass`) kept the outer integral as a
graded Gauss-Legendre rule over ``t`` with a 16- vs 8-node bar: 200-360 S' = 4 evaluations per facet, ~0.4 s a pair.
It stays as the reference the tests compare the closed form with.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numba
import numpy as np
from scipy.special import log_ndtr

from .. import constants as C
from ..planar.kernel import _lse_pair
from ..solid.edges import _erfcx
from ..threads import run_split
from . import factors_and_ok, map_regions
from . import whitened as whitened5
from .cones import _DMAX as _DMAX4
from .cones import (
    _GW,
    _GX,
    _MAX_GRADES,
    _NODES,
    FIRST_ORDER_CAP,
    TERM_ULPS,
    _add,
    _beyond,
    _clip,
    _drop_edge,
    _edge_cuts,
    _edge_flags,
    _edge_R,
    _edge_range,
    _end_errors,
    _exp_point,
    _facets_and_ridges,
    _line_offsets,
    _log_gauss_tail,
    _log_q,
    _log_theta_sum,
    _ridge_terms,
    _sign,
    _trunc_bound,
    _vertex_residuals,
    _Work,
    cone_log_mass,
    cone_shape,
    consistent,
    facet_end_terms,
    log_j,
    theta_diff,
)
from .cones import WINDOW as WINDOW4
from .cones import _moments as _cone_moments_sums
from .cones import add_shifted as _adds
from .shape_kernel import cone_shape_compiled

_jit = numba.njit(cache=True, nogil=True, error_model="numpy")
_SQRT2, _INF = C.SQRT2, C.INF

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
    tail = math.exp(_log_q_py(end) + _log_q_py(end * delta / d) - l16)
    return l16, quad + s4 + tail + 16 * _EPS * t16.size, False


def _log_q_py(x):
    return float(log_ndtr(-x))


def mixture_log_mass(Nrm, D, Yv, Yr, tol=1e-6):
    """The first construction (reference): ``(log_mass, rel, flagged)`` of ``N(0, I_5)`` on ``{Nrm y <= D}`` (unit
    rows ``Nrm`` (F, 5), offsets ``D`` (F,), vertices ``Yv`` (V, 5) relative to the mean, unit rays ``Yr`` (R, 5);
    pointed) by the scale mixture ``B_i = int phi(t) M_4((t/|d_i|) F_i') dt`` under the graded outer rule. ``rel``
    bounds the relative error of the mass; flagged when it exceeds ``tol``, a facet plane passes within ``1e-8`` of
    the mean, or an S' = 4 row is flagged."""
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


# ---------------------------------------------------------------------------------------------------
# the outer integral in closed form: one 1-D integral per S' = 5 flag (compiled)
# ---------------------------------------------------------------------------------------------------
# Every term of the S' = 4 decomposition of ``M_4(s F')`` has the scale in a Gaussian factor only: with all lengths
# scaled by ``s`` (the signs and the combinatorics do not change), the constant ``1{0 in F'}``, ``Q(s a)``, the ridge
# term ``W(s d_j, s e) = (|d_j| / 2 pi) int_e^inf e^{-s^2 (d_j^2 + rho^2) / 2} / (d_j^2 + rho^2) d rho`` and the edge
# flag term ``E(s) = (|d_j| / 4 pi^2) int_0^inf e^{-s^2 (R + sigma^2) / 2} / (R + sigma^2) DTheta(sigma) sigma /
# sqrt(c + sigma^2) d sigma`` (``DTheta`` scale-free). With ``int_d^inf phi(t) e^{-(t/d)^2 q / 2} dt = d w(q)``,
# ``w(q) = Q(sqrt(d^2 + q)) / sqrt(d^2 + q)``, the outer integral of ``B_i`` closes term by term:
#     1 -> Q(d),   Q(s a) -> W(d, a) = (d / 2 pi) J(d, a),
#     W(s d_j, s e) -> (|d_j| d / 2 pi) K(d^2, d_j^2, e),   K(A, B, e) = int_e^inf w_A(B + rho^2) / (B + rho^2) d rho,
#     E(s) -> (|d_j| d / 4 pi^2) int_0^inf w(R + s^2) / (R + s^2) DTheta(s) s / sqrt(c + s^2) ds,
# and beyond the edge (DTheta constant) the last is ``DTheta K(d^2, d_j^2, sqrt(c + end^2))``. The S' = 5 mass is then
# a signed sum of one smooth 1-D integral per flag (facet > 3-face > 2-face > edge), the same graded Gauss-Legendre
# rules as ``cones`` (``w`` in log space through erfcx), with no outer rule at all.

_DROP5 = C.EDGE_DROP_NATS  # edge flags whose bound is this far below the pair's largest term are bounded, not summed
_LOG_2PI = math.log(2.0 * math.pi)
_LOG_4PI2 = math.log(4.0 * math.pi * math.pi)


@_jit
def _w_factor(A, sg2):
    """``w(q) e^{q' / 2}`` without its Gaussian factor: ``0.5 erfcx(x / sqrt 2) / x``, ``x = sqrt(A + sg2)``."""
    x = math.sqrt(A + sg2)
    return 0.5 * _erfcx(x / _SQRT2) / x


@_jit
def log_k(d02, dj2, e):
    """``(log K, ok)``: ``K = int_e^inf Q(x) / (x (dj2 + rho^2)) d rho``, ``x = sqrt(d02 + dj2 + rho^2)``, ``e >= 0``:
    graded Gauss-Legendre in ``u = rho - e`` as ``cones.log_j`` (poles at ``rho = +- i sqrt(dj2)``)."""
    r0 = math.sqrt(e * e + dj2)
    if not r0 > 0.0:
        return _INF, False
    A = d02 + dj2
    U = _exp_point(e, WINDOW4)
    total, left, k = 0.0, 0.0, 0
    while left < U:
        if k >= _MAX_GRADES:
            return -_INF, False
        right = min(r0 * (2.0 ** (k + 1) - 1.0), U)
        e_l, e_r = e * left + 0.5 * left * left, e * right + 0.5 * right * right
        nsub = max(1, int(math.ceil((e_r - e_l) / _DMAX4)))
        ul = left
        for q in range(1, nsub + 1):
            ur = right if q == nsub else _exp_point(e, e_l + (e_r - e_l) * q / nsub)
            half, mid = 0.5 * (ur - ul), 0.5 * (ur + ul)
            for n in range(_NODES):
                u = mid + half * _GX[n]
                t = e + u
                total += _GW[n] * half * math.exp(-(e * u + 0.5 * u * u)) * _w_factor(A, t * t) / (dj2 + t * t)
            ul = ur
        left = right
        k += 1
    return math.log(total) - 0.5 * (A + e * e), True


@_jit
def _piece5(sa, sb, RA, fl, bmin, S):
    """``cones.piece_rule`` with ``w``: add to ``S[f]`` the integral over ``sigma in [sa, sb]`` of ``e^{-(sa u + u^2/2)}
    w-factor / (R + sigma^2) DTheta_f sigma / sqrt(c_f + sigma^2)`` (``RA = (R, A)``, ``A = d^2 + R``); returns
    ``(ok, cut)`` as ``piece_rule``."""
    R, A = RA
    U = _exp_point(sa, WINDOW4)
    end = sb
    if U < sb - sa:
        end = sa + U
    else:
        U = sb - sa
    if not U > 0.0:
        return True, sb
    r0 = math.sqrt(sa * sa + bmin * bmin)
    left, k = 0.0, 0
    while left < U:
        if k >= _MAX_GRADES or not r0 > 0.0:
            return False, sa + left
        right = min(r0 * (2.0 ** (k + 1) - 1.0), U)
        e_l, e_r = sa * left + 0.5 * left * left, sa * right + 0.5 * right * right
        nsub = max(1, int(math.ceil((e_r - e_l) / _DMAX4)))
        ul = left
        for q in range(1, nsub + 1):
            ur = right if q == nsub else _exp_point(sa, e_l + (e_r - e_l) * q / nsub)
            _panel5(sa, 0.5 * (ur + ul), 0.5 * (ur - ul), RA, fl, S)
            ul = ur
        left = right
        k += 1
    return True, end


@_jit
def _panel5(sa, mid, half, RA, fl, S):
    """One panel of :func:`_piece5` (the ``_NODES`` Gauss-Legendre nodes, every flag of the edge)."""
    R, A = RA
    for m in range(_NODES):
        u = mid + half * _GX[m]
        sg = sa + u
        gr = _GW[m] * half * math.exp(-(sa * u + 0.5 * u * u)) * _w_factor(A, sg * sg) / (R + sg * sg)
        for f in range(fl.shape[0]):
            a, b, c, lo, hi = fl[f, 0], fl[f, 1], fl[f, 2], fl[f, 3], fl[f, 4]
            S[f] += gr * theta_diff(_clip(sg, lo, hi), _clip(-sg, lo, hi), a, b, c) * sg / math.sqrt(c + sg * sg)


@_jit
def _trunc5(R, A, cut):
    """log bound of a piece's integrand beyond ``cut`` (DTheta <= pi, sigma / sqrt(c + sigma^2) <= 1, ``Q(x) <= e^{-x^2
    /2} / 2``, ``x >= sqrt(A)``): ``(pi / 2) e^{-(A + cut^2)/2} tail(cut) / (sqrt(A) (R + cut^2))``."""
    return (math.log(0.5 * math.pi) - 0.5 * (A + cut * cut) + _log_gauss_tail(cut) - 0.5 * math.log(A)
            - math.log(max(R + cut * cut, 1e-300)))


@_jit
def edge5_logs(R, d02, d2, fl, out):
    """``out[f] = log`` of the S' = 5 flag integral ``int_0^inf w(R + sigma^2) / (R + sigma^2) DTheta_f sigma / sqrt(c_f
    + sigma^2) d sigma`` (without ``|d_f| d / 4 pi^2``) for the flags ``fl`` (n, 5) of one edge of a facet at
    distance ``d = sqrt(d02)`` (``R``: squared distance of the edge's line in the facet, ``d2`` (n,) the flags'
    squared distances in it); returns ``(ok, log bound of the window's truncation)``."""
    n = fl.shape[0]
    lo, hi = fl[0, 3], fl[0, 4]
    S = np.zeros(n)
    bmin = _INF
    for f in range(n):
        out[f] = -_INF
        bmin = min(bmin, fl[f, 1])
    cuts = _edge_cuts(lo, hi)
    A = d02 + R
    ok, trunc = True, -_INF
    for p in range(2):
        sa, sb = cuts[p], cuts[p + 1]
        if not sb > sa:
            continue
        S[:] = 0.0
        good, cut = _piece5(sa, sb, (R, A), fl, bmin, S)
        ok = ok and good
        if cut < sb:
            trunc = _lse_pair(trunc, _trunc5(R, A, cut))
        base = -0.5 * (A + sa * sa)
        for f in range(n):
            if S[f] > 0.0:
                out[f] = _lse_pair(out[f], base + math.log(S[f]))
    if math.isfinite(cuts[2]):
        for f in range(n):
            dth = theta_diff(hi, lo, fl[f, 0], fl[f, 1], fl[f, 2])
            if dth > 0.0:
                lk, good = log_k(d02, d2[f], math.sqrt(fl[f, 2] + cuts[2] * cuts[2]))
                ok = ok and good
                out[f] = _lse_pair(out[f], math.log(dth) + lk)
    return ok, trunc


# The edges' ends (issue 14, k56). As at S' = 4 (``cones._end_bounds``, c4b), each edge's ends ``s = u . v`` are
# projections of the cross-section's vertices (the given vertices, ~1e-15 off their planes, projected into the facet's
# plane and rounded), so a flag's term is computed for ends a few eps |v| off the planes' vertices; the signed sum does
# not cancel that (tiny 5-D boxes and simplices far from the mean were up to ~1e3-1e7 times their bar off, the audit of
# tests/test_highdim_cones5.py). Every flag term, at S' = 4, 5 and 6 alike, is ``|d_f| / 4 pi^2 int f(R + sigma^2) /
# (R + sigma^2) DTheta_f(sigma) sigma / sqrt(c + sigma^2) dsigma`` with a radial factor ``f`` whose ``f(q) e^{q/2}``
# decreases: only ``sigma > |t|`` sees the end ``t``, so to first order (doubled) the end's error ``dt`` moves the
# edge's flags by at most ``2 dt sum_f |d_f| Theta_f'(t) f(q) L / (4 pi^2)``, ``q = R + t^2``, ``L`` the smaller of
# ``tail(|t|) / q`` and ``int_|t|^inf dsigma / (R + sigma^2) = atan2(sqrt R, |t|) / sqrt R`` (the mean near the edge's
# line: ``q`` tiny, where the first is ~1 / sqrt(q) times too large; 9e-3 against errors of 4e-10 on a box with the
# mean 1e-7 from a vertex).


@_jit
def end_logs(R, ends, fl, d2):
    """``(q, lb)`` (2,) of the ends ``ends = (s_lo, s_hi, err_lo, err_hi)`` of an edge (``cones._end_errors``) whose
    line lies ``sqrt(R)`` from the foot, flags ``fl`` (``cones._edge_flags``) at squared facet distances ``d2``: ``q =
    R + t^2`` and ``lb = log(2 dt sum_f |d_f| Theta_f'(t) L / (4 pi^2))``, ``L = min(tail(|t|) / q, atan2(sqrt R, |t|) /
    sqrt R)`` (``-inf``: nothing to bound); the bound of the ends' effect is ``e^lb f(q)`` (:func:`end_bound`)."""
    q, lb = np.empty(2), np.full(2, -_INF)
    for w in range(2):
        t, dt = ends[w], ends[2 + w]
        q[w] = R + t * t
        if dt > 0.0 and math.isfinite(t) and q[w] > 0.0:
            line = math.atan2(math.sqrt(R), abs(t)) / math.sqrt(R) if R > 0.0 else 1.0 / abs(t)
            ll = min(_log_gauss_tail(abs(t)) - math.log(q[w]), math.log(line))
            lb[w] = math.log(2.0 * dt) + _log_theta_sum(fl, d2, t) + ll - _LOG_4PI2
    return q, lb


@_jit
def end_bound(qlb, kind, p, e):
    """log of the ends' bound ``sum_w e^{lb_w} f(q_w)`` (:func:`end_logs`) for the radial factor ``f`` of ``kind``:
    4, ``e^{-q/2}`` (S' = 4: ``M_4``); 5, ``p Q(x) / x``, ``x^2 = p^2 + q`` (S' = 5 at distance ``p = d0``, and
    ``cone6_kernel``'s facet term at ``p = e``); 6, ``(p e / 2 pi) J(p, a) / a``, ``a^2 = e^2 + q`` (S' = 6; ``J(p, a)
    <= e^{-(p^2 + a^2)/2} min(tail(a) / (p^2 + a^2), atan2(p, a) / p)``, the second where ``p`` and ``a`` are small:
    the mean 1e-7 from a face of a 6-D box had bars 4x larger with the first alone)."""
    q, lb = qlb
    out = -_INF
    for w in range(2):
        if lb[w] == -_INF:
            continue
        if kind == 4:
            lf = -0.5 * q[w]
        elif kind == 5:
            x = math.sqrt(p * p + q[w])
            lf = math.log(p) + _log_q(x) - math.log(x)
        else:
            a2 = e * e + q[w]
            lj = min(_log_gauss_tail(math.sqrt(a2)) - math.log(p * p + a2), math.log(math.atan2(p, math.sqrt(a2)) / p))
            lf = math.log(p * e) - _LOG_2PI - 0.5 * (p * p + a2) + lj - 0.5 * math.log(a2)
        out = _lse_pair(out, lb[w] + lf)
    return out


@_jit
def _geometry(g, d, e, bl):
    """Ridge distances ``e`` (G, 2) and line offsets ``bl`` (L,) of one cross-section ``F' = {N4 v <= d}`` (as
    ``cones._facets_and_ridges`` / ``_line_offsets``); returns ``(flagged, foot outside (F,), ridge foot outside (G,))``
    (flagged: the foot on a facet, ridge or line plane)."""
    F = d.size
    foot_out = np.zeros(F, dtype=np.bool_)
    g_out = np.zeros(g.ri.size, dtype=np.bool_)
    flagged = False
    for r in range(g.ri.size):
        i, j = g.ri[r], g.rj[r]
        e[r, 0] = (d[j] - g.rc[r] * d[i]) / g.rsn[r]
        e[r, 1] = (d[i] - g.rc[r] * d[j]) / g.rsn[r]
        foot_out[i] = foot_out[i] or e[r, 0] <= 0.0
        foot_out[j] = foot_out[j] or e[r, 1] <= 0.0
        flagged = flagged or e[r, 0] == 0.0 or e[r, 1] == 0.0
    for f in range(F):
        flagged = flagged or (g.fvalid[f] and d[f] == 0.0)
    for m in range(g.lr.size):
        r = g.lr[m]
        bl[m] = (d[g.lk[m]] - g.ll1[m] * d[g.ri[r]] - g.ll2[m] * d[g.rj[r]]) / g.lpn[m]
        g_out[r] = g_out[r] or bl[m] <= 0.0
        flagged = flagged or bl[m] == 0.0
    return flagged, foot_out, g_out


@_jit
def _near5(g, d, par, acc, e, outs):
    """The terms of ``B_i`` without edges, times ``sgn = -sign(D_i)`` (``par = (d0, sgn, shift)``), into ``acc``
    (kept relative to ``e^shift``, :func:`_adds`):
    ``Q(d0)`` if the foot is in ``F'``, ``-sign(d_f) W(d0, |d_f|)`` per facet of ``F'`` whose foot is inside it,
    ``sign(d_f) sign(e) (|d_f| d0 / 2 pi) K(d0^2, d_f^2, |e|)`` per (ridge, side) whose foot is inside (with the
    rounding of ``e`` against ``hypot(d_f, e)``, :func:`geom_term`); returns ok."""
    d0, sgn, shift = par
    foot_out, g_out = outs
    inside = True
    for f in range(d.size):
        inside = inside and not (g.fvalid[f] and d[f] <= 0.0)
    if inside:
        _adds(acc, sgn, _log_q(d0), shift)
    ok = True
    for f in range(d.size):
        if g.fvalid[f] and not foot_out[f]:
            lj, good = log_j(d0 * d0, abs(d[f]))
            ok = ok and good
            _adds(acc, -sgn * _sign(d[f]), lj + math.log(d0) - _LOG_2PI, shift)
    for r in range(g.ri.size):
        if g_out[r]:
            continue
        for side in range(2):
            f = g.ri[r] if side == 0 else g.rj[r]
            lk, good = log_k(d0 * d0, d[f] * d[f], abs(e[r, side]))
            ok = ok and good
            lt = lk + math.log(abs(d[f]) * d0) - _LOG_2PI
            _adds(acc, sgn * _sign(d[f]) * _sign(e[r, side]), lt, shift)
            geom_term(acc, lt - shift, _ridge_unit(g, r, d) / math.hypot(d[f], e[r, side]))
    return ok


@_jit
def _edge5(g, k, d, yv, par, acc, wk, res):
    """The S' = 5 flag terms of edge k of ``F'`` (``par = (d0, sgn, ref)``) into ``acc``, with their ends' errors
    (``res``: ``cones._vertex_residuals`` of the vertices ``yv``; :func:`end_logs`), or only their bound into its
    error when it is ``_DROP5`` nats below ``ref`` (``E_5 <= sqrt(pi/2) / (4 pi rho) d0 w(rho^2)`` per flag, from
    ``cones``' bound of ``E`` at every scale); returns ok."""
    d0, sgn, ref, shift = par
    lo, hi = _edge_range(g, k, yv)
    if not lo < hi:
        return True
    R = _edge_R(g, k, d)
    s0 = min(max(0.0, lo), hi)
    rho2 = max(R + s0 * s0, 1e-300)
    fl, d2, fac, se, sb = _edge_flags(g, k, d, wk, (lo, hi))
    n = fl.shape[0]
    q2 = d0 * d0 + rho2
    bound = (math.log(n * math.sqrt(0.5 * math.pi) / (4.0 * math.pi)) - 0.5 * math.log(rho2) + math.log(d0)
             - 0.5 * math.log(q2) + _log_q(math.sqrt(q2)))
    if bound <= ref - _DROP5:
        acc[2] = _lse_pair(acc[2], bound + max(0.0, 0.5 * math.log(rho2)) - shift)
        return True
    out = np.empty(n)
    ok, trunc = edge5_logs(R, d0 * d0, d2, fl, out)
    for q in range(n):
        scale = 0.5 * math.log(d2[q]) + math.log(d0) - _LOG_4PI2 if d2[q] > 0.0 else -_INF
        _adds(acc, -sgn * _sign(d[fac[q]]) * se[q] * sb[q], out[q] + scale, shift)
        geom_term(acc, out[q] + scale - shift, flag_amp(g, k, q, fl, d))
        if trunc > -_INF:
            acc[2] = _lse_pair(acc[2], trunc + scale - shift)
    ends = (lo, hi, *_end_errors(g, k, d, yv, res, lo, hi))
    acc[2] = _lse_pair(acc[2], end_bound(end_logs(R, ends, fl, d2), 5, d0, 0.0) - shift)
    return ok


# Rounding of the cross-section's geometry (issue 14, c5r). The terms of ``B_i`` take the offsets ``d`` of ``F'`` and,
# derived from them with the region's constants (``rc``, ``rsn``, ``l1``, ``l2``, ``pn``: cosines of the facets'
# normals, built once from the first point), the ridge distances ``e`` and line offsets ``b``. An error of ``d`` alone
# moves every term consistently (it is the mass of a slightly different ``F'``), but ``e`` and ``b`` carry their own:
# a few eps of their summands, and ``rc``'s absolute error (~eps: ~1e-16 where the facets are nearly orthogonal) times
# ``|d_i|``. A term that sees them through a RATIO of small distances (``Theta`` of ``|e| / |b|`` against ``sqrt(c)``,
# ``K`` of ``|d_f|`` against ``|e|``) moves by that error over the norm of the pair, the distance of the foot from a
# lower-dimensional face, and the terms no longer sum to the mass: rotated 5-D boxes with the mean 1e-8 from a 2-face
# were 2.6e-9 off under a bar of 2.2e-12 (tests/test_highdim_cones5.py). Each such term's error gets ``GEOM5_ULPS eps
# unit / rho`` of it where that ratio exceeds GEOM_AMP (below, the terms' own TERM_ULPS bar covers it, as
# ``solid.kernel.GEOM_AMP`` does at S = 3, and the bars keep their bits).
GEOM5_ULPS = 16.0
GEOM_AMP = 64.0


@_jit
def geom_term(acc, lt, amp):
    """Add ``GEOM5_ULPS eps amp e^lt`` to the error ``acc[2]`` where ``amp = unit / rho > GEOM_AMP``: a term ``e^lt``
    whose inputs (absolute errors ``~eps unit``) enter through a ratio of distances of norm ``rho``."""
    if lt == -_INF or not amp > GEOM_AMP:
        return
    acc[2] = _lse_pair(acc[2], lt + math.log(GEOM5_ULPS * _EPS * amp))


@_jit
def _ridge_unit(g, r, d):
    """The summands' magnitude of ridge r's distances ``e = (d_j - rc d_i) / rsn`` (``rc``'s error counted absolute)."""
    return (abs(d[g.ri[r]]) + abs(d[g.rj[r]])) * (1.0 + abs(g.rc[r])) / g.rsn[r]


@_jit
def _line_unit(g, m, d):
    """The summands' magnitude of line m's offset ``b = (d_k - l1 d_i - l2 d_j) / pn``."""
    r = g.lr[m]
    return ((abs(d[g.lk[m]]) + (1.0 + abs(g.ll1[m])) * abs(d[g.ri[r]]) + (1.0 + abs(g.ll2[m])) * abs(d[g.rj[r]]))
            / g.lpn[m])


@_jit
def flag_amp(g, k, q, fl, d):
    """``unit / rho`` of flag q of edge k (``cones._edge_flags``: two sides per (ridge, line) pair, ``fl[q] = (a, b, c,
    lo, hi)``): ``Theta``'s ``a / b`` against ``sqrt(c)``."""
    m = g.eptr[k] + q // 2
    return max(_ridge_unit(g, g.lr[m], d), _line_unit(g, m, d)) / math.sqrt(fl[q, 2])


@_jit
def merge_side(acc, sacc, shifts, n_terms):
    """Add each row's group value ``e^{sacc[0]} - e^{sacc[1]}`` (relative to ``e^shifts``: a facet's ``sgn B_i`` at
    S' = 5, a side's ``sgn R_ij`` at S' = 6, ``cone6_kernel``) to the pair's signed sums ``acc`` as ONE term, its error
    ``sacc[2]`` and the rounding of its own log sums (``n_terms`` additions, each off by at most ``eps (2 + |log
    partial sum|)`` relative, the partial sums below the final ones) into the pair's error: the pair's signed sum then
    has one term per group and its rounding is bounded by few terms (:func:`sum_rounding`)."""
    ln_eps = math.log(n_terms * _EPS)
    for m in range(acc.shape[0]):
        pos, neg, err = sacc[m, 0], sacc[m, 1], sacc[m, 2]  # relative to e^shift
        if pos == -_INF and neg == -_INF:
            continue
        rnd = -_INF
        if pos > -_INF:
            rnd = _lse_pair(rnd, pos + math.log(2.0 + abs(pos)))
        if neg > -_INF:
            rnd = _lse_pair(rnd, neg + math.log(2.0 + abs(neg)))
        sh = shifts[m]
        acc[m, 2] = _lse_pair(_lse_pair(acc[m, 2], err + sh), rnd + ln_eps + sh)
        pos, neg = pos + sh, neg + sh
        if pos == neg:
            continue
        big, small, sign = (pos, neg, 1.0) if pos > neg else (neg, pos, -1.0)
        lt = big + math.log1p(-math.exp(small - big)) if small > -_INF else big
        q = 0 if sign > 0.0 else 1
        acc[m, q] = _lse_pair(acc[m, q], lt)
        acc[m, 2] = _lse_pair(acc[m, 2], lt + math.log(4.0 * _EPS * (1.0 + abs(lt))))
        acc[m, 3] = max(acc[m, 3], lt)


@_jit
def _facet_pass(g, D4, V4, par, acc, edges, flagged):
    """One facet ``F_i`` of every pair (rows of ``D4`` (M, F'), ``V4`` (M, V', 4); ``par = (d0, sgn, ref, shift)`` (M,)
    each): its near terms (``edges`` False) or its edge flags into the facet's own sums ``acc`` (M, 4), relative to
    ``e^shift`` (:func:`_adds`), with their geometry's rounding (:func:`geom_term`); sets ``flagged``."""
    d0, sgn, ref, shift = par
    G, L = g.ri.size, g.lr.size
    for m in range(D4.shape[0]):
        if flagged[m]:
            continue
        d = D4[m]
        e, bl = np.empty((G, 2)), np.empty(L)
        bad, foot_out, g_out = _geometry(g, d, e, bl)
        if bad:
            flagged[m] = True
            continue
        if not edges:
            ok = _near5(g, d, (d0[m], sgn[m], shift[m]), acc[m], e, (foot_out, g_out))
        else:
            wk = _Work(e, bl, acc[m], np.empty((0, 4)), np.empty((0, 4)))
            res = _vertex_residuals(g, d, V4[m])
            ok = True
            for k in range(g.eva.size):
                ok = _edge5(g, k, d, V4[m], (d0[m], sgn[m], ref[m], shift[m]), acc[m], wk, res) and ok
        flagged[m] = not ok


# ---------------------------------------------------------------------------------------------------
# per region: the facets' flags once, every point's pairs through the compiled passes
# ---------------------------------------------------------------------------------------------------

class Facet5(NamedTuple):
    """Facet ``i`` (unit normal ``n``) of an S' = 5 region in its hyperplane (translation invariant): the other rows
    kept (``keep``),
    their norms in the plane ``nrm`` and cosines ``proj`` with ``n_i``, the in-plane basis ``U`` (5, 4), the vertices
    on the facet ``on`` (V,), its unit rays ``R4``, unit rows ``N4`` and flags ``g`` (``cones.ConeArrays``);
    ``good``: the flags passed ``cones.consistent``."""

    i: int
    n: np.ndarray
    keep: np.ndarray
    nrm: np.ndarray
    proj: np.ndarray
    U: np.ndarray
    on: np.ndarray
    R4: np.ndarray
    N4: np.ndarray
    g: object
    good: bool


def _complement(n):
    """(5, 4) orthonormal basis of the complement of the unit vector ``n``: the columns other than ``k`` of the
    Householder reflection ``I - 2 w w^T / |w|^2``, ``w = n + sign(n_k) e_k``, ``k`` the largest component."""
    k = int(np.argmax(np.abs(n)))
    w = n.copy()
    w[k] += math.copysign(1.0, n[k])
    H = np.eye(n.size) - (2.0 / (w @ w)) * np.outer(w, w)
    return np.delete(H, k, axis=1)


def _facet5(Nrm, D0, Yv0, Yr, i):
    """:class:`Facet5` of row ``i`` from one point's offsets and vertices, or None when the row is no facet."""
    n = Nrm[i]
    U = _complement(n)
    rows = Nrm @ U
    nrm = np.linalg.norm(rows, axis=1)
    keep = np.nonzero((nrm > 1e-12) & (np.arange(Nrm.shape[0]) != i))[0]
    on = np.abs(Yv0 @ n - D0[i]) <= _INC * (1.0 + abs(D0[i]))
    R4 = np.zeros((0, 4))
    if Yr.size:
        R4 = Yr[np.abs(Yr @ n) <= _INC] @ U
        R4 = R4 / np.linalg.norm(R4, axis=1, keepdims=True)
    fc = Facet5(i, n, keep, nrm[keep], Nrm[keep] @ n, U, on, R4, rows[keep] / nrm[keep, None], None, False)
    D4, V4 = facet_offsets(fc, D0[None], Yv0[None])
    if V4.shape[1] == 0 or np.linalg.matrix_rank(np.vstack([V4[0] - V4[0, 0], R4]), tol=1e-9) < 4:
        return None
    g = cone_shape_compiled(fc.N4, D4[0], V4[0], R4)
    return fc._replace(g=g, good=consistent(g, V4.shape[1]))


def shape5(Nrm, D0, Yv0, Yr):
    """The facets (:class:`Facet5`) of ``P = {Nrm y <= D0}`` (vertices ``Yv0`` (V, 5) relative to one mean, unit rays
    ``Yr`` (R, 5); pointed): built once per region, valid for every mean (the flags are translation invariant)."""
    Nrm = np.asarray(Nrm, dtype=np.float64)
    Yr = np.asarray(Yr, dtype=np.float64).reshape(-1, 5)
    out = [_facet5(Nrm, np.asarray(D0, dtype=np.float64), np.asarray(Yv0, dtype=np.float64), Yr, i)
           for i in range(Nrm.shape[0])]
    return [fc for fc in out if fc is not None]


def facet_offsets(fc: Facet5, D, Yv):
    """The cross-sections ``F_i'`` of M pairs: offsets (M, F') and vertices (M, V', 4) from the foot (as
    :func:`facet_in_plane`, vectorised over the rows of ``D`` (M, F) and ``Yv`` (M, V, 5))."""
    Di = D[:, fc.i]
    D4 = np.ascontiguousarray((D[:, fc.keep] - Di[:, None] * fc.proj[None]) / fc.nrm[None])
    V4 = np.ascontiguousarray((Yv[:, fc.on] - Di[:, None, None] * fc.n[None, None]) @ fc.U)
    return D4, V4



# ---------------------------------------------------------------------------------------------------
# fused with the facets' S' = 4 masses and means (the divergence-theorem moments): the same nodes
# ---------------------------------------------------------------------------------------------------
# The S' = 4 edge integrals of ``M_4(F_i')`` (``cones.edge_flag_logs``) run on the same graded nodes as the S' = 5 ones
# of ``B_i`` (the same start, poles and Gaussian factor ``e^{-(sa u + u^2/2)}``): one pass evaluates ``DTheta`` once
# per node and flag for the three sums (S' = 5 flag, S' = 4 flag, the S' = 3 facet term of the S' = 4 mean).


@_jit
def _panel_fused(sa, mid, half, RA, fl, S):
    """One panel for ``S[0]`` (S' = 5, :func:`_panel5`), ``S[1]``, ``S[2]`` (S' = 4, ``piece_rule``'s two rows)."""
    R, A = RA
    for m in range(_NODES):
        u = mid + half * _GX[m]
        sg = sa + u
        g = _GW[m] * half * math.exp(-(sa * u + 0.5 * u * u))
        gr = g / (R + sg * sg)
        g5 = gr * _w_factor(A, sg * sg)
        for f in range(fl.shape[0]):
            a, b, c, lo, hi = fl[f, 0], fl[f, 1], fl[f, 2], fl[f, 3], fl[f, 4]
            val = theta_diff(_clip(sg, lo, hi), _clip(-sg, lo, hi), a, b, c) * sg / math.sqrt(c + sg * sg)
            S[0, f] += g5 * val
            S[1, f] += gr * val
            S[2, f] += g * val


@_jit
def _piece_fused(sa, sb, RA, fl, bmin, S):
    """:func:`_piece5` for the three sums of :func:`_panel_fused`; returns ``(ok, cut)``."""
    U = _exp_point(sa, WINDOW4)
    end = sb
    if U < sb - sa:
        end = sa + U
    else:
        U = sb - sa
    if not U > 0.0:
        return True, sb
    r0 = math.sqrt(sa * sa + bmin * bmin)
    left, k = 0.0, 0
    while left < U:
        if k >= _MAX_GRADES or not r0 > 0.0:
            return False, sa + left
        right = min(r0 * (2.0 ** (k + 1) - 1.0), U)
        e_l, e_r = sa * left + 0.5 * left * left, sa * right + 0.5 * right * right
        nsub = max(1, int(math.ceil((e_r - e_l) / _DMAX4)))
        ul = left
        for q in range(1, nsub + 1):
            ur = right if q == nsub else _exp_point(sa, e_l + (e_r - e_l) * q / nsub)
            _panel_fused(sa, 0.5 * (ur + ul), 0.5 * (ur - ul), RA, fl, S)
            ul = ur
        left = right
        k += 1
    return True, end


@_jit
def edge_fused_logs(R, d02, d2, fl, out5, out4):
    """:func:`edge5_logs` into ``out5`` (n,) and ``cones.edge_flag_logs`` (two rows) into ``out4`` (2, n) from one set
    of nodes; returns ``(ok, log truncation bound of out5, of out4)``."""
    n = fl.shape[0]
    lo, hi = fl[0, 3], fl[0, 4]
    S = np.zeros((3, n))
    bmin = _INF
    for f in range(n):
        out5[f], out4[0, f], out4[1, f] = -_INF, -_INF, -_INF
        bmin = min(bmin, fl[f, 1])
    cuts = _edge_cuts(lo, hi)
    A = d02 + R
    ok, tr5, tr4 = True, -_INF, -_INF
    for p in range(2):
        sa, sb = cuts[p], cuts[p + 1]
        if not sb > sa:
            continue
        S[:, :] = 0.0
        good, cut = _piece_fused(sa, sb, (R, A), fl, bmin, S)
        ok = ok and good
        if cut < sb:
            tr5 = _lse_pair(tr5, _trunc5(R, A, cut))
            tr4 = _lse_pair(tr4, _trunc_bound(R, cut))
        b5, b4 = -0.5 * (A + sa * sa), -0.5 * (R + sa * sa)
        for f in range(n):
            if S[0, f] > 0.0:
                out5[f] = _lse_pair(out5[f], b5 + math.log(S[0, f]))
            if S[1, f] > 0.0:
                out4[0, f] = _lse_pair(out4[0, f], b4 + math.log(S[1, f]))
            if S[2, f] > 0.0:
                out4[1, f] = _lse_pair(out4[1, f], b4 - _LOG_4PI2 + math.log(S[2, f]))
    if math.isfinite(cuts[2]):
        ok = _beyond(cuts[2], d2, fl, out4) and ok
        for f in range(n):
            dth = theta_diff(hi, lo, fl[f, 0], fl[f, 1], fl[f, 2])
            if dth > 0.0:
                lk, good = log_k(d02, d2[f], math.sqrt(fl[f, 2] + cuts[2] * cuts[2]))
                ok = ok and good
                out5[f] = _lse_pair(out5[f], math.log(dth) + lk)
    return ok, tr5, tr4


@_jit
def _edge_fused(g, k, d, yv, par, acc, wk, res):
    """Edge k of ``F'``: its S' = 5 flag terms into ``acc`` (as :func:`_edge5`, ``par = (d0, sgn, ref5, ref4)``) and its
    S' = 4 terms of ``M_4(F')`` and of the facets' masses into ``wk`` (as ``cones._edge_terms`` with moments, less the
    ridges' 2-D masses, which only the S' = 4 covariance uses), with their ends' errors (``res``: :func:`_edge5`;
    ``cones._end_bounds``); each left out under its bound when both are ``_DROP5`` nats below their references;
    returns ok."""
    d0, sgn, ref5, ref4, shift = par
    lo, hi = _edge_range(g, k, yv)
    if not lo < hi:
        return True
    R = _edge_R(g, k, d)
    s0 = min(max(0.0, lo), hi)
    rho2 = max(R + s0 * s0, 1e-300)
    fl, d2, fac, se, sb = _edge_flags(g, k, d, wk, (lo, hi))
    n = fl.shape[0]
    q2 = d0 * d0 + rho2
    b4 = math.log(n * math.sqrt(0.5 * math.pi) / (4.0 * math.pi)) - 0.5 * rho2 - 0.5 * math.log(rho2)
    b5 = b4 + 0.5 * rho2 + math.log(d0) - 0.5 * math.log(q2) + _log_q(math.sqrt(q2))
    if b5 <= ref5 - _DROP5 and b4 <= ref4 - _DROP5:
        acc[2] = _lse_pair(acc[2], b5 + max(0.0, 0.5 * math.log(rho2)) - shift)
        _drop_edge(g, k, wk, b4 + max(0.0, 0.5 * math.log(rho2)), fac, 1)
        return True
    out5, out4 = np.empty(n), np.empty((2, n))
    ok, tr5, tr4 = edge_fused_logs(R, d0 * d0, d2, fl, out5, out4)
    for q in range(n):
        s4 = 0.5 * math.log(d2[q]) - _LOG_4PI2 if d2[q] > 0.0 else -_INF
        sign4 = -_sign(d[fac[q]]) * se[q] * sb[q]
        _adds(acc, sgn * sign4, out5[q] + s4 + math.log(d0), shift)
        amp = flag_amp(g, k, q, fl, d)
        geom_term(acc, out5[q] + s4 + math.log(d0) - shift, amp)
        _add(wk.acc, sign4, out4[0, q] + s4)
        _add(wk.facc[fac[q]], se[q] * sb[q], out4[1, q])
        geom_term(wk.acc, out4[0, q] + s4, amp)
        geom_term(wk.facc[fac[q]], out4[1, q], amp)
        if tr5 > -_INF:
            acc[2] = _lse_pair(acc[2], tr5 + s4 + math.log(d0) - shift)
        if tr4 > -_INF:
            wk.acc[2] = _lse_pair(wk.acc[2], tr4 + s4)
            wk.facc[fac[q], 2] = _lse_pair(wk.facc[fac[q], 2], tr4 - _LOG_4PI2)
    ends = (lo, hi, *_end_errors(g, k, d, yv, res, lo, hi))
    qlb = end_logs(R, ends, fl, d2)
    acc[2] = _lse_pair(acc[2], end_bound(qlb, 5, d0, 0.0) - shift)
    wk.acc[2] = _lse_pair(wk.acc[2], end_bound(qlb, 4, 0.0, 0.0))  # M_4(F')'s own: the line bound (end_logs)
    _facet_end_bounds(wk, R, (fl, d2, fac), ends)
    return ok


@_jit
def _facet_end_bounds(wk, R, flags, ends):
    """The ends' errors of an edge in its facets' sums ``wk.facc`` (the S' = 4 means of :func:`_four_finish`): the
    moments' part of ``cones._end_bounds``, the same operations (``phi(d) C``'s first-order bound per flag, ``flags =
    (fl, d2, fac)``). Its mass part (``M_4(F')`` takes :func:`end_bound`'s) and ridge part (only the S' = 4 covariance,
    which S' = 5 does not use, reads ``racc``) are not computed (k5c: they were, and discarded)."""
    for w in range(2):
        t, dt = ends[w], ends[2 + w]
        if not math.isfinite(t) or not dt < _INF:
            continue
        q = R + t * t
        if not (dt > 0.0 and q > 0.0):
            continue
        facet_end_terms(wk.facc, flags, t, dt)


@_jit
def _four_start(g, d, wk):
    """The S' = 4 terms of ``M_4(F')`` and its facets' masses without edges (``cones.pair_moments``' first part);
    returns ok (False: flagged)."""
    inside = True
    for f in range(d.size):
        if g.fvalid[f] and d[f] <= 0.0:
            inside = False
    if inside:
        _add(wk.acc, 1.0, 0.0)
    fl1 = _facets_and_ridges(g, d, wk, 1)
    fl2, g_out = _line_offsets(g, d, wk, 1)
    if fl1 or fl2:
        return False
    ok = _ridge_terms(g, d, g_out, wk, 1)
    for r in range(g.ri.size):  # the geometry's rounding of the ridge terms W(d_f, |e|) <= Q(|d_f|) Q(|e|)
        if g_out[r]:
            continue
        for side in range(2):
            f = g.ri[r] if side == 0 else g.rj[r]
            ee = wk.e[r, side]
            if d[f] != 0.0 and ee != 0.0:
                geom_term(wk.acc, _log_q(abs(d[f])) + _log_q(abs(ee)), _ridge_unit(g, r, d) / math.hypot(d[f], ee))
    return ok


@_jit
def _four_finish(g, N4, d, wk, mean):
    """``(log M_4, rel, err_mean)`` of ``F'`` from ``wk`` (``cones.pair_moments``' end), its mean into ``mean``;
    ``rel = inf`` when the signed sum has no positive result."""
    pos, neg, err = wk.acc[0], wk.acc[1], wk.acc[2]
    if pos == -_INF:
        return -_INF, _INF, _INF
    ratio = math.exp(neg - pos) if neg > -_INF else 0.0
    if not ratio < 1.0:
        return -_INF, _INF, _INF
    lm = pos + math.log1p(-ratio)
    rel = math.exp(err - lm) + 4.0 * _EPS * (1.0 + ratio) / (1.0 - ratio) + 4.0 * _EPS * (1.0 + abs(lm))
    err1, _ = _cone_moments_sums(g, N4, d, wk, lm, mean, np.zeros((4, 4)))
    return lm, rel, err1


@_jit
def _facet_pass_fused(g, N4, D4, V4, par, acc, flagged, out4):
    """:func:`_facet_pass`'s edge pass with the facet's S' = 4 mass and mean (``out4 = (l4, r4, e4, mu4)``, (M,) each
    but ``mu4`` (M, 4); ``r4 = inf``: not resolved)."""
    d0, sgn, ref, shift = par
    G, L, F = g.ri.size, g.lr.size, g.fvalid.size
    l4, r4, e4, mu4 = out4
    for m in range(D4.shape[0]):
        l4[m], r4[m], e4[m] = -_INF, _INF, _INF
        if flagged[m]:
            continue
        d = D4[m]
        wk = _Work(np.empty((G, 2)), np.empty(L), np.array([-_INF, -_INF, -_INF, -_INF]), np.full((F, 4), -_INF),
                   np.full((G, 4), -_INF))
        ok4 = _four_start(g, d, wk)  # False: the S' = 4 row is flagged (its mean is then not used)
        res = _vertex_residuals(g, d, V4[m])
        ok = True
        for k in range(g.eva.size):
            ok = _edge_fused(g, k, d, V4[m], (d0[m], sgn[m], ref[m], wk.acc[3], shift[m]), acc[m], wk, res) and ok
        flagged[m] = not ok
        if ok4:
            l4[m], r4[m], e4[m] = _four_finish(g, N4, d, wk, mu4[m])


PAIRS_PER_THREAD5 = 2  # fewest pairs of one facet pass worth a worker thread (~0.1-1 ms a pair and facet)


def _run(g, D4, V4, par, acc, edges, flagged, threaded=True):
    """:func:`_facet_pass` over contiguous pieces of the rows in worker threads (each row alone into its own rows of
    ``acc`` and ``flagged``: the bits do not depend on the thread count); in this thread when not ``threaded``."""
    def work(a, b):
        _facet_pass(g, D4[a:b], V4[a:b], tuple(p[a:b] for p in par), acc[a:b], edges, flagged[a:b])

    if not threaded:
        work(0, D4.shape[0])
        return
    run_split(work, D4.shape[0], min_per_thread=PAIRS_PER_THREAD5, pieces_per_thread=2)


def _signed_mass(acc):
    """``(log_mass, rel, bad)`` (M,) from the signed log sums ``acc`` (M, 4) ``[pos, neg, err, top]``: the sum's bound
    over the mass plus the rounding of the difference (as ``cones.pair_moments``)."""
    pos, neg, err = acc[:, 0], acc[:, 1], acc[:, 2]
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        ratio = np.where(neg > -np.inf, np.exp(neg - pos), 0.0)
        bad = ~(pos > -np.inf) | ~(ratio < 1.0)
        lm = np.where(bad, -np.inf, pos + np.log1p(-np.where(bad, 0.0, ratio)))
        rel = (np.exp(err - lm) + 4.0 * _EPS * (1.0 + ratio) / (1.0 - ratio) + 4.0 * _EPS * (1.0 + np.abs(lm)))
    return np.where(bad, -np.inf, lm), np.where(bad, np.inf, rel), bad


def sum_rounding(acc, lm, n_terms):
    """Relative bound of the rounding of the signed log sums ``acc`` (M, 4) of ``n_terms`` additions each
    (``_lse_pair``: each addition errs by at most ``eps (2 + |log of the partial sum|)`` relative, and the partial sums
    stay below the final one): ``N eps ((2 + |pos|) e^{pos - lm} + (2 + |neg|) e^{neg - lm})``; the terms' own errors
    (a group's rounding, :func:`merge_side`) are in ``acc``'s error already."""
    pos, neg = acc[:, 0], acc[:, 1]
    with np.errstate(invalid="ignore", over="ignore"):
        return n_terms * _EPS * ((2.0 + np.abs(pos)) * np.exp(pos - lm)
                                 + np.where(neg > -np.inf, (2.0 + np.abs(neg)) * np.exp(neg - lm), 0.0))


def _run_fused(fc: Facet5, D4, V4, par, acc, flagged, out4, threaded=True):
    """:func:`_facet_pass_fused` over the rows, in worker threads as :func:`_run`."""
    N4 = np.ascontiguousarray(fc.N4)

    def work(a, b):
        _facet_pass_fused(fc.g, N4, D4[a:b], V4[a:b], tuple(p[a:b] for p in par), acc[a:b], flagged[a:b],
                          tuple(o[a:b] for o in out4))

    if not threaded:
        work(0, D4.shape[0])
        return
    run_split(work, D4.shape[0], min_per_thread=PAIRS_PER_THREAD5, pieces_per_thread=2)


def _mass_core(Nrm, D, Yv, Yr, shape, threaded, with_four):
    """The passes of :func:`cone5_log_mass_batch`; with ``with_four`` the edge pass also gives each facet's S' = 4 mass
    and mean (:func:`_facet_pass_fused`). Returns ``(log_mass, rel, flagged, parts, fours)``: ``parts`` the facets
    with their cross-sections ``(fc, D4, V4)``, ``fours`` per facet ``(l4, r4, e4, mu4)`` (or None)."""
    M = D.shape[0]
    flagged = np.min(np.abs(D), axis=1) < 1e-8
    if not shape or not all(fc.good for fc in shape):
        flagged[:] = True
    acc = np.full((M, 4), -np.inf)
    inside = np.all(D > 0, axis=1)  # P = 1{0 in P} - sum_i sign(d_i) B_i
    acc[inside, 0], acc[inside, 2], acc[inside, 3] = 0.0, math.log(TERM_ULPS * _EPS), 0.0
    parts = [(fc, *facet_offsets(fc, D, Yv)) for fc in shape] if not flagged.all() else []
    fours = [(np.full(M, -np.inf), np.full(M, np.inf), np.full(M, np.inf), np.zeros((M, 4))) for _ in parts] \
        if with_four else None
    # each facet's terms in sums of their own, relative to e^shift (shift = log Q(|d_i|), B_i's size), added to the
    # pair's as one term (merge_side): the pair's sum has a term per facet and its rounding is bounded by few
    facc = [np.full((M, 4), -np.inf) for _ in parts]
    shifts = [log_ndtr(-np.abs(D[:, fc.i])) for fc, _, _ in parts]
    for edges in (False, True):
        ref = np.max([acc[:, 3]] + [a[:, 3] for a in facc], axis=0)  # edges dropped against the largest near term
        for q, (fc, D4, V4) in enumerate(parts):
            par = (np.abs(D[:, fc.i]), -np.sign(D[:, fc.i]), ref, shifts[q])
            if edges and with_four:
                _run_fused(fc, D4, V4, par, facc[q], flagged, fours[q], threaded)
            else:
                _run(fc.g, D4, V4, par, facc[q], edges, flagged, threaded)
    for (fc, _, _), a, sh in zip(parts, facc, shifts):
        g = fc.g
        merge_side(acc, a, sh, 1 + g.fvalid.size + 2 * g.ri.size + 2 * g.lr.size)
    lm, rel, bad = _signed_mass(acc)
    rel = capped(np.where(bad, np.inf, rel + sum_rounding(acc, lm, len(parts) + 1)))  # a term per facet, the constant
    return lm, rel, flagged | bad, parts, fours


def capped(rel):
    """The bars above ``cones.FIRST_ORDER_CAP`` reported as inf (as at S' = 4): their input terms are first order and
    bound nothing there (tiny 5-D / 6-D boxes far from the mean, bars 40 to 9e3, were up to 1e6x (S' = 5) and 1.5e9x
    (S' = 6) outside them, tests/test_highdim_cone56_cap.py); such a pair takes RQMC or, without a finite bar, the
    thin-box cap of its term."""
    return np.where(rel <= FIRST_ORDER_CAP, rel, np.inf)


def cone5_log_mass_batch(Nrm, D, Yv, Yr, shape=None, threaded=True):
    """``(log_mass, rel, flagged)`` (M,) of ``N(0, I_5)`` on ``{Nrm y <= D_m}`` (unit rows ``Nrm`` (F, 5), offsets
    ``D`` (M, F), vertices ``Yv`` (M, V, 5) relative to each mean, unit rays ``Yr`` (R, 5); pointed) by one 1-D
    integral per flag (module docstring); ``shape``: :func:`shape5` of the region (built from row 0 when None).
    Flagged rows (a facet plane within 1e-8 of the mean, the mean on a plane of a facet's flags, an unresolved
    integral, inconsistent flags, a signed sum without a positive result) must be computed otherwise; the caller
    judges ``rel``. ``threaded``: the rows in worker threads (False: in this thread, for a caller that runs regions
    in threads of its own)."""
    Nrm = np.ascontiguousarray(Nrm, dtype=np.float64)
    D = np.ascontiguousarray(np.atleast_2d(D), dtype=np.float64)
    Yv = np.ascontiguousarray(Yv, dtype=np.float64).reshape(D.shape[0], -1, 5)
    Yr = np.asarray(Yr, dtype=np.float64).reshape(-1, 5)
    shape = shape5(Nrm, D[0], Yv[0], Yr) if shape is None else shape
    return _mass_core(Nrm, D, Yv, Yr, shape, threaded, False)[:3]


def cone5_moments_batch(Nrm, D, Yv, Yr, *, moments=2, shape=None, threaded=True):
    """``(log_mass, mean (M, 5), cov (M, 5, 5), rel, moment_bound, flagged)``: :func:`cone5_log_mass_batch` and the
    moments by the divergence theorem (NOTES §3) over the facets, each an S' = 4 problem at its foot (its mass and
    mean from the edge pass's nodes, ``_facet_pass_fused``): ``E[y 1_P] = -sum_i n_i phi(d_i) M_4(F_i')`` and
    ``E[y y^T 1_P] = P I - sum_i phi(d_i) M_4(F_i') n_i (d_i n_i + U_i m_i)^T`` (``m_i`` the facet's in-plane mean),
    symmetrised. ``moment_bound`` bounds the errors of the whitened mean and covariance (max-norm, the larger of the
    two, :func:`_moment_bound`). ``threaded``: as :func:`cone5_log_mass_batch`."""
    Nrm = np.ascontiguousarray(Nrm, dtype=np.float64)
    D = np.ascontiguousarray(np.atleast_2d(D), dtype=np.float64)
    Yv = np.ascontiguousarray(Yv, dtype=np.float64).reshape(D.shape[0], -1, 5)
    Yr = np.asarray(Yr, dtype=np.float64).reshape(-1, 5)
    shape = shape5(Nrm, D[0], Yv[0], Yr) if shape is None else shape
    lm, rel, fl, parts, fours = _mass_core(Nrm, D, Yv, Yr, shape, threaded, moments >= 1)
    M = D.shape[0]
    m1, m2, extra = np.zeros((M, 5)), np.zeros((M, 5, 5)), np.zeros(M)
    if moments < 1 or fl.all():
        return lm, m1, m2, rel, extra, fl
    sums = np.zeros((4, M))  # sum w r4, sum w (r4 |v| + 2 e4 (1 + r4)), sum w, max r4
    for (fc, D4, V4), (l4, r4, e4, mu4) in zip(parts, fours):
        Di = D[:, fc.i]
        weak = np.nonzero(~(r4 <= FACET_REL) & ~fl & ~_light_facet(Di, fc, (l4, r4, e4, mu4), lm))[0]
        if weak.size:
            extra[weak] += _weak_facets(fc, (D4[weak], V4[weak], Di[weak], lm[weak]), (l4, mu4, r4), weak)
        fl = fl | ~np.isfinite(r4)
        with np.errstate(invalid="ignore", over="ignore"):
            w = np.exp(-0.5 * Di * Di - _LOG_SQRT_2PI + l4 - lm)  # phi(d_i) M_4(F_i') / P
        w = np.where(fl, 0.0, w)
        v = Di[:, None] * fc.n[None] + mu4 @ fc.U.T
        m1 -= w[:, None] * fc.n[None]
        m2 -= w[:, None, None] * fc.n[None, :, None] * v[:, None, :]
        ra, ea = np.where(fl, 0.0, r4), np.where(fl | ~np.isfinite(e4), 0.0, e4)
        sums += np.array([w * ra, w * (ra * np.abs(v).max(axis=1) + 2.0 * ea * (1.0 + ra)), w, ra])
        sums[3] = np.maximum(sums[3], ra)
    m2 = np.eye(5)[None] + 0.5 * (m2 + np.swapaxes(m2, 1, 2))
    cov = m2 - m1[:, :, None] * m1[:, None, :]
    mbar = _moment_bound(sums, rel, m1, m2, len(parts)) + extra
    return lm, m1, cov, rel, np.where(fl, np.inf, mbar), fl


def _moment_bound(sums, rel, m1, m2, F):
    """The larger of the bounds on the whitened mean's and covariance's errors (max-norm). With the facets' weights
    ``w_i = phi(d_i) M_4(F_i') / P`` computed as ``w_i (1 + delta_i) / (1 + delta)`` (``|delta_i| <= r4_i`` the facets'
    relative bars, ``|delta| <= rel`` the mass's), ``m1 = -sum n_i w_i`` is off by ``-delta m1 + sum n_i w_i delta_i``
    over ``1 + delta``: ``(sum w r4 + rel |m1|) (1 + rel) / (1 - max r4)``, the mass's error entering through ``|m1|``
    rather than through every weight (a thin box's two large weights cancel: a 1e-4 box's bound was ~1e4 rel); the
    second moment likewise, each facet's ``v_i = d_i n_i + U_i m_i`` adding ``r4 |v_i| + 2 e4`` (``|U_i dm| <= 2 e4``,
    ``e4`` the in-plane mean's max-norm bound) and the mass's ``rel |m2 - I|``; the covariance ``m2 - m1 m1^T`` then
    ``+ 2 |m1| em + em^2``; plus the sums' rounding, ``4 F eps sum w``. ``sums = (sum w r4, sum w (r4 |v| + 2 e4 (1 +
    r4)), sum w, max r4)`` (4, M)."""
    with np.errstate(invalid="ignore", over="ignore"):
        f = (1.0 + rel) / (1.0 - sums[3])
        rnd = 4.0 * F * _EPS * sums[2] * (1.0 + np.abs(m2).max(axis=(1, 2)))
        em = (sums[0] + rel * np.abs(m1).max(axis=1)) * f + rnd
        e2 = (sums[1] + rel * np.abs(m2 - np.eye(5)[None]).max(axis=(1, 2))) * f + rnd
        ec = e2 + em * (2.0 * np.abs(m1).max(axis=1) + em)
    return np.where(rel < 1.0, np.maximum(em, ec), np.inf)


FACET_REL = 1e-8  # facet rows of the moments whose S' = 4 cone bar exceeds this (or that the cones flag) are redone
FACET_KEEP = 1e-6  # ... unless the bar is below this and the row's share of the moment bound is below FACET_REL
WEAK_SHARE = 1e-13  # ... unless their closest-point bound on phi(d_i) M_4(F_i') is below this share of the mass


def _light_facet(Di, fc: Facet5, four, lm):
    """Facet rows whose S' = 4 bar ``r4 <= FACET_KEEP`` (the redo's own acceptance) adds at most ``FACET_REL`` to the
    moment bound (:func:`_moment_bound`'s terms ``w (r4 (1 + |v|) + 2 e4 (1 + r4))``, ``w = phi(d_i) M_4(F_i') / P``):
    a redo (accepted up to the same ``FACET_KEEP``) could lower the bound by little (k5c: ``[5,8,8,6]`` points 0-1
    redid 420 rows, 3.9 s CPU, once the ends' errors were in ``r4``; now 258, 2.8 s)."""
    l4, r4, e4, mu4 = four
    with np.errstate(invalid="ignore", over="ignore"):
        w = np.exp(-0.5 * Di * Di - _LOG_SQRT_2PI + l4 - lm)
        v = np.abs(Di[:, None] * fc.n[None] + mu4 @ fc.U.T).max(axis=1)
        share = w * (r4 * (1.0 + v) + 2.0 * e4 * (1.0 + r4))
    return (r4 <= FACET_KEEP) & (share <= FACET_REL)


def _weak_facets(fc: Facet5, rows, out, idx):
    """Facet rows the S' = 4 cones did not resolve (the foot far outside ``F_i'``: the signed sum cancels), in place
    in ``out = (l4, mu4, r4)`` at ``idx``: left out where the closest-point bound ``phi(d_i) Q(|v*|) / P`` is below
    ``WEAK_SHARE`` (that bound times ``2 + |d_i| + |v*|`` is returned, per row, for the moment bound), else by the
    S' = 4 route's own fallback (``cones.cones_first`` over ``sliced.with_fallback``: the S = 3 slices)."""
    from .cones import cones_first
    from .sliced import closest_distance, with_fallback

    D4, V4, Di, lm = rows
    l4, mu4, r4 = out
    y4, lq = closest_distance(fc.N4, D4)
    lb = -0.5 * Di * Di - _LOG_SQRT_2PI + lq - lm
    drop = lb <= math.log(WEAK_SHARE)
    extra = np.where(drop, np.exp(lb) * (2.0 + np.abs(Di) + np.linalg.norm(y4, axis=1)), 0.0)
    l4[idx[drop]], mu4[idx[drop]], r4[idx[drop]] = -np.inf, 0.0, 0.0
    redo = ~drop
    if np.any(redo):
        l2, m2, _, r2, _ = cones_first(with_fallback, fc.N4, D4[redo], V4[redo], fc.R4, moments=1, tol=1e-10,
                                       accuracy="relative", closest=y4[redo], rng=None)
        l4[idx[redo]], mu4[idx[redo]], r4[idx[redo]] = l2, m2, np.where(r2 <= 1e-6, r2, np.inf)
    return extra


def cone5_log_mass(Nrm, D, Yv, Yr, tol=1e-6):
    """``(log_mass, rel, flagged)`` of ``N(0, I_5)`` on ``{Nrm y <= D}`` (unit rows ``Nrm`` (F, 5), offsets ``D`` (F,),
    vertices ``Yv`` (V, 5) relative to the mean, unit rays ``Yr`` (R, 5); pointed): :func:`cone5_log_mass_batch` of
    one pair, flagged also when ``rel`` exceeds ``tol``."""
    lm, rel, fl = cone5_log_mass_batch(Nrm, np.atleast_2d(D), np.asarray(Yv)[None], Yr)
    return float(lm[0]), float(rel[0]), bool(fl[0] or not rel[0] <= tol)


def cone5_moments(Nrm, D, Yv, Yr, tol=1e-6):
    """``(log_mass, mean (5,), cov (5, 5), rel, flagged)`` of one pair (:func:`cone5_moments_batch`): ``rel`` the
    mass's bar plus the moments' bound; flagged also when it exceeds ``tol``."""
    lm, m, c, rel, mb, fl = cone5_moments_batch(Nrm, np.atleast_2d(D), np.asarray(Yv)[None], Yr)
    r = float(rel[0] + mb[0])
    return float(lm[0]), m[0], c[0], r, bool(fl[0] or not r <= tol)


# ---------------------------------------------------------------------------------------------------
# the S = 5 batch (``polytopes.BATCH_INTEGRATORS[5]``): cones where certified, RQMC for the rest
# ---------------------------------------------------------------------------------------------------

# Bar the cones accept for any pair (the caller's weight-loosened tolerance when looser): ``log_marginal_error`` is the
# pairs' bars averaged with the posterior weights, so pairs at 1e-7 add at most 1e-7 to it, against issue 14's 1e-6
# target at S = 5 (S = 4 keeps ``cones.CONE_MASS_TOL`` = 1e-9 against its 1e-8 target).
CONE5_TOL = 1e-7
# Moment bound (whitened, absolute) the cones accept: S = 5 makes no posterior-moment claim (issue 14's 1e-8 is "where
# the engine claims that accuracy"), and the alternative, RQMC, is ~1e-2 off. Measured on 150 regions of the
# [5,8,8,6] figure: moment bounds 1e-12 to 8e-6 where the mean lies far outside (the facets' S' = 4 sums cancel).
MOMENT5_TOL = 1e-4
RQMC_TRY = 1e-3  # an uncertified pair tries RQMC only when its cone bars exceed this (RQMC's bars: 1e-3 to 0.7)


class Cones5Geometry:
    """Per-region data of the S = 5 batch (``polytopes.GEOMETRIES[5]``): lower-triangular factors ``chol`` (R, 5, 5)
    of Sigma_omega (the caller's accurate factors when given; None if one is not positive definite) and ``ok`` (R,):
    regions with facets, vertices and no lineality (the others take the per-region path)."""

    def __init__(self, polytopes, covs, chol=None):
        self.chol, self.ok = factors_and_ok(polytopes, covs, chol, 5)
        if not USE_CONES5:
            self.ok[:] = False


def _cones_or_flagged(Nrm, D, Yv, Yr, moments, threaded=True):
    """:func:`cone5_moments_batch`, every row flagged where the combinatorics are degenerate (``LinAlgError``)."""
    try:
        return cone5_moments_batch(Nrm, D, Yv, Yr, moments=moments, threaded=threaded)
    except np.linalg.LinAlgError:
        M = D.shape[0]
        return (np.full(M, -np.inf), np.zeros((M, 5)), np.zeros((M, 5, 5)), np.full(M, np.inf), np.full(M, np.inf),
                np.ones(M, dtype=bool))


def region5_moments(Nrm, D, Yv, Yr, *, moments, tol, rng=None, relative=True, cones=None):
    """The pairs of one region (rows of ``D``, ``Yv``) by :func:`cone5_moments_batch` where certified (not flagged,
    mass bar within ``max(tol, CONE5_TOL)``, moment bound within ``MOMENT5_TOL``), the others by RQMC
    (``qmc.rqmc_moments``, tried where the cones' bars exceed ``RQMC_TRY``) where its bar is the smaller (a
    cancelling sliver far from the mean keeps its cone bar of 3e-7 rather than RQMC's 7e-4); a cone bar above
    ``FIRST_ORDER_CAP`` is inf (:func:`capped`), so RQMC is taken wherever its bar is finite, and otherwise the pair
    keeps an infinite bar (its term's thin-box cap, ``distributions._log_term_caps``). ``cones``: that
    function's output when the caller has it. Returns ``(log_mass, mean, cov, rel, used_rqmc, moment_bounds)``, the
    last (M, 2) the rows' whitened moment bounds (:func:`_moment_bound`, the larger of the mean's and the
    covariance's, for both; inf where RQMC took the row or the bound is above ``FIRST_ORDER_CAP``)."""
    from .qmc import rqmc_moments

    M = D.shape[0]
    lm, mean, cov, rel, mb, fl = _cones_or_flagged(Nrm, D, Yv, Yr, moments) if cones is None else cones
    cap = np.maximum(tol, CONE5_TOL)
    bad = fl | ~(rel <= cap) | (moments >= 1) & ~(mb <= np.maximum(cap, MOMENT5_TOL))
    bad &= ~(rel + mb <= RQMC_TRY)  # bars RQMC does not reach: the cones' result stands, with its bar
    idx = np.nonzero(bad)[0]
    if idx.size:
        l2, m2, c2, r2 = rqmc_moments(Nrm, D[idx], moments=moments, rng=rng, relative=relative)
        better = ~(r2 >= np.where(fl[idx], np.inf, rel[idx] + mb[idx]))  # the smaller bar (RQMC: ~1e-3 at best)
        idx, bad = idx[better], np.zeros(M, dtype=bool)
        bad[idx] = True
        lm[idx], rel[idx] = l2[better], r2[better]
        if moments >= 1:
            mean[idx] = m2[better]
        if moments >= 2:
            cov[idx] = c2[better]
    bounds = np.repeat(np.where(bad, np.inf, capped(mb))[:, None], 2, axis=1)
    return lm, mean, cov, rel, bad, bounds


def cones5_batch(req, geo, res, store):
    """S = 5, ``method="auto"``: every needed (region, point) pair of the regular regions by :func:`region5_moments`
    (one :func:`shape5` per region, vectorised over its points, the regions in worker threads), pairs of provably
    negligible weight skipped and tolerances loosened by weight (``sliced.pair_tolerances``); ``store(res, req,
    chol, r, rows, lm, mean, cov, rel, eb=moment bounds)`` files whitened results. Returns the regions left to the
    per-region path."""
    from .sliced import closest_distance, pair_tolerances

    pr_all, pn_all = np.nonzero(req.need & geo.ok[:, None])
    jobs = []
    for r in np.unique(pr_all):
        lo, hi = np.searchsorted(pr_all, [r, r + 1])  # pr_all ascending (np.nonzero of (R, N)): pn_all[pr_all == r]
        rows = pn_all[lo:hi]
        Nrm, D, Yv, Yr = whitened5(req.polytopes[r], geo.chol[r], req.means[r, rows])
        _, log_upper = closest_distance(Nrm, D)
        skip, tol = pair_tolerances(req.weight_scale(np.full(rows.size, r), rows), log_upper)
        go = ~skip
        if np.any(go):
            jobs.append((r, rows[go], tol[go], (Nrm, D[go], Yv[go], Yr)))
    outs = map_regions(lambda job: _cones_or_flagged(*job[3], req.moments, threaded=False), jobs)
    for (r, rows, tol, (Nrm, D, Yv, Yr)), out in zip(jobs, outs):
        lm, my, cy, rel, _, eb = region5_moments(Nrm, D, Yv, Yr, moments=req.moments, tol=tol, rng=req.rng,
                                                 relative=req.relative, cones=out)
        store(res, req, geo.chol[r], r, rows, lm, my, cy, rel, eb=eb)
    res.has_error[geo.ok] = True
    for r in np.nonzero(geo.ok)[0]:
        res.methods[r] = "cones5"
    return ~geo.ok


def warm() -> None:
    """Compile (into numba's cache) what the S = 5 batch runs: the flags, the mass passes and the facets' S' = 4
    moments, in worker threads and in this one, on a rotated 5-D box (``python -m engine.warmup`` calls this)."""
    Q, _ = np.linalg.qr(np.arange(25.0).reshape(5, 5) ** 1.5 + np.eye(5))
    a, b = np.array([-1.0, -0.5, 0.2, -2.0, -0.7]), np.array([0.7, 1.5, 2.0, 0.1, 1.1])
    Nrm = np.vstack([Q.T, -Q.T])
    corners = np.array(np.meshgrid(*zip(a, b), indexing="ij")).reshape(5, -1).T
    D, Yv = np.concatenate([b, -a])[None], (corners @ Q.T)[None]
    for threaded in (True, False):
        cone5_moments_batch(Nrm, np.repeat(D, 4, axis=0), np.repeat(Yv, 4, axis=0), np.zeros((0, 5)), moments=2,
                            threaded=threaded)
