"""Compiled slice construction of the S' = 4 outer quadrature (:mod:`.sliced`): the S = 3 geometry of every slice.

For Theorem 1's mass ``Phi_omega`` (eq. 5) at S = 4, :mod:`.sliced` integrates ``phi(t) P_3(slice(t))`` over the
height ``t`` along a direction ``e``; each node's slice ``{x : (Nrm V) x <= D - t Nrm e}`` is a 3-D polyhedron
handed to the compiled S = 3 cone kernel (``solid.kernel``). The reference path builds each slice as a
:class:`~engine.polytope.Polytope` and its :class:`~engine.gaussian.solid.SolidGeometry` in numpy (about 0.3 ms
a slice); here one compiled pass over all the nodes of a round computes, per node, the same combinatorial type
(active facets, non-empty: ``sliced._Problem._masks``/``_build``) and the same whitened normals, offsets and edge
structure (``solid.geometry._region_edges``, one region at a time, same formulas and tolerances; the 3 x 3
inverse in closed form, so the values agree with numpy's to rounding; the edge coefficients compensated (Dot2) where
the plain values lost their digits, as there: :func:`_edge_coefficients`). The result is a
:class:`~engine.gaussian.solid.SolidArrays` with one row per node, which ``solid.batch_solid_moments`` takes as it
is: the S = 3 mathematics and its error bounds are unchanged.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numba
import numpy as np

from ..dot2 import add_product, two_prod
from ..solid.cubature import _cross3 as _cross
from ..solid.geometry import _GPAR, _PARALLEL, _SHORT, PLAIN_REL, SolidArrays

_jit = numba.njit(cache=True, nogil=True, error_model="numpy")
_ZERO = 1e-10  # = sliced._ZERO: |Nrm_i V| below this, facet i is perpendicular to the slices
_RAY = 1e-12  # = the ray-height tolerance of sliced._Problem._masks

EMPTY, REGULAR, DEGENERATE = 0, 1, 2  # node status: no slice, a slice the kernel takes, degenerate combinatorics


class SlicingData(NamedTuple):
    """What ``sliced._Problem`` knows of a region for its M points, as the compiled pass reads it: offsets ``D``,
    ``a = Nrm e`` and ``scale = |Nrm V|`` (M, F), slice normals ``Nn`` (M, F, 3), facet height ranges ``fmin``,
    ``fmax`` (M, F), vertex and ray heights ``hv`` (M, V), ``hr`` (M, R), candidate edges ``ea``, ``eb`` and
    vertex-ray pairs ``va``, ``rb`` (``sliced._Shape``)."""

    D: np.ndarray
    a: np.ndarray
    scale: np.ndarray
    Nn: np.ndarray
    fmin: np.ndarray
    fmax: np.ndarray
    hv: np.ndarray
    hr: np.ndarray
    ea: np.ndarray
    eb: np.ndarray
    va: np.ndarray
    rb: np.ndarray


class SliceGeometry:
    """The S = 3 geometry of a round's slices (row k = node k): ``arrays`` (:class:`SolidArrays`), ``status`` (K,)
    (``EMPTY``, ``REGULAR``, ``DEGENERATE``: the reference path's ``SolidGeometry.ok`` False)."""

    def __init__(self, arrays, status):
        self.arrays, self.status = arrays, status


@_jit
def _node_type(m, t, d, act):
    """The slice's combinatorial type at height t for point m (``sliced._Problem._masks``): active facets into
    ``act``; returns the number of points spanning the slice (crossing edges and vertex-ray points), 0: empty."""
    D, a, scale, fmin, fmax, hv, hr = d.D, d.a, d.scale, d.fmin, d.fmax, d.hv, d.hr
    ea, eb, va, rb = d.ea, d.eb, d.va, d.rb
    F = D.shape[1]
    for f in range(F):
        if scale[m, f] <= _ZERO and D[m, f] - t * a[m, f] < 0.0:
            return 0
    nact = 0
    for f in range(F):
        act[f] = fmin[m, f] < t and t < fmax[m, f] and not scale[m, f] <= _ZERO
        if act[f]:
            nact += 1
    if nact == 0:
        return 0
    n = 0
    for q in range(ea.size):
        ha, hb = hv[m, ea[q]], hv[m, eb[q]]
        if min(ha, hb) <= t and t <= max(ha, hb) and ha != hb:
            n += 1
    for q in range(va.size):
        h = hr[m, rb[q]]
        if abs(h) > _RAY and (t - hv[m, va[q]]) / h >= 0.0:
            n += 1
    return n


@_jit
def _dot(u, v):
    return u[0] * v[0] + u[1] * v[1] + u[2] * v[2]


@_jit
def _dot2(x, y):
    """``x . y`` (3-vectors) by Dot2 (``solid.geometry._dot2``: the same operations in the same order)."""
    p, s = two_prod(x[0], y[0])
    for k in range(1, 3):
        h, r = two_prod(x[k], y[k])
        p, s = add_product(p, s, h, r)
    return p + s


@_jit
def _dot2_2(x0, y0, x1, y1):
    """``x0 y0 + x1 y1`` by Dot2."""
    p, s = two_prod(x0, y0)
    h, r = two_prod(x1, y1)
    p, s = add_product(p, s, h, r)
    return p + s


@_jit
def _pair_frame2(ni, nj, cr):
    """``(c, sn)`` and into ``cr`` the cross product ``n_i x n_j``, every component a Dot2
    (``solid.geometry._pair_frame``)."""
    cr[0] = _dot2_2(ni[1], nj[2], -ni[2], nj[1])
    cr[1] = _dot2_2(ni[2], nj[0], -ni[0], nj[2])
    cr[2] = _dot2_2(ni[0], nj[1], -ni[1], nj[0])
    return _dot2(ni, nj), math.sqrt(_dot2(cr, cr))


@_jit
def _end_coefficients(ni, nj, nk, c, cr, sn):
    """``(a, b, g)`` of an edge's end on plane k by Dot2 in Gram form (``solid.geometry._end_coefficients``: ``a =
    n_k.alpha``, ``b = n_k.beta``, ``g = n_k.t``)."""
    dki, dkj = _dot2(nk, ni), _dot2(nk, nj)
    sn2 = sn * sn
    a = _dot2_2(_dot2(nj, nj), dki, -c, dkj) / sn2
    b = _dot2_2(_dot2(ni, ni), dkj, -c, dki) / sn2
    return a, b, _dot2(nk, cr) / sn


@_jit
def _unless_inaccurate(plain, acc):
    """``plain`` where it agrees with the Dot2 value ``acc`` to ``PLAIN_REL`` (``solid.geometry._unless_inaccurate``),
    else ``acc``."""
    return plain if abs(plain - acc) <= PLAIN_REL * abs(acc) else acc


@_jit
def _edge_frame(ni, nj, t, alpha, beta):
    """``(c, sn, nonpar)`` of the facet pair and, into ``t``, ``alpha``, ``beta``: the edge direction and the first
    two columns of the inverse of the matrix of rows ``n_i, n_j, t`` (identity when parallel)."""
    _cross(ni, nj, t)
    sn = math.sqrt(t[0] * t[0] + t[1] * t[1] + t[2] * t[2])
    c = _dot(ni, nj)
    nonpar = sn > _PARALLEL
    if not nonpar:
        for q in range(3):
            alpha[q] = 1.0 if q == 0 else 0.0
            beta[q] = 1.0 if q == 1 else 0.0
        return c, sn, False
    for q in range(3):
        t[q] = t[q] / sn
    _cross(nj, t, alpha)
    det = _dot(ni, alpha)
    _cross(t, ni, beta)
    for q in range(3):
        alpha[q] = alpha[q] / det
        beta[q] = beta[q] / det
    return c, sn, True


class _Frames(NamedTuple):
    """Per facet pair (upper-triangle order) of one slice's normals, which every node of a panel shares (same point,
    same active facets; only the offsets move with t): the edge direction ``t``, the inverse's columns ``alpha``,
    ``beta`` (P, 3), ``c``, ``sn`` (P,), ``nonpar`` (P,), ``wg = n_f . t`` (P, F) and the same pair values by Dot2,
    ``c2``, ``sn2`` (P,) and the cross product ``cr`` (P, 3) (:func:`_pair_frame2`)."""

    t: np.ndarray
    alpha: np.ndarray
    beta: np.ndarray
    c: np.ndarray
    sn: np.ndarray
    nonpar: np.ndarray
    wg: np.ndarray
    c2: np.ndarray
    sn2: np.ndarray
    cr: np.ndarray


@_jit
def _frames(Nrm, F, fr):
    """The pair frames of the F first normals ``Nrm`` into ``fr`` (:func:`_edge_frame`, ``wg`` by :func:`_dot`; the Dot2
    values by :func:`_pair_frame2`)."""
    p = 0
    for i in range(F):
        for j in range(i + 1, F):
            fr.c[p], fr.sn[p], fr.nonpar[p] = _edge_frame(Nrm[i], Nrm[j], fr.t[p], fr.alpha[p], fr.beta[p])
            fr.c2[p], fr.sn2[p] = _pair_frame2(Nrm[i], Nrm[j], fr.cr[p])
            for f in range(F):
                fr.wg[p, f] = _dot(fr.t[p], Nrm[f])
            p += 1


@_jit
def _ends(Nrm, cn, F, i, j, wg, p0, wr):
    """The edge of facets i, j: its ends ``s_hi`` (facet ``khi``), ``s_lo`` (facet ``klo``) along ``t`` from the
    point ``p0`` and whether a facet parallel to it excludes it (``blocked``); ``wg``: ``n_f . t`` (the pair's
    frame), ``wr``: ``cn_f - n_f . p0`` (scratch)."""
    khi, klo = 0, 0
    s_hi, s_lo = np.inf, -np.inf
    blocked = False
    for f in range(F):
        wr[f] = cn[f] - _dot(p0, Nrm[f])
        if f == i or f == j:
            continue
        if wg[f] > _GPAR:
            if wr[f] / wg[f] < s_hi:
                s_hi, khi = wr[f] / wg[f], f
        elif wg[f] < -_GPAR:
            if wr[f] / wg[f] > s_lo:
                s_lo, klo = wr[f] / wg[f], f
        elif wr[f] < -1e-12 * (1.0 + abs(cn[f])):
            blocked = True
    return s_hi, khi, s_lo, klo, blocked


@_jit
def _edge_coefficients(g, k, slot, Nrm, facets, fr, p):
    """Edge slot ``slot`` of row k: ``c``, ``sn``, the end coefficients ``ah, bh, gh`` / ``al, bl, gl`` and the in-facet
    normals ``m1``, ``m2`` of the facet pair p (``facets = (i, j, khi, klo)``), each plain value kept where it agrees
    with its Dot2 value to ``PLAIN_REL``, else the Dot2 value (as ``solid.geometry._region_edges``): for (nearly)
    orthogonal slice facets the plain dot products come out ~1e-16 with an absolute error ~1e-16, which near a
    vertex puts ~1e-16 / distance relative errors into the S = 3 cone terms (rotated 4-D boxes with two axes
    orthogonal to the slicing direction, the mean 1e-8 from their ridge: 2.6e-10 off under a bar of 2.2e-12)."""
    i, j, khi, klo = facets
    ni, nj = Nrm[i], Nrm[j]
    c2, sn2, cr = fr.c2[p], fr.sn2[p], fr.cr[p]
    s2 = sn2 if fr.nonpar[p] else 1.0
    c = _unless_inaccurate(fr.c[p], c2)
    sn = _unless_inaccurate(fr.sn[p], sn2)
    g.c[k, slot], g.sn[k, slot] = c, sn
    a, b, gg = _end_coefficients(ni, nj, Nrm[khi], c2, cr, s2)
    g.ah[k, slot] = _unless_inaccurate(_dot(Nrm[khi], fr.alpha[p]), a)
    g.bh[k, slot] = _unless_inaccurate(_dot(Nrm[khi], fr.beta[p]), b)
    g.gh[k, slot] = _unless_inaccurate(fr.wg[p, khi], gg)
    a, b, gg = _end_coefficients(ni, nj, Nrm[klo], c2, cr, s2)
    g.al[k, slot] = _unless_inaccurate(_dot(Nrm[klo], fr.alpha[p]), a)
    g.bl[k, slot] = _unless_inaccurate(_dot(Nrm[klo], fr.beta[p]), b)
    g.gl[k, slot] = _unless_inaccurate(fr.wg[p, klo], gg)
    for q in range(3):
        g.m1[k, slot, q] = (nj[q] - c * ni[q]) / sn
        g.m2[k, slot, q] = (ni[q] - c * nj[q]) / sn


@_jit
def _edges_one(k, F, g, fr, wr):
    """``solid.geometry._region_edges`` for the one region in row k of ``g`` (its F first facets, their pair frames
    ``fr``): fills the edge slots (real facet pairs in upper-triangle order); returns False for degenerate
    combinatorics."""
    Nrm, cn = g.Nrm[k], g.cn[k]
    p0 = np.empty(3)
    deg = np.zeros(F, dtype=np.int64)
    slot = 0
    p = -1
    for i in range(F):
        for j in range(i + 1, F):
            p += 1
            nonpar, alpha, beta, wg = fr.nonpar[p], fr.alpha[p], fr.beta[p], fr.wg[p]
            for q in range(3):
                p0[q] = alpha[q] * cn[i] + beta[q] * cn[j]
            s_hi, khi, s_lo, klo, blocked = _ends(Nrm, cn, F, i, j, wg, p0, wr)
            scale = 1.0 + (abs(s_hi) if np.isfinite(s_hi) else 0.0) + (abs(s_lo) if np.isfinite(s_lo) else 0.0)
            if not (nonpar and not blocked and s_hi - s_lo > _SHORT * scale):
                continue
            if slot == g.evalid.shape[1]:  # more edges than a polyhedron with F facets has: degenerate
                return False
            deg[i] += 1
            deg[j] += 1
            has_hi, has_lo = np.isfinite(s_hi), np.isfinite(s_lo)
            g.evalid[k, slot] = True
            g.ei[k, slot], g.ej[k, slot], g.khi[k, slot], g.klo[k, slot] = i, j, khi, klo
            g.has_hi[k, slot], g.has_lo[k, slot] = has_hi, has_lo
            _edge_coefficients(g, k, slot, Nrm, (i, j, khi, klo), fr, p)
            g.gh[k, slot] = g.gh[k, slot] if has_hi else 1.0
            g.gl[k, slot] = g.gl[k, slot] if has_lo else 1.0
            slot += 1
    for f in range(F):
        if deg[f] == 0:
            for j in range(F):
                if abs(_dot(Nrm[f], Nrm[j])) < 1.0 - 1e-12:
                    return False
    return True


@_jit
def _same(m, act, last_m, last_act):
    if m != last_m:
        return False
    for f in range(act.size):
        if act[f] != last_act[f]:
            return False
    return True


@_jit
def _fill(pidx, nodes, d, g, status):
    """Every node's slice into row k of ``g``: facets (whitened exactly as ``SolidGeometry`` with ``chol = I``)
    and edges; ``status[k]``."""
    K, F = nodes.size, d.D.shape[1]
    D, a, scale, Nn = d.D, d.a, d.scale, d.Nn
    act, last_act = np.empty(F, dtype=np.bool_), np.zeros(F, dtype=np.bool_)
    wr = np.empty(F)
    P = max(F * (F - 1) // 2, 1)
    fr = _Frames(np.empty((P, 3)), np.empty((P, 3)), np.empty((P, 3)), np.empty(P), np.empty(P),
                 np.empty(P, dtype=np.bool_), np.empty((P, F)), np.empty(P), np.empty(P), np.empty((P, 3)))
    last_m = -1
    for k in range(K):
        m, t = pidx[k], nodes[k]
        if _node_type(m, t, d, act) == 0:
            status[k] = EMPTY
            continue
        f2 = 0
        for f in range(F):
            if not act[f]:
                continue
            off = (D[m, f] - t * a[m, f]) / scale[m, f]
            h0, h1, h2 = Nn[m, f, 0], Nn[m, f, 1], Nn[m, f, 2]
            nrm = math.sqrt(h0 * h0 + h1 * h1 + h2 * h2)
            g.Nrm[k, f2, 0], g.Nrm[k, f2, 1], g.Nrm[k, f2, 2] = h0 / nrm, h1 / nrm, h2 / nrm
            g.Hn[k, f2, 0], g.Hn[k, f2, 1], g.Hn[k, f2, 2] = h0 / nrm, h1 / nrm, h2 / nrm
            g.cn[k, f2] = off / nrm
            g.fvalid[k, f2] = True
            f2 += 1
        if not _same(m, act, last_m, last_act):  # the nodes of a panel share their normals: frames once a panel
            _frames(g.Nrm[k], f2, fr)
            last_m = m
            last_act[:] = act
        status[k] = REGULAR if _edges_one(k, f2, g, fr, wr) else DEGENERATE
        if status[k] == DEGENERATE:
            g.fvalid[k, :] = False
            g.evalid[k, :] = False


def slice_geometry(prob, pidx, nodes) -> SliceGeometry:
    """The S = 3 geometry of the slices of ``prob`` (a ``sliced._Problem``) at ``nodes`` (K,) of points ``pidx``
    (K,), in one compiled pass."""
    K, F = nodes.size, prob.D.shape[1]
    E = max(min(F * (F - 1) // 2, 3 * F - 3), 1)  # a (pointed) polyhedron with F facets has at most 3F - 3 edges
    z = lambda shape, dt=np.float64: np.zeros(shape, dtype=dt)
    g = SolidArrays(Nrm=z((K, F, 3)), Hn=z((K, F, 3)), cn=np.ones((K, F)), fvalid=z((K, F), np.bool_),
                    evalid=z((K, E), np.bool_), ei=z((K, E), np.intp), ej=z((K, E), np.intp),
                    khi=z((K, E), np.intp), klo=z((K, E), np.intp), has_hi=z((K, E), np.bool_),
                    has_lo=z((K, E), np.bool_), c=z((K, E)), sn=np.ones((K, E)), ah=z((K, E)), bh=z((K, E)),
                    gh=np.ones((K, E)), al=z((K, E)), bl=z((K, E)), gl=np.ones((K, E)), m1=z((K, E, 3)),
                    m2=z((K, E, 3)))
    status = np.zeros(K, dtype=np.int8)
    d = _slicing_data(prob)
    c = np.ascontiguousarray
    _fill(c(pidx, dtype=np.intp), c(nodes, dtype=np.float64), d, g, status)
    return SliceGeometry(g, status)


_FEAS = 1e-9  # a candidate point is in the slice when it violates no facet by more than this (relative)


@_jit
def _feasible(Nrm, cn, F, p):
    for f in range(F):
        if Nrm[f, 0] * p[0] + Nrm[f, 1] * p[1] + Nrm[f, 2] * p[2] > cn[f] + _FEAS * (1.0 + abs(cn[f])):
            return False
    return True


@_jit
def _take(best, p, out):
    """Keep ``p`` in ``out`` if it is closer to the origin than ``best``; returns the new best squared norm."""
    d = p[0] * p[0] + p[1] * p[1] + p[2] * p[2]
    if d < best:
        out[0], out[1], out[2] = p[0], p[1], p[2]
        return d
    return best


@_jit
def _closest_one(Nrm, cn, F, out):
    """The point of ``{Nrm x <= cn}`` (F facets) closest to the origin into ``out``: the origin when no offset is
    negative (as ``qmc.closest_points``), else the nearest of the feasible projections of the origin onto the
    facets' planes, onto the lines of pairs of facets and the vertices of triples (the minimiser is the projection
    onto the affine hull of the face holding it in its relative interior, so it is among them)."""
    out[:] = 0.0
    neg = False
    for f in range(F):
        if cn[f] < 0.0:
            neg = True
    if not neg:
        return
    best = np.inf
    p, t, alpha, beta, u = np.empty(3), np.empty(3), np.empty(3), np.empty(3), np.empty(3)
    for i in range(F):
        for q in range(3):
            p[q] = cn[i] * Nrm[i, q]
        if _feasible(Nrm, cn, F, p):
            best = _take(best, p, out)
        for j in range(i + 1, F):
            _, _, nonpar = _edge_frame(Nrm[i], Nrm[j], t, alpha, beta)
            if not nonpar:
                continue
            for q in range(3):
                p[q] = alpha[q] * cn[i] + beta[q] * cn[j]
            if _feasible(Nrm, cn, F, p):
                best = _take(best, p, out)
            for k in range(j + 1, F):
                _cross(Nrm[j], Nrm[k], u)
                det = _dot(Nrm[i], u)
                if abs(det) <= 1e-12:
                    continue
                _cross(Nrm[k], Nrm[i], alpha)
                _cross(Nrm[i], Nrm[j], beta)
                for q in range(3):
                    p[q] = (cn[i] * u[q] + cn[j] * alpha[q] + cn[k] * beta[q]) / det
                if _feasible(Nrm, cn, F, p):
                    best = _take(best, p, out)


@_jit
def _closest_rows(Nrm, cn, fvalid, rows, out):
    for n in range(rows.size):
        k = rows[n]
        F = 0
        while F < fvalid.shape[1] and fvalid[k, F]:
            F += 1
        _closest_one(Nrm[k], cn[k], F, out[n])


def closest_in_slices(geo: SliceGeometry, rows) -> np.ndarray:
    """(n, 3) the points of the slices in ``rows`` of ``geo`` closest to the origin (``sliced._closest_in_slices``
    without building them)."""
    rows = np.ascontiguousarray(rows, dtype=np.intp)
    out = np.zeros((rows.size, 3))
    g = geo.arrays
    _closest_rows(g.Nrm, g.cn, g.fvalid, rows, out)
    return out


def warm() -> None:
    """Compile (into numba's cache) what the S = 4 path runs: the slice geometry, the closest points, the S = 3
    kernel on these arrays, the slices' ends and their adaptive cubature, by one sliced integral of a box and one
    slice of it (``python -m engine.warmup`` calls this)."""
    from ..solid.cubature import adaptive_cubature
    from .sliced import _Problem, closest_distance, sliced_moments

    Q, _ = np.linalg.qr(np.arange(16.0).reshape(4, 4) ** 1.5 + np.eye(4))
    a, b = np.array([-1.0, -0.5, 0.2, -2.0]), np.array([0.7, 1.5, 2.0, 0.1])
    Nrm = np.vstack([Q.T, -Q.T])
    corners = np.array(np.meshgrid(*zip(a, b), indexing="ij")).reshape(4, -1).T
    D, Yv = np.concatenate([b, -a])[None], (corners @ Q.T)[None]
    sliced_moments(Nrm, D, Yv, np.zeros((0, 4)), moments=2)
    prob = _Problem(Nrm, D, Yv, np.zeros((0, 4)), closest_distance(Nrm, D)[0])
    pidx, nodes = np.zeros(1, dtype=np.intp), np.array([0.1])
    geo = slice_geometry(prob, pidx, nodes)
    ends, _ = slice_ends(prob, pidx, nodes, geo, [0])
    adaptive_cubature(geo.arrays, [0], [1.0], 2, ends)
    _closest_rows(np.zeros((1, 1, 3)), np.zeros((1, 1)), np.ones((1, 1), dtype=np.bool_), np.zeros(1, dtype=np.intp),
                  np.zeros((1, 3)))


class VertexData(NamedTuple):
    """The 4-D polytope's points as ``sliced._Problem`` holds them: vertex-facet and ray-facet incidence ``inc``
    (V, F), ``rinc`` (R, F), vertices ``Yv`` (M, V, 4), unit rays ``Yr`` (R, 4) and the frames ``V`` (M, 4, 3)."""

    inc: np.ndarray
    rinc: np.ndarray
    Yv: np.ndarray
    Yr: np.ndarray
    V: np.ndarray


@_jit
def _on_facets(row, i, j, k):
    return row[i] and row[j] and row[k]


@_jit
def _crossing(m, t, d, x, i, j, k, p4):
    """The point at height t of the polytope's edge (or vertex-ray line) on the 4-D facets i, j, k into ``p4``, by
    the interpolation of ``sliced._Problem._build``; False when no candidate lies on all three."""
    hv, ea, eb = d.hv, d.ea, d.eb
    for q in range(ea.size):
        a, b = ea[q], eb[q]
        ha, hb = hv[m, a], hv[m, b]
        if not (min(ha, hb) <= t and t <= max(ha, hb) and ha != hb):
            continue
        if _on_facets(x.inc[a], i, j, k) and _on_facets(x.inc[b], i, j, k):
            lam = (t - ha) / (hb - ha)
            for c in range(4):
                p4[c] = x.Yv[m, a, c] + lam * (x.Yv[m, b, c] - x.Yv[m, a, c])
            return True
    for q in range(d.va.size):
        v, r = d.va[q], d.rb[q]
        h = d.hr[m, r]
        if abs(h) > _RAY and (t - hv[m, v]) / h >= 0.0 and _on_facets(x.inc[v], i, j, k) \
                and _on_facets(x.rinc[r], i, j, k):
            s = (t - hv[m, v]) / h
            for c in range(4):
                p4[c] = x.Yv[m, v, c] + s * x.Yr[r, c]
            return True
    return False


@_jit
def _ends_row(m, t, d, x, g, k, out):
    """The ends of the edges of slice row k of ``g`` (point m, height t) into ``out`` (E, 2, 3), in the order of its
    edge slots, each the crossing of the 4-D edge on the three facets that meet there; False when one is not
    found (degenerate incidence) or an edge is unbounded."""
    F = d.D.shape[1]
    act = np.empty(F, dtype=np.bool_)
    _node_type(m, t, d, act)
    fmap = np.empty(F, dtype=np.intp)
    f2 = 0
    for f in range(F):
        if act[f]:
            fmap[f2] = f
            f2 += 1
    p4 = np.empty(4)
    n = 0
    for e in range(g.evalid.shape[1]):
        if not g.evalid[k, e]:
            continue
        if not (g.has_hi[k, e] and g.has_lo[k, e]):
            return False
        i, j = fmap[g.ei[k, e]], fmap[g.ej[k, e]]
        for s in range(2):
            third = fmap[g.khi[k, e] if s == 0 else g.klo[k, e]]
            if not _crossing(m, t, d, x, i, j, third, p4):
                return False
            for q in range(3):
                out[n, s, q] = (p4[0] * x.V[m, 0, q] + p4[1] * x.V[m, 1, q] + p4[2] * x.V[m, 2, q]
                                + p4[3] * x.V[m, 3, q])
        n += 1
    return True


@_jit
def _ends_rows(pidx, nodes, rows, d, x, g, out, ok):
    for p in range(rows.size):
        k = rows[p]
        ok[p] = _ends_row(pidx[k], nodes[k], d, x, g, k, out[p])


def _slicing_data(prob) -> SlicingData:
    """``prob``'s arrays as the compiled passes read them."""
    sh = prob.shape
    has_rays = prob.Yr.size > 0
    va = sh.va if has_rays else np.zeros(0, dtype=np.intp)
    rb = sh.rb if has_rays else np.zeros(0, dtype=np.intp)
    hr = np.ascontiguousarray(prob.hr) if has_rays else np.zeros((prob.D.shape[0], 1))
    c = np.ascontiguousarray
    return SlicingData(c(prob.D), c(prob.a), c(prob.scale), c(prob.Nn), c(prob.fmin), c(prob.fmax), c(prob.hv), hr,
                       c(sh.ea, dtype=np.intp), c(sh.eb, dtype=np.intp), c(va, dtype=np.intp), c(rb, dtype=np.intp))


def slice_ends(prob, pidx, nodes, geo: SliceGeometry, rows):
    """``(ends (n, E, 2, 3), ok (n,))``: the ends of the edges of the bounded slices ``rows`` of ``geo`` taken from
    the 4-D polytope (the crossings of its edges with the slice, as the reference path builds the slices' points),
    not from the slices' planes: a sliver's vertex is ill conditioned in its planes (at condition 4e4 the planes
    put it 1e-11 off, which moved a slice's mass by 1e-8 relative). ``ok`` False: an end was not found."""
    rows = np.ascontiguousarray(rows, dtype=np.intp)
    E = geo.arrays.evalid.shape[1]
    out = np.zeros((rows.size, E, 2, 3))
    ok = np.zeros(rows.size, dtype=np.bool_)
    sh = prob.shape
    rinc = sh.rinc if prob.Yr.size else np.zeros((1, prob.D.shape[1]), dtype=bool)
    Yr = prob.Yr if prob.Yr.size else np.zeros((1, 4))
    c = np.ascontiguousarray
    x = VertexData(c(sh.inc), c(rinc), c(prob.Yv), c(Yr), c(prob.V))
    if rows.size:
        _ends_rows(c(pidx, dtype=np.intp), c(nodes, dtype=np.float64), rows, _slicing_data(prob), x, geo.arrays, out,
                   ok)
    return out, ok
