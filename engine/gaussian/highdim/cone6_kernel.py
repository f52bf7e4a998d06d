"""S' = 6 compiled: the ridge integrals of ``cones6`` with their outer integral in closed form, one smooth 2-D
integral per S' = 6 flag whose inner integral is shared by the flags of an S' = 4 edge and costs a few nodes.

``cones6`` writes the mass of ``N(0, I_6)`` on ``P`` (Theorem 1, eq. 5, in whitened coordinates; NOTES §6) as

    P = 1{0 in P} - sum_i sign(d_i) [1{0 in F_i} Q(|d_i|) - sum_j sign(e_ij) R_ij],
    R_ij = e int_1^inf phi(sigma e) [Q(d) - Q(sigma d)] M_4(sigma G_ij) dsigma      (d = |d_i|, e = |e_ij|),

and evaluates ``R_ij`` by an outer rule in ``sigma`` over S' = 4 rows (55-150 rows a ridge). As at S' = 5
(``cones5``), every term of the S' = 4 flag decomposition of ``M_4(sigma G)`` (``cones``) depends on the scale only
through a Gaussian factor ``e^{-sigma^2 q / 2}``: the constant ``1{0 in G}`` (``q = 0``), ``Q(sigma a) = (a / pi)
int_0^inf e^{-sigma^2 (a^2 + rho^2)/2} / (a^2 + rho^2) drho`` (Craig's form), the ridge term ``W(sigma d_f, sigma e_r)
= (|d_f| / 2 pi) int_{e_r}^inf e^{-sigma^2 (d_f^2 + rho^2)/2} / (d_f^2 + rho^2) drho`` and the edge flag term ``E(sigma)
= (|d_f| / 4 pi^2) int_0^inf e^{-sigma^2 (R + s^2)/2} / (R + s^2) DTheta(s) s / sqrt(c + s^2) ds``. The outer integral
of one such factor is a wedge of the plane (``X > a``, ``d < Y < X d / a``, i.e. ``Y > d``, ``X > Y a / d``):

    e int_1^inf phi(sigma e) [Q(d) - Q(sigma d)] e^{-sigma^2 q / 2} dsigma = e w6(q),
    w6(q) = (d / (2 pi a)) J(d, a),   a = sqrt(e^2 + q),   J(d, a) = int_a^inf e^{-(d^2 + rho^2)/2} / (d^2 + rho^2) drho

(``J`` as in ``cones``: ``W(d, a) = (d / 2 pi) J(d, a)`` is that wedge's mass). So ``R_ij`` is ``cones5``'s S' = 5
construction with ``d w(q)`` replaced by ``e w6(q)``:

    1{0 in G} -> (d / 2 pi) J(d, e),     Q(sigma |d_f|) -> (|d_f| e / pi) K6(d_f^2, 0),
    W(sigma d_f, sigma e_r) -> (|d_f| e / 2 pi) K6(d_f^2, |e_r|),
    K6(B, r) = int_r^inf w6(B + rho^2) / (B + rho^2) drho,
    E(sigma) -> (|d_f| e / 4 pi^2) int_0^inf w6(R + s^2) / (R + s^2) DTheta(s) s / sqrt(c + s^2) ds,

beyond the edge (``DTheta`` constant) ``DTheta K6(d_f^2, sqrt(c + end^2))``. Each is one 1-D integral on ``cones``'
graded Gauss-Legendre nodes whose integrand needs ``J`` at every node. ``J(d, a(s))`` with ``a^2 = A0 + s^2`` is a
tail integral in ``s``: at the last node it comes from ``cones.log_j``'s graded rule, below it by adding the
integral over each gap between consecutive nodes (8-node Gauss-Legendre in ``s``, all terms positive, so relative
accuracy is kept): one cheap recurrence per node, shared by every flag of the edge. That is NOTES §6's (S - 2) = 4
dimensional orthoscheme integral less the two that close (the S' = 4 arctangent exchange and this wedge), with the
inner one of the two left at a few exponentials a node instead of an S' = 4 row.

Bar: as ``cones5``, ``TERM_ULPS eps (1 + |log term|)`` per term (the new terms checked against mpmath in
``tests/test_highdim_cones6.py``), the dropped edges' bounds (``R`` flag ``<= sqrt(pi/2) / (4 pi rho) e Q(d) Q(a) /
a``, since ``w6(q) <= Q(d) Q(a) / a``), the windows' truncation bounds, the geometry's rounding where a term of G sees
it amplified (``cones5.geom_term``: the mean near a face of P), and the signed sums' rounding.
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
from .cones import _DMAX as _DMAX4
from .cones import (
    _GW,
    _GX,
    _MAX_GRADES,
    _NODES,
    TERM_ULPS,
    _add,
    _clip,
    _edge_cuts,
    _edge_flags,
    _edge_R,
    _edge_range,
    _end_errors,
    _exp_point,
    _log_gauss_tail,
    _log_q,
    _sign,
    _trunc_bound,
    _vertex_residuals,
    _Work,
    consistent,
    log_j,
    theta_diff,
)
from .cones import WINDOW as WINDOW4
from .cones5 import (
    _DROP5,
    _adds,
    _complement,
    _near5,
    _ridge_unit,
    _signed_mass,
    _trunc5,
    capped,
    end_bound,
    end_logs,
    flag_amp,
    geom_term,
    merge_side,
    sum_rounding,
)
from .cones5 import _geometry as _geometry4
from .cones5 import log_k as log_k5
from .shape_kernel import cone_shape_compiled

_jit = numba.njit(cache=True, nogil=True, error_model="numpy")
_INF, _EPS = C.INF, C.EPS
_INC = 1e-9  # vertex-facet incidence tolerance (relative to 1 + |D|), as cones6
_G8X, _G8W = np.polynomial.legendre.leggauss(8)
NBUF = _NODES * (_MAX_GRADES + 8)  # nodes of one graded rule at most (grades plus the window's sub-panels)
_LOG_PI = math.log(math.pi)
_LOG_2PI = math.log(2.0 * math.pi)
_LOG_4PI2 = math.log(4.0 * math.pi * math.pi)


@_jit
def fill_nodes(sa, U, r0, xs, ws):
    """The nodes ``sa + u`` (ascending) of ``cones``' graded rule on ``u in [0, U]`` (geometric panels from ``r0``,
    the nearest singularity; sub-panels where ``sa u + u^2/2`` changes by more than ``_DMAX``) into ``xs`` and their
    weights times ``e^{-(sa u + u^2/2)}`` into ``ws``; returns ``(count, ok)`` (False: the panels ran out)."""
    left, k, n = 0.0, 0, 0
    while left < U:
        if k >= _MAX_GRADES or not r0 > 0.0:
            return n, False
        right = min(r0 * (2.0 ** (k + 1) - 1.0), U)
        e_l, e_r = sa * left + 0.5 * left * left, sa * right + 0.5 * right * right
        nsub = max(1, int(math.ceil((e_r - e_l) / _DMAX4)))
        if n + nsub * _NODES > xs.size:
            return n, False
        ul = left
        for q in range(1, nsub + 1):
            ur = right if q == nsub else _exp_point(sa, e_l + (e_r - e_l) * q / nsub)
            half, mid = 0.5 * (ur - ul), 0.5 * (ur + ul)
            for m in range(_NODES):
                u = mid + half * _GX[m]
                xs[n] = sa + u
                ws[n] = _GW[m] * half * math.exp(-(sa * u + 0.5 * u * u))
                n += 1
            ul = ur
        left = right
        k += 1
    return n, True


@_jit
def j_at_nodes(A0, d2, xs, n, G):
    """``G[k] = J(d, a_k) e^{(d^2 + a_k^2)/2}``, ``a_k = sqrt(A0 + xs[k]^2)``, for ascending ``xs[:n]`` (``A0 > 0``):
    the last from ``cones.log_j``, each other one from the next by adding the gap, ``int_{s_k}^{s_{k+1}}
    e^{-(s^2 - s_k^2)/2} / (d^2 + A0 + s^2) s / sqrt(A0 + s^2) ds`` (8-node Gauss-Legendre; the integrand's
    singularities at ``s^2 = -A0`` and ``-(d^2 + A0)`` are no nearer than those the nodes' grading resolves);
    returns ok."""
    if n == 0:
        return True
    top = A0 + xs[n - 1] * xs[n - 1]
    lj, ok = log_j(d2, math.sqrt(top))
    G[n - 1] = math.exp(lj + 0.5 * (d2 + top))
    for k in range(n - 2, -1, -1):
        lo, hi = xs[k], xs[k + 1]
        half, mid = 0.5 * (hi - lo), 0.5 * (hi + lo)
        gap = 0.0
        for m in range(8):
            s = mid + half * _G8X[m]
            q = A0 + s * s
            gap += _G8W[m] * math.exp(-0.5 * (s - lo) * (s + lo)) * s / ((d2 + q) * math.sqrt(q))
        G[k] = math.exp(-0.5 * (hi - lo) * (hi + lo)) * G[k + 1] + half * gap
    return ok


@_jit
def theta_and_root(x, y, sg, a, b, c):
    """``(cones.theta_diff(x, y, a, b, c), sqrt(c + sg^2))`` bit for bit, for the clipped nodes ``x = clip(sg)``, ``y =
    clip(-sg)`` (``sg >= 0``) of the edge integrals: theta_diff's ``sqrt(c + x^2)`` is the root itself where ``x ==
    sg``, and where ``y == -x`` (the nodes across the foot) ``Y == -X`` exactly and ``atan(X) - atan(-X)`` is ``2
    atan(X)`` (atan is odd; checked bit for bit in tests/test_highdim_cones6.py): one square root and one arctangent
    a flag and node instead of three and two."""
    ws = math.sqrt(c + sg * sg)
    if x == y:
        return 0.0, ws
    wx = ws if x == sg else math.sqrt(c + x * x)
    X = a * x / (b * wx)
    if y == -x:
        return 2.0 * math.atan(X), ws
    wy = math.sqrt(c + y * y)
    Y = a * y / (b * wy)
    if x * y <= 0.0:
        return math.atan(X) - math.atan(Y), ws
    num = (a / b) * c * (x - y) * (x + y) / (wx * wy * (x * wy + y * wx))
    return math.atan(num / (1.0 + X * Y)), ws


@_jit
def log_k6(d2, e2, B, r, buf):
    """``(log K6', ok)``: ``K6' = int_r^inf J(d, a) / (a (B + rho^2)) drho``, ``a = sqrt(e2 + B + rho^2)`` (``K6``
    without ``d / 2 pi``), graded Gauss-Legendre in ``u = rho - r`` (poles at ``rho^2 = -B``), ``r >= 0``."""
    r0 = math.sqrt(r * r + B)
    if not r0 > 0.0:
        return _INF, False
    xs, ws, G = buf[0], buf[1], buf[2]
    n, ok = fill_nodes(r, _exp_point(r, WINDOW4), r0, xs, ws)
    A0 = e2 + B
    ok = j_at_nodes(A0, d2, xs, n, G) and ok
    total = 0.0
    for k in range(n):
        q = A0 + xs[k] * xs[k]
        total += ws[k] * G[k] / (math.sqrt(q) * (B + xs[k] * xs[k]))
    if not total > 0.0:
        return -_INF, False
    return math.log(total) - 0.5 * (d2 + A0 + r * r), ok


@_jit
def _trunc6(R, A0, d2, cut):
    """log bound of an edge piece's integrand beyond ``cut`` (DTheta <= pi, ``s / sqrt(c + s^2) <= 1``, ``J(d, a) <=
    sqrt(pi/2) e^{-(d^2 + a^2)/2} / (d^2 + a^2)``, ``a^2 >= A0``): ``pi sqrt(pi/2) e^{-(d^2 + A0 + cut^2)/2} tail(cut) /
    (sqrt(A0) (d^2 + A0) (R + cut^2))``."""
    return (math.log(math.pi * math.sqrt(0.5 * math.pi)) - 0.5 * (d2 + A0 + cut * cut) + _log_gauss_tail(cut)
            - 0.5 * math.log(A0) - math.log(d2 + A0) - math.log(max(R + cut * cut, 1e-300)))


@_jit
def edge6_logs(R, d2, e2, d2f, fl, out, buf):
    """``out[f] = log int_0^inf J(d, a) / (a (R + s^2)) DTheta_f s / sqrt(c_f + s^2) ds`` (``a^2 = e^2 + R + s^2``;
    the S' = 6 flag integral without ``|d_f| e d / 8 pi^3``) for the flags ``fl`` (n, 5) of one edge (``R``: squared
    distance of its line in G, ``d2f`` (n,) the flags' squared facet distances in G); returns ``(ok, log bound of
    the windows' truncation)``."""
    n = fl.shape[0]
    lo, hi = fl[0, 3], fl[0, 4]
    S = np.zeros(n)
    bmin = _INF
    for f in range(n):
        out[f] = -_INF
        bmin = min(bmin, fl[f, 1])
    cuts = _edge_cuts(lo, hi)
    A0 = e2 + R
    xs, ws, G = buf[0], buf[1], buf[2]
    ok, trunc = True, -_INF
    for p in range(2):
        sa, sb = cuts[p], cuts[p + 1]
        if not sb > sa:
            continue
        U = _exp_point(sa, WINDOW4)
        end = sb
        if U < sb - sa:
            end = sa + U
        else:
            U = sb - sa
        if not U > 0.0:
            continue
        cnt, good = fill_nodes(sa, U, math.sqrt(sa * sa + bmin * bmin), xs, ws)
        ok = ok and good and j_at_nodes(A0, d2, xs, cnt, G)
        if end < sb:
            trunc = _lse_pair(trunc, _trunc6(R, A0, d2, end))
        S[:] = 0.0
        for k in range(cnt):
            sg = xs[k]
            gr = ws[k] * G[k] / (math.sqrt(A0 + sg * sg) * (R + sg * sg))
            x, y = _clip(sg, lo, hi), _clip(-sg, lo, hi)  # every flag of the edge has the edge's (lo, hi)
            for f in range(n):
                dth, root = theta_and_root(x, y, sg, fl[f, 0], fl[f, 1], fl[f, 2])
                S[f] += gr * dth * sg / root
        base = -0.5 * (d2 + A0 + sa * sa)
        for f in range(n):
            if S[f] > 0.0:
                out[f] = _lse_pair(out[f], base + math.log(S[f]))
    if math.isfinite(cuts[2]):
        for f in range(n):
            dth = theta_diff(hi, lo, fl[f, 0], fl[f, 1], fl[f, 2])
            if dth > 0.0:
                lk, good = log_k6(d2, e2, d2f[f], math.sqrt(fl[f, 2] + cuts[2] * cuts[2]), buf)
                ok = ok and good
                out[f] = _lse_pair(out[f], math.log(dth) + lk)
    return ok, trunc


@_jit
def _near6(g, d4, par, acc, e4, outs, buf):
    """The terms of ``R`` without edges, times ``sgn`` (``par = (d, e, sgn)``), into ``acc``: ``(d / 2 pi) J(d, e)``
    if G's foot is inside G, ``-sign(d_f) (|d_f| e / pi) K6(d_f^2, 0)`` per facet of G whose foot is inside it,
    ``sign(d_f) sign(e_r) (|d_f| e / 2 pi) K6(d_f^2, |e_r|)`` per (ridge, side) whose foot is inside; returns ok."""
    d, e, sgn, shift = par
    foot_out, g_out = outs
    d2, e2 = d * d, e * e
    lde = math.log(d) - _LOG_2PI  # K6 = (d / 2 pi) K6'
    inside = True
    for f in range(d4.size):
        inside = inside and not (g.fvalid[f] and d4[f] <= 0.0)
    ok = True
    if inside:
        lj, good = log_j(d2, e)
        ok = ok and good
        _adds(acc, sgn, lj + lde, shift)
    for f in range(d4.size):
        if g.fvalid[f] and not foot_out[f]:
            lk, good = log_k6(d2, e2, d4[f] * d4[f], 0.0, buf)
            ok = ok and good
            _adds(acc, -sgn * _sign(d4[f]), lk + lde + math.log(abs(d4[f]) * e) - _LOG_PI, shift)
    for r in range(g.ri.size):
        if g_out[r]:
            continue
        for side in range(2):
            f = g.ri[r] if side == 0 else g.rj[r]
            lk, good = log_k6(d2, e2, d4[f] * d4[f], abs(e4[r, side]), buf)
            ok = ok and good
            lt = lk + lde + math.log(abs(d4[f]) * e) - _LOG_2PI
            _adds(acc, sgn * _sign(d4[f]) * _sign(e4[r, side]), lt, shift)
            geom_term(acc, lt - shift, _ridge_unit(g, r, d4) / math.hypot(d4[f], e4[r, side]))  # cones5.geom_term
    return ok


@_jit
def _edge6(g, k, d4, yv, par, acc, wk, buf, res):
    """The S' = 6 flag terms of edge k of G (``par = (d, e, sgn, ref)``) into ``acc``, with their ends' errors (``res``:
    ``cones._vertex_residuals`` of ``yv``; ``cones5.end_logs``), or only their bound into its error when it is
    ``_DROP5`` nats below ``ref``; returns ok."""
    d, e, sgn, ref, shift = par
    lo, hi = _edge_range(g, k, yv)
    if not lo < hi:
        return True
    R = _edge_R(g, k, d4)
    s0 = min(max(0.0, lo), hi)
    rho2 = max(R + s0 * s0, 1e-300)
    fl, d2f, fac, se, sb = _edge_flags(g, k, d4, wk, (lo, hi))
    n = fl.shape[0]
    a = math.sqrt(e * e + rho2)
    bound = (math.log(n * math.sqrt(0.5 * math.pi) / (4.0 * math.pi)) - 0.5 * math.log(rho2) + math.log(e)
             + _log_q(d) + _log_q(a) - math.log(a))
    if bound <= ref - _DROP5:
        acc[2] = _lse_pair(acc[2], bound + max(0.0, 0.5 * math.log(rho2)) - shift)
        return True
    out = np.empty(n)
    ok, trunc = edge6_logs(R, d * d, e * e, d2f, fl, out, buf)
    lde = math.log(d * e) - _LOG_2PI - _LOG_4PI2
    for q in range(n):
        scale = 0.5 * math.log(d2f[q]) + lde if d2f[q] > 0.0 else -_INF
        _adds(acc, -sgn * _sign(d4[fac[q]]) * se[q] * sb[q], out[q] + scale, shift)
        geom_term(acc, out[q] + scale - shift, flag_amp(g, k, q, fl, d4))
        if trunc > -_INF:
            acc[2] = _lse_pair(acc[2], trunc + scale - shift)
    ends = (lo, hi, *_end_errors(g, k, d4, yv, res, lo, hi))
    acc[2] = _lse_pair(acc[2], end_bound(end_logs(R, ends, fl, d2f), 6, d, e) - shift)
    return ok


@_jit
def edge_fused6(R, d2, e2, d2f, fl, outs, buf):
    """:func:`edge6_logs` into ``outs[0]`` and, from the same nodes (``a^2 = e^2 + R + s^2`` is also the S' = 5
    factor's argument with ``d0 = e``), ``cones5.edge5_logs`` at ``d0 = e`` (the facet's mass term ``e int_1^inf
    phi(sigma e) M_4(sigma G) dsigma``, for the moments) into ``outs[1]`` and the S' = 4 flag integral of ``M_4(G)``
    (``cones.edge_flag_logs``' first row) into ``outs[2]``; returns ``(ok, truncation bounds (3,))``."""
    n = fl.shape[0]
    lo, hi = fl[0, 3], fl[0, 4]
    S = np.zeros((3, n))
    bmin = _INF
    for f in range(n):
        outs[0, f], outs[1, f], outs[2, f] = -_INF, -_INF, -_INF
        bmin = min(bmin, fl[f, 1])
    cuts = _edge_cuts(lo, hi)
    A0 = e2 + R
    xs, ws, G = buf[0], buf[1], buf[2]
    ok = True
    trunc = np.full(3, -_INF)
    for p in range(2):
        sa, sb = cuts[p], cuts[p + 1]
        if not sb > sa:
            continue
        U = _exp_point(sa, WINDOW4)
        end = sb
        if U < sb - sa:
            end = sa + U
        else:
            U = sb - sa
        if not U > 0.0:
            continue
        cnt, good = fill_nodes(sa, U, math.sqrt(sa * sa + bmin * bmin), xs, ws)
        ok = ok and good and j_at_nodes(A0, d2, xs, cnt, G)
        if end < sb:
            trunc[0] = _lse_pair(trunc[0], _trunc6(R, A0, d2, end))
            trunc[1] = _lse_pair(trunc[1], _trunc5(R, A0, end))
            trunc[2] = _lse_pair(trunc[2], _trunc_bound(R, end))
        S[:, :] = 0.0
        for k in range(cnt):
            sg = xs[k]
            a = math.sqrt(A0 + sg * sg)
            g4 = ws[k] / (R + sg * sg)
            g6 = g4 * G[k] / a
            g5 = g4 * 0.5 * _erfcx(a / C.SQRT2) / a
            x, y = _clip(sg, lo, hi), _clip(-sg, lo, hi)  # every flag of the edge has the edge's (lo, hi)
            for f in range(n):
                dth, root = theta_and_root(x, y, sg, fl[f, 0], fl[f, 1], fl[f, 2])
                val = dth * sg / root
                S[0, f] += g6 * val
                S[1, f] += g5 * val
                S[2, f] += g4 * val
        b6, b5, b4 = -0.5 * (d2 + A0 + sa * sa), -0.5 * (A0 + sa * sa), -0.5 * (R + sa * sa)
        for f in range(n):
            if S[0, f] > 0.0:
                outs[0, f] = _lse_pair(outs[0, f], b6 + math.log(S[0, f]))
            if S[1, f] > 0.0:
                outs[1, f] = _lse_pair(outs[1, f], b5 + math.log(S[1, f]))
            if S[2, f] > 0.0:
                outs[2, f] = _lse_pair(outs[2, f], b4 + math.log(S[2, f]))
    if math.isfinite(cuts[2]):
        ok = _beyond_fused(d2, e2, d2f, fl, cuts[2], outs, buf) and ok
    return ok, trunc


@_jit
def _beyond_fused(d2, e2, d2f, fl, end, outs, buf):
    """Beyond the edge (``s > end``, DTheta constant) for the three sums of :func:`edge_fused6`: ``DTheta K6'(d_f^2,
    r)``, ``DTheta K(e^2, d_f^2, r)`` (``cones5.log_k``) and ``DTheta J(d_f, r)``, ``r = sqrt(c + end^2)``; returns
    ok."""
    ok = True
    lo, hi = fl[0, 3], fl[0, 4]
    for f in range(fl.shape[0]):
        dth = theta_diff(hi, lo, fl[f, 0], fl[f, 1], fl[f, 2])
        if dth > 0.0:
            r = math.sqrt(fl[f, 2] + end * end)
            l6, g6ok = log_k6(d2, e2, d2f[f], r, buf)
            l5, g5ok = log_k5(e2, d2f[f], r)
            l4, g4ok = log_j(d2f[f], r)
            ok = ok and g6ok and g5ok and g4ok
            outs[0, f] = _lse_pair(outs[0, f], math.log(dth) + l6)
            outs[1, f] = _lse_pair(outs[1, f], math.log(dth) + l5)
            outs[2, f] = _lse_pair(outs[2, f], math.log(dth) + l4)
    return ok


@_jit
def _near4(g, d4, acc4, e4, outs):
    """The terms of ``M_4(G)`` without edges into ``acc4`` (``cones``: ``1{0 in G}``, ``-sign(d_f) Q(|d_f|)`` per
    facet whose foot is inside it, ``sign(d_f) sign(e) W(d_f, |e|)`` per (ridge, side) whose foot is inside);
    returns ok."""
    foot_out, g_out = outs
    inside = True
    for f in range(d4.size):
        inside = inside and not (g.fvalid[f] and d4[f] <= 0.0)
    if inside:
        _add(acc4, 1.0, 0.0)
    for f in range(d4.size):
        if g.fvalid[f] and not foot_out[f]:
            _add(acc4, -_sign(d4[f]), _log_q(abs(d4[f])))
    ok = True
    for r in range(g.ri.size):
        if g_out[r]:
            continue
        for side in range(2):
            f = g.ri[r] if side == 0 else g.rj[r]
            lj, good = log_j(d4[f] * d4[f], abs(e4[r, side]))
            ok = ok and good
            lt = lj + math.log(abs(d4[f])) - _LOG_2PI
            _add(acc4, _sign(d4[f]) * _sign(e4[r, side]), lt)
            geom_term(acc4, lt, _ridge_unit(g, r, d4) / math.hypot(d4[f], e4[r, side]))
    return ok


@_jit
def _edge_fused(g, k, d4, yv, par, accs, wk, buf, res):
    """Edge k of G into the three sums ``accs = (R's acc, acc5, acc4)`` (:func:`edge_fused6`; ``par = (d, e, sgn,
    ref6, ref5, ref4)``) with their ends' errors (``res``: :func:`_edge6`), or only their bounds into their errors
    when each is ``_DROP5`` nats below its reference; returns ok."""
    d, e, sgn, ref6, ref5, ref4, shift = par
    acc6, acc5, acc4 = accs
    lo, hi = _edge_range(g, k, yv)
    if not lo < hi:
        return True
    R = _edge_R(g, k, d4)
    s0 = min(max(0.0, lo), hi)
    rho2 = max(R + s0 * s0, 1e-300)
    fl, d2f, fac, se, sb = _edge_flags(g, k, d4, wk, (lo, hi))
    n = fl.shape[0]
    a = math.sqrt(e * e + rho2)
    base = math.log(n * math.sqrt(0.5 * math.pi) / (4.0 * math.pi)) - 0.5 * math.log(rho2)
    b6 = base + math.log(e) + _log_q(d) + _log_q(a) - math.log(a)
    b4 = base - 0.5 * rho2
    b5 = base + math.log(e) - math.log(a) + _log_q(a)
    if b6 <= ref6 - _DROP5 and b5 <= ref5 - _DROP5 and b4 <= ref4 - _DROP5:
        extra = max(0.0, 0.5 * math.log(rho2))
        acc6[2] = _lse_pair(acc6[2], b6 + extra - shift)
        acc5[2] = _lse_pair(acc5[2], b5 + extra)
        acc4[2] = _lse_pair(acc4[2], b4 + extra)
        return True
    outs = np.empty((3, n))
    ok, trunc = edge_fused6(R, d * d, e * e, d2f, fl, outs, buf)
    l6 = math.log(d * e) - _LOG_2PI - _LOG_4PI2
    l5 = math.log(e) - _LOG_4PI2
    for q in range(n):
        s4 = 0.5 * math.log(d2f[q]) if d2f[q] > 0.0 else -_INF
        sign4 = -_sign(d4[fac[q]]) * se[q] * sb[q]
        _adds(acc6, sgn * sign4, outs[0, q] + s4 + l6, shift)
        _add(acc5, sign4, outs[1, q] + s4 + l5)
        _add(acc4, sign4, outs[2, q] + s4 - _LOG_4PI2)
        amp = flag_amp(g, k, q, fl, d4)  # the geometry's rounding (cones5.geom_term)
        geom_term(acc6, outs[0, q] + s4 + l6 - shift, amp)
        geom_term(acc5, outs[1, q] + s4 + l5, amp)
        geom_term(acc4, outs[2, q] + s4 - _LOG_4PI2, amp)
        if trunc[0] > -_INF:
            acc6[2] = _lse_pair(acc6[2], trunc[0] + s4 + l6 - shift)
        if trunc[1] > -_INF:
            acc5[2] = _lse_pair(acc5[2], trunc[1] + s4 + l5)
        if trunc[2] > -_INF:
            acc4[2] = _lse_pair(acc4[2], trunc[2] + s4 - _LOG_4PI2)
    qlb = end_logs(R, (lo, hi, *_end_errors(g, k, d4, yv, res, lo, hi)), fl, d2f)
    acc6[2] = _lse_pair(acc6[2], end_bound(qlb, 6, d, e) - shift)
    acc5[2] = _lse_pair(acc5[2], end_bound(qlb, 5, e, 0.0))
    acc4[2] = _lse_pair(acc4[2], end_bound(qlb, 4, 0.0, 0.0))
    return ok


@_jit
def side_pass(g, D4, V4, par, acc, edges, flagged, mom, shifts):
    """One side (facet i, ridge j) of every pair (rows of ``D4`` (M, F'') G's offsets, ``V4`` (M, V'', 4) its
    vertices; ``par = (d, e, sgn, ref)`` (M,) each): its near terms (``edges`` False) or its edge flags into the
    side's own sums ``acc`` (M, 4), ``[pos, neg, err]`` relative to ``e^shifts`` ((M,), written: the side's wedge
    ``(d / 2 pi) J(d, e)``) and ``top`` not; with ``mom = (acc5, acc4)`` (M, 4) each, non-empty, also the side's
    moment sums (:func:`edge_fused6`); sets ``flagged``."""
    d, e, sgn, ref = par
    acc5, acc4 = mom
    moments = acc5.shape[0] > 0
    G, L = g.ri.size, g.lr.size
    buf = np.empty((3, NBUF))
    for m in range(D4.shape[0]):
        if flagged[m]:
            continue
        d4 = D4[m]
        e4, bl = np.empty((G, 2)), np.empty(L)
        bad, foot_out, g_out = _geometry4(g, d4, e4, bl)
        if bad:
            flagged[m] = True
            continue
        loc = acc[m]  # the side's own sums (:func:`merge_side` adds their value to the pair's), relative to
        shift = log_j(d[m] * d[m], e[m])[0] + math.log(d[m]) - _LOG_2PI  # the side's constant term, the wedge
        shifts[m] = shift
        if not edges:
            ok = _near6(g, d4, (d[m], e[m], sgn[m], shift), loc, e4, (foot_out, g_out), buf)
            if moments:
                ok = _near5(g, d4, (e[m], 1.0, 0.0), acc5[m], e4, (foot_out, g_out)) and ok
                ok = _near4(g, d4, acc4[m], e4, (foot_out, g_out)) and ok
        else:
            wk = _Work(e4, bl, loc, np.empty((0, 4)), np.empty((0, 4)))
            res = _vertex_residuals(g, d4, V4[m])
            ok = True
            for k in range(g.eva.size):
                if moments:
                    ok = _edge_fused(g, k, d4, V4[m], (d[m], e[m], sgn[m], ref[m], acc5[m, 3], acc4[m, 3], shift),
                                     (loc, acc5[m], acc4[m]), wk, buf, res) and ok
                else:
                    ok = _edge6(g, k, d4, V4[m], (d[m], e[m], sgn[m], ref[m], shift), loc, wk, buf, res) and ok
        flagged[m] = flagged[m] or not ok


@_jit
def add_rows(acc, rows, sign, logs):
    """``acc[rows[k]] += sign[k] e^{logs[k]}`` (signed log sums, ``cones._add``)."""
    for k in range(rows.size):
        _add(acc[rows[k]], sign[k], logs[k])


# ---------------------------------------------------------------------------------------------------
# per region: the flags of every ridge once, every point's pairs through the compiled passes
# ---------------------------------------------------------------------------------------------------

class Frame(NamedTuple):
    """Row ``i`` of a k-polyhedron ``{N y <= D}`` as a facet in an orthonormal basis ``U`` (k, k - 1) of its
    hyperplane, the foot at the origin (translation invariant): the unit normal ``n``, the other rows kept
    (``keep``), their norms ``nrm`` and cosines ``proj`` with ``n`` in the plane, the vertices on it ``on`` (V,),
    its unit rays ``Rk`` and unit rows ``Nk``; ``D0``, ``V0``: the facet's offsets and vertices for the first
    point."""

    i: int
    n: np.ndarray
    keep: np.ndarray
    nrm: np.ndarray
    proj: np.ndarray
    U: np.ndarray
    on: np.ndarray
    Rk: np.ndarray
    Nk: np.ndarray
    D0: np.ndarray
    V0: np.ndarray


def frame(N, D0, V0, Rays, i):
    """:class:`Frame` of row ``i`` (as ``cones6.face_in_plane``, basis by ``cones5._complement``), or None when the
    row cuts out no facet (no vertex on it, or its vertices and rays span less than k - 1 dimensions)."""
    k = N.shape[1]
    n = N[i]
    U = _complement(n)
    rows = N @ U
    nrm = np.linalg.norm(rows, axis=1)
    keep = np.nonzero((nrm > 1e-12) & (np.arange(N.shape[0]) != i))[0]
    on = np.abs(V0 @ n - D0[i]) <= _INC * (1.0 + abs(D0[i]))
    Rk = np.zeros((0, k - 1))
    if Rays.size:
        Rk = Rays[np.abs(Rays @ n) <= _INC] @ U
        Rk = Rk / np.linalg.norm(Rk, axis=1, keepdims=True)
    fr = Frame(i, n, keep, nrm[keep], N[keep] @ n, U, on, Rk, rows[keep] / nrm[keep, None], None, None)
    Dk, Vk = offsets(fr, D0[None], V0[None])
    if Vk.shape[1] == 0 or np.linalg.matrix_rank(np.vstack([Vk[0] - Vk[0, 0], Rk]), tol=1e-9) < k - 1:
        return None
    return fr._replace(D0=Dk[0], V0=Vk[0])


def offsets(fr: Frame, D, V):
    """The facet's offsets (M, F') and vertices (M, V', k - 1) from its foot, for the rows of ``D`` (M, F) and ``V``
    (M, V, k)."""
    Di = D[:, fr.i]
    Dk = np.ascontiguousarray((D[:, fr.keep] - Di[:, None] * fr.proj[None]) / fr.nrm[None])
    Vk = np.ascontiguousarray((V[:, fr.on] - Di[:, None, None] * fr.n[None, None]) @ fr.U)
    return Dk, Vk


class Shape6(NamedTuple):
    """The flags of an S' = 6 region (translation invariant): per facet its :class:`Frame` and per ridge of it
    ``(frame, cones.ConeArrays)``; ``good``: every ridge's flags passed ``cones.consistent``."""

    facets: list
    good: bool


def shape6(Nrm, D0, Yv0, Yr):
    """:class:`Shape6` of ``P = {Nrm y <= D0}`` (vertices ``Yv0`` (V, 6) relative to one mean, unit rays ``Yr``
    (R, 6); pointed): built once per region, valid for every mean."""
    Nrm = np.asarray(Nrm, dtype=np.float64)
    D0, Yv0 = np.asarray(D0, dtype=np.float64), np.asarray(Yv0, dtype=np.float64)
    Yr = np.asarray(Yr, dtype=np.float64).reshape(-1, 6)
    facets, good = [], True
    for i in range(Nrm.shape[0]):
        fr = frame(Nrm, D0, Yv0, Yr, i)
        if fr is None:
            continue
        ridges = []
        for j in range(fr.Nk.shape[0]):
            gr = frame(fr.Nk, fr.D0, fr.V0, fr.Rk, j)
            if gr is None:
                continue
            g = cone_shape_compiled(gr.Nk, gr.D0, gr.V0, gr.Rk)
            good = good and consistent(g, gr.V0.shape[0])
            ridges.append((gr, g))
        facets.append((fr, ridges))
    return Shape6(facets, good and bool(facets))


_NEAR = 1e-8  # a facet plane within this of the mean, or a ridge's within this of its facet's foot: flagged


def _sides(shape: Shape6, D, Yv):
    """Every side (facet i, ridge j) for the rows of ``D`` (M, F), ``Yv`` (M, V, 6): ``(fi, q, gr, g, D5, e, D4, V4)``
    (``fi``, ``q``: the facet's and the ridge's place in ``shape``) and per facet ``(fr, D5, V5)``."""
    facets, sides = [], []
    for fi, (fr, ridges) in enumerate(shape.facets):
        D5, V5 = offsets(fr, D, Yv)
        facets.append((fr, D5, V5))
        for q, (gr, g) in enumerate(ridges):
            D4, V4 = offsets(gr, D5, V5)
            sides.append((fi, q, gr, g, D5[:, gr.i], D4, V4))
    return facets, sides


def mass_batch(Nrm, D, Yv, Yr, shape=None, moments=False):
    """``(log_mass, rel, flagged, parts)`` (M,) of ``N(0, I_6)`` on ``{Nrm y <= D_m}`` (unit rows ``Nrm`` (F, 6),
    offsets ``D`` (M, F), vertices ``Yv`` (M, V, 6) relative to each mean, unit rays ``Yr`` (R, 6); pointed) by the
    closed outer integral (module docstring); ``shape``: :func:`shape6` (built from row 0 when None); ``parts`` the
    facets and sides for :func:`moments_batch`. Flagged rows (a facet plane within 1e-8 of the mean or a ridge's
    within 1e-8 of its facet's foot, the mean on a plane of a ridge's flags, an unresolved integral, inconsistent
    flags, no positive result) must be computed otherwise; the caller judges ``rel``."""
    Nrm = np.ascontiguousarray(Nrm, dtype=np.float64)
    D = np.ascontiguousarray(np.atleast_2d(D), dtype=np.float64)
    M = D.shape[0]
    Yv = np.ascontiguousarray(Yv, dtype=np.float64).reshape(M, -1, 6)
    Yr = np.asarray(Yr, dtype=np.float64).reshape(-1, 6)
    shape = shape6(Nrm, D[0], Yv[0], Yr) if shape is None else shape
    flagged = np.min(np.abs(D), axis=1) < _NEAR
    if not shape.good:
        flagged[:] = True
    acc = np.full((M, 4), -np.inf)
    inside = np.all(D > 0, axis=1)  # P = 1{0 in P} - sum_i sign(d_i) [1{0 in F_i} Q(|d_i|) - sum_j sign(e_ij) R_ij]
    acc[inside, 0], acc[inside, 2], acc[inside, 3] = 0.0, math.log(TERM_ULPS * C.EPS), 0.0
    facets, sides = _sides(shape, D, Yv) if not flagged.all() else ([], [])
    rows = np.arange(M)
    for fr, D5, _ in facets:
        Di = D[:, fr.i]
        foot = np.all(D5 > 0, axis=1)
        add_rows(acc, rows[foot], -np.sign(Di[foot]), log_ndtr(-np.abs(Di[foot])))
    for *_, e, _, _ in sides:
        flagged |= np.abs(e) < _NEAR
    par = [(np.abs(D[:, facets[fi][0].i]), np.abs(e), np.sign(D[:, facets[fi][0].i]) * np.sign(e))
           for fi, _, _, _, e, _, _ in sides]
    none = (np.empty((0, 4)), np.empty((0, 4)))
    mom = [(np.full((M, 4), -np.inf), np.full((M, 4), -np.inf)) if moments else none for _ in sides]
    sacc = [np.full((M, 4), -np.inf) for _ in sides]  # each side's own signed sums
    shifts = [np.zeros(M) for _ in sides]
    for edges in (False, True):
        ref = np.max([acc[:, 3]] + [a[:, 3] for a in sacc], axis=0)  # edges dropped against the largest near term
        for (_, _, _, g, _, D4, V4), p, ms, a, sh in zip(sides, par, mom, sacc, shifts):
            side_pass(g, D4, V4, (*p, ref), a, edges, flagged, ms, sh)
    for (*_, g, _, _, _), a, sh in zip(sides, sacc, shifts):
        merge_side(acc, a, sh, 1 + g.fvalid.size + 2 * g.ri.size + 2 * g.lr.size)
    lm, rel, bad = _signed_mass(acc)
    rel = capped(rel + sum_rounding(acc, lm, len(sides) + len(facets) + 2))  # a term per side (merge_side), facet; the
    # constant; bars above cones.FIRST_ORDER_CAP reported inf (cones5.capped)
    return lm, rel, flagged | bad, (facets, sides, mom)


def side_moments(parts, M, flagged):
    """Per side of :func:`mass_batch`'s ``parts`` (computed with ``moments``), for the divergence-theorem moments
    (``cones6._moment_sums``): ``(log_m, rel_m, log_g, rel_g)`` (M,) each, ``log_m`` the facet's mass term ``e
    int_1^inf phi(sigma e) M_4(sigma G) dsigma`` (``cones5``'s S' = 5 facet term with ``d0 = e``) and ``log_g = log
    M_4(G)``, both from the mass pass's nodes; ``rel = inf`` where not resolved."""
    _, sides, mom = parts
    out = []
    for (*_, g, _, _, _), (acc5, acc4) in zip(sides, mom):
        n = 1 + g.fvalid.size + 2 * g.ri.size + 2 * g.lr.size  # the terms of one sum at most
        parts_ = []
        for a in (acc5, acc4):
            lm, rel, bad = _signed_mass(a)
            with np.errstate(invalid="ignore", over="ignore"):
                rel = rel + n * C.EPS * ((2.0 + np.abs(a[:, 0])) * np.exp(a[:, 0] - lm)
                                         + np.where(a[:, 1] > -np.inf, (2.0 + np.abs(a[:, 1])) * np.exp(a[:, 1] - lm),
                                                    0.0))
            bad |= flagged
            parts_ += [np.where(bad, -np.inf, lm), np.where(bad, np.inf, rel)]
        out.append(tuple(parts_))
    return out


def warm() -> None:
    """Compile (into numba's cache) what the S = 6 cones run: the flags, the mass passes and the moments' passes, on
    a rotated bounded 6-D box (``python -m engine.warmup`` calls this)."""
    import itertools

    from .cones6 import cone6_moments_batch

    Q, _ = np.linalg.qr(np.arange(36.0).reshape(6, 6) ** 1.5 + np.eye(6))
    a, b = np.array([-1.0, -0.5, 0.2, -2.0, -0.7, -1.2]), np.array([0.7, 1.5, 2.0, 0.1, 1.1, 0.9])
    Nrm = np.vstack([Q.T, -Q.T])
    corners = np.array(list(itertools.product(*zip(a, b)))) @ Q.T
    cone6_moments_batch(Nrm, np.concatenate([b, -a])[None], corners[None], np.zeros((0, 6)), moments=2)
