"""S = 3 small bounded regions: ``Phi_omega`` (Theorem 1, eq. 5) and the Sec. 4.1 moments by direct cubature.

Where the signed sums of the cone decomposition (:mod:`.kernel`) cancel -- small regions, whose mass is much
smaller than the cones beyond their facets, and covariances ``E[yy^T] - m m^T`` far below ``|m|^2`` --
:func:`cubature_moments` integrates the bounded region directly: a product Gauss rule on tetrahedra (hull
triangles coned to the centroid), moments about the mean, so nothing cancels; the difference between a
degree-19 and a degree-15 rule bounds the error.

:func:`adaptive_cubature` is the same rule pair compiled, on the rows of a ``SolidArrays`` (the S = 4 route's
slices, ``highdim.sliced``): each region cut into tetrahedra from its edge structure (facet fans coned to the
centroid; one tetrahedron when it has 4 facets), and the tetrahedra that carry most of the two rules'
disagreement bisected along their longest edge until it is within the thresholds, so thin and long regions
(needles 5.6 long and 0.02 x 0.006 thin, which the span rule of :func:`cubature_moments` refuses) are resolved too.
:func:`pair_cubature` runs that compiled rule on the S = 3 batch's flagged pairs (``polytopes._solid_batch``), the
mean of each pair, with the input's conditioning in its bar; :func:`cubature_moments` (numpy, with a span rule) is
the path it replaced, kept for the tests that compare with it.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from ..constants import EPS as _EPS_F
from ..constants import LOG_SQRT_2PI as _LOG_SQRT_2PI_F
from ..dot2 import add_product, two_prod
from .kernel import FALLBACK_REL, MOMENT_TOL


def _simplex_rule(n: int):
    """Collapsed (Duffy) Gauss-Jacobi product rule on the unit tetrahedron: points (n^3, 3), weights (sum 1/6).

    ``p = (a, b (1 - a), c (1 - a)(1 - b))`` with Jacobian ``(1 - a)^2 (1 - b)``, absorbed by Gauss-Jacobi
    weights in ``a`` and ``b``; exact for polynomials of degree ``2n - 1``.
    """
    from scipy.special import roots_jacobi

    xa, wa = roots_jacobi(n, 2.0, 0.0)
    xb, wb = roots_jacobi(n, 1.0, 0.0)
    xc, wc = np.polynomial.legendre.leggauss(n)
    a, b, c = 0.5 * (xa + 1.0), 0.5 * (xb + 1.0), 0.5 * (xc + 1.0)
    wa, wb, wc = wa / 8.0, wb / 4.0, wc / 2.0
    A, B, C = np.meshgrid(a, b, c, indexing="ij")
    W = wa[:, None, None] * wb[None, :, None] * wc[None, None, :]
    pts = np.stack([A, B * (1.0 - A), C * (1.0 - A) * (1.0 - B)], axis=-1).reshape(-1, 3)
    return pts, W.ravel()


_CUB_HI = _simplex_rule(10)  # degree 19
_CUB_LO = _simplex_rule(8)  # degree 15: the difference bounds the error of the degree-19 rule
CUBATURE_SPAN = 12.0  # |y|_max * diameter + diameter^2 above which the cubature is not tried


def _refine(T):
    """Each tetrahedron (T, 4, 3) into 8 of half the diameter: 4 corners and the central octahedron in 4."""
    v0, v1, v2, v3 = T[:, 0], T[:, 1], T[:, 2], T[:, 3]
    m01, m02, m03 = 0.5 * (v0 + v1), 0.5 * (v0 + v2), 0.5 * (v0 + v3)
    m12, m13, m23 = 0.5 * (v1 + v2), 0.5 * (v1 + v3), 0.5 * (v2 + v3)
    kids = [(v0, m01, m02, m03), (m01, v1, m12, m13), (m02, m12, v2, m23), (m03, m13, m23, v3),
            (m01, m02, m03, m13), (m01, m02, m12, m13), (m02, m03, m13, m23), (m02, m12, m13, m23)]
    return np.concatenate([np.stack(k, axis=1) for k in kids])


def _cubature_one(T, shift, rule):
    """log mass, mean, cov of N(0, I_3) on the union of the tetrahedra ``T - shift_p`` (T (K, 4, 3), shift (m, 3))."""
    pts, w = rule
    J = (T[:, 1:] - T[:, :1]).transpose(0, 2, 1)  # (K, 3, 3): columns v_k - v_0
    base = np.log(np.abs(np.linalg.det(J)))[:, None] + np.log(w)[None]  # (K, Q)
    y0 = (np.matmul(J, pts.T) + T[:, 0, :, None]).transpose(1, 0, 2).reshape(3, -1)  # (3, K Q)
    out = np.empty(len(shift)), np.empty((len(shift), 3)), np.empty((len(shift), 3, 3))
    for p, sh in enumerate(shift):
        y = y0 - sh[:, None]
        lw = base.ravel() - 0.5 * (y * y).sum(axis=0)
        top = lw.max()
        f = np.exp(lw - top)
        s = f.sum()
        out[0][p] = top + np.log(s) - 3.0 * _LOG_SQRT_2PI_F
        mean = y @ f / s
        d = y - mean[:, None]
        cov = (d * f) @ d.T / s
        out[1][p] = mean
        out[2][p] = 0.5 * (cov + cov.T)
    return out


_CUB_MAX_LEVELS = 2  # refinements into 8: the rule is used up to a span of CUBATURE_SPAN * 2^levels


def cubature_moments(polytope, chol, mu, loosen=1.0):
    """Whitened mass and moments of the bounded ``polytope`` under ``N(mu_p, L L^T)`` (rows of ``mu``) by a
    degree-19 product rule on the tetrahedra (hull triangles coned to the centroid of the vertices), refined
    into 8 once or twice where the span ``|y|_max diam + diam^2`` exceeds ``CUBATURE_SPAN``.

    For small regions (span of order 1 in whitened units) the integrand is nearly log-linear on each
    tetrahedron and the rule is exact to rounding; the signed sums of the cone decomposition cancel there.
    Returns ``(log_mass, mean_y, cov_y, rel_err, ok)``: ``rel_err`` is the difference to the degree-15 rule
    (a bound on the degree-19 rule's error), ``ok`` False where the span or that bound is too large
    (``FALLBACK_REL`` and ``MOMENT_TOL`` times ``loosen`` (M,), see :func:`loosen_factor`).
    The covariance is formed about the mean (no cancellation).
    """
    from scipy.spatial import ConvexHull, QhullError

    M = mu.shape[0]
    fail = (np.full(M, -np.inf), np.zeros((M, 3)), np.zeros((M, 3, 3)), np.full(M, np.inf), np.zeros(M, dtype=bool))
    if polytope.rays.size or polytope.lineality.size or polytope.vertices.shape[0] < 4:
        return fail
    Linv = np.linalg.inv(chol)
    Y0 = polytope.vertices @ Linv.T
    try:
        tris = ConvexHull(Y0).simplices
    except QhullError:
        return fail
    centre = Y0.mean(axis=0)
    T = np.concatenate([np.broadcast_to(centre, (len(tris), 1, 3)), Y0[tris]], axis=1)  # (K, 4, 3)
    shift = mu @ Linv.T
    diam = np.sqrt(((Y0[:, None] - Y0[None]) ** 2).sum(axis=-1)).max()
    span = np.sqrt(((Y0[None] - shift[:, None]) ** 2).sum(axis=-1)).max(axis=1) * diam + diam * diam
    with np.errstate(divide="ignore"):
        levels = np.maximum(np.ceil(np.log2(span / CUBATURE_SPAN)), 0.0)
    out = list(fail)
    tol = np.broadcast_to(np.asarray(loosen, dtype=np.float64), (M,))
    for level in range(_CUB_MAX_LEVELS + 1):
        sel = np.nonzero(levels == level)[0]
        if level:
            T = _refine(T)
        if not sel.size:
            continue
        lm, mean, cov = _cubature_one(T, shift[sel], _CUB_HI)
        lm2, mean2, cov2 = _cubature_one(T, shift[sel], _CUB_LO)
        with np.errstate(invalid="ignore", over="ignore"):
            rel = np.abs(np.expm1(lm - lm2)) + 4.0 * _EPS_F * (1.0 + np.abs(lm))
            # moments: the same difference, relative to the region's own spread
            spread = np.sqrt(np.maximum(np.trace(cov, axis1=1, axis2=2), 1e-300))
            dm = np.sqrt(((mean - mean2) ** 2).sum(axis=1)) / spread
            dc = np.abs(cov - cov2).max(axis=(1, 2)) / (spread * spread)
        t = tol[sel]
        good = np.isfinite(lm) & (rel <= FALLBACK_REL * t) & (dm <= MOMENT_TOL * t) & (dc <= MOMENT_TOL * t)
        out[0][sel], out[1][sel], out[2][sel], out[3][sel] = lm, mean, cov, rel
        out[4][sel] = good
    return tuple(out)


# ---------------------------------------------------------------------------------------------------
# Compiled, adaptive: the rows of a ``SolidArrays`` (the S = 4 route's slices, ``highdim.sliced``)
# ---------------------------------------------------------------------------------------------------

_jit = numba.njit(cache=True, nogil=True, error_model="numpy")
_HI_PTS, _HI_LW = np.ascontiguousarray(_CUB_HI[0]), np.log(_CUB_HI[1])
_LO_PTS, _LO_LW = np.ascontiguousarray(_CUB_LO[0]), np.log(_CUB_LO[1])
ADAPTIVE_MAX_TETS = 1024  # tetrahedra per region at most (bisections of the worst ones until the bar is met)
_SPLIT_SHARE = 0.25  # each round bisects every tetrahedron whose share of the excess is at least this of the worst's
RESOLVED_SPAN = 12.0  # a tetrahedron's rules are trusted where its log density varies by at most this (diam |y|_max,
# CUBATURE_SPAN's scale); beyond it both rules can miss a peak at a corner and agree on a wrong value (issue 14: a
# slice 400 long with its mass within ~1 of one end, 1.7e-2 off under a bar of 8e-13)


@_jit
def _cross3(u, v, out):
    out[0] = u[1] * v[2] - u[2] * v[1]
    out[1] = u[2] * v[0] - u[0] * v[2]
    out[2] = u[0] * v[1] - u[1] * v[0]


@_jit
def _vertex(Nrm, cn, i, j, k, out):
    """The point of the planes i, j, k of ``{Nrm y <= cn}`` into ``out`` (Cramer's rule); False when singular."""
    u, a, b = np.empty(3), np.empty(3), np.empty(3)
    _cross3(Nrm[j], Nrm[k], u)
    det = Nrm[i, 0] * u[0] + Nrm[i, 1] * u[1] + Nrm[i, 2] * u[2]
    if det == 0.0:
        return False
    _cross3(Nrm[k], Nrm[i], a)
    _cross3(Nrm[i], Nrm[j], b)
    for q in range(3):
        out[q] = (cn[i] * u[q] + cn[j] * a[q] + cn[k] * b[q]) / det
    return True


@_jit
def _key(i, j, k):
    """The vertex of facets {i, j, k} as one integer (sorted triple)."""
    a, b, c = min(i, j, k), max(min(i, j), min(max(i, j), k)), max(i, j, k)
    return (a * 4096 + b) * 4096 + c


@_jit
def _ends(g, r, A, B, ka, kb, given):
    """The two ends of every edge of region r into ``A``, ``B`` (E, 3) and their vertex keys: ``given`` (E, 2, 3) when
    it has rows (the caller's better conditioned ends, in the order of the edge slots), else the points of the
    three planes; the number of edges, -1 when the region is unbounded (an edge without both ends) or a vertex
    is singular."""
    n = 0
    for e in range(g.evalid.shape[1]):
        if not g.evalid[r, e]:
            continue
        if not (g.has_hi[r, e] and g.has_lo[r, e]):
            return -1
        i, j = g.ei[r, e], g.ej[r, e]
        if given.shape[0]:
            A[n], B[n] = given[n, 0], given[n, 1]
        elif not (_vertex(g.Nrm[r], g.cn[r], i, j, g.khi[r, e], A[n])
                  and _vertex(g.Nrm[r], g.cn[r], i, j, g.klo[r, e], B[n])):
            return -1
        ka[n], kb[n] = _key(i, j, g.khi[r, e]), _key(i, j, g.klo[r, e])
        n += 1
    return n


@_jit
def _simplex(n, A, B, ka, kb, out):
    """The 4 distinct ends (by vertex key) of the ``n`` edges into ``out`` (4, 3); False if there are not 4."""
    m = 0
    seen = np.empty(4, dtype=np.int64)
    for e in range(n):
        for s in range(2):
            key = ka[e] if s == 0 else kb[e]
            new = True
            for u in range(m):
                new = new and seen[u] != key
            if new:
                if m == 4:
                    return False
                seen[m] = key
                out[m] = A[e] if s == 0 else B[e]
                m += 1
    return m == 4


@_jit
def _tetrahedra(g, r, T, given):
    """Region r of ``g`` cut into tetrahedra, into ``T`` (cap, 4, 3); returns their number (-1: unbounded, no edges or
    too many). A bounded region with 4 facets is one tetrahedron (its vertices: the triples of facets); otherwise
    each facet's polygon is fanned from one of its vertices ``v0`` and coned to the centroid ``c`` of the edge ends:
    the tetrahedra ``(c, v0, a, b)`` over the edges ``ab`` of the facet that do not end at ``v0``."""
    E = g.evalid.shape[1]
    A, B = np.empty((E, 3)), np.empty((E, 3))
    ka, kb = np.empty(E, dtype=np.int64), np.empty(E, dtype=np.int64)
    n = _ends(g, r, A, B, ka, kb, given)
    if n <= 0:
        return -1
    F = 0
    while F < g.fvalid.shape[1] and g.fvalid[r, F]:
        F += 1
    c = np.zeros(3)
    for e in range(n):
        for q in range(3):
            c[q] += (A[e, q] + B[e, q]) / (2.0 * n)
    if F == 4 and n == 6 and _simplex(n, A, B, ka, kb, T[0]):  # a tetrahedron: its 4 distinct ends
        return 1
    count = 0
    for f in range(F):
        k0, v0 = -1, 0
        for e in range(n):
            i, j = g.ei[r, e], g.ej[r, e]
            if i != f and j != f:
                continue
            if k0 < 0:
                k0, v0 = ka[e], e
                continue
            if ka[e] == k0 or kb[e] == k0:
                continue
            if count >= T.shape[0]:
                return -1
            T[count, 0] = c
            T[count, 1] = A[v0]
            T[count, 2] = A[e]
            T[count, 3] = B[e]
            count += 1
    return count


PLAIN_DET_REL = 64.0 * _EPS_F  # the plain cofactor determinant is kept where it agrees with the compensated one to this


@_jit
def _triple(p, s, x, y, z):
    """``(p, s)`` plus ``x y z``: ``x y = h + r`` exactly (TwoProduct), ``h z`` exactly, ``r z`` rounded (~eps^2)."""
    h, r = two_prod(x, y)
    h2, r2 = two_prod(h, z)
    return add_product(p, s, h2, r2 + r * z)


@_jit
def _det3(J):
    """``det J`` (3 x 3): the plain cofactor expansion where it agrees with the six triple products summed by Dot2
    (Ogita, Rump and Oishi; error ``<= eps |det| + ~eps^2 sum |terms|``) to ``PLAIN_DET_REL``, else the latter.

    A needle's tetrahedra coned from its centroid over its long facets have three long, nearly parallel edges: the
    plain expansion cancels terms ~|J|^3 to a determinant ~1e6 times smaller (a rotated box 1.4e-6 x 2e-6 x 3: each
    tetrahedron's volume 3e-6 .. 1e-5 off, the box's mass 4.5e-7 off under a bar of 1.9e-7, 1.6e-6 after the
    bisections the moments asked for), an error that both rules share and their difference does not see."""
    plain = (J[0, 0] * (J[1, 1] * J[2, 2] - J[1, 2] * J[2, 1]) - J[0, 1] * (J[1, 0] * J[2, 2] - J[1, 2] * J[2, 0])
             + J[0, 2] * (J[1, 0] * J[2, 1] - J[1, 1] * J[2, 0]))
    p, s = _triple(0.0, 0.0, J[0, 0], J[1, 1], J[2, 2])
    p, s = _triple(p, s, -J[0, 0], J[1, 2], J[2, 1])
    p, s = _triple(p, s, -J[0, 1], J[1, 0], J[2, 2])
    p, s = _triple(p, s, J[0, 1], J[1, 2], J[2, 0])
    p, s = _triple(p, s, J[0, 2], J[1, 0], J[2, 1])
    p, s = _triple(p, s, -J[0, 2], J[1, 1], J[2, 0])
    acc = p + s
    return plain if abs(plain - acc) <= PLAIN_DET_REL * abs(acc) else acc


@_jit
def _tet_moments(T, pts, lw, y, f, out):
    """log mass, mean and covariance (about the mean) of N(0, I_3) on the tetrahedron ``T`` (4, 3) by the rule
    ``pts``, ``lw`` (log weights on the unit tetrahedron) into ``out`` (13,); ``y``, ``f``: scratch."""
    J = np.empty((3, 3))
    for a in range(3):
        for b in range(3):
            J[a, b] = T[b + 1, a] - T[0, a]
    det = _det3(J)
    out[:] = 0.0
    if det == 0.0:
        out[0] = -np.inf
        return
    ld = math.log(abs(det))
    top = -np.inf
    Q = pts.shape[0]
    for q in range(Q):
        s = 0.0
        for a in range(3):
            y[q, a] = T[0, a] + J[a, 0] * pts[q, 0] + J[a, 1] * pts[q, 1] + J[a, 2] * pts[q, 2]
            s += y[q, a] * y[q, a]
        f[q] = ld + lw[q] - 0.5 * s
        top = max(top, f[q])
    tot = 0.0
    for q in range(Q):
        f[q] = math.exp(f[q] - top)
        tot += f[q]
        for a in range(3):
            out[1 + a] += f[q] * y[q, a]
    for a in range(3):
        out[1 + a] /= tot
    for q in range(Q):
        for a in range(3):
            for b in range(3):
                out[4 + 3 * a + b] += f[q] * (y[q, a] - out[1 + a]) * (y[q, b] - out[1 + b])
    for a in range(9):
        out[4 + a] /= tot
    out[0] = top + math.log(tot) - 3.0 * _LOG_SQRT_2PI_F


@_jit
def _combine(res, n, out):
    """The union of the ``n`` tetrahedra of ``res`` (n, 13) into ``out`` (13,): log-sum-exp masses, the weighted
    mean, and the covariance ``sum w (C_t + (m_t - m)(m_t - m)^T)`` (about the mean: nothing cancels)."""
    top = -np.inf
    for t in range(n):
        top = max(top, res[t, 0])
    out[:] = 0.0
    if top == -np.inf:
        out[0] = -np.inf
        return
    tot = 0.0
    for t in range(n):
        tot += math.exp(res[t, 0] - top)
    for t in range(n):
        w = math.exp(res[t, 0] - top) / tot
        for a in range(3):
            out[1 + a] += w * res[t, 1 + a]
    for t in range(n):
        w = math.exp(res[t, 0] - top) / tot
        for a in range(3):
            for b in range(3):
                out[4 + 3 * a + b] += w * (res[t, 4 + 3 * a + b] + (res[t, 1 + a] - out[1 + a])
                                           * (res[t, 1 + b] - out[1 + b]))
    out[0] = top + math.log(tot)


@_jit
def _excess(hi, lo, moments, rel_max, mom_max):
    """The two rules' disagreement ``(rel, dm, dc)`` on the whole region (``hi``, ``lo`` (13,): combined) and
    whether it is within ``rel_max`` (mass) and ``mom_max`` (mean, covariance relative to the region's spread)."""
    rel = abs(math.expm1(hi[0] - lo[0])) + 4.0 * _EPS_F * (1.0 + abs(hi[0]))
    tr = max(hi[4] + hi[8] + hi[12], 1e-300)
    dm = math.sqrt((hi[1] - lo[1]) ** 2 + (hi[2] - lo[2]) ** 2 + (hi[3] - lo[3]) ** 2) / math.sqrt(tr)
    dc = 0.0
    for a in range(9):
        dc = max(dc, abs(hi[4 + a] - lo[4 + a]) / tr)
    ok = np.isfinite(hi[0]) and rel <= rel_max
    if moments >= 1:
        ok = ok and dm <= mom_max
    if moments >= 2:
        ok = ok and dc <= mom_max
    return rel, dm, dc, ok


@_jit
def _distance_below(T, t, rmax):
    """A lower bound on the distance from the origin to tetrahedron t of ``T``: the largest of the origin's
    distances beyond a face plane, and of ``min_a v_a . c / |c|`` (``c`` the centroid: the tetrahedron lies beyond the
    plane through that point perpendicular to ``c``); 0 when neither separates."""
    best = 0.0
    c = np.zeros(3)
    for a in range(4):
        for q in range(3):
            c[q] += 0.25 * T[t, a, q]
    cn = math.sqrt(c[0] ** 2 + c[1] ** 2 + c[2] ** 2)
    if cn > 0.0:
        low = rmax
        for a in range(4):
            low = min(low, (T[t, a, 0] * c[0] + T[t, a, 1] * c[1] + T[t, a, 2] * c[2]) / cn)
        best = max(best, low)
    for drop in range(4):
        i, j, k = (drop + 1) % 4, (drop + 2) % 4, (drop + 3) % 4
        u = T[t, j] - T[t, i]
        v = T[t, k] - T[t, i]
        n0, n1, n2 = u[1] * v[2] - u[2] * v[1], u[2] * v[0] - u[0] * v[2], u[0] * v[1] - u[1] * v[0]
        nn = math.sqrt(n0 * n0 + n1 * n1 + n2 * n2)
        if nn == 0.0:
            continue
        side = n0 * (T[t, drop, 0] - T[t, i, 0]) + n1 * (T[t, drop, 1] - T[t, i, 1]) + n2 * (T[t, drop, 2] - T[t, i, 2])
        out = -(n0 * T[t, i, 0] + n1 * T[t, i, 1] + n2 * T[t, i, 2])  # n . (0 - v_i)
        if side < 0.0 and out > 0.0:
            best = max(best, out / nn)
        elif side > 0.0 and out < 0.0:
            best = max(best, -out / nn)
    return min(best, rmax)


@_jit
def _unresolved(T, t, info):
    """Tetrahedron t of ``T``: into ``info[t]`` the log of a bound on its mass, ``vol phi_3(d)`` (``d``:
    :func:`_distance_below`), 1.0 where its log density varies by more than ``RESOLVED_SPAN`` (by at most
    ``min(diam rmax, (rmax^2 - d^2) / 2)``, ``rmax = max_a |v_a|``: its two rules are not trusted, its bound counts as
    error, :func:`_unresolved_excess`, and it is bisected until resolved or negligible), ``rmax``, and the relative
    bound on its rules' values from the rounding of its geometry (:func:`_volume_rounding`; ``info[t, 4]``: how many
    bisections made it). A tetrahedron without volume in floating point counts as unresolved, its bound that
    rounding's."""
    diam, rmax = 0.0, 0.0
    for a in range(4):
        rmax = max(rmax, math.sqrt(T[t, a, 0] ** 2 + T[t, a, 1] ** 2 + T[t, a, 2] ** 2))
        for b in range(a + 1, 4):
            diam = max(diam, math.sqrt((T[t, a, 0] - T[t, b, 0]) ** 2 + (T[t, a, 1] - T[t, b, 1]) ** 2
                                       + (T[t, a, 2] - T[t, b, 2]) ** 2))
    vol, verr = _volume_rounding(T, t, info[t, 4])
    d = _distance_below(T, t, rmax)
    flat = not vol > 0.0  # no volume in floating point: its rounding bound counts whole, as an unresolved one's
    info[t, 0] = (math.log(verr if flat else vol) if verr > 0.0 else -np.inf) - 0.5 * d * d - 3.0 * _LOG_SQRT_2PI_F
    info[t, 1] = 1.0 if flat or min(diam * rmax, 0.5 * (rmax - d) * (rmax + d)) > RESOLVED_SPAN else 0.0
    info[t, 2] = rmax
    info[t, 3] = 0.0 if flat else verr / vol + _EPS_F * rmax * (rmax + 3.0 * diam)  # ... and the nodes' |y|^2


@_jit
def _volume_rounding(T, t, depth):
    """``(vol, err)``: the volume of tetrahedron t of ``T`` (:func:`_det3`) and a first-order bound on its absolute
    error from the rounding of its geometry, which both rules share (it goes into the bar beside their difference,
    :func:`_unresolved_excess`): each edge ``J_k = v_{k+1} - v_0`` off by at most ``eps/2 |J_k|`` (its difference's
    rounding) plus ``depth eps/2 (|v_0| + |v_{k+1}|)`` (``depth`` bisections: each rounded midpoint adds ``eps/2 |v|``
    to its parents' errors, which it averages; the root's vertices are the input's, in its conditioning term), which
    moves ``det J`` by at most that times ``|J_i x J_j|``; plus the determinant's own ``8 eps``; all times 2."""
    J = np.empty((3, 3))
    for a in range(3):
        for b in range(3):
            J[a, b] = T[t, b + 1, a] - T[t, 0, a]
    det = abs(_det3(J))
    n0 = math.sqrt(T[t, 0, 0] ** 2 + T[t, 0, 1] ** 2 + T[t, 0, 2] ** 2)
    acc = 0.0
    for k in range(3):
        i, j = (k + 1) % 3, (k + 2) % 3
        c0 = J[1, i] * J[2, j] - J[2, i] * J[1, j]
        c1 = J[2, i] * J[0, j] - J[0, i] * J[2, j]
        c2 = J[0, i] * J[1, j] - J[1, i] * J[0, j]
        jk = math.sqrt(J[0, k] ** 2 + J[1, k] ** 2 + J[2, k] ** 2)
        vk = math.sqrt(T[t, k + 1, 0] ** 2 + T[t, k + 1, 1] ** 2 + T[t, k + 1, 2] ** 2)
        acc += (0.5 * jk + 0.5 * depth * (n0 + vk)) * math.sqrt(c0 * c0 + c1 * c1 + c2 * c2)
    return det / 6.0, 2.0 * _EPS_F * (acc + 8.0 * det) / 6.0


@_jit
def _unresolved_excess(info, res_hi, n, hi, extra):
    """The unresolved tetrahedra's bounds (``info`` of :func:`_unresolved`) relative to the region's combined ``hi``
    into ``extra`` (4,): on the mass (the rules' value on a tetrahedron lies between 0 and its bound, so their sum
    bounds the error), the mean and the covariance (a share ``s`` at distance ``<= rmax`` moves them by at most
    ``s (rmax + |m|)`` and ``s (rmax + |m|)^2``), in units of the spread like :func:`_excess`; into ``extra[3]`` the
    resolved ones' geometry rounding (``info[t, 3]`` times their share ``res_hi[t, 0]``): like the input's
    conditioning it goes into the bar, not against the rules' tolerance (bisection does not reduce it)."""
    extra[:] = 0.0
    if not np.isfinite(hi[0]):
        return
    tr = max(hi[4] + hi[8] + hi[12], 1e-300)
    mn = math.sqrt(hi[1] ** 2 + hi[2] ** 2 + hi[3] ** 2)
    for t in range(n):
        if info[t, 1] < 0.5:
            extra[3] += math.exp(res_hi[t, 0] - hi[0]) * info[t, 3]
        else:
            s = math.exp(info[t, 0] - hi[0])
            extra[0] += s
            extra[1] += s * (info[t, 2] + mn) / math.sqrt(tr)
            extra[2] += s * (info[t, 2] + mn) ** 2 / tr

@_jit
def _badness(hi, lo, tot, rel_max, mom_max, info_t):
    """A tetrahedron's share of the region's disagreement (``hi``, ``lo`` (13,) its two rules; ``tot`` the region's
    combined ``hi``), in units of the thresholds: which tetrahedra to bisect; an unresolved one (``info_t``,
    :func:`_unresolved`) counts with its whole bound."""
    if info_t[1] > 0.5:
        s = math.exp(info_t[0] - tot[0])
        tr = max(tot[4] + tot[8] + tot[12], 1e-300)
        return s / rel_max + s * (info_t[2] + math.sqrt(tot[1] ** 2 + tot[2] ** 2 + tot[3] ** 2)) ** 2 / tr / mom_max
    if hi[0] == -np.inf and lo[0] == -np.inf:
        return 0.0
    wh, wl = math.exp(hi[0] - tot[0]), math.exp(lo[0] - tot[0])
    tr = max(tot[4] + tot[8] + tot[12], 1e-300)
    dm, off, dc = 0.0, 0.0, 0.0
    for a in range(3):
        dm += (hi[1 + a] - lo[1 + a]) ** 2
        off += (hi[1 + a] - tot[1 + a]) ** 2
    dm, off = math.sqrt(dm), math.sqrt(off)
    for a in range(9):
        dc = max(dc, abs(hi[4 + a] - lo[4 + a]))
    return abs(wh - wl) / rel_max + wh * (dm / math.sqrt(tr) + (dc + 2.0 * dm * off) / tr) / mom_max


@_jit
def _bisect(T, t, n):
    """Tetrahedron t of ``T`` halved at the midpoint of its longest edge: one half in place, the other at n."""
    best, a0, b0 = -1.0, 0, 1
    for a in range(4):
        for b in range(a + 1, 4):
            d = (T[t, a, 0] - T[t, b, 0]) ** 2 + (T[t, a, 1] - T[t, b, 1]) ** 2 + (T[t, a, 2] - T[t, b, 2]) ** 2
            if d > best:
                best, a0, b0 = d, a, b
    T[n] = T[t]
    for q in range(3):
        mid = 0.5 * (T[t, a0, q] + T[t, b0, q])
        T[t, a0, q] = mid
        T[n, b0, q] = mid


@_jit
def _adaptive_one(g, r, given, moments, tols, rules, work, out):
    """Region r of ``g`` (whitened, mean 0): the degree-19 rule on its tetrahedra, the degree-15 one beside it, and
    the tetrahedra that carry the most of their disagreement bisected until it is within the thresholds or the
    cap is reached. ``out`` (15,): combined degree-19 values (13), the mass bar, ``good`` (1.0 / 0.0)."""
    hp, hw, lp, lw = rules
    rel_max, mom_max = tols
    T, res_hi, res_lo, info = work
    y, f = np.empty((max(hp.shape[0], lp.shape[0]), 3)), np.empty(max(hp.shape[0], lp.shape[0]))
    out[:] = 0.0
    out[0], out[13] = -np.inf, np.inf
    n = _tetrahedra(g, r, T, given)
    if n <= 0:
        return
    for t in range(n):
        _tet_moments(T[t], hp, hw, y, f, res_hi[t])
        _tet_moments(T[t], lp, lw, y, f, res_lo[t])
        info[t, 4] = 0.0
        _unresolved(T, t, info)
    hi, lo, bad, extra = np.empty(13), np.empty(13), np.empty(T.shape[0]), np.empty(4)
    while True:
        _combine(res_hi, n, hi)
        _combine(res_lo, n, lo)
        _unresolved_excess(info, res_hi, n, hi, extra)
        rel, dm, dc, ok = _excess(hi, lo, moments, rel_max - extra[0], mom_max)
        ok = ok and (moments < 1 or dm + extra[1] <= mom_max) and (moments < 2 or dc + extra[2] <= mom_max)
        out[:13] = hi
        out[13] = rel + extra[0] + extra[3]
        if ok:
            out[14] = 1.0
            return
        if not np.isfinite(hi[0]) or n >= T.shape[0]:
            return
        worst = 0.0
        for t in range(n):
            bad[t] = _badness(res_hi[t], res_lo[t], hi, rel_max, mom_max, info[t])
            worst = max(worst, bad[t])
        m = n
        for t in range(n):
            if bad[t] >= _SPLIT_SHARE * worst and m < T.shape[0]:
                _bisect(T, t, m)
                info[t, 4] += 1.0
                info[m, 4] = info[t, 4]
                for s in (t, m):
                    _tet_moments(T[s], hp, hw, y, f, res_hi[s])
                    _tet_moments(T[s], lp, lw, y, f, res_lo[s])
                    _unresolved(T, s, info)
                m += 1
        if m == n:  # nothing to bisect (a NaN): not resolved
            return
        n = m


@_jit
def _adaptive_rows(start, stop, g, rows, ends, loosen, moments, rules, out):
    cap = ADAPTIVE_MAX_TETS
    T = np.empty((cap, 4, 3))
    res_hi, res_lo, info = np.empty((cap, 13)), np.empty((cap, 13)), np.empty((cap, 5))
    for p in range(start, stop):
        given = ends[p] if ends.shape[0] else ends[:0, 0]
        _adaptive_one(g, rows[p], given, moments, (FALLBACK_REL * loosen[p], MOMENT_TOL * loosen[p]), rules,
                      (T, res_hi, res_lo, info), out[p])


def adaptive_cubature(arrays, rows, loosen, moments: int = 2, ends=None):
    """Whitened mass and moments of N(0, I_3) on the bounded regions ``rows`` of ``arrays`` (a :class:`SolidArrays`
    with the mean at the origin, e.g. ``highdim.slice_kernel``'s slices), compiled: each region cut into
    tetrahedra (:func:`_tetrahedra`), the degree-19 rule on each with the degree-15 one beside it as in
    :func:`cubature_moments` (their difference is the bar), and the tetrahedra carrying most of the difference
    bisected along their longest edge until the mass agrees to ``FALLBACK_REL loosen`` and the mean and
    covariance to ``MOMENT_TOL loosen`` of the region's spread (``loosen`` (P,)), at most ``ADAPTIVE_MAX_TETS``
    tetrahedra. Thin and long regions (needles, where the span rule of :func:`cubature_moments` gives up) are
    resolved by the bisection. ``ends`` (P, E, 2, 3), optional: the ends of each region's edges in the order of
    its edge slots, when the caller knows them better than the planes do (a thin sliver's vertex is ill
    conditioned in its planes: ``highdim.slice_kernel.slice_ends`` takes them from the 4-D polytope).
    Returns ``(log_mass, mean, cov, rel, good)`` like :func:`cubature_moments`."""
    rows = np.ascontiguousarray(rows, dtype=np.intp)
    P = rows.size
    out = np.zeros((P, 15))
    loosen = np.ascontiguousarray(np.broadcast_to(np.asarray(loosen, dtype=np.float64), (P,)))
    rules = (_HI_PTS, _HI_LW, _LO_PTS, _LO_LW)
    ends = np.zeros((0, 1, 2, 3)) if ends is None else np.ascontiguousarray(ends, dtype=np.float64)
    if P:
        _adaptive_rows(0, P, arrays, rows, ends, loosen, int(moments), rules, out)
    cov = out[:, 4:13].reshape(P, 3, 3)
    return out[:, 0], out[:, 1:4], 0.5 * (cov + np.swapaxes(cov, 1, 2)), out[:, 13], out[:, 14] > 0.5


# ---------------------------------------------------------------------------------------------------
# The S = 3 batch's pairs (``polytopes._solid_batch``): the same compiled rule, the mean of each pair
# ---------------------------------------------------------------------------------------------------


@_jit
def _solve3(A, b, out):
    """``A x = b`` (3 x 3) by Gaussian elimination with partial pivoting into ``out`` (A, b overwritten); False when
    singular. Backward stable, unlike Cramer's rule (:func:`_vertex`): on a tetrahedron 1e-6 thick, 2e-3 long, the
    vertices of its whitened planes by Cramer's rule put its mass 2.3e-7 off, the partition's vertices 1e-9."""
    for k in range(3):
        piv = k
        for i in range(k + 1, 3):
            if abs(A[i, k]) > abs(A[piv, k]):
                piv = i
        if A[piv, k] == 0.0:
            return False
        if piv != k:
            for j in range(3):
                A[k, j], A[piv, j] = A[piv, j], A[k, j]
            b[k], b[piv] = b[piv], b[k]
        for i in range(k + 1, 3):
            m = A[i, k] / A[k, k]
            for j in range(k, 3):
                A[i, j] -= m * A[k, j]
            b[i] -= m * b[k]
    for i in range(2, -1, -1):
        t = b[i]
        for j in range(i + 1, 3):
            t -= A[i, j] * out[j]
        out[i] = t / A[i, i]
    return True


@_jit
def _pair_vertex(g, r, trip, L, mu, zv, out):
    """The point of planes ``trip`` of region r in the pair's whitened coordinates ``L^-1 (z - mu)`` into ``out``: the
    polytope's own vertex ``zv`` (z) where finite, else solved in z (rows ``Hn z = cn``, :func:`_solve3`), then shifted
    and whitened (the old numpy path's order, ``(V - mu) L^-T``). Returns the misfit ``max |Hn_f z - cn_f|`` on the
    three planes, -1 when singular."""
    A, b, z = np.empty((3, 3)), np.empty(3), np.empty(3)
    if np.isfinite(zv[0]) and np.isfinite(zv[1]) and np.isfinite(zv[2]):
        z[:] = zv
    else:
        for a in range(3):
            for q in range(3):
                A[a, q] = g.Hn[r, trip[a], q]
            b[a] = g.cn[r, trip[a]]
        if not _solve3(A, b, z):
            return -1.0
    mis = 0.0
    for a in range(3):
        f = trip[a]
        mis = max(mis, abs(g.Hn[r, f, 0] * z[0] + g.Hn[r, f, 1] * z[1] + g.Hn[r, f, 2] * z[2] - g.cn[r, f]))
    for q in range(3):
        t = z[q] - mu[q]
        for j in range(q):
            t -= L[q, j] * out[j]
        out[q] = t / L[q, q]
    return mis


@_jit
def _pair_ends(g, r, L, mu, zends, given):
    """The ends of region r's edges for the pair (``L``: its Cholesky factor, ``mu``: its mean) into ``given``
    (E, 2, 3), in the order of its edge slots (:func:`_pair_vertex`; ``zends`` (E, 2, 3): the polytope's vertices in z
    where known, NaN elsewhere). Returns the largest misfit of an end on its three
    planes, -1 when the region is unbounded or a vertex is singular."""
    n = 0
    mis = 0.0
    trip = np.empty(3, dtype=np.intp)
    for e in range(g.evalid.shape[1]):
        if not g.evalid[r, e]:
            continue
        if not (g.has_hi[r, e] and g.has_lo[r, e]):
            return -1.0
        trip[0], trip[1] = g.ei[r, e], g.ej[r, e]
        for s in range(2):
            trip[2] = g.khi[r, e] if s == 0 else g.klo[r, e]
            m = _pair_vertex(g, r, trip, L, mu, zends[n, s], given[n, s])
            if m < 0.0:
                return -1.0
            mis = max(mis, m)
        n += 1
    return mis if n > 0 else -1.0


@_jit
def _input_conditioning(g, r, mu, given, mis):
    """Relative change of the mass of region r (its edges' ends ``given`` in the pair's whitened coordinates, ``mu`` the
    pair's mean) that rounding of its inputs can make (the bound of ``highdim.sliced.input_conditioning``, k = 3, no
    window): moving every facet by at most ``delta`` changes P by at most ``delta int_dP phi dS``, and with the field
    ``(y - c) phi`` (``c``: the ends' centroid, every facet at least ``rin`` from it) the divergence theorem gives
    ``rin int_dP phi dS <= P (3 + R min(R + |c|, diam))`` (``R``: the largest ``|v|``). ``delta``: the ends' misfit
    ``mis`` on their planes plus 4 eps of the magnitudes they are computed from (the offsets ``cn - Hn mu`` and
    ``|v|``). A thin region's vertices are ill conditioned in its planes: the numpy path put a [3, 16, 16, 5]
    tetrahedron 2e-3 long and ~3e-6 thick 8.7e-12 off (mpmath) under rules that agree to 4e-14."""
    n = 0
    c = np.zeros(3)
    R = 0.0
    for e in range(g.evalid.shape[1]):
        if not g.evalid[r, e]:
            continue
        for s in range(2):
            v = given[n, s]
            R = max(R, math.sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2]))
            for q in range(3):
                c[q] += 0.5 * v[q]
        n += 1
    c /= n
    rin, big = _INF_C, R
    for f in range(g.Nrm.shape[1]):
        if g.fvalid[r, f]:
            hm = g.Hn[r, f, 0] * mu[0] + g.Hn[r, f, 1] * mu[1] + g.Hn[r, f, 2] * mu[2]
            big = max(big, abs(g.cn[r, f]) + abs(hm))
            rin = min(rin, g.cn[r, f] - hm - (g.Nrm[r, f, 0] * c[0] + g.Nrm[r, f, 1] * c[1] + g.Nrm[r, f, 2] * c[2]))
    if not rin > 0.0:
        return _INF_C
    delta = mis + 4.0 * _EPS_F * big
    cn = math.sqrt(c[0] * c[0] + c[1] * c[1] + c[2] * c[2])
    return delta * (3.0 + R * min(R + cn, _diameter(given, n))) / rin


@_jit
def _diameter(given, n):
    """The largest distance between two of the ``n`` edges' ends in ``given``."""
    d = 0.0
    for e in range(n):
        for s in range(2):
            for e2 in range(e, n):
                for s2 in range(2):
                    d = max(d, (given[e, s, 0] - given[e2, s2, 0]) ** 2 + (given[e, s, 1] - given[e2, s2, 1]) ** 2
                            + (given[e, s, 2] - given[e2, s2, 2]) ** 2)
    return math.sqrt(d)


_INF_C = math.inf


@_jit
def _pair_rows(start, stop, g, pairs, moments, rules, out):
    """Pairs ``start:stop`` of ``pairs = (chol, rows, mus, loosen, zends)`` into ``out`` (P, 15)
    (:func:`pair_cubature`)."""
    chol, rows, mus, loosen, zends = pairs
    cap = ADAPTIVE_MAX_TETS
    T = np.empty((cap, 4, 3))
    res_hi, res_lo, info = np.empty((cap, 13)), np.empty((cap, 13)), np.empty((cap, 5))
    given = np.empty((g.evalid.shape[1], 2, 3))
    for p in range(start, stop):
        r = rows[p]
        mis = _pair_ends(g, r, chol[r], mus[p], zends[p], given)
        if mis < 0.0:
            out[p, :] = 0.0
            out[p, 0], out[p, 13] = -np.inf, np.inf
            continue
        _adaptive_one(g, r, given, moments, (FALLBACK_REL * loosen[p], MOMENT_TOL * loosen[p]), rules,
                      (T, res_hi, res_lo, info), out[p])
        out[p, 13] += _input_conditioning(g, r, mus[p], given, mis)


PAIRS_PER_THREAD = 16  # pairs per worker thread at least (each costs ~0.1-1 ms)


def _region_ends(geo, r, poly):
    """(E, 2, 3) the vertices of ``poly`` (z) at the ends of region r's edges, in the order of its edge slots: for each
    end the vertex closest to its three planes, NaN where none lies on them to 1e-11 (then :func:`_pair_vertex` solves
    the planes). The partition's vertices are better conditioned than a solve of a sliver's planes: on the S = 4
    slices' polytope route (``tests/test_highdim_slice_bar.py``) the planes put a thin box's mass 1.9e-12 off, these
    vertices within 1e-12."""
    E = geo.evalid.shape[1]
    out = np.full((E, 2, 3), np.nan)
    V = np.asarray(poly.vertices, dtype=np.float64)
    if not V.shape[0] or poly.H.shape[0] > geo.F:
        return out
    nh = np.linalg.norm(poly.H, axis=1)
    res = np.abs(poly.H @ V.T - poly.c[:, None]) / nh[:, None]  # (F, V) distances of the vertices to the planes
    tol = 1e-11 * (1.0 + np.linalg.norm(V, axis=1))
    slots = np.nonzero(geo.evalid[r])[0]
    ends = ((geo.khi[r, slots], geo.has_hi[r, slots]), (geo.klo[r, slots], geo.has_lo[r, slots]))
    for s, (k, has) in enumerate(ends):
        worst = np.maximum(np.maximum(res[geo.ei[r, slots]], res[geo.ej[r, slots]]), res[k])  # (n, V)
        best = np.argmin(worst, axis=1)
        ok = has & (worst[np.arange(slots.size), best] <= tol[best])
        out[np.arange(slots.size)[ok], s] = V[best[ok]]
    return out


def pair_cubature(geo, rows, mus, loosen, moments: int = 2, polytopes=None):
    """:func:`adaptive_cubature` for (region ``rows[p]`` of ``geo``, mean ``mus[p]``) pairs of the S = 3 batch path
    (``polytopes._solid_batch``: the pairs its cone kernel flags, or whose covariance may cancel): each region's
    vertices (``polytopes[r].vertices`` where given, :func:`_region_ends`, else solved in z) whitened for the pair
    (:func:`_pair_ends`), then the degree-19 / 15 rules on its tetrahedra, the worst bisected until the mass agrees
    to ``FALLBACK_REL loosen`` and the moments to ``MOMENT_TOL loosen`` of the region's spread (``loosen`` (P,)).
    Compiled and threaded over the pairs; each pair's numbers do
    not depend on the others or on the threads. The bar is the rules' difference plus the input's conditioning
    (:func:`_input_conditioning`). Unbounded regions are not resolved (``good`` False). Returns
    ``(log_mass, mean, cov, rel, good)`` in the whitened coordinates of each pair (mean at the origin)."""
    from ..threads import run_split

    rows = np.ascontiguousarray(rows, dtype=np.intp)
    mus = np.ascontiguousarray(mus, dtype=np.float64)
    P = rows.size
    out = np.zeros((P, 15))
    loosen = np.ascontiguousarray(np.broadcast_to(np.asarray(loosen, dtype=np.float64), (P,)))
    if not P:
        return out[:, 0], out[:, 1:4], out[:, 4:13].reshape(0, 3, 3), out[:, 13], out[:, 14] > 0.5
    rules = (_HI_PTS, _HI_LW, _LO_PTS, _LO_LW)
    g = geo.arrays
    chol = np.ascontiguousarray(geo.chol)
    zends = np.full((P, geo.evalid.shape[1], 2, 3), np.nan)
    if polytopes is not None:
        for r in np.unique(rows):
            zends[rows == r] = _region_ends(geo, r, polytopes[r])
    pairs = (chol, rows, mus, loosen, zends)
    run_split(lambda start, stop: _pair_rows(start, stop, g, pairs, int(moments), rules, out), P,
              min_per_thread=PAIRS_PER_THREAD, pieces_per_thread=8)
    cov = out[:, 4:13].reshape(P, 3, 3)
    return out[:, 0], out[:, 1:4], 0.5 * (cov + np.swapaxes(cov, 1, 2)), out[:, 13], out[:, 14] > 0.5
