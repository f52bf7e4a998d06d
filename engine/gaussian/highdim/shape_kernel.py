"""``cones.cone_shape`` compiled: the flags (facet > ridge > edge) of a pointed 4-polyhedron in one numba pass.

The S' = 4 cone decomposition (``cones``, NOTES §6: "the pieces are orthoschemes m -> foot on a facet -> foot on a
ridge -> ... -> vertex") needs the region's flags; ``cone_shape`` builds them with ~100 numpy calls on arrays of a
few dozen entries, ~1 ms a polytope. The S' = 5 route (``cones5``) needs one per facet of every region it integrates
(~10 per region, thousands of regions per ``evaluate``), where that was half of the time. This is the same
construction, step for step and in the same order (incidences within ``_INC (1 + |d|)``, facet dimensions by the
singular values of the incident vertices and rays, ridges as facet pairs sharing >= 3 elements with a vertex, edges as
vertex-vertex and vertex-ray pairs sharing >= 3 facets whose common face holds nothing else, one line per (edge,
ridge) with the first third facet that cuts it), so it returns the same :class:`cones.ConeArrays` (checked in
``tests/test_highdim_cones5.py``); only the sign of an edge direction ``eu`` may differ (LAPACK's choice of singular
vector), which the kernels do not see (``[s_lo, s_hi]`` flips and ``DTheta`` is even in it).
"""

from __future__ import annotations

import numba
import numpy as np

from .cones import ConeArrays, end_frames, ridge_frames

_jit = numba.njit(cache=True, nogil=True, error_model="numpy")
_INC = 1e-9  # as cones._INC


@_jit
def _incidences(N, D0, Yv0, Yr):
    """Vertex-facet (V, F) and ray-facet (R, F) incidences (``cones.cone_shape``'s tolerances)."""
    V, F, R = Yv0.shape[0], N.shape[0], Yr.shape[0]
    inc = np.zeros((V, F), dtype=np.bool_)
    rinc = np.zeros((R, F), dtype=np.bool_)
    for f in range(F):
        tol = _INC * (1.0 + abs(D0[f]))
        for v in range(V):
            s = Yv0[v, 0] * N[f, 0] + Yv0[v, 1] * N[f, 1] + Yv0[v, 2] * N[f, 2] + Yv0[v, 3] * N[f, 3]
            inc[v, f] = abs(s - D0[f]) <= tol
        for r in range(R):
            s = Yr[r, 0] * N[f, 0] + Yr[r, 1] * N[f, 1] + Yr[r, 2] * N[f, 2] + Yr[r, 3] * N[f, 3]
            rinc[r, f] = abs(s) <= _INC
    return inc, rinc


@_jit
def _rank3(rows, thr):
    """Whether ``rows`` (n, 4) has numerical rank 3 at threshold ``thr``: Gram-Schmidt with row pivoting (each step
    takes the row of largest residual norm), rank-revealing like the singular values ``cones._facet_dims`` counts
    (the same decisions wherever the smallest kept and largest dropped differ by more than ``sqrt(n)``: the gaps here
    are 1e-9 against 1e-15): the first three of :func:`_pivots` above ``thr``, the fourth not."""
    p = _pivots(rows)
    return p[0] > thr and p[1] > thr and p[2] > thr and not p[3] > thr


@_jit
def _facet_valid(Yv0, Yr, inc, rinc):
    """(F,) whether each constraint cuts out a 3-face: its vertices relative to its first one and its rays have rank 3
    at ``1e-9 max(|Yv0|, 1)`` (``cones._facet_dims``)."""
    V, F = inc.shape[0], inc.shape[1]
    scale = max(np.abs(Yv0).max() if V else 0.0, 1.0)
    out = np.zeros(F, dtype=np.bool_)
    for f in range(F):
        rows = _facet_rows(Yv0, Yr, inc, rinc, f)
        if rows.shape[0]:
            out[f] = _rank3(rows, 1e-9 * scale)
    return out


@_jit
def _facet_rows(Yv0, Yr, inc, rinc, f):
    """Constraint f's vertices relative to its first one and its rays, (V + R, 4) with zero rows for the others; (0,
    4) when no vertex lies on it."""
    V, R = inc.shape[0], rinc.shape[0]
    first = -1
    for v in range(V):
        if inc[v, f]:
            first = v
            break
    if first < 0:
        return np.zeros((0, 4))
    rows = np.zeros((V + R, 4))
    for v in range(V):
        if inc[v, f]:
            rows[v] = Yv0[v] - Yv0[first]
    for r in range(R):
        if rinc[r, f]:
            rows[V + r] = Yr[r]
    return rows


@_jit
def _ridges(N, incv, rincv, fvalid):
    """Ridges ``(ri, rj)`` in row-major order of ``i < j`` and the index table ``rid`` (F, F) (``cones._ridges_of``)."""
    F = N.shape[0]
    ri, rj = [], []
    rid = np.full((F, F), -1, dtype=np.intp)
    for i in range(F):
        for j in range(i + 1, F):
            if not (fvalid[i] and fvalid[j]):
                continue
            cv, cr = 0, 0
            for v in range(incv.shape[0]):
                if incv[v, i] and incv[v, j]:
                    cv += 1
            for r in range(rincv.shape[0]):
                if rincv[r, i] and rincv[r, j]:
                    cr += 1
            cos = N[i, 0] * N[j, 0] + N[i, 1] * N[j, 1] + N[i, 2] * N[j, 2] + N[i, 3] * N[j, 3]
            if cv >= 1 and cv + cr >= 3 and abs(cos) < 1.0 - 1e-12:
                rid[i, j] = len(ri)
                ri.append(i)
                rj.append(j)
    return np.array(ri, dtype=np.intp), np.array(rj, dtype=np.intp), rid


@_jit
def _on_face(common, rows):
    """How many rows of ``rows`` (n, F) hold every facet of ``common`` (F,)."""
    n = 0
    for v in range(rows.shape[0]):
        ok = True
        for f in range(common.size):
            if common[f] and not rows[v, f]:
                ok = False
                break
        if ok:
            n += 1
    return n


@_jit
def _edges(incv, rincv):
    """Edges ``(a, b, r)`` (E, 3) and their facet sets (E, F) bool: vertex pairs, then vertex-ray pairs, sharing >= 3
    facets whose common face holds exactly them (``cones._edges_of``)."""
    V, R, F = incv.shape[0], rincv.shape[0], incv.shape[1]
    ends, sets = [], []
    for a in range(V):
        for b in range(a + 1, V):
            common = incv[a] & incv[b]
            if np.sum(common) >= 3 and _on_face(common, incv) == 2 and _on_face(common, rincv) == 0:
                ends.append((a, b, -1))
                sets.append(common)
    for a in range(V):
        for r in range(R):
            common = incv[a] & rincv[r]
            if np.sum(common) >= 3 and _on_face(common, incv) == 1 and _on_face(common, rincv) == 1:
                ends.append((a, -1, r))
                sets.append(common)
    E = len(ends)
    out = np.empty((E, 3), dtype=np.intp)
    fs = np.zeros((E, F), dtype=np.bool_)
    for e in range(E):
        out[e, 0], out[e, 1], out[e, 2] = ends[e]
        fs[e] = sets[e]
    return out, fs


@_jit
def _dot4(x, y):
    return x[0] * y[0] + x[1] * y[1] + x[2] * y[2] + x[3] * y[3]


@_jit
def _line(N, i, j, k, c):
    """``(l1, l2, pn)`` of the third facet ``k`` against the ridge ``(i, j)`` (cosine ``c``) (``cones._lines``)."""
    ki, kj = _dot4(N[k], N[i]), _dot4(N[k], N[j])
    det = 1.0 - c * c
    l1, l2 = (ki - c * kj) / det, (kj - c * ki) / det
    s = 0.0
    for a in range(4):
        t = N[k, a] - l1 * N[i, a] - l2 * N[j, a]
        s += t * t
    return l1, l2, np.sqrt(s)


@_jit
def _lines(N, fs, rid, rc):
    """Per edge, each ridge of two of its facets once, with the first third facet whose plane cuts the edge's line
    from it (``pn > 1e-9``): ``(edge, ridge, i, j, k)`` (L, 5) and ``(l1, l2, pn)`` (L, 3) in edge order
    (``cones._lines``)."""
    E, F = fs.shape
    ints = np.empty((E * rc.size, 5), dtype=np.intp)
    flts = np.empty((E * rc.size, 3))
    n = 0
    for e in range(E):
        seen = np.zeros(rc.size, dtype=np.bool_)
        for i in range(F):
            for j in range(i + 1, F):
                g = rid[i, j]
                if not (fs[e, i] and fs[e, j]) or g < 0:
                    continue
                for k in range(F):
                    if not fs[e, k] or k == i or k == j or seen[g]:
                        continue
                    l1, l2, pn = _line(N, i, j, k, rc[g])
                    if pn > 1e-9:
                        seen[g] = True
                        ints[n, 0], ints[n, 1], ints[n, 2], ints[n, 3], ints[n, 4] = e, g, i, j, k
                        flts[n, 0], flts[n, 1], flts[n, 2] = l1, l2, pn
                        n += 1
    return ints[:n], flts[:n]


@_jit
def _det3(a, b, c, cols):
    """Determinant of the 3 x 3 matrix of columns ``cols`` of the rows ``a``, ``b``, ``c``."""
    i, j, k = cols
    return (a[i] * (b[j] * c[k] - b[k] * c[j]) - a[j] * (b[i] * c[k] - b[k] * c[i])
            + a[k] * (b[i] * c[j] - b[j] * c[i]))


@_jit
def _edge_frames(N, tri):
    """Unit direction (E, 4) of each edge's line (the generalised cross product of its three facets' normals: the
    null vector ``cones._pack`` takes from an SVD, up to its sign) and the inverse Gram matrix (E, 3, 3) of those
    normals (adjugate over determinant)."""
    E = tri.shape[0]
    eu = np.zeros((E, 4))
    eginv = np.zeros((E, 3, 3))
    for e in range(E):
        a, b, c = N[tri[e, 0]], N[tri[e, 1]], N[tri[e, 2]]
        u = np.array([-_det3(a, b, c, (1, 2, 3)), _det3(a, b, c, (0, 2, 3)), -_det3(a, b, c, (0, 1, 3)),
                      _det3(a, b, c, (0, 1, 2))])
        eu[e] = u / np.sqrt(u[0] * u[0] + u[1] * u[1] + u[2] * u[2] + u[3] * u[3])
        G = np.empty((3, 3))
        for p in range(3):
            for q in range(3):
                G[p, q] = _dot4(N[tri[e, p]], N[tri[e, q]])
        det = (G[0, 0] * (G[1, 1] * G[2, 2] - G[1, 2] * G[2, 1]) - G[0, 1] * (G[1, 0] * G[2, 2] - G[1, 2] * G[2, 0])
               + G[0, 2] * (G[1, 0] * G[2, 1] - G[1, 1] * G[2, 0]))
        for p in range(3):
            for q in range(3):
                r0, r1 = (q + 1) % 3, (q + 2) % 3
                c0, c1 = (p + 1) % 3, (p + 2) % 3
                eginv[e, p, q] = (G[r0, c0] * G[r1, c1] - G[r0, c1] * G[r1, c0]) / det
    return eu, eginv


@_jit
def _valid_incidences(Yv0, Yr, inc, rinc):
    """``(fvalid, incv, rincv)``: :func:`_facet_valid` and the incidences with the other constraints' columns
    cleared."""
    fvalid = _facet_valid(Yv0, Yr, inc, rinc)
    incv, rincv = inc.copy(), rinc.copy()
    for f in range(fvalid.size):
        if not fvalid[f]:
            incv[:, f] = False
            rincv[:, f] = False
    return fvalid, incv, rincv


@_jit
def _shape_arrays(N, D0, Yv0, Yr):
    """Every array of :class:`cones.ConeArrays` up to the rays, in its field order, and the valid incidences."""
    inc, rinc = _incidences(N, D0, Yv0, Yr)
    fvalid, incv, rincv = _valid_incidences(Yv0, Yr, inc, rinc)
    ri, rj, rid = _ridges(N, incv, rincv, fvalid)
    G = ri.size
    rc, rsn = np.empty(G), np.empty(G)
    for r in range(G):
        rc[r] = _dot4(N[ri[r]], N[rj[r]])
        s = 0.0
        for a in range(4):
            t = N[rj[r], a] - rc[r] * N[ri[r], a]
            s += t * t
        rsn[r] = np.sqrt(s)
    ends, fs = _edges(incv, rincv)
    ints, flts = _lines(N, fs, rid, rc)
    E = ends.shape[0]
    counts = np.zeros(E, dtype=np.intp)
    for m in range(ints.shape[0]):
        counts[ints[m, 0]] += 1
    has = np.nonzero(counts)[0]
    eptr = np.zeros(has.size + 1, dtype=np.intp)
    tri = np.empty((has.size, 3), dtype=np.intp)
    for q in range(has.size):
        eptr[q + 1] = eptr[q] + counts[has[q]]
        tri[q, 0], tri[q, 1], tri[q, 2] = ints[eptr[q], 2], ints[eptr[q], 3], ints[eptr[q], 4]
    eu, eginv = _edge_frames(N, tri)
    kept = ends[has]
    return (fvalid, ri, rj, rc, rsn, kept[:, 0].copy(), kept[:, 1].copy(), kept[:, 2].copy(), eu, tri, eginv, eptr,
            ints[:, 1].copy(), ints[:, 4].copy(), flts[:, 0].copy(), flts[:, 1].copy(), flts[:, 2].copy()), incv


def cone_shape_compiled(Nrm, D0, Yv0, Yr) -> ConeArrays:
    """:func:`cones.cone_shape` (the flags of ``P = {Nrm y <= D0}``, vertices ``Yv0`` (V, 4), unit rays ``Yr`` (R, 4);
    pointed), compiled."""
    Yr = np.ascontiguousarray(Yr, dtype=np.float64).reshape(-1, 4)
    Nrm = np.ascontiguousarray(Nrm, dtype=np.float64)
    out, incv = _shape_arrays(Nrm, np.ascontiguousarray(D0, dtype=np.float64),
                              np.ascontiguousarray(Yv0, dtype=np.float64).reshape(-1, 4), Yr)
    return ConeArrays(*out, Yr, *end_frames(Nrm, incv, out[5], out[6], out[8], out[9]),
                      *ridge_frames(Nrm, out[1], out[2], out[3], out[12], out[13]))


# ---------------------------------------------------------------------------------------------------
# the compiled flags where they are certain to read the region as cones.cone_shape does (SlicedGeometry's route)
# ---------------------------------------------------------------------------------------------------

_INC_BAND = 2.0  # an incidence residual within this factor of its tolerance is a close call
_RANK_BAND = 1e3  # a Gram-Schmidt pivot within this factor of the rank threshold is a close call
_COS_BAND = 1e-14  # |cos| of two facets within this of the ridge test's 1 - 1e-12 is a close call
_PN_BAND = 2.0  # a line's pn within this factor of 1e-9 is a close call


@_jit
def _pivots(rows):
    """The four pivot norms ``r_11 >= ... >= r_44`` of Gram-Schmidt with row pivoting on ``rows`` (n, 4) (each step
    takes the row of largest residual norm; zeros after a zero or NaN one). Pivoted QR brackets the singular values:
    ``r_kk / c_k <= s_k <= sqrt(n) r_kk`` with ``c_k = sqrt(4^k + 6k - 1) / 3`` (Higham, Accuracy and Stability,
    Thm. 19.1 / Faddeev et al.): ``c_3 = 3``, ``c_4 = 5.6``."""
    R = rows.copy()
    out = np.zeros(4)
    for step in range(4):
        best, arg = -1.0, -1
        for v in range(R.shape[0]):
            nv = R[v, 0] * R[v, 0] + R[v, 1] * R[v, 1] + R[v, 2] * R[v, 2] + R[v, 3] * R[v, 3]
            if nv > best:
                best, arg = nv, v
        if arg < 0 or not best > 0.0:
            return out
        out[step] = np.sqrt(best)
        q = R[arg] / out[step]
        for v in range(R.shape[0]):
            c = R[v, 0] * q[0] + R[v, 1] * q[1] + R[v, 2] * q[2] + R[v, 3] * q[3]
            for a in range(4):
                R[v, a] -= c * q[a]
    return out


@_jit
def _incidences_clear(N, D0, Yv0, Yr):
    """Whether no vertex-facet residual ``|v . n - d|`` and no ray-facet product ``|r . n|`` lies within ``_INC_BAND``
    of its tolerance (numpy's BLAS products and the loops here differ by ~1e-16 |v|, far inside the band)."""
    for f in range(N.shape[0]):
        tol = _INC * (1.0 + abs(D0[f]))
        for v in range(Yv0.shape[0]):
            s = abs(_dot4(Yv0[v], N[f]) - D0[f])
            if tol / _INC_BAND < s < tol * _INC_BAND:
                return False
        for r in range(Yr.shape[0]):
            s = abs(_dot4(Yr[r], N[f]))
            if _INC / _INC_BAND < s < _INC * _INC_BAND:
                return False
    return True


@_jit
def _ranks_clear(Yv0, Yr, inc, rinc):
    """Whether every constraint's third and fourth pivots (:func:`_pivots` of the rows :func:`_facet_valid` takes) lie
    outside ``[thr / _RANK_BAND, thr _RANK_BAND]``: then ``cones._facet_dims``' singular values make the same
    decision (``s_3 >= r_33 / 3 > thr`` above the band, ``s_k <= sqrt(n) r_kk < thr`` below it, n <= 10^6 rows)."""
    V, F = inc.shape[0], inc.shape[1]
    thr = 1e-9 * max(np.abs(Yv0).max() if V else 0.0, 1.0)
    for f in range(F):
        rows = _facet_rows(Yv0, Yr, inc, rinc, f)
        if not rows.shape[0]:
            continue
        p = _pivots(rows)
        if thr / _RANK_BAND < p[2] < thr * _RANK_BAND or thr / _RANK_BAND < p[3] < thr * _RANK_BAND:
            return False
    return True


@_jit
def _lines_clear(N, fvalid, fs, rid):
    """Whether no two valid facets have ``|cos|`` within ``_COS_BAND`` of the ridge test's ``1 - 1e-12``, and no (edge,
    ridge, third facet) of :func:`_lines` has ``pn`` within ``_PN_BAND`` of 1e-9 (every candidate, not only those up
    to the first kept)."""
    F = N.shape[0]
    for i in range(F):
        for j in range(i + 1, F):
            if fvalid[i] and fvalid[j] and abs(abs(_dot4(N[i], N[j])) - (1.0 - 1e-12)) < _COS_BAND:
                return False
    for e in range(fs.shape[0]):
        for i in range(F):
            for j in range(i + 1, F):
                if not (fs[e, i] and fs[e, j]) or rid[i, j] < 0:
                    continue
                c = _dot4(N[i], N[j])
                for k in range(F):
                    if fs[e, k] and k != i and k != j:
                        pn = _line(N, i, j, k, c)[2]
                        if 1e-9 / _PN_BAND < pn < 1e-9 * _PN_BAND:
                            return False
    return True


@_jit
def _shape_clear(N, D0, Yv0, Yr):
    """Whether every decision of the flags' construction (incidences, facet ranks, ridges, lines) is clear of its
    threshold by the bands above, so that ``cones.cone_shape`` reads the same combinatorics."""
    if not _incidences_clear(N, D0, Yv0, Yr):
        return False
    inc, rinc = _incidences(N, D0, Yv0, Yr)
    if not _ranks_clear(Yv0, Yr, inc, rinc):
        return False
    fvalid, incv, rincv = _valid_incidences(Yv0, Yr, inc, rinc)
    _, _, rid = _ridges(N, incv, rincv, fvalid)
    _, fs = _edges(incv, rincv)
    return _lines_clear(N, fvalid, fs, rid)


@_jit
def _finite(rc, rsn, eu, eginv, ll1, ll2, lpn):
    """Whether the flags' numbers are finite (``ew`` is +inf by design at a vertex of rank < 4: not checked)."""
    for x in (rc, rsn, eu, eginv, ll1, ll2, lpn):
        for v in x:
            if not np.isfinite(v):
                return False
    return True


def cone_shape_checked(Nrm, D0, Yv0, Yr) -> ConeArrays:
    """The flags of a region for ``sliced.SlicedGeometry``: :func:`cone_shape_compiled` where every decision of the
    construction is clear of its threshold (:func:`_shape_clear`: then ``cones.cone_shape`` reads the same
    combinatorics) and its numbers are finite; otherwise ``cones.cone_shape`` itself, which raises
    ``numpy.linalg.LinAlgError`` where it cannot build them (a singular Gram matrix of an edge's three normals: the
    compiled adjugate gives inf / NaN there), so a close call or a degenerate region takes exactly the numpy route."""
    from .cones import cone_shape

    N = np.ascontiguousarray(Nrm, dtype=np.float64)
    R = np.ascontiguousarray(Yr, dtype=np.float64).reshape(-1, 4)
    D = np.ascontiguousarray(D0, dtype=np.float64)
    V = np.ascontiguousarray(Yv0, dtype=np.float64).reshape(-1, 4)
    if V.shape[0] and _shape_clear(N, D, V, R):
        out, incv = _shape_arrays(N, D, V, R)
        if _finite(out[3], out[4], out[8].ravel(), out[10].ravel(), out[14], out[15], out[16]):
            return ConeArrays(*out, R, *end_frames(N, incv, out[5], out[6], out[8], out[9]),
                              *ridge_frames(N, out[1], out[2], out[3], out[12], out[13]))
    return cone_shape(Nrm, D0, Yv0, Yr)
