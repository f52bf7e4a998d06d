"""S = 2 partition as a compiled planar arrangement (paper Sec. 3.2, Lemma 3, Cor. 1; eq. 8).

A region of a layer is a convex polygon on which every unit of the next layer is affine (eq. 8), so the
unit's zero set inside it is a chord: each unit's line splits the polygons it crosses, layer by layer.

Representation: the closed plane is the upper hemisphere of the oriented projective plane, so a
polygon is a cyclic list of *corners* ``(x, y, t)`` -- a vertex when t = 1, an ideal point (a unit
direction) when t = 0 -- and of the oriented edge lines between them, ``n1 x + n2 y + n0 t <= 0`` on the
polygon. Edges on the line at infinity carry label -1. Unbounded regions are therefore exact (their rays
are ideal corners next to a finite edge); nothing is clipped to a box. The root is the whole plane with
four ideal corners; the first split makes half-planes (no finite corner); once two non-parallel lines
have cut, every polygon is pointed. (A first layer of rank <= 1 has regions with lineality: the caller
uses the double description then.)

A new corner where a line crosses an edge is the cross product of the two lines (the homogeneous
intersection), solved on its own two lines and refined once: it is accurate relative to its own size, not
to the size of the edge's ends, and lies on both lines to ~eps |z| even when they are
nearly parallel. Where the intersection of two nearly parallel lines falls off the edge (its position
along them is uncertain by ~eps / angle), the crossing is the point of the edge where the line's
interpolated value vanishes, so a split polygon's parts tile it and stay convex.

Side tests are the double description's (``partition._refine``): a corner is on a unit's line when the line's
value there is within the rounding of the line's composed coefficients (32 eps times the magnitudes eq. 8 sums,
over the row norm) plus the corner's own error bound, carried through every crossing; a corner within it lies on
the line, so lines through vertices, duplicate and parallel units split nothing twice. A unit splits a polygon
when corners lie beyond their bounds on both sides, so both parts hold a point off the line; there is no
flatness fraction. A crossing of two nearly parallel lines is uncertain along them by ~residual / angle: its
bound has an isotropic part and a part along the lines' direction, which a line of the same pencil barely sees.
Each split is one straight cut: the corners' sides are made to change sign exactly twice around the polygon, so
each part is one run of the parent's corners plus the chord.

Checked against an exact-rational enumeration on degenerate fuzz nets (tests/test_partition_planar.py,
tests/test_partition_exact.py): no region that does not exist, none twice, and the same regions as the double
description (misses only below 3.6e-15 |z|), issue 19's finding included (a strip 2.5e-12 wide between walls
composed through weights 1e4: the exact 49 regions in both unit orders; the double description had 48 in one
before its a-posteriori generator bound). Before the crossing rules, nearly parallel lines inside a strip
1e-5 wide gave 109 regions for 53; with a flatness fraction 1e-12 of a part's extent instead of the rounding
rule, slivers 1.4e-13 |z| wide were lost (fuzz case permutation-0-e298: 232 of 233).
"""

from __future__ import annotations

from collections.abc import Sequence

import numba
import numpy as np

_jit = numba.njit(cache=True, nogil=True, error_model="numpy")

_EPS = np.finfo(np.float64).eps
# Side test by rounding, as the double description's (engine.partition._plane_tol, _VERTEX_ULPS): a corner is
# on a unit's line when the line's value there is within the rounding of the line's composed coefficients
# (eq. 8 in float64: PLANE_ULPS eps times the magnitudes it sums, Mabs and mabs, over the row norm) plus the
# corner's own error bound (VERTEX_ULPS eps of its parents' magnitudes, carried through every crossing).
PLANE_ULPS = 32.0
VERTEX_ULPS = 8.0
ZERO_ROW = 1e-12  # a row this small relative to the magnitudes it sums is identically zero


@_jit
def _side_values(P, R, start, stop, line, f, s):
    """Values of ``a.z + b t`` at the corners (into f) and their sides -1 / 0 / +1 (into s).

    A corner is on the line (0) when the value is within the line's rounding bound,
    ``PLANE_ULPS eps (|x| Ahat_1 + |y| Ahat_2 + t bhat)`` (``line[3:6]``: the composed row's magnitudes over its
    norm), plus the corner's own error bound ``R``: ``R[:, 0]`` in every direction and ``R[:, 1]`` along the unit
    direction ``R[:, 2:4]`` (that of the two lines that made it), which moves the line's value by
    ``R[:, 1] |a.d|``.
    """
    a1, a2, b, h1, h2, hb = line[0], line[1], line[2], line[3], line[4], line[5]
    has_pos, has_neg = False, False
    for i in range(stop - start):
        x, y, t = P[start + i, 0], P[start + i, 1], P[start + i, 2]
        v = a1 * x + a2 * y + b * t
        f[i] = v
        r = start + i
        tol = PLANE_ULPS * _EPS * (abs(x) * h1 + abs(y) * h2 + t * hb)
        tol += R[r, 0] + R[r, 1] * abs(a1 * R[r, 2] + a2 * R[r, 3])
        if v > tol:
            s[i] = 1
            has_pos = True
        elif v < -tol:
            s[i] = -1
            has_neg = True
        else:
            s[i] = 0
    return has_pos, has_neg


@_jit
def _on_edge(P, i, j, x, y):
    """Whether the finite point (x, y) lies on the edge from corner i to corner j (a segment between two
    vertices, a ray from a vertex toward an ideal corner, or the whole line between antipodal ideal
    corners)."""
    if P[i, 2] > 0 and P[j, 2] > 0:
        dx, dy = P[j, 0] - P[i, 0], P[j, 1] - P[i, 1]
        t = (x - P[i, 0]) * dx + (y - P[i, 1]) * dy
        return 0.0 <= t <= dx * dx + dy * dy
    if P[i, 2] > 0:  # the ray from vertex i in direction j
        return (x - P[i, 0]) * P[j, 0] + (y - P[i, 1]) * P[j, 1] >= 0.0
    if P[j, 2] > 0:  # the ray from vertex j in direction i
        return (x - P[j, 0]) * P[i, 0] + (y - P[j, 1]) * P[i, 1] >= 0.0
    return True  # a half-plane's edge: the whole line


@_jit
def _crossing(P, R, E, L, i, j, fi, fj, a1, a2, b, out, oR, o):
    """The point where the line ``a.z + b t = 0`` crosses the edge from corner i to corner j (fi, fj: the
    line's values there, of opposite signs), into row o of ``out``, and its error bound into ``oR[o]``.

    It is solved on its own two lines (the edge's and the new one) when that solution lies on the edge:
    accurate relative to its own size, not to the size of the edge's ends. When the two
    lines are so close to parallel that their rounded intersection falls off the edge, it is the point of
    the edge where the interpolated value vanishes, ``fi P_j - fj P_i``: always on the edge, so the two
    parts of a split polygon tile it and stay convex (a crossing off the edge makes them overlap).

    Error bound (to the exact crossing of the two float lines). The solved point ``v`` is off the edge line
    by its residual ``r_e`` and off the new one by ``r_a`` (computed, plus their rounding), so
    ``v - v* = r_e e + s d`` with e the edge's unit normal, d its direction and ``|s| <= (|r_e| + |r_a|) / |det|``
    (``det = e x a``): ``|r_e|`` in every direction plus ``|s|`` along d. A line nearly parallel to the two
    (a pencil) sees ``|s| |n.d|``, about the residual; a transverse one sees all of ``|s|``. The interpolated
    point inherits its parents' bounds with the weights ``|fj| / gt`` and ``|fi| / gt``, as the double
    description's ``_combine``. Never below VERTEX_ULPS eps of its own size.
    """
    unit = VERTEX_ULPS * _EPS
    gx = fi * P[j, 0] - fj * P[i, 0]
    gy = fi * P[j, 1] - fj * P[i, 1]
    gt = fi * P[j, 2] - fj * P[i, 2]
    if fi < 0:
        gx, gy, gt = -gx, -gy, -gt
    mi = max(R[i, 0] + R[i, 1], unit * max(abs(P[i, 0]), abs(P[i, 1])))
    mj = max(R[j, 0] + R[j, 1], unit * max(abs(P[j, 0]), abs(P[j, 1])))
    wsum = abs(fi) * mj + abs(fj) * mi  # the interpolated point's bound times its scale
    oR[o, 1], oR[o, 2], oR[o, 3] = 0.0, 1.0, 0.0
    e1, e2, e0 = E[i, 0], E[i, 1], E[i, 2]
    # homogeneous intersection of the edge line (e1, e2, e0) and the new line (a1, a2, b)
    cx = e2 * b - e0 * a2
    cy = e0 * a1 - e1 * b
    ct = e1 * a2 - e2 * a1
    if L[i] >= 0 and ct != 0.0:
        # two finite lines meet at one point of the plane: the one of the pair +-c in the hemisphere (ct > 0).
        # (The edge may join two antipodal ideal corners, a half-plane's edge: g is then no guide.)
        x, y = cx / ct, cy / ct
        # one step of iterative refinement: the rounded cross product leaves residuals ~eps/sin(angle) on
        # two nearly parallel lines; the step brings them to ~eps |z| on both (Cramer's rule is not
        # backward stable, a refined solution is)
        re = e1 * x + e2 * y + e0
        ra = a1 * x + a2 * y + b
        x += (e2 * ra - a2 * re) / ct
        y += (a1 * re - e1 * ra) / ct
        if _on_edge(P, i, j, x, y) or not gt > 0:
            re = abs(e1 * x + e2 * y + e0) + 4.0 * _EPS * (abs(e1 * x) + abs(e2 * y) + abs(e0))
            ra = abs(a1 * x + a2 * y + b) + 4.0 * _EPS * (abs(a1 * x) + abs(a2 * y) + abs(b))
            out[o, 0], out[o, 1], out[o, 2] = x, y, 1.0
            oR[o, 0] = max(re, unit * max(abs(x), abs(y)))
            oR[o, 1], oR[o, 2], oR[o, 3] = (re + ra) / abs(ct), -e2, e1
            return
    if gt > 0:
        x, y = gx / gt, gy / gt
        out[o, 0], out[o, 1], out[o, 2] = x, y, 1.0
        oR[o, 0] = max(wsum / gt, unit * max(abs(x), abs(y)))
        return
    if cx * gx + cy * gy + ct * gt < 0:
        cx, cy = -cx, -cy
    nrm = np.sqrt(cx * cx + cy * cy)
    if not nrm > 0:
        nrm = np.sqrt(gx * gx + gy * gy)
        cx, cy = gx, gy
    out[o, 0], out[o, 1], out[o, 2] = cx / nrm, cy / nrm, 0.0
    gn = np.sqrt(gx * gx + gy * gy)
    oR[o, 0] = max(wsum / gn, unit) if gn > 0 else unit


@_jit
def _one_cut(f, s, k):
    """Make the sides ``s`` of a polygon's k corners those of one straight cut: ``+...+ [0] -...- [0]``.

    A convex polygon meets a line in at most two boundary points, so its sides change twice around it. Near
    a line almost parallel to an edge, values within rounding can alternate; then the first corner that is
    not clearly positive, walking from the most positive corner toward the most negative one, ends the
    positive side (and symmetrically): each part is one run of the parent's corners plus the chord, so the
    two parts tile the parent whatever the rounding. Corners moved to the other side are within rounding
    of the line. Crossings stay on edges whose ends have clearly opposite signs.
    """
    ip, im = -1, -1
    for i in range(k):
        if s[i] > 0 and (ip < 0 or f[i] > f[ip]):
            ip = i
        if s[i] < 0 and (im < 0 or f[i] < f[im]):
            im = i
    c = ip
    while s[c] > 0:
        c = (c + 1) % k
    if s[c] == 0:
        c = (c + 1) % k
    while c != im:
        s[c] = -1
        c = (c + 1) % k
    while s[c] < 0:
        c = (c + 1) % k
    if s[c] == 0:
        c = (c + 1) % k
    while c != ip:
        s[c] = 1
        c = (c + 1) % k


@_jit
def _copy_corner(P, R, E, L, i, oP, oR, oE, oL, o):
    """Row i of (P, R, E, L) to row o of (oP, oR, oE, oL), element by element (cheap to compile)."""
    oP[o, 0], oP[o, 1], oP[o, 2] = P[i, 0], P[i, 1], P[i, 2]
    oR[o, 0], oR[o, 1], oR[o, 2], oR[o, 3] = R[i, 0], R[i, 1], R[i, 2], R[i, 3]
    oE[o, 0], oE[o, 1], oE[o, 2] = E[i, 0], E[i, 1], E[i, 2]
    oL[o] = L[i]


@_jit
def _clip(P, R, E, L, start, k, f, s, keep, a1, a2, b, unit, oP, oR, oE, oL, o):
    """Append the part ``keep * (a.z + b) >= 0`` of one convex polygon to the output from row o.

    Corners on the kept side stay with their outgoing edge; where an edge crosses the line its crossing
    point is inserted; the new edge along the line is oriented so that the kept part is on its ``<= 0``
    side.
    """
    n1, n2, n0 = -keep * a1, -keep * a2, -keep * b
    for ii in range(k):
        i = start + ii
        jj = (ii + 1) % k
        j = start + jj
        si, sj = s[ii] * keep, s[jj] * keep
        if si >= 0:
            _copy_corner(P, R, E, L, i, oP, oR, oE, oL, o)
            if not (sj >= 0 or si > 0):  # on the line, and the polygon leaves the kept side: the new edge starts here
                oE[o, 0], oE[o, 1], oE[o, 2] = n1, n2, n0
                oL[o] = unit
            o += 1
            if si > 0 and sj < 0:
                _crossing(P, R, E, L, i, j, f[ii], f[jj], a1, a2, b, oP, oR, o)
                oE[o, 0], oE[o, 1], oE[o, 2] = n1, n2, n0
                oL[o] = unit
                o += 1
        elif sj > 0:
            _crossing(P, R, E, L, i, j, f[ii], f[jj], a1, a2, b, oP, oR, o)
            oE[o, 0], oE[o, 1], oE[o, 2] = E[i, 0], E[i, 1], E[i, 2]
            oL[o] = L[i]
            o += 1
    return o


@_jit
def _grow1(A, need):
    """A 1-D buffer with room for ``need`` entries (doubling)."""
    if need <= A.shape[0]:
        return A
    out = np.empty(max(need, 2 * A.shape[0]), A.dtype)
    for i in range(A.shape[0]):
        out[i] = A[i]
    return out


@_jit
def _grow2(A, need):
    """A 2-D buffer with room for ``need`` rows (doubling)."""
    if need <= A.shape[0]:
        return A
    out = np.empty((max(need, 2 * A.shape[0]), A.shape[1]), A.dtype)
    for i in range(A.shape[0]):
        for j in range(A.shape[1]):
            out[i, j] = A[i, j]
    return out


@_jit
def split_layer(ptr, P, R, E, L, face, lines, fixed, fixed_sign, unit_base, limit, order):
    """Split every polygon by the lines of one layer's units, unit after unit.

    ``face[p]`` indexes the region of the previous layer that polygon p belongs to; ``lines[face, j]`` is
    unit j's unit-norm line ``(a1, a2, b)`` there followed by its rounding scales ``(Ahat_1, Ahat_2, bhat)``,
    and ``fixed[face, j]`` marks units that are identically constant on it, with sign ``fixed_sign``; units
    are applied in ``order``. A unit splits a polygon when corners lie beyond their bounds on both sides of its
    line (``_side_values``): both parts then hold a point off the line, as in the double description; otherwise
    its sign is constant there. Polygons live in a pool: a split appends its two parts and retires the
    parent, so polygons that a line misses are never copied. Returns the new polygons (ptr, P, R, E, L),
    their previous-layer region and this layer's sign pattern.
    """
    n = lines.shape[1]
    npoly = ptr.shape[0] - 1
    start = ptr[:-1].copy()
    size = ptr[1:] - ptr[:-1]
    owner = face.copy()
    signs = np.zeros((max(npoly, 1), n), np.bool_)
    live = np.arange(npoly)
    nlive = npoly
    npool = npoly
    used = P.shape[0]
    pool_P, pool_R, pool_E, pool_L = P.copy(), R.copy(), E.copy(), L.copy()
    kmax = size.max() + 2 * n + 8
    f = np.empty(kmax)
    sd = np.empty(kmax, np.int64)
    for jj in range(n):
        j = order[jj]
        for idx in range(nlive):
            p = live[idx]
            fc = owner[p]
            if fixed[fc, j]:
                signs[p, j] = fixed_sign[fc, j]
                continue
            line = lines[fc, j]
            st, k = start[p], size[p]
            has_pos, has_neg = _side_values(pool_P, pool_R, st, st + k, line, f, sd)
            if has_pos and has_neg:
                a1, a2, b = line[0], line[1], line[2]
                _one_cut(f, sd, k)
                pool_P = _grow2(pool_P, used + 2 * k + 8)
                pool_R = _grow2(pool_R, used + 2 * k + 8)
                pool_E = _grow2(pool_E, used + 2 * k + 8)
                pool_L = _grow1(pool_L, used + 2 * k + 8)
                o = _clip(pool_P, pool_R, pool_E, pool_L, st, k, f, sd, -1, a1, a2, b, unit_base + j,
                          pool_P, pool_R, pool_E, pool_L, used)
                o2 = _clip(pool_P, pool_R, pool_E, pool_L, st, k, f, sd, 1, a1, a2, b, unit_base + j,
                           pool_P, pool_R, pool_E, pool_L, o)
                q = npool
                npool += 1
                start = _grow1(start, q + 1)
                size = _grow1(size, q + 1)
                owner = _grow1(owner, q + 1)
                signs = _grow2(signs, q + 1)
                start[p], size[p] = used, o - used
                signs[p, j] = False
                start[q], size[q], owner[q] = o, o2 - o, fc
                for u in range(n):
                    signs[q, u] = signs[p, u]
                signs[q, j] = True
                used = o2
                live = _grow1(live, nlive + 1)
                live[nlive] = q
                nlive += 1
                continue
            signs[p, j] = not (has_neg and not has_pos)
        if nlive > limit:
            break
    live = live[:nlive]
    live.sort()
    total = 0
    for p in live:
        total += size[p]
    nptr = np.zeros(nlive + 1, np.int64)
    nP = np.empty((total, 3))
    nR = np.empty((total, 4))
    nE = np.empty((total, 3))
    nL = np.empty(total, np.int64)
    nface = np.empty(nlive, np.int64)
    nsigns = np.empty((nlive, n), np.bool_)
    o = 0
    for q in range(nlive):
        p = live[q]
        for i in range(start[p], start[p] + size[p]):
            _copy_corner(pool_P, pool_R, pool_E, pool_L, i, nP, nR, nE, nL, o)
            o += 1
        nptr[q + 1] = o
        nface[q] = owner[p]
        for u in range(n):
            nsigns[q, u] = signs[p, u]
    return nptr, nP, nR, nE, nL, nface, nsigns


def root():
    """The whole plane: four ideal corners joined along the line at infinity."""
    P = np.array([[1.0, 0, 0], [0, 1.0, 0], [-1.0, 0, 0], [0, -1.0, 0]])
    E = np.zeros((4, 3))
    E[:, 2] = -1.0  # -t <= 0: the line at infinity
    return np.array([0, 4]), P, np.zeros((4, 4)), E, np.full(4, -1, dtype=np.int64)


@_jit
def _regions(ptr, P, E, L):
    """Per region: its vertices, extreme rays (ideal corners next to a finite edge), facets (finite
    edges: ``H z <= c``) and the incidence of vertices + rays on facets, as flat arrays with offsets."""
    R = ptr.shape[0] - 1
    v_ptr = np.zeros(R + 1, np.int64)
    r_ptr = np.zeros(R + 1, np.int64)
    f_ptr = np.zeros(R + 1, np.int64)
    i_ptr = np.zeros(R + 1, np.int64)
    for r in range(R):
        lo, hi = ptr[r], ptr[r + 1]
        k = hi - lo
        nv, nr, nf = 0, 0, 0
        for ii in range(k):
            i = lo + ii
            prev = lo + (ii - 1) % k
            if L[i] >= 0:
                nf += 1
            if P[i, 2] > 0:
                nv += 1
            elif L[i] >= 0 or L[prev] >= 0:
                nr += 1
        v_ptr[r + 1] = v_ptr[r] + nv
        r_ptr[r + 1] = r_ptr[r] + nr
        f_ptr[r + 1] = f_ptr[r] + nf
        i_ptr[r + 1] = i_ptr[r] + (nv + nr) * nf
    V = np.empty((v_ptr[R], 2))
    Ry = np.empty((r_ptr[R], 2))
    H = np.empty((f_ptr[R], 2))
    c = np.empty(f_ptr[R])
    inc = np.zeros(i_ptr[R], np.bool_)
    for r in range(R):
        lo, hi = ptr[r], ptr[r + 1]
        k = hi - lo
        nv, nr = v_ptr[r + 1] - v_ptr[r], r_ptr[r + 1] - r_ptr[r]
        nf = f_ptr[r + 1] - f_ptr[r]
        facet_of_edge = np.full(k, -1, np.int64)
        q = 0
        for ii in range(k):
            if L[lo + ii] >= 0:
                facet_of_edge[ii] = q
                H[f_ptr[r] + q, 0] = E[lo + ii, 0]
                H[f_ptr[r] + q, 1] = E[lo + ii, 1]
                c[f_ptr[r] + q] = -E[lo + ii, 2]
                q += 1
        a, b = 0, 0
        for ii in range(k):
            i = lo + ii
            prev = (ii - 1) % k
            if P[i, 2] > 0:
                row = a
                V[v_ptr[r] + a, 0], V[v_ptr[r] + a, 1] = P[i, 0], P[i, 1]
                a += 1
            elif L[i] >= 0 or L[lo + prev] >= 0:
                row = nv + b
                Ry[r_ptr[r] + b, 0], Ry[r_ptr[r] + b, 1] = P[i, 0], P[i, 1]
                b += 1
            else:
                continue
            base = i_ptr[r] + row * nf
            if facet_of_edge[ii] >= 0:
                inc[base + facet_of_edge[ii]] = True
            if facet_of_edge[prev] >= 0:
                inc[base + facet_of_edge[prev]] = True
    return v_ptr, V, r_ptr, Ry, f_ptr, H, c, i_ptr, inc


class Planar:
    """The regions of an S = 2 network as polygons, with their sign patterns and affine maps (eq. 2, 8)."""

    def __init__(self, ptr, P, R, E, L, signs, A, b, layer_maps):
        self.ptr, self.P, self.R, self.E, self.L = ptr, P, R, E, L  # R: each corner's error bound
        self.signs, self.A, self.b = signs, A, b
        self.layer_maps = layer_maps  # per activation layer: (M (F_l, n_l, 2), m (F_l, n_l), face of each region)

    def __len__(self):
        return len(self.ptr) - 1

    def polygon_arrays(self):
        """All regions' vertices, rays, facets ``H z <= c`` and incidence flags as flat arrays, with per-region
        offsets: ``(v_ptr, V, r_ptr, Ry, f_ptr, H, c, i_ptr, inc)``, region r's vertices ``V[v_ptr[r]:v_ptr[r+1]]``."""
        return _regions(self.ptr, self.P, self.E, self.L)

    def polygons(self):
        """Per region, in region order: lists of H, c, vertices and rays (views into flat arrays), and the
        incidence of vertices + rays on facets as a sequence whose items are made when read."""
        v_ptr, V, r_ptr, Ry, f_ptr, H, c, i_ptr, inc = self.polygon_arrays()
        v_ptr, r_ptr, f_ptr, i_ptr = v_ptr.tolist(), r_ptr.tolist(), f_ptr.tolist(), i_ptr.tolist()
        fs = list(zip(f_ptr, f_ptr[1:]))
        Hs = [H[a:b] for a, b in fs]
        cs = [c[a:b] for a, b in fs]
        Vs = [V[a:b] for a, b in zip(v_ptr, v_ptr[1:])]
        Rs = [Ry[a:b] for a, b in zip(r_ptr, r_ptr[1:])]
        return Hs, cs, Vs, Rs, Incidence(inc, i_ptr, v_ptr, r_ptr, f_ptr)


class Incidence(Sequence):
    """Per region, the (vertices + rays, facets) tight flags, cut from one flat array when read (the
    partition reads them only to find neighbours)."""

    def __init__(self, inc, i_ptr, v_ptr, r_ptr, f_ptr):
        self._inc, self._i, self._v, self._r, self._f = inc, i_ptr, v_ptr, r_ptr, f_ptr

    def __len__(self):
        return len(self._i) - 1

    def __getitem__(self, r):
        if not -len(self) <= r < len(self):
            raise IndexError(r)
        r %= len(self)
        rows = self._v[r + 1] - self._v[r] + self._r[r + 1] - self._r[r]
        return self._inc[self._i[r]:self._i[r + 1]].reshape(rows, self._f[r + 1] - self._f[r])


def _first_order(M, fixed, norms):
    """The first layer's units with two non-parallel ones first: the two lines cut the plane into four
    pointed quadrants, so every later polygon has a vertex and a parallel line's offset is seen (a
    half-plane has only ideal corners, which see directions, not offsets). None if no two such units."""
    live = np.nonzero(~fixed)[0]
    if live.size < 2:
        return None
    a = M[live] / norms[live, None]
    cross = np.abs(a[0, 0] * a[:, 1] - a[0, 1] * a[:, 0])
    second = int(np.argmax(cross))
    if not cross[second] > 1e-12:
        return None
    first, second = live[0], live[second]
    rest = [j for j in range(len(M)) if j not in (first, second)]
    return np.array([first, second] + rest, dtype=np.int64)


@_jit
def _next_affine(W, v, Wabs, Mp, mp, Map, map_, parent, slopes, mags=True):
    """Pre-activations of the next layer on every face, eq. (8): ``W D_f (M_p z + m_p) + v`` with
    ``D_f = diag(slopes[f])`` and p the face's parent; also (``mags``) the magnitudes the rows sum,
    ``Ma = |W| |D_f| Ma_p`` and ``ma = |W| |D_f| ma_p + |v|`` (the double description's ``Mabs``, ``mabs``): the
    scale of the rows' rounding (the output layer's maps need none)."""
    F = parent.shape[0]
    out, k = W.shape
    M = np.empty((F, out, 2))
    m = np.empty((F, out))
    Ma = np.zeros((F if mags else 0, out, 2))
    ma = np.zeros((F if mags else 0, out))
    live = np.empty(k, np.int64)  # the units with a nonzero slope on the face (a ReLU's off units add nothing)
    for f in range(F):
        p = parent[f]
        nl = 0
        for j in range(k):
            if slopes[f, j] != 0.0:
                live[nl] = j
                nl += 1
        for i in range(out):
            s0, s1, s2 = 0.0, 0.0, 0.0
            for jj in range(nl):
                j = live[jj]
                w = W[i, j] * slopes[f, j]
                s0 += w * Mp[p, j, 0]
                s1 += w * Mp[p, j, 1]
                s2 += w * mp[p, j]
            M[f, i, 0], M[f, i, 1], m[f, i] = s0, s1, s2 + v[i]
            if mags:
                t0, t1, t2 = 0.0, 0.0, 0.0
                for jj in range(nl):
                    j = live[jj]
                    wa = Wabs[i, j] * abs(slopes[f, j])
                    t0 += wa * Map[p, j, 0]
                    t1 += wa * Map[p, j, 1]
                    t2 += wa * map_[p, j]
                Ma[f, i, 0], Ma[f, i, 1], ma[f, i] = t0, t1, t2 + abs(v[i])
    return M, m, Ma, ma


@_jit
def _lines(M, m, Ma, ma):
    """Unit-norm lines ``(a1, a2, b)`` of the rows with their rounding scales ``(Ahat_1, Ahat_2, bhat)``
    (magnitudes over the row norm, as ``partition._refine``), and the rows that are identically constant:
    zero rows (norm <= ZERO_ROW of their magnitudes) and lines beyond the largest float."""
    F, n = m.shape
    lines = np.zeros((F, n, 6))
    fixed = np.zeros((F, n), np.bool_)
    norms = np.empty((F, n))
    for f in range(F):
        for j in range(n):
            nrm = np.hypot(M[f, j, 0], M[f, j, 1])
            norms[f, j] = nrm
            if nrm <= ZERO_ROW * np.hypot(Ma[f, j, 0], Ma[f, j, 1]):
                fixed[f, j] = True
                continue
            off = m[f, j] / nrm
            if not np.isfinite(off):  # a line beyond the largest float meets no corner: constant sign
                fixed[f, j] = True
                continue
            ln = lines[f, j]
            ln[0], ln[1], ln[2] = M[f, j, 0] / nrm, M[f, j, 1] / nrm, off
            ln[3] = max(Ma[f, j, 0], abs(M[f, j, 0])) / nrm
            ln[4] = max(Ma[f, j, 1], abs(M[f, j, 1])) / nrm
            ln[5] = max(ma[f, j], abs(m[f, j])) / nrm
    return lines, fixed, norms


def planar_partition(net, max_regions):
    """Enumerate the regions of an S = 2 network; None when its first layer has rank below 2 (regions with
    lineality: the caller's double description handles them); raises ``RegionBudgetError`` past the budget."""
    from .errors import RegionBudgetError
    from .network import Activation, Linear

    # the last activation's output, pending the next linear layer: parent face maps, magnitudes and slopes
    Mp, mp, Map, map_ = np.eye(2)[None], np.zeros((1, 2)), np.eye(2)[None], np.zeros((1, 2))
    parent, slopes = np.zeros(1, dtype=np.int64), np.ones((1, 2))
    M = m = Ma = ma = None
    ptr, P, R, E, L = root()
    signs = np.zeros((1, 0), dtype=bool)
    anc: list[np.ndarray] = []  # per activation layer: index of each region's face in that layer
    pre_maps: list[tuple[np.ndarray, np.ndarray]] = []
    unit_base = 0
    for li, layer in enumerate(net.layers):
        if isinstance(layer, Linear):
            if M is not None:  # two linear layers in a row: apply the pending one first
                Mp, mp, Map, map_ = M, m, Ma, ma
                parent, slopes = np.arange(len(M)), np.ones(m.shape)
            later = any(isinstance(x, Activation) for x in net.layers[li + 1:])  # else: the output maps
            M, m, Ma, ma = _next_affine(layer.weight, layer.bias, np.abs(layer.weight), Mp, mp, Map, map_,
                                        parent, slopes, later)
            continue
        assert isinstance(layer, Activation)
        if M is None:
            k = Mp.shape[1]
            M, m, Ma, ma = _next_affine(np.eye(k), np.zeros(k), np.eye(k), Mp, mp, Map, map_, parent, slopes)
        lines, fixed, norms = _lines(M, m, Ma, ma)
        order = np.arange(M.shape[1])
        if not anc:
            order = _first_order(M[0], fixed[0], norms[0])
            if order is None:
                return None
        ptr, P, R, E, L, parent, new_signs = split_layer(ptr, P, R, E, L, np.arange(len(M)), lines, fixed, m > 0,
                                                         unit_base, max_regions, order)
        if len(parent) > max_regions:
            raise RegionBudgetError(
                "max_regions", f"the partition has more than {max_regions} regions by layer {li} "
                f"(widths {net.widths})", "raise max_regions or use a narrower/shallower network")
        anc = [a[parent] for a in anc] + [parent]
        pre_maps.append((M, m))
        signs = np.concatenate([signs[parent], new_signs], axis=1)
        Mp, mp, Map, map_, slopes = M, m, Ma, ma, layer.slopes(new_signs)
        M = None
        unit_base += new_signs.shape[1]
    if not anc:
        return None  # no activation: one region, the whole plane (a line space: the double description's case)
    if M is None:  # the network ends with an activation
        k = Mp.shape[1]
        M, m, Ma, ma = _next_affine(np.eye(k), np.zeros(k), np.eye(k), Mp, mp, Map, map_, parent, slopes, False)
    layer_maps = [(Mq, mq, a) for (Mq, mq), a in zip(pre_maps, anc)]  # face maps of each layer, region's face
    return Planar(ptr, P, R, E, L, signs, M, m, layer_maps)
