"""The double description of :mod:`engine.partition`, compiled (numba): the regions of eq. 8's sign patterns.

The same algorithm as the Python reference in ``engine/partition.py`` (``_refine``, ``_split``,
``_adjacent_pairs``, ``_combine``, ``_polish``, ``_prune``), step for step and in the same order, so that it
returns the same regions (Lemma 3, Corollary 1) in the same order: the same sign patterns, the same incidence,
and vertices equal to rounding (a few ulps: numba's loops sum in another order than numpy's BLAS calls, and
its LAPACK may orient a singular basis differently). It runs on one thread with no parallel reduction, so its
result is the same bit for bit from run to run.

The whole network runs in one call: every Linear layer composes eq. 8's ``(M, m)`` and their magnitudes
``(Mabs, mabs)`` for every cell, every Activation layer subdivides every cell by its units' planes. Cells live
in typed lists inside the kernel; the result comes back as a few stacked arrays with offsets
(:class:`DDArrays`), which :func:`partition_compiled` turns into a :class:`~engine.partition.Partition`.

The one rounding rule, ``_plane_tol`` (and ``_line_tol`` for lineality directions), mirrors
``engine.partition._plane_tol``: a generator g is on a unit's plane ``a.z + beta = 0`` (unit normal) when
``|a.g + beta t| <= PLANE_ULPS eps (|g|.Ahat + t bhat) + err(g)``, where the carried ``err(g)`` alone decides
replaced by ``min(err(g), _residual_err)``, the a-posteriori bound from g's residuals on its tight constraints
(``engine.partition._residual_err``, computed only for such ambiguous pairs). Its constants come from
``engine.partition`` at every call (an argument, not a compiled-in global, so the on-disk cache cannot keep a
stale value).
"""

from __future__ import annotations

import importlib
from typing import NamedTuple

import numba
import numpy as np
from numba.typed import List

_jit = numba.njit(cache=True, nogil=True, error_model="numpy")
_EPS = float(np.finfo(np.float64).eps)

# consts: [PLANE_ULPS, VERTEX_ULPS, ZERO_ROW]
_PLANE, _VERTEX, _ZERO = 0, 1, 2
_LINEAR, _ACTIVATION = 0, 1


class DDArrays(NamedTuple):
    """The kernel's regions, stacked. Region r's generators are rows ``gen_off[r]:gen_off[r+1]`` of ``G``
    (homogeneous, vertices first, then rays), ``nv[r]`` of them vertices; its facets rows ``fac_off[r]:...``
    of ``H``, ``c``; its lineality rows ``lin_off[r]:...`` of ``L``; its incidence (generators x facets,
    row-major) ``inc[inc_off[r]:inc_off[r+1]]``. ``A``, ``b``: eq. 2's maps (R, D, S), (R, D); ``signs``
    (R, n_units); ``hM``, ``hm``: the pre-activation maps of eq. 8, all activation layers concatenated."""

    G: np.ndarray
    gen_off: np.ndarray
    nv: np.ndarray
    H: np.ndarray
    c: np.ndarray
    fac_off: np.ndarray
    L: np.ndarray
    lin_off: np.ndarray
    inc: np.ndarray
    inc_off: np.ndarray
    A: np.ndarray
    b: np.ndarray
    signs: np.ndarray
    hM: np.ndarray
    hm: np.ndarray
    err: np.ndarray  # (total generators,) each generator's rounding bound (as G), for tests


# ---------------------------------------------------------------------------------------------------------
# rounding: the one tolerance rule (mirror of engine.partition._plane_tol)


@_jit
def _plane_tol(G, i, ahat, bhat, plane_ulps):
    """Rounding bound of a unit-normal plane's value ``a.g + beta t`` at the exact generator ``G[i]``:
    ``plane_ulps eps (|g|.Ahat + t bhat)`` (eq. 8 composed in float64; see ``engine.partition._plane_tol``)."""
    S = G.shape[1] - 1
    s = 0.0
    for t in range(S):
        s += abs(G[i, t]) * ahat[t]
    return plane_ulps * _EPS * (s + G[i, S] * bhat)


@_jit
def _residual_err(G, i, H, c, inc, a, vertex_ulps):
    """A posteriori bound on ``|a.(g - g*)|`` for generator ``G[i]`` and unit normal ``a``, ``g*`` the exact
    generator of the stored constraints ``g`` is tight on (``engine.partition._residual_err``): with ``H_T``
    those rows and ``r = |H_T g - c_T t| + vertex_ulps eps (|H_T| |g| + |c_T| t)`` its residuals and their
    rounding, ``2 |y|.r + vertex_ulps eps max|g|``, ``y = (H_T^T)^+ a`` (least squares, numpy's default
    rcond). Infinite where the tight rows do not determine ``g`` (rank below S for a vertex, S - 1 for a
    ray); the caller skips cells with lines, where the reference's bound is infinite too."""
    S = G.shape[1] - 1
    t = G[i, S]
    need = S - 1 if t == 0 else S
    nT = 0
    for f in range(H.shape[0]):
        nT += inc[i, f + 1]
    if nT < need:
        return np.inf
    HT, cT = np.empty((nT, S)), np.empty(nT)
    k = 0
    for f in range(H.shape[0]):
        if inc[i, f + 1]:
            HT[k], cT[k] = H[f], c[f]
            k += 1
    if np.linalg.matrix_rank(HT) < need:
        return np.inf
    unit = vertex_ulps * _EPS
    r = np.empty(nT)
    for k in range(nT):
        s, sa = 0.0, 0.0
        for q in range(S):
            s += HT[k, q] * G[i, q]
            sa += abs(HT[k, q]) * abs(G[i, q])
        r[k] = abs(s - cT[k] * t) + unit * (sa + abs(cT[k]) * t)
    y = np.linalg.lstsq(np.ascontiguousarray(HT.T), a, _EPS * max(nT, S))[0]
    yr = 0.0
    for k in range(nT):
        yr += abs(y[k]) * r[k]
    return 2.0 * yr + unit * _maxabs(G, i, S)


@_jit
def _line_tol(L, r, ahat, plane_ulps, vertex_ulps):
    """Rounding bound of a plane's slope ``a.l`` along the unit lineality direction ``L[r]``."""
    s = 0.0
    for t in range(L.shape[1]):
        s += abs(L[r, t]) * ahat[t]
    return plane_ulps * _EPS * s + vertex_ulps * _EPS


# ---------------------------------------------------------------------------------------------------------
# small helpers


@_jit
def _popcount(x):
    x = x - ((x >> np.uint64(1)) & np.uint64(0x5555555555555555))
    x = (x & np.uint64(0x3333333333333333)) + ((x >> np.uint64(2)) & np.uint64(0x3333333333333333))
    x = (x + (x >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    return (x * np.uint64(0x0101010101010101)) >> np.uint64(56)


@_jit
def _pack_rows(B):
    """Rows of a bool matrix as bitsets (n, words) of uint64."""
    n, k = B.shape
    nw = (k + 63) // 64
    out = np.zeros((max(n, 1), max(nw, 1)), dtype=np.uint64)
    for i in range(n):
        for j in range(k):
            if B[i, j]:
                out[i, j // 64] |= np.uint64(1) << np.uint64(j % 64)
    return out


@_jit
def _append_row(X, row):
    out = np.empty((X.shape[0] + 1, X.shape[1]))
    out[:-1] = X
    out[-1] = row
    return out


@_jit
def _append(x, v):
    out = np.empty(x.shape[0] + 1)
    out[:-1] = x
    out[-1] = v
    return out


@_jit
def _maxabs(G, i, S):
    s = 0.0
    for t in range(S):
        s = max(s, abs(G[i, t]))
    return s


# ---------------------------------------------------------------------------------------------------------
# one split (engine.partition._split and what it calls)


@_jit
def _adjacent_pairs(inc, above, below, d):
    """Pairs (i above, j below) of adjacent generators, i-major (Fukuda-Prodon combinatorial test)."""
    ng = inc.shape[0]
    bits = _pack_rows(inc)
    nw = bits.shape[1]
    npos, nneg = 0, 0
    for i in range(ng):
        npos += above[i]
        nneg += below[i]
    pi, nj = np.empty(npos * nneg, dtype=np.int64), np.empty(npos * nneg, dtype=np.int64)
    k = 0
    cm = np.empty(nw, dtype=np.uint64)
    for i in range(ng):
        if not above[i]:
            continue
        for j in range(ng):
            if not below[j]:
                continue
            count = 0
            for w in range(nw):
                cm[w] = bits[i, w] & bits[j, w]
                count += int(_popcount(cm[w]))
            if count < d - 2:
                continue
            adjacent = True
            for g in range(ng):
                if g == i or g == j:
                    continue
                inside = True
                for w in range(nw):
                    if cm[w] & ~bits[g, w]:
                        inside = False
                        break
                if inside:
                    adjacent = False
                    break
            if adjacent:
                pi[k], nj[k] = i, j
                k += 1
    return pi[:k], nj[:k]


@_jit
def _combine(G, err, f, p, n, vertex_ulps, g, k):
    """New generator ``f_p G_n - f_n G_p`` into ``g[k]``, returns its rounding bound (``_combine``)."""
    S = G.shape[1] - 1
    wp, wn = f[p], -f[n]
    for t in range(S + 1):
        g[k, t] = wp * G[n, t] + wn * G[p, t]
    scale = g[k, S]
    ray = scale <= 0
    if ray:
        s = 0.0
        for t in range(S):
            s += g[k, t] * g[k, t]
        scale = np.sqrt(s)
        g[k, S] = 0.0
    scale = max(scale, 1e-300)
    unit = vertex_ulps * _EPS
    mp = max(err[n], unit * _maxabs(G, n, S))
    mn = max(err[p], unit * _maxabs(G, p, S))
    for t in range(S):
        g[k, t] /= scale
    if not ray:
        g[k, S] = 1.0
    return max((wp * mp + wn * mn) / scale, unit * _maxabs(g, k, S))


@_jit
def _tight_residual(v, H, c, tight):
    r = 0.0
    for f in range(H.shape[0]):
        if tight[f]:
            s = 0.0
            for t in range(H.shape[1]):
                s += v[t] * H[f, t]
            r = max(r, abs(s - c[f]))
    return r


@_jit
def _polish(v, e, H, c, tight, L, vertex_ulps):
    """One vertex onto its tight planes by Gauss-Newton (``engine.partition._polish``); returns its bound."""
    S = H.shape[1]
    N = np.zeros((S, S))
    nt = 0
    for f in range(H.shape[0]):
        if tight[f]:
            nt += 1
            for s in range(S):
                for t in range(S):
                    N[s, t] += H[f, s] * H[f, t]
    for r in range(L.shape[0]):
        for s in range(S):
            for t in range(S):
                N[s, t] += L[r, s] * L[r, t]
    pinv = np.linalg.pinv(N, rcond=1e-10)
    v0 = v.copy()
    w = np.empty(S)
    for _ in range(2):
        r_old = _tight_residual(v, H, c, tight)
        u = np.zeros(S)
        for f in range(H.shape[0]):
            if tight[f]:
                s = 0.0
                for t in range(S):
                    s += v[t] * H[f, t]
                rf = s - c[f]
                for t in range(S):
                    u[t] += rf * H[f, t]
        for s in range(S):
            step = 0.0
            for t in range(S):
                step += pinv[s, t] * u[t]
            w[s] = v[s] - step
        if _tight_residual(w, H, c, tight) < r_old:
            v[:] = w
    r = _tight_residual(v, H, c, tight)
    cmax, vn, moved = 0.0, 0.0, 0.0
    for f in range(H.shape[0]):
        if tight[f]:
            cmax = max(cmax, abs(c[f]))
    for t in range(S):
        vn += v[t] * v[t]
        moved += (v[t] - v0[t]) ** 2
    rows = vertex_ulps * _EPS * (np.sqrt(vn) + cmax)
    gain = np.sqrt(np.linalg.norm(pinv, 2) * nt)
    return min(e + np.sqrt(moved), gain * (r + rows))


@_jit
def _child(G, inc, err, keep, on_plane, g_new, inc_new, err_new, L, H, c, a, beta):
    """One side of a split: kept generators (their incidence on the new facet) plus the new ones."""
    ng, F1 = inc.shape
    nk = 0
    for i in range(ng):
        nk += keep[i]
    k = g_new.shape[0]
    Gc = np.empty((nk + k, G.shape[1]))
    incc = np.empty((nk + k, F1 + 1), dtype=np.bool_)
    errc = np.empty(nk + k)
    r = 0
    for i in range(ng):
        if keep[i]:
            Gc[r] = G[i]
            incc[r, :F1] = inc[i]
            incc[r, F1] = on_plane[i]
            errc[r] = err[i]
            r += 1
    Gc[nk:] = g_new
    incc[nk:] = inc_new
    errc[nk:] = err_new
    return (Gc, L, _append_row(H, a), _append(c, -beta), incc, errc)


@_jit
def _split_edges(geo, a, beta, f, tol, vertex_ulps):
    """Split a pointed-part cell by ``a.z + beta = 0``: new generators on the crossing edges."""
    G, L, H, c, inc, err = geo
    ng, S1 = G.shape
    S = S1 - 1
    above, below = f > tol, f < -tol
    pi, nj = _adjacent_pairs(inc, above, below, S - L.shape[0] + 1)
    k = pi.shape[0]
    F1 = inc.shape[1]
    g_new = np.empty((k, S1))
    err_new = np.empty(k)
    inc_new = np.ones((k, F1 + 1), dtype=np.bool_)
    for q in range(k):
        err_new[q] = _combine(G, err, f, pi[q], nj[q], vertex_ulps, g_new, q)
        for j in range(F1):
            inc_new[q, j] = inc[pi[q], j] & inc[nj[q], j]
    Ht, ct = _append_row(H, a), _append(c, -beta)
    for q in range(k):
        if g_new[q, S] <= 0:
            continue
        sp = _maxabs(G, pi[q], S) if G[pi[q], S] > 0 else 0.0
        sn = _maxabs(G, nj[q], S) if G[nj[q], S] > 0 else 0.0
        if max(sp, sn) > 16.0 * (1.0 + _maxabs(g_new, q, S)):
            v = g_new[q, :S].copy()
            err_new[q] = _polish(v, err_new[q], Ht, ct, inc_new[q, 1:], L, vertex_ulps)
            g_new[q, :S] = v
    on_plane = ~above & ~below
    lower = _child(G, inc, err, ~above, on_plane, g_new, inc_new, err_new, L, H, c, a, beta)
    upper = _child(G, inc, err, ~below, on_plane, g_new, inc_new, err_new, L, H, c, -a, -beta)
    return lower, upper


@_jit
def _split_lines(geo, a, beta, f, fL, vertex_ulps):
    """Split a cell whose lines cross the plane: project along l = the lines' part of a, add the ray -l / +l."""
    G, L, H, c, inc, err = geo
    ng, S1 = G.shape
    S = S1 - 1
    nl = L.shape[0]
    l = np.zeros(S)
    for r in range(nl):
        for t in range(S):
            l[t] += fL[r] * L[r, t]
    al = np.sqrt(np.sum(l * l))
    l /= al
    if nl > 1:
        P = L.copy()
        for r in range(nl):
            lr = 0.0
            for t in range(S):
                lr += L[r, t] * l[t]
            for t in range(S):
                P[r, t] -= lr * l[t]
        L_new = np.ascontiguousarray(np.linalg.svd(P)[2][: nl - 1])
    else:
        L_new = np.zeros((0, S))
    adotl = np.sum(a * l)
    Gn = np.empty((ng + 1, S1))
    errn = np.empty(ng + 1)
    unit = vertex_ulps * _EPS
    for i in range(ng):
        shift = f[i] / adotl
        nrm = 0.0
        for t in range(S):
            nrm += G[i, t] * G[i, t]
            Gn[i, t] = G[i, t] - shift * l[t]
        Gn[i, S] = G[i, S]
        errn[i] = max(err[i], unit * (abs(shift) + np.sqrt(nrm)))
        if G[i, S] == 0:
            nr = np.sqrt(np.sum(Gn[i, :S] * Gn[i, :S]))
            Gn[i, :S] /= nr
            errn[i] /= nr
    errn[ng] = unit
    F1 = inc.shape[1]
    incn = np.ones((ng + 1, F1 + 1), dtype=np.bool_)
    incn[:ng, :F1] = inc
    incn[ng, F1] = False
    Gl, Gu = Gn.copy(), Gn
    Gl[ng, :S], Gl[ng, S] = -l, 0.0
    Gu[ng, :S], Gu[ng, S] = l, 0.0
    lower = (Gl, L_new, _append_row(H, a), _append(c, -beta), incn, errn)
    upper = (Gu, L_new.copy(), _append_row(H, -a), _append(c, beta), incn.copy(), errn.copy())
    return lower, upper


# ---------------------------------------------------------------------------------------------------------
# one cell by one layer (engine.partition._refine) and the facet pruning


@_jit
def _unit_planes(M, m, Mabs, mabs, zero_row):
    """Unit-normal planes of a layer's units, their rounding scales, and the signs of identically-zero rows."""
    k, S = M.shape
    a, Ahat = np.zeros((k, S)), np.zeros((k, S))
    beta, bhat = np.zeros(k), np.zeros(k)
    signs = np.ones(k, dtype=np.bool_)
    active = np.empty(k, dtype=np.int64)
    na = 0
    for j in range(k):
        n2, na2 = 0.0, 0.0
        for t in range(S):
            n2 += M[j, t] * M[j, t]
            na2 += Mabs[j, t] * Mabs[j, t]
        n = np.sqrt(n2)
        if n <= zero_row * np.sqrt(na2):
            signs[j] = m[j] > 0
            continue
        active[na] = j
        na += 1
        for t in range(S):
            a[j, t] = M[j, t] / n
            Ahat[j, t] = max(Mabs[j, t], abs(M[j, t])) / n
        beta[j] = m[j] / n
        bhat[j] = max(mabs[j], abs(m[j])) / n
    return a, beta, Ahat, bhat, signs, active[:na].copy()


@_jit
def _side_tests(geo, pend, a, beta, Ahat, bhat, consts):
    """Values and bounds of the pending units' planes at the generators; which units split the cell.

    Where ``ptol < |f| <= ptol + err`` (the generator's carried bound decides) the bound is
    ``ptol + min(err, _residual_err)``, as in ``engine.partition._refine``; cells with lines keep ``err``."""
    G, L, H, c, inc, err = geo
    ng, S1 = G.shape
    S = S1 - 1
    p = pend.shape[0]
    f, tol = np.empty((ng, p)), np.empty((ng, p))
    pos, neg = np.zeros(p, dtype=np.bool_), np.zeros(p, dtype=np.bool_)
    for i in range(ng):
        for q in range(p):
            u = pend[q]
            s = 0.0
            for t in range(S):
                s += G[i, t] * a[u, t]
            val = s + G[i, S] * beta[u]
            ptol = _plane_tol(G, i, Ahat[u], bhat[u], consts[_PLANE])
            bound = ptol + err[i]
            if abs(val) <= bound and abs(val) > ptol and L.shape[0] == 0:  # decided by g's own bound
                bound = ptol + min(err[i], _residual_err(G, i, H, c, inc, a[u], consts[_VERTEX]))
            f[i, q], tol[i, q] = val, bound
            pos[q] |= val > bound
            neg[q] |= val < -bound
    nl = L.shape[0]
    fL = np.zeros((nl, p))
    crosses = np.zeros(p, dtype=np.bool_)
    for r in range(nl):
        for q in range(p):
            u = pend[q]
            s = 0.0
            for t in range(S):
                s += L[r, t] * a[u, t]
            fL[r, q] = s
            crosses[q] |= abs(s) > _line_tol(L, r, Ahat[u], consts[_PLANE], consts[_VERTEX])
    return f, tol, fL, pos, neg, crosses


@_jit
def _refine(geo, M, m, Mabs, mabs, consts):
    """Subdivide one cell by all units of one layer: the pieces (depth first, lower side first) with their
    unit signs, and whether the cell was split at all."""
    a, beta, Ahat, bhat, signs, active = _unit_planes(M, m, Mabs, mabs, consts[_ZERO])
    out_geo = List()
    out_sg = List()
    st_geo, st_pend, st_sg = List(), List(), List()
    st_geo.append(geo)
    st_pend.append(active)
    st_sg.append(signs)
    split_any = False
    while len(st_geo):
        cur, pend, sg = st_geo.pop(), st_pend.pop(), st_sg.pop()
        if pend.shape[0] == 0:
            out_geo.append(cur)
            out_sg.append(sg)
            continue
        f, tol, fL, pos, neg, crosses = _side_tests(cur, pend, a, beta, Ahat, bhat, consts)
        splits = crosses | (pos & neg)
        first = -1
        for q in range(pend.shape[0]):
            if not splits[q]:
                sg[pend[q]] = not (neg[q] and not pos[q])
            elif first < 0:
                first = q
        if first < 0:
            out_geo.append(cur)
            out_sg.append(sg)
            continue
        split_any = True
        unit = pend[first]
        if crosses[first]:
            lower, upper = _split_lines(cur, a[unit], beta[unit], f[:, first], fL[:, first], consts[_VERTEX])
        else:
            lower, upper = _split_edges(cur, a[unit], beta[unit], f[:, first], tol[:, first], consts[_VERTEX])
        rest = pend[splits][1:]
        sg_up, sg_lo = sg.copy(), sg.copy()
        sg_up[unit], sg_lo[unit] = True, False
        st_geo.append(upper)
        st_pend.append(rest)
        st_sg.append(sg_up)
        st_geo.append(lower)
        st_pend.append(rest.copy())
        st_sg.append(sg_lo)
    return out_geo, out_sg, split_any


@_jit
def _prune(geo):
    """Drop constraints that are not facets (``engine.partition._prune``)."""
    G, L, H, c, inc, err = geo
    F = H.shape[0]
    if F == 0:
        return geo
    ng, S1 = G.shape
    Z = np.ascontiguousarray(inc[:, 1:].T)
    bits = _pack_rows(Z)
    nw = bits.shape[1]
    keep = np.zeros(F, dtype=np.bool_)
    for i in range(F):
        for g in range(ng):
            if G[g, S1 - 1] > 0 and Z[i, g]:
                keep[i] = True
                break
    for i in range(F):
        if not keep[i]:
            continue
        for j in range(F):
            if j == i:
                continue
            sub_ij, sub_ji = True, True
            for w in range(nw):
                if bits[i, w] & ~bits[j, w]:
                    sub_ij = False
                if bits[j, w] & ~bits[i, w]:
                    sub_ji = False
            if sub_ij and (not sub_ji or j < i):
                keep[i] = False
                break
    nk = 0
    for i in range(F):
        nk += keep[i]
    if nk == F:
        return geo
    Hn, cn = np.empty((nk, S1 - 1)), np.empty(nk)
    incn = np.empty((ng, nk + 1), dtype=np.bool_)
    incn[:, 0] = inc[:, 0]
    r = 0
    for i in range(F):
        if keep[i]:
            Hn[r], cn[r] = H[i], c[i]
            incn[:, r + 1] = inc[:, i + 1]
            r += 1
    return (G, L, Hn, cn, incn, err)


# ---------------------------------------------------------------------------------------------------------
# the network, layer by layer


@_jit
def _linear(maps, W, v):
    """Eq. 8 composed through one affine layer, for every cell: ``M <- W M``, ``m <- W m + v``."""
    out = List()
    for M, m, Mabs, mabs in maps:
        out.append(_compose(W, v, M, m, Mabs, mabs))
    return out


@_jit
def _compose(W, v, M, m, Mabs, mabs):
    """``(W M, W m + v, |W| Mabs, |W| mabs + |v|)`` summed in input order (no BLAS: the same bits on any
    machine and thread count)."""
    k, n = W.shape
    S = M.shape[1]
    M2, m2, A2, a2 = np.zeros((k, S)), np.zeros(k), np.zeros((k, S)), np.zeros(k)
    for i in range(k):
        for j in range(n):
            w, wa = W[i, j], abs(W[i, j])
            for t in range(S):
                M2[i, t] += w * M[j, t]
                A2[i, t] += wa * Mabs[j, t]
            m2[i] += w * m[j]
            a2[i] += wa * mabs[j]
        m2[i] += v[i]
        a2[i] += abs(v[i])
    return M2, m2, A2, a2


@_jit
def _activation(cells, maps, hist, eta, off, consts, max_regions):
    """Subdivide every cell by one activation layer's units; record the signs and pre-activation maps."""
    new_cells, new_maps, new_hist = List(), List(), List()
    for ci in range(len(cells)):
        M, m, Mabs, mabs = maps[ci]
        signs, hM, hm = hist[ci]
        k = M.shape[0]
        geos, sgs, split_any = _refine(cells[ci], M, m, Mabs, mabs, consts)
        for pi in range(len(geos)):
            sg = sgs[pi]
            slopes = np.ones(k)
            for j in range(k):
                if not sg[j]:
                    slopes[j] = eta
            s2, hM2, hm2 = signs.copy(), hM.copy(), hm.copy()
            s2[off:off + k] = sg
            hM2[off:off + k] = M
            hm2[off:off + k] = m
            aslopes = np.abs(slopes)
            new_maps.append((slopes[:, None] * M, slopes * m, aslopes[:, None] * Mabs, aslopes * mabs))
            new_hist.append((s2, hM2, hm2))
            new_cells.append(_prune(geos[pi]) if split_any else geos[pi])
        if len(new_cells) > max_regions:
            return new_cells, new_maps, new_hist, True
    return new_cells, new_maps, new_hist, False


@_jit
def _pack(cells, maps, hist):
    """Stack the cells into :class:`DDArrays` fields (generators sorted vertices first, stably)."""
    R = len(cells)
    S = cells[0][0].shape[1] - 1
    ng_t, nf_t, nl_t, ni_t = 0, 0, 0, 0
    for G, L, H, _c, _inc, _err in cells:
        ng_t += G.shape[0]
        nf_t += H.shape[0]
        nl_t += L.shape[0]
        ni_t += G.shape[0] * H.shape[0]
    G_all, H_all, c_all = np.empty((ng_t, S + 1)), np.empty((nf_t, S)), np.empty(nf_t)
    e_all = np.empty(ng_t)
    L_all, inc_all = np.empty((nl_t, S)), np.empty(ni_t, dtype=np.bool_)
    gen_off, fac_off = np.zeros(R + 1, dtype=np.int64), np.zeros(R + 1, dtype=np.int64)
    lin_off, inc_off = np.zeros(R + 1, dtype=np.int64), np.zeros(R + 1, dtype=np.int64)
    nv = np.zeros(R, dtype=np.int64)
    D = maps[0][0].shape[0]
    nu = hist[0][0].shape[0]
    A, b = np.empty((R, D, S)), np.empty((R, D))
    signs, hM, hm = np.empty((R, nu), dtype=np.bool_), np.empty((R, nu, S)), np.empty((R, nu))
    for r in range(R):
        G, L, H, c, inc, err = cells[r]
        ng, F = G.shape[0], H.shape[0]
        g0, i0 = gen_off[r], inc_off[r]
        w = 0
        for vertex_pass in (True, False):
            for i in range(ng):
                if (G[i, S] > 0) == vertex_pass:
                    G_all[g0 + w] = G[i]
                    e_all[g0 + w] = err[i]
                    inc_all[i0 + w * F:i0 + (w + 1) * F] = inc[i, 1:]
                    w += 1
            if vertex_pass:
                nv[r] = w
        gen_off[r + 1], inc_off[r + 1] = g0 + ng, i0 + ng * F
        H_all[fac_off[r]:fac_off[r] + F], c_all[fac_off[r]:fac_off[r] + F] = H, c
        fac_off[r + 1] = fac_off[r] + F
        L_all[lin_off[r]:lin_off[r] + L.shape[0]] = L
        lin_off[r + 1] = lin_off[r] + L.shape[0]
        A[r], b[r] = maps[r][0], maps[r][1]
        signs[r], hM[r], hm[r] = hist[r]
    return G_all, gen_off, nv, H_all, c_all, fac_off, L_all, lin_off, inc_all, inc_off, A, b, signs, hM, hm, e_all


@_jit
def dd_partition(S, kinds, Wflat, Woff, Wshape, vflat, voff, etas, act_off, n_units, consts, max_regions):
    """The whole double description (``engine.partition.partition`` for S >= 2) in one compiled call.

    Layer li is Linear (``kinds[li] == 0``: weight ``Wflat[Woff[li]:Woff[li+1]]`` of shape ``Wshape[li]``,
    bias ``vflat[voff[li]:voff[li+1]]``) or Activation (negative slope ``etas[li]``, its units at
    ``act_off[li]`` of the concatenated pattern). Returns ``(-1, arrays)``, or ``(li, arrays of the cells so
    far)`` when layer li makes more than ``max_regions`` cells.
    """
    G0 = np.zeros((1, S + 1))
    G0[0, S] = 1.0
    cells = List()
    cells.append((G0, np.eye(S), np.zeros((0, S)), np.zeros(0), np.zeros((1, 1), dtype=np.bool_), np.zeros(1)))
    maps = List()
    maps.append((np.eye(S), np.zeros(S), np.eye(S), np.zeros(S)))
    hist = List()
    hist.append((np.zeros(n_units, dtype=np.bool_), np.zeros((n_units, S)), np.zeros(n_units)))
    for li in range(kinds.shape[0]):
        if kinds[li] == _LINEAR:
            W = np.ascontiguousarray(Wflat[Woff[li]:Woff[li + 1]].reshape((Wshape[li, 0], Wshape[li, 1])))
            maps = _linear(maps, W, vflat[voff[li]:voff[li + 1]].copy())
            continue
        cells, maps, hist, over = _activation(cells, maps, hist, etas[li], act_off[li], consts, max_regions)
        if over:
            return li, _pack(cells, maps, hist)
    return -1, _pack(cells, maps, hist)


def run(net, max_regions: int, consts: np.ndarray) -> tuple[int, DDArrays]:
    """Flatten ``net``'s layers and run :func:`dd_partition`; ``consts = [PLANE_ULPS, VERTEX_ULPS, ZERO_ROW]``."""
    from .network import Linear

    kinds, Ws, vs, shapes, etas, act_off = [], [], [], [], [], []
    n_units, width = 0, net.latent_dim
    for layer in net.layers:
        linear = isinstance(layer, Linear)
        kinds.append(_LINEAR if linear else _ACTIVATION)
        W = np.asarray(layer.weight, np.float64) if linear else np.zeros((0, 0))
        Ws.append(W.ravel())
        shapes.append(W.shape)
        vs.append(np.asarray(layer.bias, np.float64) if linear else np.zeros(0))
        etas.append(0.0 if linear else float(layer.negative_slope))
        act_off.append(n_units)
        if linear:
            width = W.shape[0]
        else:
            n_units += width
    Woff = np.concatenate([[0], np.cumsum([w.size for w in Ws])]).astype(np.int64)
    voff = np.concatenate([[0], np.cumsum([v.size for v in vs])]).astype(np.int64)
    status, arrays = dd_partition(net.latent_dim, np.array(kinds, np.int64), np.concatenate(Ws), Woff,
                                  np.array(shapes, np.int64).reshape(-1, 2), np.concatenate(vs), voff,
                                  np.array(etas), np.array(act_off, np.int64), n_units,
                                  np.asarray(consts, np.float64), int(max_regions))
    return int(status), DDArrays(*arrays)


def partition_compiled(net, max_regions: int):
    """:func:`engine.partition.partition` for S >= 2 through the compiled kernel: the same regions, in the
    same order, as the Python double description (``engine.partition.USE_COMPILED_DD = False``)."""
    ref = importlib.import_module(".partition", __package__)  # the module (engine.partition is the function)
    from .errors import RegionBudgetError
    from .polytope import Polytope

    status, d = run(net, max_regions, np.array([ref._PLANE_ULPS, ref._VERTEX_ULPS, ref._ZERO_ROW]))
    if status >= 0:
        raise RegionBudgetError(
            "max_regions", f"the partition has more than {max_regions} regions by layer {status} "
            f"(widths {net.widths})", "raise max_regions or use a narrower/shallower network")
    for x in (d.A, d.b, d.signs, d.hM, d.hm):
        x.setflags(write=False)
    S = net.latent_dim
    starts = np.concatenate([[0], np.cumsum(_activation_widths(net))]).astype(int).tolist()
    go, fo, lo, io = (x.tolist() for x in (d.gen_off, d.fac_off, d.lin_off, d.inc_off))
    mid = (d.gen_off[:-1] + d.nv).tolist()
    Z, spans = d.G[:, :S], list(zip(starts[:-1], starts[1:]))
    regions, incidence = [], []
    rows = zip(d.signs, d.A, d.b, d.hM, d.hm)  # row views, made in C
    for r, (signs, A, b, hM, hm) in enumerate(rows):
        poly = Polytope(d.H[fo[r]:fo[r + 1]], d.c[fo[r]:fo[r + 1]], Z[go[r]:mid[r]], Z[mid[r]:go[r + 1]],
                        d.L[lo[r]:lo[r + 1]])
        regions.append(ref.Region(r, signs, poly, A, b, [(hM[s:e], hm[s:e]) for s, e in spans]))
        incidence.append(d.inc[io[r]:io[r + 1]].reshape(go[r + 1] - go[r], fo[r + 1] - fo[r]))
    part = ref.Partition(net, regions, incidence, stacked=(d.A, d.b, d.signs))
    for region in regions:
        region._partition = part
    return part


def _activation_widths(net) -> list[int]:
    from .network import Linear

    out, width = [], net.latent_dim
    for layer in net.layers:
        if isinstance(layer, Linear):
            width = layer.weight.shape[0]
        else:
            out.append(width)
    return out
