"""S' = 4: Gaussian mass of a polyhedron by the cone (orthoscheme) decomposition, one 1-D integral per flag.

Theorem 1 (eq. 5) needs ``Phi_omega(mu, Sigma_omega)``; in whitened, pointed coordinates that is the mass of
``y ~ N(0, I_4)`` on ``P = {Nrm y <= D}`` (unit rows ``n_i``, offsets ``d_i``). NOTES §6: "a polyhedron is the
signed sum of pyramids with apex m over its facets; each facet is the signed sum of pyramids with apex at the foot
of the perpendicular ... and so on down to vertices". Along each ray from the mean, P is an interval entered
through facets with ``d_i < 0`` and left through facets with ``d_i > 0``, so (as in ``solid.kernel`` at S = 3)

    P = 1{0 in P} - sum_i sign(d_i) B_i,     B_i = mass of {lam f : f in facet F_i, lam >= 1}.

With the 4-D radial tail ``int_rho^inf r^3 e^{-r^2/2} dr = (rho^2 + 2) e^{-rho^2/2}``, ``B_i`` is the integral over
the facet (a 3-polytope in its hyperplane, ``v`` measured from the foot ``f_i = d_i n_i``) of the radial function
``g(d_i^2 + |v|^2)``, ``g(q) = |d| (2 pi)^-2 (q + 2) e^{-q/2} / q^2``. The facet decomposes around ``f_i`` over its
ridges ``j`` (in-plane signed distance ``e_ij``, foot ``g_ij``), each ridge (a polygon) around ``g_ij`` over its
edges ``k`` (in-ridge signed distance ``b_ijk``). The radial parts close (checked against mpmath in
``tests/test_highdim_cones.py``):

    B_i      = 1{f_i in F_i} Q(|d_i|) - sum_j sign(e_ij) C_ij,
    C_ij     = 1{g_ij in G_ij} W(d_i, |e_ij|) - sum_k sign(b_ijk) E_ijk,
    W(d, a)  = (|d| / 2 pi) J(d, a),   J(d, a) = int_a^inf e^{-(d^2 + r^2)/2} / (d^2 + r^2) dr
               (= P(X > |d|, Y > (a/|d|) X), the wedge beyond the facet's and the ridge's planes),
    E_ijk    = (a b / 2 pi) int_edge W(d, omega(s)) / (omega(s) (b^2 + s^2)) ds,   omega^2 = a^2 + b^2 + s^2

(``a = |e_ij|``, ``b = |b_ijk|``, ``s`` along the edge from the foot of the perpendicular from the mean onto its
line, the same point for every flag of the edge). Exchanging the two integrals of ``E`` with
``a b int ds / (omega (b^2 + s^2)) = arctan(a s / (b omega))`` leaves ONE smooth integral of elementary functions
per flag, over ``sigma`` (``r^2 = a^2 + b^2 + sigma^2``):

    E_ijk = |d| / (4 pi^2) int_0^inf e^{-(R + sigma^2)/2} / (R + sigma^2) * DTheta(sigma) * sigma / sqrt(c + sigma^2)
            dsigma,   DTheta = Theta(clip(sigma)) - Theta(clip(-sigma)),  Theta(s) = arctan(a s / (b sqrt(c + s^2))),

``c = a^2 + b^2``, ``R = d^2 + c`` (the squared distance of the edge's line from the mean), ``clip`` to the edge's
``[s_lo, s_hi]``. ``DTheta`` has kinks only at ``|s_lo|`` and ``|s_hi|`` (shared by the flags of an edge: one node set
per edge); beyond ``max(|s_lo|, |s_hi|)`` it is constant and the rest is ``DTheta J(d, sqrt(c + sigma^2))``.
Differences of arctangents are taken in the form ``arctan((X - Y) / (1 + X Y))`` with ``X - Y`` factored, so each
term keeps its relative accuracy in every tail. Every integral is a graded Gauss-Legendre rule as in
``solid.edges`` (geometric panels from the piece's start, at the distance of the nearest complex singularity,
split where the Gaussian factor changes by more than ``_DMAX`` nats, cut ``WINDOW`` nats down).

The signed sum cancels when the mean lies far outside P (terms of size ``e^{-d_min^2/2}`` against a mass of
``e^{-dist^2/2}``): the per-pair relative bar is ``(sum_terms |term| TERM_ULPS eps (1 + |log term|) + dropped +
window + ends) / P`` plus the rounding of the difference, ``ends`` the first-order effect of the edges' ends' errors
(:func:`_end_bounds`: the ends are projections of the given vertices, which lie off the planes and are rounded; on
an edge 1e-5 long ~20 from the mean, or ~1e-8 from it, that moves its flags' terms far beyond ``TERM_ULPS``); pairs
whose bar exceeds the caller's tolerance, the mean on a facet, ridge or edge plane, or unresolved integrals are
flagged (the caller slices them, ``sliced``).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numba
import numpy as np

from .. import constants as C
from ..dot2 import dot2, two_prod_sum
from ..planar.kernel import _lse_pair, edge_log_B
from ..solid.edges import _erfcx
from ..threads import run_split
from .sliver import bounded_direction

_jit = numba.njit(cache=True, nogil=True, error_model="numpy")
_SQRT2, _INF, _EPS = C.SQRT2, C.INF, C.EPS
_NODES = 16  # Gauss-Legendre nodes per panel
_GX, _GW = np.polynomial.legendre.leggauss(_NODES)
WINDOW = 45.0  # nats kept below each piece's Gaussian factor at its start (the rest bounded into the bar)
_DMAX = 16.0  # largest change of the Gaussian exponent across one panel
# The light rule (issue 14, lk4): pairs whose tolerance is at least LIGHT_TOL (light pairs, sliced.pair_tolerances)
# first run the edges' integrals (pieces and the J beyond) with LIGHT_NODES nodes on panels of up to LIGHT_DMAX nats
# (one panel for the whole 45-nat window) and LIGHT_SMALL_NODES on the panels whose Gaussian factor changes by at most
# LIGHT_DSMALL nats (their width is set by the nearest singularity, +- i b: Bernstein ellipse rho >= 4.3). Each flag's
# term (integrals of positive functions) carries LIGHT_REL of itself into the bar: measured against the full rule on
# the 5.5 M flag terms of [4,16,16,5]'s points 0-1 (capture of every cone call, 25,691 pairs) at most 1.96e-10 (E) and
# 6.2e-11 (the facets' C), a 10x margin; tests/test_highdim_cone_light.py checks bars against mpmath / closed forms. A
# pair the light bar does not certify is run again by the full rule (cone_kernel.region_pairs, cones._settled_by_cones),
# so no more pairs go to the slices. Measured on 2,440 of those pairs (lk4 audit): the kernel 0.43 against 0.51-0.59 ms
# a pair; light bars ~1e4 times the full rule's; of the 1,178 with tol >= 1e-6, 1,107 certified by the light rule
# (71 run again; 1e-7: 1,312 of 1,456, 144 again, less saved); the light results within 0.002 of their bars of the full
# rule's, 30 of them beyond the full rule's own bar (up to 40x it: the LIGHT_REL term is needed).
LIGHT_NODES = 20
LIGHT_DMAX = 45.0
LIGHT_SMALL_NODES = 10
LIGHT_DSMALL = 4.0
LIGHT_REL = 2e-9
_LOG_LIGHT_REL = math.log(LIGHT_REL)
LIGHT_TOL = 1e-6
FULL_RULE = (_GX, _GW, _DMAX, _GX, _GW, -1.0)  # _panel_nodes: the 16 nodes on every panel
LIGHT_RULE = (*np.polynomial.legendre.leggauss(LIGHT_NODES), LIGHT_DMAX,
              *np.polynomial.legendre.leggauss(LIGHT_SMALL_NODES), LIGHT_DSMALL)
_MAX_GRADES = 64  # geometric panels at most
_DROP = C.EDGE_DROP_NATS  # edges whose bound is this far below the largest term are left out (bound in the bar)
TERM_ULPS = 16.0  # relative error of one term <= TERM_ULPS eps (1 + |log term|): measured against mpmath <= 4.8 (92
# random flags), 3.5 (J), 1.7 (Q), 0.8 (the facets' C); tests/test_highdim_cones.py asserts 4 on its fixed cases
_LOG_4PI2 = math.log(4.0 * math.pi * math.pi)
_LOG_2PI = math.log(2.0 * math.pi)
_INC = 1e-9  # vertex-facet incidence tolerance (relative to 1 + |D|)
# The bar's input terms are first order: beyond a relative 1e-2 they bound nothing (the mean 1e-8 from a face of a
# 1e-4 simplex: bars of 40-1e5 under errors up to 107x them, e4p) and such a pair is never certified (tolerances <=
# 1e-4): its bar is reported as inf.
FIRST_ORDER_CAP = 1e-2
EPS = _EPS


# ---------------------------------------------------------------------------------------------------
# combinatorics of the region (numpy, once per region: translation invariant)
# ---------------------------------------------------------------------------------------------------

class ConeArrays(NamedTuple):
    """The flags of one region, as the kernel takes them: facets (valid ones ``fvalid``), ridges ``(ri, rj)`` with
    ``rc = n_i . n_j`` and ``rsn = |n_j - rc n_i|``, edges (vertex ``eva``, other end vertex ``evb`` or ray ``erv``
    (-1: none), unit direction ``eu``, three facets ``etri`` and the inverse Gram matrix ``eginv`` of their normals
    for ``R``), and per edge (``eptr`` CSR) its (ridge, line) pairs: ridge ``lr``, coefficients ``ll1``, ``ll2``,
    ``lpn`` of ``b = (d_k - l1 d_i - l2 d_j) / pn`` with ``lk`` the facet that cuts the edge's line from the ridge;
    the unit rows ``nrm``, per vertex (``vptr`` CSR) its valid facets ``vfac``, and per edge the coefficients ``ew``
    (E, 2, K), residuals ``eres`` (E, 3), ``eun = |u|^2 - 1`` (E,) and the relative error bounds ``ewk`` (E, 2) of
    ``ew`` (inf: that end is not corrected) that take its ends from the planes (:func:`end_frames`,
    :func:`edge_ends`); per ridge the low part ``rcl`` of ``n_i . n_j = rc + rcl`` and per line ``lacc`` (L, 5):
    ``l1, l2, pn`` from Dot2 products and the bounds of ``l1``'s and ``l2``'s errors (:func:`ridge_frames`)."""

    fvalid: np.ndarray
    ri: np.ndarray
    rj: np.ndarray
    rc: np.ndarray
    rsn: np.ndarray
    eva: np.ndarray
    evb: np.ndarray
    erv: np.ndarray
    eu: np.ndarray
    etri: np.ndarray
    eginv: np.ndarray
    eptr: np.ndarray
    lr: np.ndarray
    lk: np.ndarray
    ll1: np.ndarray
    ll2: np.ndarray
    lpn: np.ndarray
    rays: np.ndarray
    nrm: np.ndarray
    vptr: np.ndarray
    vfac: np.ndarray
    ew: np.ndarray
    eres: np.ndarray
    eun: np.ndarray
    ewk: np.ndarray
    rcl: np.ndarray
    lacc: np.ndarray


def _facet_dims(Yv0, Yr, inc, rinc):
    """(F,) affine dimension of the face each constraint cuts out (its incident vertices ``inc`` and rays ``rinc``;
    -1: none): one batched SVD of the vertices relative to the face's first one, and its rays, zero-padded."""
    first = np.argmax(inc, axis=0)  # (F,) a vertex of each face
    rel = Yv0[None, :, :] - Yv0[first][:, None, :]  # (F, V, 4)
    rows = np.concatenate([np.where(inc.T[:, :, None], rel, 0.0), np.where(rinc.T[:, :, None], Yr[None], 0.0)],
                          axis=1)
    sv = np.linalg.svd(rows, compute_uv=False)  # (F, 4)
    scale = np.maximum(np.abs(Yv0).max(), 1.0)
    dims = np.sum(sv > 1e-9 * scale, axis=1)
    return np.where(inc.any(axis=0), dims, -1)


def _exact_faces(common, incv, rincv, nv, nr):
    """(K,) whether the face cut out by each row of ``common`` (K, F) (the facets shared by a candidate pair) holds
    exactly ``nv`` vertices and ``nr`` rays: then the pair spans it, a 1-face (an edge) of P."""
    nv_on = (~np.any(common[:, None, :] & ~incv[None, :, :], axis=2)).sum(axis=1)
    nr_on = (~np.any(common[:, None, :] & ~rincv[None, :, :], axis=2)).sum(axis=1) if rincv.shape[0] else 0
    return (nv_on == nv) & (nr_on == nr)


def _edges_of(incv, rincv):
    """Edges as (vertex, vertex or -1, ray or -1, facet set): vertex pairs / vertex-ray pairs sharing >= 3 valid
    facets whose common facets hold no other vertex or ray (vectorised over the candidate pairs)."""
    V = incv.shape[0]
    out = []
    a, b = np.triu_indices(V, 1)
    common = incv[a] & incv[b]
    keep = common.sum(axis=1) >= 3
    a, b, common = a[keep], b[keep], common[keep]
    if a.size:
        ok = _exact_faces(common, incv, rincv, 2, 0)
        out += [(x, y, -1, np.nonzero(c)[0].tolist()) for x, y, c in zip(a[ok].tolist(), b[ok].tolist(), common[ok])]
    if rincv.shape[0]:
        a, r = np.nonzero(np.ones((V, rincv.shape[0]), dtype=bool))
        common = incv[a] & rincv[r]
        keep = common.sum(axis=1) >= 3
        a, r, common = a[keep], r[keep], common[keep]
        if a.size:
            ok = _exact_faces(common, incv, rincv, 1, 1)
            out += [(x, -1, y, np.nonzero(c)[0].tolist())
                    for x, y, c in zip(a[ok].tolist(), r[ok].tolist(), common[ok])]
    return out


def _ridges_of(Nrm, incv, rincv, fvalid):
    """Pairs ``(i, j)`` of valid facets (not parallel) sharing >= 3 elements with a vertex among them: their
    intersection is a face of dimension <= 2 holding 3 vertices, or 2 and a ray, or 1 and 2 rays, so it is a ridge.
    Returns ``{(i, j): index}``."""
    cv = incv.T.astype(np.int64) @ incv.astype(np.int64)  # (F, F) shared vertices
    cr = rincv.T.astype(np.int64) @ rincv.astype(np.int64) if rincv.shape[0] else np.zeros_like(cv)
    cos = Nrm @ Nrm.T
    ok = (cv >= 1) & (cv + cr >= 3) & (np.abs(cos) < 1.0 - 1e-12) & fvalid[:, None] & fvalid[None, :]
    i, j = np.nonzero(np.triu(ok, 1))
    return {(int(x), int(y)): k for k, (x, y) in enumerate(zip(i, j))}


def cone_shape(Nrm, D0, Yv0, Yr) -> ConeArrays:
    """The flags (facet > ridge > edge) of ``P = {Nrm y <= D0}`` with vertices ``Yv0`` (V, 4) and unit rays ``Yr``
    (R, 4) (pointed, no lineality)."""
    Nrm = np.asarray(Nrm, dtype=np.float64)
    Yr = np.asarray(Yr, dtype=np.float64).reshape(-1, 4)
    tol = _INC * (1.0 + np.abs(D0))
    inc = np.abs(Yv0 @ Nrm.T - D0[None]) <= tol[None]
    rinc = np.abs(Yr @ Nrm.T) <= _INC if Yr.size else np.zeros((0, Nrm.shape[0]), dtype=bool)
    F = Nrm.shape[0]
    fvalid = _facet_dims(Yv0, Yr, inc, rinc) == 3
    incv, rincv = inc & fvalid[None], rinc & fvalid[None]
    ridges = _ridges_of(Nrm, incv, rincv, fvalid)
    ri = np.array([k[0] for k in ridges], dtype=np.intp)
    rj = np.array([k[1] for k in ridges], dtype=np.intp)
    rc = np.einsum("ij,ij->i", Nrm[ri], Nrm[rj]) if ri.size else np.zeros(0)
    rsn = np.linalg.norm(Nrm[rj] - rc[:, None] * Nrm[ri], axis=1) if ri.size else np.zeros(0)
    edges = _edges_of(incv, rincv)
    rid = np.full((F, F), -1, dtype=np.intp)
    rid[ri, rj] = np.arange(ri.size)
    ends, lines = _lines(Nrm, edges, rid, rc)
    return _pack(Nrm, fvalid, (ri, rj, rc, rsn), ends, lines, Yr, incv)


def consistent(shape: ConeArrays, n_vertices: int) -> bool:
    """Whether the flags can be those of a pointed 4-polyhedron: every vertex an end of >= 4 edges, every ridge
    (a polygon) with >= 2 edges, every valid facet (a 3-polyhedron) with >= 3 ridges. A failure means the
    incidences were misread (a vertex off its facets by more than the tolerance): the pairs are flagged."""
    if not shape.fvalid.any() or not shape.eva.size:
        return False
    ends = np.bincount(np.concatenate([shape.eva, shape.evb[shape.evb >= 0]]), minlength=n_vertices)
    per_ridge = np.bincount(shape.lr, minlength=shape.ri.size)
    per_facet = np.bincount(np.concatenate([shape.ri, shape.rj]), minlength=shape.fvalid.size)
    return bool(np.all(ends >= 4) and np.all(per_ridge >= 2) and np.all(per_facet[shape.fvalid] >= 3))


def _pack(Nrm, fvalid, ridge_arrays, ends, lines, Yr, incv):
    """:class:`ConeArrays` from the ridges, the edges' ends (E, 3) and their lines: ``eptr`` (E + 1,) and the line
    arrays ``(ridge, i, j, k, l1, l2, pn)`` in edge order (the first line of each edge gives its three facets), and
    from the valid incidences ``incv`` the vertices' facets and the ends' frames (:func:`end_frames`)."""
    eptr, g, i, j, k, l1, l2, pn = lines
    E = ends.shape[0]
    first = eptr[:-1]
    tri = np.column_stack([i[first], j[first], k[first]]).astype(np.intp).reshape(-1, 3)
    N3 = Nrm[tri]  # (E, 3, 4)
    if E:
        _, _, vt = np.linalg.svd(np.concatenate([N3, np.zeros((E, 1, 4))], axis=1))
        eu = np.ascontiguousarray(vt[:, -1])
        eginv = np.linalg.inv(N3 @ np.swapaxes(N3, 1, 2))
    else:
        eu, eginv = np.zeros((0, 4)), np.zeros((0, 3, 3))
    return ConeArrays(fvalid, *ridge_arrays, ends[:, 0].copy(), ends[:, 1].copy(), ends[:, 2].copy(), eu, tri, eginv,
                      eptr, g.copy(), k.copy(), l1.copy(), l2.copy(), pn.copy(), Yr,
                      *end_frames(np.ascontiguousarray(Nrm), incv, ends[:, 0].copy(), ends[:, 1].copy(), eu, tri),
                      *ridge_frames(np.ascontiguousarray(Nrm), ridge_arrays[0], ridge_arrays[1], ridge_arrays[2], g, k))


@_jit
def end_frames(Nrm, incv, eva, evb, eu, tri):
    """``(nrm, vptr, vfac, ew, eres, eun, ewk)`` of :class:`ConeArrays`: the unit rows; the valid facets of each vertex
    (``incv`` (V, F), CSR, ascending); per edge end (vertex ``eva`` / ``evb``) ``w`` with ``w . r`` the distance ALONG
    the edge ``u = eu`` from the given vertex to its planes' point (``r``: its residuals on them; zero-padded to the
    most facets of a vertex): ``w = N_v^-T u`` for a simple vertex (4 facets; ``ewk`` = 16 eps cond(N_v) bounds its
    relative error), else the least-squares ``N_v (N_v^T N_v)^-1 u`` (first order only: ``ewk`` = inf, the end is not
    corrected) and inf where ``N_v`` has rank < 4; per edge ``N_3 u`` in Dot2 (its three facets ``tri``; ``u . x_0 =
    (N_3 u) . (G^-1 d_3)`` for the foot ``x_0`` of the perpendicular from the mean on the line) and ``|u|^2 - 1`` in
    Dot2 (``u``'s length: an end is ``u . (v - x_0) / |u|``)."""
    V, F = incv.shape
    vptr = np.zeros(V + 1, dtype=np.intp)
    for v in range(V):
        vptr[v + 1] = vptr[v] + np.sum(incv[v])
    vfac = np.empty(vptr[V], dtype=np.intp)
    K = 4
    for v in range(V):
        p = vptr[v]
        for f in range(F):
            if incv[v, f]:
                vfac[p] = f
                p += 1
        K = max(K, vptr[v + 1] - vptr[v])
    E = eu.shape[0]
    ew = np.zeros((E, 2, K))
    ewk = np.full((E, 2), _INF)
    eres = np.zeros((E, 3))
    eun = np.zeros(E)
    svs = np.zeros((V, 4))  # each vertex's singular values once, not once per edge end (k5c: 43 % of shape5's time)
    for v in range(V):
        if vptr[v + 1] - vptr[v] >= 4:
            svs[v] = np.linalg.svd(np.ascontiguousarray(Nrm[vfac[vptr[v]:vptr[v + 1]]]))[1][:4]
    for k in range(E):
        uk = np.ascontiguousarray(eu[k])
        for w in range(2):
            v = eva[k] if w == 0 else evb[k]
            if v < 0:
                continue
            n = vptr[v + 1] - vptr[v]
            Nv = np.ascontiguousarray(Nrm[vfac[vptr[v]:vptr[v + 1]]])
            sv = svs[v]
            if n < 4 or not sv[3] > 1e-8:
                ew[k, w, 0] = _INF
            elif n == 4:
                ew[k, w, :4] = np.linalg.solve(np.ascontiguousarray(Nv.T), uk)
                ewk[k, w] = 16.0 * _EPS * sv[0] / sv[3]
            else:
                ew[k, w, :n] = Nv @ np.linalg.solve(Nv.T @ Nv, uk)
        for p in range(3):
            eres[k, p] = dot2(Nrm[tri[k, p]], uk, 4)
        hi, lo = 0.0, 0.0
        for a in range(4):
            hi, lo = two_prod_sum(hi, lo, uk[a], uk[a])
        eun[k] = (hi - 1.0) + lo
    return Nrm.copy(), vptr, vfac, ew, eres, eun, ewk


@_jit
def ridge_frames(Nrm, ri, rj, rc, lr, lk):
    """``(rcl, lacc)`` of :class:`ConeArrays`: per ridge ``rcl = n_i . n_j - rc`` (Dot2: ``rc + rcl`` within
    ``gamma_4^2`` of the exact product of the unit rows); per (ridge, line) ``lacc = (l1, l2, pn, err_l1, err_l2)``:
    ``l = G_2^-1 (n_k . n_i, n_k . n_j)`` from Dot2 products (``G_2 = [[1, c], [c, 1]]``, ``det = (1 - c)(1 + c)``),
    ``pn = |n_k - l1 n_i - l2 n_j|`` and bounds of ``l``'s errors (``4 eps`` of the summands and ``1e-30`` of the
    products over ``det``, ``8 eps |l| / det``). Nearly orthogonal facets give ``c``, ``l`` ~ 1e-16 that a plain dot
    product gets 100 % wrong; ``e = (d_j - c d_i) / sn`` and ``b = (d_k - l1 d_i - l2 d_j) / pn`` then lose their
    digits where the mean is 1e-8 from a face (:func:`_ridge_offset`, :func:`_line_offset`)."""
    G = ri.size
    rcl = np.zeros(G)
    for r in range(G):
        hi, lo = 0.0, 0.0
        for a in range(4):
            hi, lo = two_prod_sum(hi, lo, Nrm[ri[r], a], Nrm[rj[r], a])
        rcl[r] = (hi - rc[r]) + lo
    L = lr.size
    lacc = np.zeros((L, 5))
    for m in range(L):
        r = lr[m]
        i, j, k = ri[r], rj[r], lk[m]
        c = rc[r] + rcl[r]
        ki = dot2(Nrm[k], Nrm[i], 4)
        kj = dot2(Nrm[k], Nrm[j], 4)
        det = (1.0 - c) * (1.0 + c)
        l1 = (ki - c * kj) / det
        l2 = (kj - c * ki) / det
        pn = 0.0
        for a in range(4):
            x = Nrm[k, a] - l1 * Nrm[i, a] - l2 * Nrm[j, a]
            pn += x * x
        lacc[m, 0], lacc[m, 1], lacc[m, 2] = l1, l2, math.sqrt(pn)
        lacc[m, 3] = (4.0 * _EPS * (abs(ki) + abs(c * kj)) + 1e-30) / det + 8.0 * _EPS * abs(l1) / det
        lacc[m, 4] = (4.0 * _EPS * (abs(kj) + abs(c * ki)) + 1e-30) / det + 8.0 * _EPS * abs(l2) / det
    return rcl, lacc


def _lines(Nrm, edges, rid, rc):
    """The edges with a line: their ends (E, 3) and, in edge order, ``(eptr, ridge, i, j, k, l1, l2, pn)`` for each
    ridge ``(i, j)`` (``rid``: ridge index or -1) of two of an edge's facets and the first third facet ``k`` of the
    edge whose plane cuts the edge's line from the ridge's plane (``pn > 1e-9``): ``b = (d_k - l1 d_i - l2 d_j) / pn``
    (``l = G^-1 (n_k . n_i, n_k . n_j)``, ``pn = |n_k - l1 n_i - l2 n_j|``). Vectorised over every (edge, i < j, k)
    of the edges' facet sets."""
    rows = [(e, i, j, k) for e, (_, _, _, fs) in enumerate(edges) for x, i in enumerate(fs) for j in fs[x + 1:]
            for k in fs if k != i and k != j]
    if not rows:
        z, zf = np.zeros(0, dtype=np.intp), np.zeros(0)
        return np.zeros((0, 3), dtype=np.intp), (np.zeros(1, dtype=np.intp), z, z, z, z, zf, zf, zf)
    e, i, j, k = np.array(rows, dtype=np.intp).T
    g = rid[i, j]
    c = np.where(g >= 0, rc[g], 0.0)
    ki, kj = np.einsum("ij,ij->i", Nrm[k], Nrm[i]), np.einsum("ij,ij->i", Nrm[k], Nrm[j])
    det = 1.0 - c * c
    l1, l2 = (ki - c * kj) / det, (kj - c * ki) / det
    pn = np.linalg.norm(Nrm[k] - l1[:, None] * Nrm[i] - l2[:, None] * Nrm[j], axis=1)
    sel = np.nonzero((g >= 0) & (pn > 1e-9))[0]
    _, first = np.unique(e[sel] * rid.size + g[sel], return_index=True)
    keep = np.sort(sel[first])  # the first k of each (edge, ridge), in the order of the rows (edge-major)
    ue, counts = np.unique(e[keep], return_counts=True)
    ends = np.array([edges[ed][:3] for ed in ue.tolist()], dtype=np.intp).reshape(-1, 3)
    eptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.intp)
    return ends, (eptr, g[keep], i[keep], j[keep], k[keep], l1[keep], l2[keep], pn[keep])


# ---------------------------------------------------------------------------------------------------
# the 1-D integrals (compiled)
# ---------------------------------------------------------------------------------------------------

@_jit
def _exp_point(sa, e):
    """u >= 0 with ``s_a u + u^2/2 = e``, without cancellation for large ``s_a``."""
    return 2.0 * e / (math.sqrt(sa * sa + 2.0 * e) + sa)


@_jit
def _log_q(x):
    """log Q(x) = log P(N(0,1) > x) for x >= 0."""
    return math.log(0.5 * _erfcx(x / _SQRT2)) - 0.5 * x * x


@_jit
def _panel_nodes(rule, delta):
    """The Gauss-Legendre nodes and weights of a panel across which the Gaussian exponent changes by ``delta`` nats:
    ``rule = (gx, gw, dmax, gx_small, gw_small, dsmall)``, the small rule where ``delta <= dsmall`` (panels whose
    width is set by the integrand's nearest singularity, not by the Gaussian factor), panels of ``dmax`` nats at
    most."""
    if delta <= rule[5]:
        return rule[3], rule[4]
    return rule[0], rule[1]


@_jit
def log_j(d2, r):
    """:func:`log_j_rule` with the full rule."""
    return log_j_rule(d2, r, FULL_RULE)


@_jit
def log_j_rule(d2, r, rule):
    """``(log J, ok)``: ``J = int_r^inf e^{-(d2 + t^2)/2} / (d2 + t^2) dt`` for ``r >= 0``, graded Gauss-Legendre in
    ``u = t - r`` (poles at ``u = -r +- i sqrt(d2)``, at distance ``sqrt(r^2 + d2)`` from the start); ``rule``:
    :func:`_panel_nodes`."""
    r0 = math.sqrt(r * r + d2)
    if not r0 > 0.0:
        return _INF, False
    U = _exp_point(r, WINDOW)
    total = 0.0
    left = 0.0
    k = 0
    while left < U:
        if k >= _MAX_GRADES:
            return math.log(total) - 0.5 * (d2 + r * r) if total > 0.0 else -_INF, False
        right = min(r0 * (2.0 ** (k + 1) - 1.0), U)
        e_l = r * left + 0.5 * left * left
        e_r = r * right + 0.5 * right * right
        nsub = max(1, int(math.ceil((e_r - e_l) / rule[2])))
        ul = left
        for q in range(1, nsub + 1):
            ur = right if q == nsub else _exp_point(r, e_l + (e_r - e_l) * q / nsub)
            gx, gw = _panel_nodes(rule, (e_r - e_l) / nsub)
            half = 0.5 * (ur - ul)
            mid = 0.5 * (ur + ul)
            for n in range(gx.size):
                u = mid + half * gx[n]
                t = r + u
                total += gw[n] * half * math.exp(-(r * u + 0.5 * u * u)) / (d2 + t * t)
            ul = ur
        left = right
        k += 1
    return math.log(total) - 0.5 * (d2 + r * r), True


@_jit
def theta_diff(x, y, a, b, c):
    """``Theta(x) - Theta(y)`` for ``x >= y``, ``Theta(s) = arctan(a s / (b sqrt(c + s^2)))``, without cancellation:
    for ``x, y`` of one sign as ``arctan((X - Y) / (1 + X Y))`` with ``X - Y`` factored exactly."""
    if x == y:
        return 0.0
    wx = math.sqrt(c + x * x)
    wy = math.sqrt(c + y * y)
    X = a * x / (b * wx)
    Y = a * y / (b * wy)
    if x * y <= 0.0:
        return math.atan(X) - math.atan(Y)
    num = (a / b) * c * (x - y) * (x + y) / (wx * wy * (x * wy + y * wx))
    return math.atan(num / (1.0 + X * Y))


@_jit
def _clip(s, lo, hi):
    return min(max(s, lo), hi)


@_jit
def piece_rule(sa, sb, R, fl, bmin, S, rule):
    """Add to ``S[0, f]`` the integral over ``sigma in [sa, sb]`` of ``e^{-(sa u + u^2/2)} / (R + sigma^2) DTheta_f
    sigma / sqrt(c_f + sigma^2)`` (``u = sigma - sa``) for the flags ``fl = (a, b, c, s_lo, s_hi)`` (n, 5), and to
    ``S[1, f]`` the same without ``1 / (R + sigma^2)`` when ``S`` has two rows (the moments' facet masses); returns
    ``(ok, cut)``: False when the panels ran out, ``cut`` the end of the window (< sb: truncated there); ``rule``:
    :func:`_panel_nodes`."""
    U = _exp_point(sa, WINDOW)
    end = sb
    if U < sb - sa:
        end = sa + U
    else:
        U = sb - sa
    if not U > 0.0:
        return True, sb
    r0 = math.sqrt(sa * sa + bmin * bmin)
    left = 0.0
    k = 0
    n = fl.shape[0]
    two = S.shape[0] > 1
    while left < U:
        if k >= _MAX_GRADES or not r0 > 0.0:
            return False, sa + left
        right = min(r0 * (2.0 ** (k + 1) - 1.0), U)
        e_l = sa * left + 0.5 * left * left
        e_r = sa * right + 0.5 * right * right
        nsub = max(1, int(math.ceil((e_r - e_l) / rule[2])))
        ul = left
        for q in range(1, nsub + 1):
            ur = right if q == nsub else _exp_point(sa, e_l + (e_r - e_l) * q / nsub)
            gx, gw = _panel_nodes(rule, (e_r - e_l) / nsub)
            half = 0.5 * (ur - ul)
            mid = 0.5 * (ur + ul)
            for m in range(gx.size):
                u = mid + half * gx[m]
                sg = sa + u
                g = gw[m] * half * math.exp(-(sa * u + 0.5 * u * u))
                gr = g / (R + sg * sg)
                for f in range(n):
                    a, b, c, lo, hi = fl[f, 0], fl[f, 1], fl[f, 2], fl[f, 3], fl[f, 4]
                    val = theta_diff(_clip(sg, lo, hi), _clip(-sg, lo, hi), a, b, c) * sg / math.sqrt(c + sg * sg)
                    S[0, f] += gr * val
                    if two:
                        S[1, f] += g * val
            ul = ur
        left = right
        k += 1
    return True, end


@_jit
def _edge_cuts(lo, hi):
    """The pieces of ``sigma`` where DTheta varies: ``(0, min, max)`` across the foot, else ``(near, far, far)``."""
    if lo < 0.0 < hi:
        return 0.0, min(-lo, hi), max(-lo, hi)
    if lo >= 0.0:
        return lo, hi, hi
    return -hi, -lo, -lo


@_jit
def edge_flag_logs(R, d2, fl, out):
    """:func:`edge_flag_logs_rule` with the full rule."""
    return edge_flag_logs_rule(R, d2, fl, out, FULL_RULE)


@_jit
def edge_flag_logs_rule(R, d2, fl, out, rule):
    """``out[0, f] = log E_f - log(|d_f| / 4 pi^2)`` for the flags ``fl = (a, b, c, s_lo, s_hi)`` (n, 5) of one edge
    (``R``: squared distance of its line, ``d2`` (n,) the flags' squared facet distances) and, when ``out`` has two
    rows, ``out[1, f] = log phi(d_f) C_f`` with ``C_f = (1/2pi) int_edge a b Q(omega) / (omega (b^2 + s^2)) ds`` the
    flag's term of the facet's 3-D mass (the S = 3 edge integral of ``solid.edges``, exchanged the same way);
    returns ``(ok, log bound of the window's truncation of E)`` (without the ``|d| / 4 pi^2``; that of ``phi(d) C``
    is at most the same times ``R + cut^2``, folded in by the caller through :func:`_trunc_bound`); the pieces by
    :func:`piece_rule` and :func:`beyond_rule` with ``rule``."""
    n = fl.shape[0]
    lo, hi = fl[0, 3], fl[0, 4]
    out[:, :] = -_INF
    rows = out.shape[0]
    S = np.zeros((rows, n))
    bmin = _INF
    for f in range(n):
        bmin = min(bmin, fl[f, 1])
    cuts = _edge_cuts(lo, hi)
    ok = True
    trunc = -_INF
    for p in range(2):
        sa, sb = cuts[p], cuts[p + 1]
        if not sb > sa:
            continue
        S[:, :] = 0.0
        good, cut = piece_rule(sa, sb, R, fl, bmin, S, rule)
        ok = ok and good
        if cut < sb:
            trunc = _lse_pair(trunc, _trunc_bound(R, cut))
        base = -0.5 * (R + sa * sa)
        for f in range(n):
            if S[0, f] > 0.0:
                out[0, f] = _lse_pair(out[0, f], base + math.log(S[0, f]))
            if rows > 1 and S[1, f] > 0.0:
                out[1, f] = _lse_pair(out[1, f], base - _LOG_4PI2 + math.log(S[1, f]))
    if math.isfinite(cuts[2]):
        ok = beyond_rule(cuts[2], d2, fl, out, rule) and ok
    return ok, trunc


@_jit
def _beyond(end, d2, fl, out):
    """:func:`beyond_rule` with the full rule."""
    return beyond_rule(end, d2, fl, out, FULL_RULE)


@_jit
def beyond_rule(end, d2, fl, out, rule):
    """Beyond the edge (``sigma > end``) DTheta is constant: ``DTheta J(d, r)`` (:func:`log_j_rule` with
    ``rule``) and ``phi(d) DTheta Q(r) / 2 pi``, ``r = sqrt(c + end^2)``, added to ``out``; returns ok."""
    ok = True
    lo, hi = fl[0, 3], fl[0, 4]
    for f in range(fl.shape[0]):
        dth = theta_diff(hi, lo, fl[f, 0], fl[f, 1], fl[f, 2])
        if dth > 0.0:
            r = math.sqrt(fl[f, 2] + end * end)
            lj, good = log_j_rule(d2[f], r, rule)
            ok = ok and good
            out[0, f] = _lse_pair(out[0, f], math.log(dth) + lj)
            if out.shape[0] > 1:
                out[1, f] = _lse_pair(out[1, f], -0.5 * d2[f] - 0.5 * _LOG_2PI + math.log(dth) + _log_q(r) - _LOG_2PI)
    return ok


@_jit
def _trunc_bound(R, cut):
    """log bound of a piece's integrand beyond ``cut`` (DTheta <= pi, sigma / sqrt(c + sigma^2) <= 1), both sums:
    ``pi e^{-(R + cut^2)/2} tail(cut) max(1, 1 / (R + cut^2))``."""
    q = R + cut * cut
    return math.log(math.pi) - 0.5 * q + _log_gauss_tail(cut) + max(0.0, -math.log(q))


@_jit
def _log_gauss_tail(x):
    """log of ``int_x^inf e^{-(t^2 - x^2)/2} dt`` (``<= sqrt(pi/2)``, the Mills ratio times sqrt(2 pi))."""
    return math.log(0.5 * _erfcx(x / _SQRT2)) + 0.5 * math.log(2.0 * math.pi)


# ---------------------------------------------------------------------------------------------------
# the per-pair kernel
# ---------------------------------------------------------------------------------------------------

class _Work(NamedTuple):
    """Per-pair scratch: ``e`` (G, 2) ridge distances in facets i and j, ``bl`` (L,) line distances, signed log sums
    ``[pos, neg, err, top]`` of the mass ``acc`` (4,), of ``phi(d_i) P_i`` per facet ``facc`` (F, 4) and of
    ``e^{-|g|^2/2} / 2pi P_2`` per ridge ``racc`` (G, 4)."""

    e: np.ndarray
    bl: np.ndarray
    acc: np.ndarray
    facc: np.ndarray
    racc: np.ndarray


@_jit
def add_shifted(acc, sign, lt, shift):
    """Signed log sum ``acc = [pos, neg, err, top]``, kept relative to ``e^shift`` (``top`` not), plus ``sign e^lt``:
    the log sums then stay near 0, where each addition rounds by ``eps (2 + |log partial sum|)`` relative (S' = 5, 6
    keep a facet's or a side's terms so: ``cones5``, ``cone6_kernel``); the term's own error is ``TERM_ULPS eps (1 +
    |lt|)`` with its unshifted log."""
    if lt == -_INF or sign == 0.0:
        return
    v = lt - shift
    if sign > 0.0:
        acc[0] = _lse_pair(acc[0], v)
    else:
        acc[1] = _lse_pair(acc[1], v)
    acc[2] = _lse_pair(acc[2], v + math.log(TERM_ULPS * _EPS * (1.0 + abs(lt))))
    acc[3] = max(acc[3], lt)


@_jit
def _add(acc, sign, lt):
    """Signed log sum ``acc = [pos, neg, err, top]`` plus ``sign e^lt`` (:func:`add_shifted` unshifted: ``lt - 0.0`` is
    ``lt``, the same bits)."""
    add_shifted(acc, sign, lt, 0.0)


@_jit
def _sign(x):
    return 1.0 if x > 0.0 else (-1.0 if x < 0.0 else 0.0)


@_jit
def _ridge_offset(g, r, dn, dm):
    """``(dn - c dm) / sn`` of ridge r (the in-plane distance ``e`` of its foot), ``c = rc + rcl``
    (:func:`ridge_frames`) and ``c dm`` by TwoProduct: relative to eps of itself plus ``1e-31 |dm|``
    (:func:`_offset_errors`)."""
    hi, lo = two_prod_sum(dn, 0.0, -g.rc[r], dm)
    return (hi + (lo - g.rcl[r] * dm)) / g.rsn[r]


@_jit
def _line_offset(g, m, d):
    """``b = (d_k - l1 d_i - l2 d_j) / pn`` of (ridge, line) m with ``lacc``'s ``l``, ``pn`` (:func:`ridge_frames`),
    the products by TwoProduct."""
    r = g.lr[m]
    hi, lo = two_prod_sum(d[g.lk[m]], 0.0, -g.lacc[m, 0], d[g.ri[r]])
    hi, lo = two_prod_sum(hi, lo, -g.lacc[m, 1], d[g.rj[r]])
    return (hi + lo) / g.lacc[m, 2]


@_jit
def _offset_errors(g, d, wk):
    """Relative error bounds ``(ee (G, 2), be (L,))`` of the ridge distances ``wk.e`` (:func:`_ridge_offset`: the
    rounding, ``rcl`` and ``1e-31`` of the products, ``sn``'s ``(|rcl| + 6 eps) / sn``) and of the line distances
    ``wk.bl`` (:func:`_line_offset`: the rounding, ``l``'s error bounds times ``|d|``, ``pn``'s from them)."""
    G, L = g.ri.size, g.lr.size
    ee = np.empty((G, 2))
    be = np.empty(L)
    for r in range(G):
        i, j = g.ri[r], g.rj[r]
        sn = g.rsn[r]
        for side in range(2):
            dn, dm = (d[j], d[i]) if side == 0 else (d[i], d[j])
            x = abs(wk.e[r, side]) * sn
            err = 2.0 * _EPS * x + _EPS * abs(g.rcl[r] * dm) + 2e-31 * (abs(dn) + abs(dm))
            ee[r, side] = (err / x if x > 0.0 else _INF) + (abs(g.rcl[r]) + 6.0 * _EPS) / sn + _EPS
    for m in range(L):
        r = g.lr[m]
        l1, l2, pn, e1, e2 = g.lacc[m, 0], g.lacc[m, 1], g.lacc[m, 2], g.lacc[m, 3], g.lacc[m, 4]
        x = abs(wk.bl[m]) * pn
        err = 2.0 * _EPS * x + e1 * abs(d[g.ri[r]]) + e2 * abs(d[g.rj[r]]) + 1e-31 * abs(d[g.lk[m]])
        be[m] = (err / x if x > 0.0 else _INF) + (e1 + e2 + 6.0 * _EPS * (1.0 + abs(l1) + abs(l2))) / pn + _EPS
    return ee, be


@_jit
def _log_j_slope(d2, r):
    """Bound of ``|d log J(d, r) / d r| = f(r) / J`` (``f(t) = e^{-(d^2 + t^2)/2} / (d^2 + t^2)``, ``J = int_r^inf
    f``): ``(d^2 + (r + u)^2) / q <= e^{(2 r u + u^2) / q}`` (``q = d^2 + r^2``) gives ``J / f(r) >= int_0^inf
    e^{-a (r u + u^2/2)} du = M(r sqrt a) / sqrt a``, ``a = 1 + 2 / q``, and Birnbaum's ``M(x) = Q(x) / phi(x) >= 2 /
    (x + sqrt(x^2 + 4))``: ``f / J <= (a r + sqrt(a^2 r^2 + 4 a)) / 2`` (~``r + 1/r`` far out, ~``2 / r`` at ``d = 0``;
    also bounds ``phi / Q``)."""
    q = d2 + r * r
    a = 1.0 + 2.0 / q
    return 0.5 * (a * r + math.sqrt(a * a * r * r + 4.0 * a))


@_jit
def _ridge_errors(g, d, g_out, wk, ee):
    """The ridge terms' ``W(d_i, |e|)`` errors from ``e``'s (``ee``, :func:`_offset_errors`) into ``wk.acc``: ``|e|
    |d log J / dr| ee`` (:func:`_log_j_slope`) of ``W = |d| / 2pi J(d, |e|)``, ``J`` bounded by :func:`_log_g0`."""
    for r in range(g.ri.size):
        if g_out[r]:
            continue
        for side in range(2):
            f = g.ri[r] if side == 0 else g.rj[r]
            a = abs(wk.e[r, side])
            d2 = d[f] * d[f]
            if d2 == 0.0 or a == 0.0:
                continue
            lw = 0.5 * math.log(d2) - _LOG_2PI + _log_g0(d2, a)
            wk.acc[2] = _lse_pair(wk.acc[2], lw + math.log(a * _log_j_slope(d2, a) * ee[r, side]))


@_jit
def _flag_errors(g, k, wk, lohi, out, errs):
    """The flags' errors of edge k from their ridge and line distances' (``errs = (ee, be, d2, fac, moments)``,
    :func:`_offset_errors`; ``d2`` (n,) the flags' squared facet distances) where they are amplified: beyond the edge
    ``J(d, sqrt(c + end^2))`` moves by ``|d log J / dr| dc / (2 r)`` of itself (:func:`_log_j_slope`), ``dc <= 2 (a^2
    da + b^2 db)``, up to ~``c`` times ``da``, ``db`` far from the mean; the same for the facets' ``C`` terms
    (``out[1]``). The rest moves by at most ``da + 2 db`` (``DTheta``'s log-derivatives in ``a``, ``b``) and ``da +
    db`` (``sigma / sqrt(c + sigma^2)``'s): a few eps where ``e``, ``b`` do not cancel (within ``TERM_ULPS``, measured
    4.8 of 16), and where they do (``b`` 1e-12 of ``d``) the term's sensitivity to ``b`` vanishes like ``b``
    (``DTheta -> pi`` as ``b -> 0``): ``3 (da + db)`` there sent the prior masses' bars of ``[4, 8, 8]`` to 60x,
    measured errors not."""
    ee, be, d2, fac, moments = errs
    end = max(abs(lohi[0]), abs(lohi[1]))
    for m in range(g.eptr[k], g.eptr[k + 1]):
        for side in range(2):
            q = 2 * (m - g.eptr[k]) + side
            da, db = ee[g.lr[m], side], be[m]
            rel = 0.0
            if end < _INF:
                a2, b2 = wk.e[g.lr[m], side] ** 2, wk.bl[m] ** 2
                r = math.sqrt(a2 + b2 + end * end)
                if r > 0.0:
                    rel += (a2 * da + b2 * db) / r * _log_j_slope(d2[q], r)
            if not (rel > 0.0 and d2[q] > 0.0):
                continue
            wk.acc[2] = _lse_pair(wk.acc[2], out[0, q] + 0.5 * math.log(d2[q]) - _LOG_4PI2 + math.log(rel))
            if moments > 0:
                wk.facc[fac[q], 2] = _lse_pair(wk.facc[fac[q], 2], out[1, q] + math.log(rel))


@_jit
def _facets_and_ridges(g, d, wk, moments):
    """Ridge distances into ``wk.e``; the facet terms ``-sign(d_i) Q(|d_i|)`` for feet inside their facets into
    ``wk.acc`` (and ``phi(d_i)`` into ``wk.facc``); returns flagged (the mean on a facet or ridge plane)."""
    F = d.size
    e = wk.e
    foot_out = np.zeros(F, dtype=np.bool_)
    flagged = False
    for r in range(g.ri.size):
        i, j = g.ri[r], g.rj[r]
        e[r, 0] = _ridge_offset(g, r, d[j], d[i])
        e[r, 1] = _ridge_offset(g, r, d[i], d[j])
        foot_out[i] = foot_out[i] or e[r, 0] <= 0.0
        foot_out[j] = foot_out[j] or e[r, 1] <= 0.0
        flagged = flagged or e[r, 0] == 0.0 or e[r, 1] == 0.0
    for f in range(F):
        if g.fvalid[f]:
            flagged = flagged or d[f] == 0.0
            if not foot_out[f]:
                _add(wk.acc, -_sign(d[f]), _log_q(abs(d[f])))
                if moments > 0:
                    _add(wk.facc[f], 1.0, -0.5 * d[f] * d[f] - 0.5 * _LOG_2PI)
    return flagged


@_jit
def _line_offsets(g, d, wk, moments):
    """``b`` of every (ridge, line) into ``wk.bl``; ``+1`` into the ridge sums of feet inside their ridges; returns
    (flagged, ridge foot outside (G,))."""
    g_out = np.zeros(g.ri.size, dtype=np.bool_)
    flagged = False
    for m in range(g.lr.size):
        r = g.lr[m]
        wk.bl[m] = _line_offset(g, m, d)
        g_out[r] = g_out[r] or wk.bl[m] <= 0.0
        flagged = flagged or wk.bl[m] == 0.0
    if moments > 0:
        for r in range(g.ri.size):
            if not g_out[r]:
                di, er = d[g.ri[r]], wk.e[r, 0]
                _add(wk.racc[r], 1.0, -0.5 * (di * di + er * er) - _LOG_2PI)
    return flagged, g_out


@_jit
def _ridge_terms(g, d, g_out, wk, moments):
    """``+sign(d_i) sign(e_ij) W(d_i, |e_ij|)`` for ridges whose foot lies inside (and ``-sign(e_ij) phi(d_i)
    Q(|e_ij|)`` into facet i's mass); False if one is unresolved."""
    ok = True
    for r in range(g.ri.size):
        if g_out[r]:
            continue
        for side in range(2):
            f = g.ri[r] if side == 0 else g.rj[r]
            ee = wk.e[r, side]
            if d[f] == 0.0 or ee == 0.0:
                continue
            lj, good = log_j(d[f] * d[f], abs(ee))
            ok = ok and good
            _add(wk.acc, _sign(d[f]) * _sign(ee), lj + math.log(abs(d[f])) - _LOG_2PI)
            if moments > 0:
                _add(wk.facc[f], -_sign(ee), -0.5 * d[f] * d[f] - 0.5 * _LOG_2PI + _log_q(abs(ee)))
    return ok


@_jit
def _edge_range(g, k, yv):
    """``(s_lo, s_hi)`` of edge k for vertices ``yv`` (V, 4) relative to the mean."""
    u = g.eu[k]
    sa = u[0] * yv[g.eva[k], 0] + u[1] * yv[g.eva[k], 1] + u[2] * yv[g.eva[k], 2] + u[3] * yv[g.eva[k], 3]
    if g.evb[k] >= 0:
        vb = yv[g.evb[k]]
        sb = u[0] * vb[0] + u[1] * vb[1] + u[2] * vb[2] + u[3] * vb[3]
    else:
        ray = g.rays[g.erv[k]]
        sb = _INF if u[0] * ray[0] + u[1] * ray[1] + u[2] * ray[2] + u[3] * ray[3] > 0.0 else -_INF
    return min(sa, sb), max(sa, sb)


@_jit
def _edge_R(g, k, d):
    t = g.etri[k]
    R = 0.0
    for p in range(3):
        for q in range(3):
            R += d[t[p]] * g.eginv[k, p, q] * d[t[q]]
    return max(R, 0.0)


@_jit
def _edge_flags(g, k, d, wk, lohi):
    """The flags of edge k: ``(fl (n, 5), d2 (n,), facet (n,), sign of e (n,), sign of b (n,))``."""
    n = 2 * (g.eptr[k + 1] - g.eptr[k])
    fl = np.empty((n, 5))
    d2 = np.empty(n)
    fac = np.empty(n, dtype=np.intp)
    se = np.empty(n)
    sb = np.empty(n)
    for m in range(g.eptr[k], g.eptr[k + 1]):
        r = g.lr[m]
        for side in range(2):
            f = g.ri[r] if side == 0 else g.rj[r]
            q = 2 * (m - g.eptr[k]) + side
            a, b = abs(wk.e[r, side]), abs(wk.bl[m])
            fl[q, 0], fl[q, 1], fl[q, 2], fl[q, 3], fl[q, 4] = a, b, a * a + b * b, lohi[0], lohi[1]
            d2[q] = d[f] * d[f]
            fac[q] = f
            se[q] = _sign(wk.e[r, side])
            sb[q] = _sign(wk.bl[m])
    return fl, d2, fac, se, sb


@_jit
def _drop_edge(g, k, wk, bound, fac, moments):
    """Edge k left out: its bound into the mass error and (``phi(d) C <= 0.1 e^{-rho0^2/2}``, ``e^{-|g|^2/2} B_2 <=
    e^{-rho0^2/2} / 4``, from the same bound) into its facets' and ridges' errors."""
    wk.acc[2] = _lse_pair(wk.acc[2], bound)
    if moments > 0:
        for q in range(fac.size):
            wk.facc[fac[q], 2] = _lse_pair(wk.facc[fac[q], 2], bound + 4.0)
        for m in range(g.eptr[k], g.eptr[k + 1]):
            r = g.lr[m]
            wk.racc[r, 2] = _lse_pair(wk.racc[r, 2], bound + 4.0)


@_jit
def _vertex_residuals(g, d, yv):
    """``(r, e)`` (P,) aligned with ``g.vfac``: each given vertex's residual ``nrm_f . v - d_f`` on each of its valid
    facets' planes, in Dot2, and its error bound (``2 eps |r| + 1e-29 (|d_f| + sum |nrm_f,a v_a|)``)."""
    P = g.vfac.size
    r = np.empty(P)
    e = np.empty(P)
    for v in range(yv.shape[0]):
        for p in range(g.vptr[v], g.vptr[v + 1]):
            f = g.vfac[p]
            sa = abs(d[f])
            hi, lo = -d[f], 0.0
            for a in range(4):
                x = g.nrm[f, a] * yv[v, a]
                sa += abs(x)
                hi, lo = two_prod_sum(hi, lo, g.nrm[f, a], yv[v, a])
            r[p] = hi + lo
            e[p] = 2.0 * _EPS * abs(r[p]) + 1e-29 * sa
    return r, e


@_jit
def _foot_along(g, k, d):
    """``(u . x_0, its error bound, a bound of 1 - u . u* / |u|)`` of edge k: ``x_0 = N_3^T G^-1 d_3`` the foot of the
    perpendicular from the mean on its line, ``u . x_0 = (N_3 u) . (G^-1 d_3)`` (``eres``: Dot2, within eps of itself
    + 1e-30); ``G^-1 d_3``'s error <= 3 eps sum_q |G^-1_pq d_q| + 16 eps cond(G) ||G^-1||_inf max |d_q| (LU inverse,
    ``cond_inf(G) <= 3 ||G^-1||_inf`` for unit rows); ``u*`` the line's direction, ``1 - u . u* / |u| <= |N_3 u|^2
    ||G^-1|| / 2``."""
    t = g.etri[k]
    gi = g.eginv[k]
    ninf, dmax = 0.0, 0.0
    for p in range(3):
        ninf = max(ninf, abs(gi[p, 0]) + abs(gi[p, 1]) + abs(gi[p, 2]))
        dmax = max(dmax, abs(d[t[p]]))
    inv = 48.0 * _EPS * ninf * ninf * dmax
    f, fe, e2 = 0.0, 0.0, 0.0
    for p in range(3):
        x = gi[p, 0] * d[t[0]] + gi[p, 1] * d[t[1]] + gi[p, 2] * d[t[2]]
        ax = abs(gi[p, 0] * d[t[0]]) + abs(gi[p, 1] * d[t[1]]) + abs(gi[p, 2] * d[t[2]])
        e = g.eres[k, p]
        f += e * x
        fe += abs(e) * (3.0 * _EPS * ax + inv) + (_EPS * abs(e) + 1e-30) * abs(x) + 3.0 * _EPS * abs(e * x)
        e2 += e * e
    return f, fe, 0.5 * e2 * ninf


@_jit
def _end_of(g, k, w, yv, res, foot):
    """``(s, error bound)`` of edge k's end at its vertex ``w`` (0: ``eva``, 1: ``evb``; +-inf and 0 for a ray) from
    the planes: ``s = (u . v - w . r - u . x_0) / |u|``, ``u . v`` in Dot2, ``r`` the given vertex's residuals on its
    planes (``res``, :func:`_vertex_residuals`: Dot2, bounds ``re``), ``w`` of :func:`end_frames` (for a simple vertex
    exact to ``ewk``; otherwise the end keeps the vertex and bounds ``|w . r|`` instead, first order), ``u . x_0`` of
    :func:`_foot_along` (``foot``) and ``1 / |u| = 1 - eun / 2``. The bound adds the roundings (eps of each summand,
    ``gamma_4^2 sum |u_a v_a|`` of Dot2) and ``eps |s|`` for the quadrature's nodes near the end."""
    v = g.eva[k] if w == 0 else g.evb[k]
    u = g.eu[k]
    if v < 0:
        ray = g.rays[g.erv[k]]
        return (_INF if u[0] * ray[0] + u[1] * ray[1] + u[2] * ray[2] + u[3] * ray[3] > 0.0 else -_INF), 0.0
    if not g.ew[k, w, 0] < _INF:
        return u[0] * yv[v, 0] + u[1] * yv[v, 1] + u[2] * yv[v, 2] + u[3] * yv[v, 3], _INF
    r, re = res
    hi, lo, uv = 0.0, 0.0, 0.0
    for a in range(4):
        hi, lo = two_prod_sum(hi, lo, u[a], yv[v, a])
        uv += abs(u[a] * yv[v, a])
    along, spread, aw = 0.0, 0.0, 0.0
    for p in range(g.vptr[v], g.vptr[v + 1]):
        c = g.ew[k, w, p - g.vptr[v]]
        along += c * r[p]
        spread += abs(c) * re[p]
        aw += abs(c * r[p])
    if g.ewk[k, w] < _INF:
        corr, cerr = along, spread + (g.ewk[k, w] + 4.0 * _EPS) * aw
    else:
        corr, cerr = 0.0, abs(along) + spread
    f, fe, ge = foot
    hd = hi * (0.5 * g.eun[k])
    s = hi + (((lo - corr) - f) - hd)
    rnd = 4.0 * _EPS * (abs(lo) + abs(corr) + abs(f) + abs(hd)) + 1e-30 * uv + (3.0 * _EPS + ge) * abs(s)
    return s, cerr + fe + rnd


@_jit
def edge_ends(g, k, d, yv, res):
    """``(s_lo, s_hi, err_lo, err_hi)``: edge k's ends along its unit direction from the foot of the perpendicular
    from the mean, taken from the planes (:func:`_end_of`), and their absolute error bounds. The given vertices lie
    ~1e-15 |v| off their planes (the partition's rounding, and ``v - mean`` rounds to eps of the vertex, not of
    ``v - mean``): ``u . v`` carried that much, which on a tiny edge far from the mean, or 1e-8 from it, moved the
    flags' terms far beyond their rounding (issue 14: c4b bounded it, e4p removes it). ``res``:
    :func:`_vertex_residuals`. (S' = 5, 6 still take ``_edge_range``.)"""
    foot = _foot_along(g, k, d)
    sa, ea = _end_of(g, k, 0, yv, res, foot)
    sb, eb = _end_of(g, k, 1, yv, res, foot)
    if sa <= sb:
        return sa, sb, ea, eb
    return sb, sa, eb, ea


@_jit
def _end_error(g, k, w, yv, res, common):
    """Absolute error bound of the end of edge k at its vertex ``w`` (0: ``eva``, 1: ``evb``; 0 for a ray) against
    the planes' vertex: the vertex off its planes along the edge (``|w . r|``, ``res``: :func:`_vertex_residuals`),
    ``u``'s error (``common``, the same at both ends), the projection's rounding (``4 eps sum |u_a v_a|``) and the
    quadrature nodes' near the end (``eps |s|``); first order."""
    v = g.eva[k] if w == 0 else g.evb[k]
    if v < 0:
        return 0.0
    if not g.ew[k, w, 0] < _INF:  # no coefficients (rank < 4 at the vertex): unbounded (inf * 0 was NaN, skipped)
        return _INF
    r, re = res
    u = g.eu[k]
    s = u[0] * yv[v, 0] + u[1] * yv[v, 1] + u[2] * yv[v, 2] + u[3] * yv[v, 3]
    uv = abs(u[0] * yv[v, 0]) + abs(u[1] * yv[v, 1]) + abs(u[2] * yv[v, 2]) + abs(u[3] * yv[v, 3])
    along, spread = 0.0, 0.0
    for p in range(g.vptr[v], g.vptr[v + 1]):
        c = g.ew[k, w, p - g.vptr[v]]
        along += c * r[p]
        spread += abs(c) * re[p]
    return abs(along) + spread + common + _EPS * (4.0 * uv + abs(s))


@_jit
def _end_errors(g, k, d, yv, res, lo, hi):
    """Absolute error bounds of edge k's ends ``(s_lo, s_hi)`` as :func:`_edge_range` gives them (projections of the
    given vertices: the S' = 5, 6 cross-sections' ends, ``cones5``, ``cone6_kernel``) against the planes' vertices
    (:func:`_end_error`, c4b's bound); ``u``'s error is ``|eres . G^-1 d_3|``, doubled for the rounding of
    ``G^-1 d_3``."""
    t = g.etri[k]
    common = 0.0
    for p in range(3):
        x = g.eginv[k, p, 0] * d[t[0]] + g.eginv[k, p, 1] * d[t[1]] + g.eginv[k, p, 2] * d[t[2]]
        common += 2.0 * abs(g.eres[k, p] * x)
    ea, eb = _end_error(g, k, 0, yv, res, common), _end_error(g, k, 1, yv, res, common)
    u = g.eu[k]
    va = g.eva[k]
    sa = u[0] * yv[va, 0] + u[1] * yv[va, 1] + u[2] * yv[va, 2] + u[3] * yv[va, 3]
    return (ea, eb) if sa == lo else (eb, ea)


@_jit
def facet_end_terms(facc, flags, t, dt):
    """One edge end's first-order error ``t +- dt`` in its facets' moment sums ``facc[:, 2]`` (log; ``flags = (fl, d2,
    fac)``): ``d(phi(d) C) <= phi(d) a b Q(omega_t) / (2 pi omega_t (b^2 + t^2)) dt`` per flag, doubled, with
    ``Q(omega_t) <= Q(|t|)`` where that bound is below 1 % of the facet's error, else ``Q(omega_t)``
    (:func:`_end_bounds`; S' = 5's ``cones5._facet_end_bounds``)."""
    fl, d2, fac = flags
    lq = math.log(2.0 * dt) - 0.5 * _LOG_2PI - _LOG_2PI
    lqt = _log_q(abs(t))
    for f in range(fl.shape[0]):
        a, b = fl[f, 0], fl[f, 1]
        wt = math.sqrt(fl[f, 2] + t * t)
        v = a * b / (wt * (b * b + t * t))
        if v > 0.0:
            lc = lq - 0.5 * d2[f] + math.log(v)
            lc += lqt if lc + lqt <= facc[fac[f], 2] - 4.6 else _log_q(wt)
            facc[fac[f], 2] = _lse_pair(facc[fac[f], 2], lc)


@_jit
def _end_bounds(k, g, wk, R, flags, ends, moments):
    """The ends' errors of edge k (``ends = (s_lo, s_hi, err_lo, err_hi)``, :func:`edge_ends`; ``flags = (fl, d2, fac,
    sign)`` of :func:`_edge_flags` and each flag's sign in the mass) into the error sums. An end ``t`` is shared by
    the edge's flags, and each flag's term moves with it by ``dE_f/dt = -+ |d_f| / (4 pi^2) Theta_f'(t) int_|t|^inf
    g(sigma) h_f(sigma) dsigma`` (``g = e^{-(R + sigma^2)/2} / (R + sigma^2)``, ``h_f = sigma / sqrt(c_f + sigma^2)``;
    only ``sigma > |t|`` sees the end), the same sign for every flag: the mass moves by the SIGNED sum (issue 14: a
    tiny simplex's flags cancel; the sum of absolute values was 10-1000x the error), bounded by
    :func:`_log_end_slope` times :func:`_log_g0`. With moments (first order, doubled, per flag): ``d(phi(d) C) <=
    phi(d) a b Q(omega_t) / (2 pi omega_t (b^2 + t^2)) dt`` and the ridges' ``d(e^{-|g|^2/2} B_2 / 2 pi) <= e^{-(R +
    t^2)/2} b / (2 pi (b^2 + t^2)) dt``."""
    fl, d2, fac, sgn = flags
    room = ends[1] - ends[0]
    for w in range(2):
        t, dt = ends[w], ends[2 + w]
        if not math.isfinite(t):
            continue
        if not dt < _INF:
            wk.acc[2] = _INF
            continue
        q = R + t * t
        if not (dt > 0.0 and q > 0.0):
            continue
        slope = _log_end_slope(fl, d2, sgn, (R, t, dt), min(abs(t), room))
        wk.acc[2] = _lse_pair(wk.acc[2], _log_g0(R, t) + math.log(dt) - _LOG_4PI2 + slope)
        if moments > 0:
            facet_end_terms(wk.facc, (fl, d2, fac), t, dt)
            for m in range(g.eptr[k], g.eptr[k + 1]):
                b = abs(wk.bl[m])
                lr = -0.5 * q + math.log(b / (2.0 * math.pi * (b * b + t * t))) + math.log(2.0 * dt)
                wk.racc[g.lr[m], 2] = _lse_pair(wk.racc[g.lr[m], 2], lr)


@_jit
def _log_g0(R, t):
    """log of a bound of ``G_0 = int_|t|^inf e^{-(R + s^2)/2} / (R + s^2) ds``: the smaller of ``e^{-q/2} / q
    int_|t|^inf e^{-(s^2 - t^2)/2} ds`` and ``e^{-q/2} arctan(sqrt R / |t|) / sqrt R`` (``q = R + t^2``; the second
    where the mean is near the edge's line, ``R << t^2``)."""
    q = R + t * t
    out = -0.5 * q - math.log(q) + _log_gauss_tail(abs(t))
    if R > 0.0:
        sr = math.sqrt(R)
        out = min(out, -0.5 * q + math.log(math.atan2(sr, abs(t))) - math.log(sr))
    return out


@_jit
def _log_end_slope(fl, d2, sgn, rtd, room):
    """log of a bound of ``|sum_f sign_f |d_f| Theta_f'(t) I_f| / G_0`` over an edge's flags (:func:`_end_bounds`;
    ``rtd = (R, t, dt)``, ``I_f = int_|t|^inf g h_f``, ``Theta' = a b / (omega (b^2 + t^2))``): as ``h_f`` rises from
    ``h_f(|t|)`` to 1, ``I_f = h_f(|t|) G_0 + [0, 1 - h_f(|t|)] G_0``, so the first order is ``|sum_f sign_f X_f
    h_f(|t|)| + sum_f X_f (1 - h_f(|t|))`` (``X_f = |d_f| Theta_f'(t)``); over ``|t' - t| <= dt`` each ``X_f I_f``
    changes by at most ``expm1(dt L)`` of itself (``|d log Theta_f'/dt| <= 1 / b_f + 1 / (2 sqrt c_f)``, ``|d log
    I_f / dt| <= g(t) / G_0``, :func:`_log_j_slope` with ``d^2 = R``), plus 16 eps of the plain sum's rounding, all
    times 1.125.
    Where ``dt L > 0.1`` or ``dt`` reaches the other end or the foot (``room``): twice the absolute sum (c4b's bound,
    :func:`_log_theta_sum`)."""
    R, t, dt = rtd
    at = abs(t)
    ssum, spread, absum, lth = 0.0, 0.0, 0.0, 0.0
    for f in range(fl.shape[0]):
        a, b, c = fl[f, 0], fl[f, 1], fl[f, 2]
        wt = math.sqrt(c + t * t)
        x = math.sqrt(d2[f]) * a * b / (wt * (b * b + t * t))
        ssum += sgn[f] * x * (at / wt)
        spread += x * (c / (wt * (wt + at)))
        absum += x
        lth = max(lth, 1.0 / b + 0.5 / math.sqrt(c))
    lever = dt * (lth + _log_j_slope(R, at))
    if not (absum < _INF and lever <= 0.1 and dt < room):
        return math.log(2.0) + _log_theta_sum(fl, d2, t)
    first = abs(ssum) + spread + absum * (16.0 * _EPS + math.expm1(lever))
    return math.log(1.125 * first) if first > 0.0 else -_INF


@_jit
def _log_theta_sum(fl, d2, t):
    """``log sum_f |d_f| Theta_f'(t)`` over the flags ``fl = (a, b, c, ...)`` of an edge, ``Theta' = a b c / (omega
    (b^2 omega^2 + a^2 t^2))``, ``omega^2 = c + t^2``: a plain sum, in logs where it overflows."""
    tot = 0.0
    for f in range(fl.shape[0]):
        a, b, c = fl[f, 0], fl[f, 1], fl[f, 2]
        wt = math.sqrt(c + t * t)
        tot += math.sqrt(d2[f]) * (a * b * c / (wt * (b * b * (c + t * t) + a * a * t * t)))
    if tot < _INF:
        return math.log(tot) if tot > 0.0 else -_INF
    out = -_INF
    for f in range(fl.shape[0]):
        a, b, c = fl[f, 0], fl[f, 1], fl[f, 2]
        wt = math.sqrt(c + t * t)
        out = _lse_pair(out, 0.5 * math.log(d2[f]) + math.log(a) + math.log(b) + math.log(c) - math.log(wt)
                        - math.log(b * b * (c + t * t) + a * a * t * t))
    return out


@_jit
def _flag_logs(R, d2, fl, out, light):
    """:func:`edge_flag_logs` by the full rule, or with ``light`` by the light one (``LIGHT_NODES`` nodes, panels of
    ``LIGHT_DMAX`` nats, the pieces and the ``log_j`` beyond the edge)."""
    if light:
        return edge_flag_logs_rule(R, d2, fl, out, LIGHT_RULE)
    return edge_flag_logs(R, d2, fl, out)


@_jit
def _light_error(wk, f, lt, lc):
    """The light rule's error ``LIGHT_REL e^lt`` of a flag's term ``e^lt`` into the mass's error sum and that of its
    facet-mass term ``e^lc`` into facet ``f``'s (``lc = -inf``: none)."""
    wk.acc[2] = _lse_pair(wk.acc[2], lt + _LOG_LIGHT_REL)
    if lc > -_INF:
        wk.facc[f, 2] = _lse_pair(wk.facc[f, 2], lc + _LOG_LIGHT_REL)


@_jit
def _edge_terms(g, k, d, yv, wk, ref, moments, res, light=False):
    """Flag terms ``-sign(d_i) sign(e_ij) sign(b_ijk) E_ijk`` of edge k into ``wk.acc`` (with ``moments``: ``sign(e)
    sign(b) phi(d_i) C_ijk`` into facet i's sums and ``-sign(b) e^{-|g|^2/2} B_2 / 2pi`` into the ridge's), or only
    its bound into the errors when it is ``_DROP`` nats below ``ref``; ``res = (r, re, ee, be)``: the vertices'
    residuals (:func:`_vertex_residuals`) for the ends (:func:`edge_ends`, their errors through :func:`_end_bounds`)
    and the ridge and line distances' relative errors (:func:`_offset_errors`, through :func:`_flag_errors`);
    ``light``: the integrals by the light rule (:func:`_flag_logs`), whose error bound ``LIGHT_REL`` per term joins
    the error sums; returns ok."""
    lo, hi, elo, ehi = edge_ends(g, k, d, yv, (res[0], res[1]))
    if not lo < hi:
        return True
    R = _edge_R(g, k, d)
    s0 = min(max(0.0, lo), hi)
    rho2 = R + s0 * s0
    fl, d2, fac, se, sb = _edge_flags(g, k, d, wk, (lo, hi))
    n = fl.shape[0]
    # E <= sqrt(pi/2) / (4 pi) e^{-rho^2/2} / rho per flag (DTheta <= pi, |d| / rho^2 <= 1 / rho)
    bound = math.log(n * math.sqrt(0.5 * math.pi) / (4.0 * math.pi)) - 0.5 * rho2 - 0.5 * math.log(max(rho2, 1e-300))
    if bound <= ref - _DROP:
        _drop_edge(g, k, wk, bound + max(0.0, 0.5 * math.log(max(rho2, 1e-300))), fac, moments)
        return True
    out = np.empty((2 if moments > 0 else 1, n))
    ok, trunc = _flag_logs(R, d2, fl, out, light)
    for q in range(n):
        scale = 0.5 * math.log(d2[q]) - _LOG_4PI2 if d2[q] > 0.0 else -_INF
        _add(wk.acc, -_sign(d[fac[q]]) * se[q] * sb[q], out[0, q] + scale)
        if trunc > -_INF:
            wk.acc[2] = _lse_pair(wk.acc[2], trunc + scale)
        if moments > 0:
            _add(wk.facc[fac[q]], se[q] * sb[q], out[1, q])
            if trunc > -_INF:
                wk.facc[fac[q], 2] = _lse_pair(wk.facc[fac[q], 2], trunc - _LOG_4PI2)
        if light:
            _light_error(wk, fac[q], out[0, q] + scale, out[1, q] if moments > 0 else -_INF)
    _flag_errors(g, k, wk, (lo, hi), out, (res[2], res[3], d2, fac, moments))
    sgn = np.empty(n)
    for q in range(n):
        sgn[q] = -_sign(d[fac[q]]) * se[q] * sb[q]
    _end_bounds(k, g, wk, R, (fl, d2, fac, sgn), (lo, hi, elo, ehi), moments)
    if moments > 0:
        ok = _ridge_edges(g, k, wk, (lo, hi), R) and ok
    return ok


@_jit
def _ridge_edges(g, k, wk, lohi, R):
    """``-sign(b) e^{-|g|^2/2} B_2 / 2pi`` of edge k in each of its ridges' 2-D masses (``B_2``: the Owen-T edge term
    of ``planar.kernel.edge_log_B``, ``e^{-|g|^2/2} B_2 / 2pi = phi_2`` mass beyond the edge seen from the ridge's
    foot); returns ok."""
    for m in range(g.eptr[k], g.eptr[k + 1]):
        r = g.lr[m]
        b = wk.bl[m]
        lb, rb = edge_log_B(abs(b), lohi[0], lohi[1])
        if not rb < 1e-3:
            return False
        lg = -0.5 * (R - b * b) - _LOG_2PI  # |g|^2 = R - b^2
        _add(wk.racc[r], -_sign(b), lg + lb)
        wk.racc[r, 2] = _lse_pair(wk.racc[r, 2], lg + lb + math.log(max(rb, _EPS)))
    return True


@_jit
def _signed(acc, lm):
    """``(value, abs error bound)`` of a signed log sum ``[pos, neg, err, top]``, both over ``e^lm``."""
    v = (math.exp(acc[0] - lm) if acc[0] > -_INF else 0.0) - (math.exp(acc[1] - lm) if acc[1] > -_INF else 0.0)
    err = math.exp(acc[2] - lm) if acc[2] > -_INF else 0.0
    big = max(acc[0], acc[1])
    return v, err + (4.0 * _EPS * math.exp(big - lm) if big > -_INF else 0.0)


@_jit
def _moments(g, Nrm, d, wk, lm, mean, cov):
    """Divergence theorem (NOTES §3) from the facet and ridge sums: ``E[y 1] = -sum_i n_i phi(d_i) P_i``, ``E[y y^T
    1] = P I - sum_i phi(d_i) d_i P_i n_i n_i^T + sum_ridges e^{-|g|^2/2}/2pi P_2 (n_i m_ij^T + n_j m_ji^T)`` over
    the mass, centred; returns the absolute error bounds ``(err_mean, err_second)`` of the whitened moments (from
    the sums' bounds, before the mass's own relative error)."""
    err1, err2 = 0.0, 0.0
    for a in range(4):
        mean[a] = 0.0
        for b in range(4):
            cov[a, b] = 1.0 if a == b else 0.0
    for f in range(d.size):
        if not g.fvalid[f]:
            continue
        v, er = _signed(wk.facc[f], lm)
        nmax = max(abs(Nrm[f, 0]), abs(Nrm[f, 1]), abs(Nrm[f, 2]), abs(Nrm[f, 3]))
        err1 += er * nmax
        err2 += er * abs(d[f]) * nmax * nmax
        for a in range(4):
            mean[a] -= v * Nrm[f, a]
            for b in range(4):
                cov[a, b] -= v * d[f] * Nrm[f, a] * Nrm[f, b]
    for r in range(g.ri.size):
        v, er = _signed(wk.racc[r], lm)
        i, j, c, sn = g.ri[r], g.rj[r], g.rc[r], g.rsn[r]
        tmax = 0.0
        for a in range(4):
            for b in range(4):
                t = (Nrm[i, a] * Nrm[j, b] + Nrm[j, a] * Nrm[i, b]
                     - c * (Nrm[i, a] * Nrm[i, b] + Nrm[j, a] * Nrm[j, b])) / sn
                cov[a, b] += v * t
                tmax = max(tmax, abs(t))
        err2 += er * tmax
    for a in range(4):
        for b in range(4):
            cov[a, b] -= mean[a] * mean[b]
    for a in range(4):
        for b in range(a + 1, 4):
            s = 0.5 * (cov[a, b] + cov[b, a])
            cov[a, b] = s
            cov[b, a] = s
    return err1, err2


@_jit
def pair_moments(g, Nrm, d, yv, moments, mean, cov, light=False):
    """``(log_mass, rel, flagged, err_mean, err_second)`` of one pair: offsets ``d`` (F,), vertices ``yv`` (V, 4)
    relative to the mean; with ``moments`` >= 1 the whitened mean and covariance into ``mean``, ``cov``; ``light``:
    the edges' integrals by the light rule, its error bound in the bars (:func:`_edge_terms`)."""
    G, L, F = g.ri.size, g.lr.size, d.size
    wk = _Work(np.empty((G, 2)), np.empty(L), np.array([-_INF, -_INF, -_INF, -_INF]), np.full((F, 4), -_INF),
               np.full((G, 4), -_INF))
    inside = True
    for f in range(F):
        if g.fvalid[f] and d[f] <= 0.0:
            inside = False
    if inside:
        _add(wk.acc, 1.0, 0.0)
    flagged = _facets_and_ridges(g, d, wk, moments)
    fl2, g_out = _line_offsets(g, d, wk, moments)
    if flagged or fl2:
        return -_INF, _INF, True, _INF, _INF
    ok = _ridge_terms(g, d, g_out, wk, moments)
    ee, be = _offset_errors(g, d, wk)
    _ridge_errors(g, d, g_out, wk, ee)
    ref = wk.acc[3]
    r, re = _vertex_residuals(g, d, yv)
    res = (r, re, ee, be)
    for k in range(g.eva.size):
        ok = _edge_terms(g, k, d, yv, wk, ref, moments, res, light) and ok
    pos, neg, err = wk.acc[0], wk.acc[1], wk.acc[2]
    if pos == -_INF:
        return -_INF, _INF, True, _INF, _INF
    ratio = math.exp(neg - pos) if neg > -_INF else 0.0
    if not ratio < 1.0:
        return -_INF, _INF, True, _INF, _INF
    lm = pos + math.log1p(-ratio)
    rel = math.exp(err - lm) + 4.0 * _EPS * (1.0 + ratio) / (1.0 - ratio) + 4.0 * _EPS * (1.0 + abs(lm))
    if not rel <= FIRST_ORDER_CAP:
        rel = _INF
    if moments < 1:
        return lm, rel, not ok, 0.0, 0.0
    err1, err2 = _moments(g, Nrm, d, wk, lm, mean, cov)
    return lm, rel, not ok, err1, err2


@_jit
def pair_log_mass(g, d, yv):
    """``(log_mass, rel, flagged)`` of one pair (:func:`pair_moments` without moments)."""
    lm, rel, fl, _, _ = pair_moments(g, np.zeros((d.size, 4)), d, yv, 0, np.zeros(4), np.zeros((4, 4)))
    return lm, rel, fl


@_jit
def _pairs(g, Nrm, D, Yv, moments, out, light):
    lm, rel, fl, e1, e2, mean, cov = out
    for m in range(D.shape[0]):
        lm[m], rel[m], fl[m], e1[m], e2[m] = pair_moments(g, Nrm, D[m], Yv[m], moments, mean[m], cov[m], light[m])


PAIRS_PER_THREAD = 8  # fewest pairs of one region worth a worker thread (~0.3 ms a pair, ~50 us a hand-off)


def _pairs_threaded(g, Nrm, D, Yv, moments, out, light):
    """:func:`_pairs` over contiguous pieces of the rows in worker threads (``threads.run_split``; the kernel is
    ``nogil``): each pair is computed alone into its own rows, so the bits do not depend on the thread count."""
    def work(a, b):
        _pairs(g, Nrm, D[a:b], Yv[a:b], moments, tuple(o[a:b] for o in out), light[a:b])

    run_split(work, D.shape[0], min_per_thread=PAIRS_PER_THREAD, pieces_per_thread=4)


def cone_moments(Nrm, D, Yv, Yr, *, moments: int = 2, shape: ConeArrays | None = None, light=None):
    """log mass (M,), whitened mean (M, 4), covariance (M, 4, 4), relative error bar (M,), moment error bounds
    (M, 2) (absolute, whitened: mean, second moment) and ``flagged`` (M,) of ``N(0, I_4)`` on ``{Nrm y <= D_m}``,
    the inputs of ``sliced.sliced_moments`` (unit rows ``Nrm`` (F, 4), offsets ``D`` (M, F), vertices ``Yv`` (M, V,
    4) relative to each mean, unit rays ``Yr`` (R, 4); pointed). Flagged rows (the mean on a facet, ridge or edge
    plane; an integral not resolved) must be computed otherwise; the caller judges the bars. ``light`` (M,): rows by
    the light rule (``LIGHT_RULE``, its bound in the bars; None: none)."""
    D = np.ascontiguousarray(np.atleast_2d(D), dtype=np.float64)
    Yv = np.ascontiguousarray(Yv, dtype=np.float64)
    Nrm = np.ascontiguousarray(Nrm, dtype=np.float64)
    if shape is None:
        shape = cone_shape(Nrm, D[0], Yv[0], Yr)
    M = D.shape[0]
    out = (np.full(M, -np.inf), np.full(M, np.inf), np.ones(M, dtype=np.bool_), np.full(M, np.inf),
           np.full(M, np.inf), np.zeros((M, 4)), np.zeros((M, 4, 4)))
    light = np.zeros(M, dtype=np.bool_) if light is None else np.ascontiguousarray(light, dtype=np.bool_)
    if consistent(shape, Yv.shape[1]):
        _pairs_threaded(shape, Nrm, D, Yv, int(moments), out, light)
    lm, rel, fl, e1, e2, mean, cov = out
    return lm, mean, cov, rel, moment_bounds(mean, cov, rel, e1, e2), fl


def moment_bounds(mean, cov, rel, e1, e2):
    """(M, 2) absolute bounds on the whitened mean's and covariance's errors (max-norm): the sums' own ``e1``, ``e2``
    plus the mass's relative error ``rel`` (the moments are the sums over the mass), and ``cov = second - m m^T``:
    ``e_cov <= e_second + (2 |m| + e_mean) e_mean``."""
    with np.errstate(invalid="ignore", over="ignore"):
        r = rel / np.maximum(1.0 - rel, 1e-300)
        mn = np.abs(mean).max(axis=1)
        em = e1 + mn * r + 8.0 * EPS * mn
        second = np.abs(cov + mean[:, :, None] * mean[:, None, :]).max(axis=(1, 2))
        es = e2 + second * r + 16.0 * EPS * second
        ec = es + (2.0 * mn + em) * em
    return np.column_stack([em, ec])


def cone_log_mass(Nrm, D, Yv, Yr, shape: ConeArrays | None = None):
    """log mass (M,), relative error bar (M,) and ``flagged`` (M,) (:func:`cone_moments` without moments; also
    flagged: bars above 1e-6)."""
    lm, _, _, rel, _, fl = cone_moments(Nrm, D, Yv, Yr, moments=0, shape=shape)
    return lm, rel, fl | ~(rel <= 1e-6)


# ---------------------------------------------------------------------------------------------------
# the S = 4 batch's first route (``sliced.sliced_batch``): cones where certified, slices for the rest
# ---------------------------------------------------------------------------------------------------

USE_CONES = True  # False: every pair by the fallback (``sliced.with_fallback``), the route before
# Moment rule of the cones (issue 14's target: posterior mean and covariance within 1e-8 where claimed). The posterior
# moments (eq. 6) are the pairs' moments averaged with the weights (which sum to 1), so a per-pair bound of MOMENT_RULE
# in units of the pair's conditional spread carries to the posterior in units of the largest conditional spread; the
# weights' own errors (relative <= tol = 1e-10, times the spread of the pairs' means, a few units) add ~1e-9: 8e-9 +
# ~1e-9 stays within 1e-8. The bounds themselves are worst cases (TERM_ULPS 16 against 4.8 measured). The slices
# (the fallback) report no moment bound; S = 2, 3 keep 1e-9 / 3e-9 (C.COV_TOL), where refining is cheap. 1e-9 / 3e-9
# here sent 33 of point 0's 101 uncertified [4,8,8,5] pairs to the slices for bounds of 1.0-8.3e-9 (bench_s4.py).
MOMENT_RULE = 8e-9
MEAN_TOL = MOMENT_RULE  # whitened mean error bound, relative to the smallest conditional standard deviation
COV_TOL = MOMENT_RULE  # covariance error bound, relative to its smallest eigenvalue ("relative") or to the unit
_HEAVY_TOL = 1e-10  # the tolerance of a heavy pair (``sliced.DEFAULT_TOL``): lighter pairs loosen the moments' too
# Mass bar the cones accept for any pair (the caller's tol when looser). ``log_marginal_error`` is the pairs' bars
# averaged with the posterior weights, so pairs at 1e-9 add at most 1e-9 to it: within the 1e-8 figure with a
# 5x margin. Measured on the 100 points of [4,8,8,5]: two heavy pairs of one 2-vertex, 6-ray region had cone bars of
# 1.04e-10 and 4.1e-10 against 1e-10 and took 35 s and 26 s CPU in the slices (their nested S = 3 reference
# quadrature), half of the evaluate's 123 s; the slices agreed with the cones to 1.5e-13 and 1.9e-12.
CONE_MASS_TOL = 1e-9


def certified(out, tol, moments, accuracy):
    """(M,) the rows of ``cone_moments``' ``out`` the cones settle: not flagged, mass bar within ``tol`` (M,) (at least
    ``CONE_MASS_TOL``) and, with
    moments, their bounds within ``MEAN_TOL`` / ``COV_TOL`` (times ``tol / 1e-10`` for light pairs) of the smallest
    eigenvalue of the covariance (``accuracy="relative"``) or of the whitened unit."""
    lm, mean, cov, rel, eb, fl = out
    ok = ~fl & np.isfinite(lm) & (rel <= np.maximum(tol, CONE_MASS_TOL))
    if moments < 1:
        return ok
    scale = np.maximum(tol / _HEAVY_TOL, 1.0)
    lam = np.ones(lm.size)
    if moments >= 2 and accuracy == "relative":
        with np.errstate(invalid="ignore"):
            lam = np.where(np.isfinite(cov).all(axis=(1, 2)), np.linalg.eigvalsh(np.nan_to_num(cov))[:, 0], 0.0)
        lam = np.maximum(lam, 0.0)
    ok &= eb[:, 0] <= MEAN_TOL * scale * np.sqrt(lam)
    if moments >= 2:
        ok &= eb[:, 1] <= COV_TOL * scale * lam
    return ok


def _slicing_direction(Yr, closest):
    """The fallback's slicing direction for an unbounded region: ``sliver.bounded_direction`` against the slices'
    default direction (None: keep the default)."""
    if not np.asarray(Yr).size:
        return None
    from .sliced import _directions  # sliced imports this module
    return bounded_direction(Yr, _directions(closest[:1])[0])


COMPILED_REGION = True  # False: cone_moments and certified in numpy per region (the route before; same values)


def cones_numpy(Nrm, D, Yv, Yr, shape, moments, tol, accuracy):
    """``(out, certified)``: :func:`cone_moments`' ``out`` and :func:`certified` of one region's rows (``tol`` (M,)),
    rows with ``tol >= LIGHT_TOL`` by the light rule, those it does not certify again by the full rule
    (``cone_kernel.region_pairs``' steps in numpy)."""
    light = np.asarray(tol) >= LIGHT_TOL
    out = cone_moments(Nrm, D, Yv, Yr, moments=moments, shape=shape, light=light)
    ok = certified(out, tol, moments, accuracy)
    redo = np.nonzero(light & ~ok)[0]
    if redo.size:
        full = cone_moments(Nrm, np.atleast_2d(D)[redo], np.asarray(Yv)[redo], Yr, moments=moments, shape=shape)
        for a, b in zip(out, full):
            a[redo] = b
        ok[redo] = certified(full, np.asarray(tol)[redo], moments, accuracy)
    return out, ok


def _beyond_fallback(out, args, ok, tol, how):
    """(M,) rows of ``out`` (:func:`cone_moments`' tuple; ``args = (Nrm, D, Yv, Yr)``) the cones keep although their
    moment bounds miss the contract (``ok`` False): not flagged, mass certified (:func:`certified`'s test at ``tol``),
    ``how = (moments, accuracy)`` with moments >= 2, and the fallback's covariance bound cannot meet the contract at
    any tolerance (``sliced.covariance_floor`` above ``COV_TOL`` times ``max(tol / 1e-10, 1)``; with
    ``accuracy="relative"``, of the slices' smallest eigenvalue, which is at most the cones' plus 4 (cones' + slices'
    bound): a 4 x 4 max-norm error moves an eigenvalue by at most 4 times it). They keep their bounds, which the
    moments' bars carry (``engine.moment_bar``). Far from the mean both routes' bounds grow like ``|m|^2`` times the
    mass's error (the moments are E[y y^T] - m m^T), the slices' faster: on ``s4-far30-D6`` (pairs 36-37 from the
    mean) the slices spent 200 s CPU a point for covariance bounds of 1.6e-7 against the cones' 1.8e-8."""
    moments, accuracy = how
    lm, _, cov, rel, eb, fl = out
    M = lm.size
    cand = ~ok & ~fl & np.isfinite(lm) & (rel <= np.maximum(tol, CONE_MASS_TOL)) & np.isfinite(eb).all(axis=1)
    Yr = np.asarray(args[3])
    if moments < 2 or not Yr.size or not cand.any():
        return np.zeros(M, dtype=bool)
    from .sliced import covariance_floor  # sliced imports this module

    idx = np.nonzero(cand)[0]
    Nrm, D, Yv = args[0], np.atleast_2d(args[1]), np.asarray(args[2])
    floor = covariance_floor(Nrm, D[idx], Yv[idx], Yr)
    c = COV_TOL * np.maximum(tol[idx] / _HEAVY_TOL, 1.0)
    if accuracy == "relative":
        lam = np.maximum(np.linalg.eigvalsh(cov[idx])[:, 0], 0.0)
        beyond = floor * (1.0 - 4.0 * c) > c * (lam + 4.0 * eb[idx, 1])
    else:
        beyond = floor > c
    out_rows = np.zeros(M, dtype=bool)
    out_rows[idx[beyond]] = True
    return out_rows


def _settled_by_cones(Nrm, D, Yv, Yr, shape, moments, tol, accuracy, lws=None):
    """``(log_mass, mean, cov, rel, certified, moment bounds)`` of one region's rows: :func:`cone_moments` and
    :func:`certified`, as one compiled call per region (``cone_kernel.cone_pairs``, the same values; ``lws``: the
    rows' log weight scales, whose tolerances their masses loosen there) unless ``COMPILED_REGION`` is False."""
    if not COMPILED_REGION:
        out, ok = cones_numpy(Nrm, D, Yv, Yr, shape, moments, tol, accuracy)
        ok = ok | _beyond_fallback(out, (Nrm, D, Yv, Yr), ok, tol, (moments, accuracy))
        return out[0], out[1], out[2], out[3], ok, out[4]
    from .cone_kernel import cone_pairs  # cone_kernel imports this module

    if shape is None:
        shape = cone_shape(np.asarray(Nrm, dtype=np.float64), np.atleast_2d(D)[0], np.asarray(Yv)[0], Yr)
    lm, mean, cov, rel, eb, fl, ok = cone_pairs(Nrm, D, Yv, shape, moments=moments, tol=tol, accuracy=accuracy,
                                                log_weight_scale=lws)
    ok = ok | _beyond_fallback((lm, mean, cov, rel, eb, fl), (Nrm, D, Yv, Yr), ok, tol, (moments, accuracy))
    return lm, mean, cov, rel, ok, eb


def cones_first(fallback, Nrm, D, Yv, Yr, **kw):
    """The pairs of one region (rows of ``D``, ``Yv``) by :func:`cone_moments` where :func:`certified`, the others by
    ``fallback`` (``sliced.with_fallback``; ``kw``: its keywords ``moments, tol, accuracy, closest, rng``; returns
    ``(log_mass, mean, cov, rel, used_rqmc)`` like it). For unbounded regions the fallback slices along
    :func:`_slicing_direction` (every slice bounded, ``sliver``). ``bounds`` (M, 2) in ``kw``, optional: filled with
    the rows' whitened moment bounds (``moment_bounds``; the fallback's, passed on to it as ``bounds``)."""
    M = D.shape[0]
    shape = kw.pop("shape", None)  # the region's flags when the caller keeps them (``sliced.SlicedGeometry``)
    lws = kw.pop("log_weight_scale", None)  # the rows' log weight scales (``cone_kernel.retuned``), or None
    moments, accuracy = kw["moments"], kw["accuracy"]
    tol = np.broadcast_to(np.asarray(kw["tol"], dtype=np.float64), (M,))
    if not USE_CONES:
        return fallback(Nrm, D, Yv, Yr, **kw)
    bounds = kw.pop("bounds", None)
    try:
        lm, mean, cov, rel, ok, eb = _settled_by_cones(Nrm, D, Yv, Yr, shape, moments, tol, accuracy, lws)
    except np.linalg.LinAlgError:  # degenerate combinatorics: every pair by the fallback
        return fallback(Nrm, D, Yv, Yr, **kw, **({} if bounds is None else {"bounds": bounds}))
    if bounds is not None:
        bounds[:] = eb
    used = np.zeros(M, dtype=bool)
    idx = np.nonzero(~ok)[0]
    if idx.size:
        sub = {**kw, "tol": tol[idx], "closest": np.asarray(kw["closest"])[idx]}
        direction = _slicing_direction(Yr, sub["closest"])
        if direction is not None:
            sub["direction"] = direction
        if bounds is not None:
            sub["bounds"] = np.full((idx.size, 2), np.inf)
        l2, m2, c2, r2, u2 = fallback(Nrm, D[idx], Yv[idx], Yr, **sub)
        if bounds is not None:
            bounds[idx] = sub["bounds"]
        lm[idx], rel[idx], used[idx] = l2, r2, u2
        if moments >= 1:
            mean[idx] = m2
        if moments >= 2:
            cov[idx] = c2
    return lm, mean if moments >= 1 else None, cov if moments >= 2 else None, rel, used
