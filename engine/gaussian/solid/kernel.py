"""S = 3: Gaussian mass and moments of a polyhedron, batched over (region, point) pairs (issue 3).

Whitening by ``Sigma_omega = L L^T`` maps region omega to ``{Nrm y <= D}``, ``y ~ N(0, I_3)``, with fixed
unit normals and offsets ``D = (c - H mu) / |H L|`` affine in the mean (as for S = 2, ``planar_batch``);
the combinatorics (which facets bound which edge) is translation invariant and found once per region
(:class:`SolidGeometry`). One compiled pass per pair (:func:`batch_solid_moments`) then does the rest.

Mass: the cone-from-the-origin decomposition, the 3-D analogue of the Owen-T edge formula of ``planar``.
Along each ray from 0 the region is an interval entered through facets with ``d_i < 0`` and left through
facets with ``d_i > 0``, so with ``T(r) = int_r^inf t^2 phi_3(t) dt`` the radial tail,

    P = 1{0 in omega} - sum_i sign(d_i) B_i,   B_i = mass of the cone over facet i beyond its plane.

In facet i's plane (foot of the perpendicular ``f_i = d_i n_i``, in-plane radius ``w``), ``B_i`` is the
integral of the radial function ``|d| T(rho) / rho^3`` (``rho^2 = d^2 + w^2``) over the facet polygon,
which decomposes exactly like a planar mass around ``f_i`` (``e_ij``: signed in-plane distance from
``f_i`` to edge ``j``):

    B_i = 1{f_i in facet i} Q(|d_i|) - sum_j sign(e_ij) C_ij,
    C_ij = (1/2pi) int_{s_lo}^{s_hi} |d_i| Q(rho)/rho * |e_ij| / (e_ij^2 + s^2) ds,   rho^2 = R + s^2,

because ``int T(rho)/rho^2 drho = -Q(rho)/(2 pi rho)`` in closed form (the exponential-integral parts
cancel). ``s`` runs along the 3-D edge from its point closest to the origin (squared distance ``R``), so
the two facets of an edge share ``s``, ``rho`` and ``[s_lo, s_hi]``: one graded Gauss-Legendre quadrature
per edge (:func:`_edge_integrals`) gives both C's, relative to their own size in any tail. The signed
sum's cancellation is measured per pair; pairs above ``FALLBACK_REL`` (loosened for pairs of small
posterior weight, :func:`loosen_factor`), on a boundary, or with degenerate geometry are flagged.

Moments by the divergence theorem (NOTES §3, as in ``facets``) from the same edges and the same nodes:
the facet masses ``P_i = 1{f_i in facet i} - sum_j sign(e_ij) B_ij`` (``B_ij``: the Owen-T edge term of
facet i's polygon) and the edge masses ``Z_ij`` give ``E[y 1] = -sum_i n_i phi(d_i) P_i`` and
``E[y y^T 1] = P I - sum_i phi(d_i) d_i P_i n_i n_i^T + sum_edges e^{-R/2}/(2 pi) Z (n_i m_ij^T + n_j m_ji^T)``
(``m_ij``: unit normal of edge ij inside facet i's plane).

Where those signed sums cancel -- small regions, whose mass is much smaller than the cones beyond their
facets, and covariances ``E[yy^T] - m m^T`` far below ``|m|^2`` -- :func:`cubature_moments` integrates the
bounded region directly (product Gauss rule on tetrahedra, moments about the mean: nothing cancels).
The per-region reference path (:func:`solid_log_mass`, what flagged pairs that the cubature cannot take
fall back to): outer 1-D quadrature over t = u^T y of exact planar slice masses (``quad1d``).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import llvmlite.binding as _llvm
import numba
import numpy as np
from numba import types as _types
from numba.extending import get_cython_function_address

from .. import constants as C
from ..pairs import SolidPairs
from ..planar.batch import whitening_factors
from ..planar.kernel import LOOSEN_WEIGHT, _lse_pair, capped_loosen
from ..planar.reference import planar_log_mass
from ..quad1d import integrate_logconcave
from ..threads import run_split

# erfcx is scipy's own (cython_special), bound by symbol name so that the kernels can be cached on disk
_llvm.add_symbol("dgnexact_solid_erfcx",
                 get_cython_function_address("scipy.special.cython_special", "__pyx_fuse_1erfcx"))
_erfcx = _types.ExternalFunction("dgnexact_solid_erfcx", _types.float64(_types.float64))
_jit = numba.njit(cache=True, nogil=True, error_model="numpy")

_ZERO = 1e-10


def _direction(Yv: np.ndarray) -> np.ndarray:
    u = Yv.reshape(-1, 3).mean(axis=0) if Yv.size else np.zeros(3)
    u = u + np.array([0.1234, 0.0567, -0.0891]) * 1e-3  # generic: avoid exact alignment with a facet
    n = np.linalg.norm(u)
    return u / n if n > 1e-6 else np.array([0.8, 0.48, 0.36])


def solid_log_mass(Nrm: np.ndarray, D: np.ndarray, Yv: np.ndarray, Yr: np.ndarray):
    """log P(y in {Nrm y <= D}) for y ~ N(0, I_3); Yv (M, V, 3) vertices, Yr (R, 3) rays (whitened).

    The per-region reference path: outer quadrature over exact planar slice masses.
    """
    D = np.atleast_2d(D)
    M, F = D.shape
    u = _direction(Yv)
    Q, _ = np.linalg.qr(np.column_stack([u, np.eye(3)]))
    V = Q[:, 1:3]
    a = Nrm @ u
    Nb = Nrm @ V
    nb = np.linalg.norm(Nb, axis=1)
    zero = nb < _ZERO
    scale = np.where(zero, 1.0, nb)
    Nn = np.where(zero[:, None], 0.0, Nb / scale[:, None])
    rel_max = np.zeros(M)

    def logf(T):
        off = (D[:, None, :] - T[:, :, None] * a) / scale
        lm, rel = planar_log_mass(Nn, off.reshape(-1, F))
        lm = lm.reshape(T.shape)
        rel = rel.reshape(T.shape)
        np.maximum(rel_max, np.max(np.where(np.isfinite(lm), rel, 0.0), axis=1), out=rel_max)
        return -0.5 * T * T - _LOG_SQRT_2PI_F + lm

    breaks = Yv @ u if Yv.size else np.full((M, 1), np.nan)
    ru = Yr @ u if Yr.size else np.zeros(0)
    lo = np.min(breaks, axis=1) if Yv.size else np.full(M, -np.inf)
    hi = np.max(breaks, axis=1) if Yv.size else np.full(M, np.inf)
    if np.any(ru < -1e-12):
        lo = np.full(M, -np.inf)
    if np.any(ru > 1e-12):
        hi = np.full(M, np.inf)
    total, _, _ = integrate_logconcave(logf, lo, hi, breaks)
    return total, rel_max + 1e-13


# ---------------------------------------------------------------------------------------------------
# Edge integrals: C of the cone decomposition, B2 of the facet masses, Z of the edge masses
# ---------------------------------------------------------------------------------------------------

_C_NODES = 16  # Gauss-Legendre nodes per panel
_CX, _CW = np.polynomial.legendre.leggauss(_C_NODES)
_C_WINDOW = 40.0  # nats kept below the maximum of each one-sided piece (e^-40 = 4e-18)
_C_DMAX = 20.0  # largest change of the Gaussian exponent s_a u + u^2/2 across one panel
_C_MAX_GRADES = 64  # geometric panels at most (edge within ~1e-18 of a foot: flagged instead)
EDGE_ULPS = 32.0  # relative error of one edge integral <= EDGE_ULPS eps (1 + |log|) (measured against mpmath,
# tests/test_solid_batch.py: at most ~20 eps (1 + |log|) over every scale; the |log| part is the rounding of the
# large exponents such as (R + s_a^2) / 2)
_SQRT2, _INF, _LOG_2PI_F, _LOG_SQRT_2PI_F, _EPS_F = C.SQRT2, C.INF, C.LOG_2PI, C.LOG_SQRT_2PI, C.EPS


@_jit
def _exp_point(sa, e):
    """u >= 0 with s_a u + u^2/2 = e, without cancellation for large s_a."""
    return 2.0 * e / (math.sqrt(sa * sa + 2.0 * e) + sa)


@_jit
def _piece(R, a1, a2, sa, sb, amin, nodes, weights, S):
    """Add to S the five sums over ``u in [0, U]``, ``s = s_a + u``, of ``g = e^{-(s_a u + u^2/2)}`` times
    ``erfcx(rho/sqrt2)/(2 rho (a_1^2 + s^2))``, the same with ``a_2``, ``1/(a_1^2 + s^2)``, ``1/(a_2^2 + s^2)``, 1.

    Panels: geometric ``[r0 (2^k - 1), r0 (2^(k+1) - 1)]`` from the end nearest to the foot (``r0``: the distance
    from there to the nearest singularity, the poles ``s = +-i a``; the branch points of ``rho`` at
    ``+-i sqrt(R)`` are farther), each split so that the exponent changes by at most ``_C_DMAX``; ``U`` cuts
    the piece where the exponent has dropped by ``_C_WINDOW``. Returns False when the panels run out.
    """
    U = min(sb - sa, _exp_point(sa, _C_WINDOW))
    if not U > 0.0:
        return True
    r0 = math.sqrt(sa * sa + amin * amin)
    left = 0.0
    k = 0
    while left < U:
        if k >= _C_MAX_GRADES:
            return False
        right = min(r0 * (2.0 ** (k + 1) - 1.0), U)
        e_l = sa * left + 0.5 * left * left
        e_r = sa * right + 0.5 * right * right
        nsub = max(1, int(math.ceil((e_r - e_l) / _C_DMAX)))
        ul = left
        for q in range(1, nsub + 1):
            ur = right if q == nsub else _exp_point(sa, e_l + (e_r - e_l) * q / nsub)
            half = 0.5 * (ur - ul)
            mid = 0.5 * (ur + ul)
            for n in range(nodes.size):
                u = mid + half * nodes[n]
                s = sa + u
                g = weights[n] * half * math.exp(-(sa * u + 0.5 * u * u))
                rho = math.sqrt(R + s * s)
                k1 = g / (a1 * a1 + s * s)
                k2 = g / (a2 * a2 + s * s)
                c = 0.5 * _erfcx(rho / _SQRT2) / rho
                S[0] += c * k1
                S[1] += c * k2
                S[2] += k1
                S[3] += k2
                S[4] += g
            ul = ur
        left = right
        k += 1
    return True


@_jit
def _edge_integrals(edge, out, S):
    """Logs of the five integrals of one edge ``(R, h1, a1, h2, a2, s_lo, s_hi)`` over ``s in [s_lo, s_hi]`` into
    ``out``; False if not resolved (Gauss-Legendre rule ``_CX``, ``_CW`` on the panels of :func:`_piece`).

    ``C_k = (1/2pi) int h_k Q(rho)/rho a_k/(a_k^2 + s^2) ds`` (``rho^2 = R + s^2``), ``k = 1, 2`` (the edge's
    two facets: ``h = |d|``, ``a = |e|``, ``R = h^2 + a^2``); ``B_k = (1/2pi) int e^{-(a_k^2 + s^2)/2}
    a_k/(a_k^2 + s^2) ds`` (Owen-T edge term of facet k's polygon); ``Z = int phi(s) ds`` (edge mass).
    ``S``: scratch of 5 floats.
    """
    R, h1, a1, h2, a2, s_lo, s_hi = edge
    for k in range(5):
        out[k] = -_INF
    if not s_lo < s_hi:
        return True
    amin = _INF
    if a1 > 0.0:
        amin = a1
    if a2 > 0.0:
        amin = min(amin, a2)
    ok = True
    for p in range(2):
        if s_lo < 0.0 < s_hi:  # straddles the foot: [0, s_hi] and [0, -s_lo]
            sa, sb = 0.0, (s_hi if p == 0 else -s_lo)
        elif p == 1:
            break
        elif s_lo >= 0.0:
            sa, sb = s_lo, s_hi
        else:
            sa, sb = -s_hi, -s_lo
        for k in range(5):
            S[k] = 0.0
        ok = _piece(R, a1, a2, sa, sb, amin, _CX, _CW, S) and ok
        base = (-0.5 * (R + sa * sa), -0.5 * (R + sa * sa), -0.5 * (a1 * a1 + sa * sa), -0.5 * (a2 * a2 + sa * sa),
                -0.5 * sa * sa)
        for k in range(5):
            if S[k] > 0.0:
                out[k] = _lse_pair(out[k], base[k] + math.log(S[k]))
    out[0] = out[0] + math.log(h1) + math.log(a1) - _LOG_2PI_F if h1 > 0.0 and a1 > 0.0 else -_INF
    out[1] = out[1] + math.log(h2) + math.log(a2) - _LOG_2PI_F if h2 > 0.0 and a2 > 0.0 else -_INF
    out[2] = out[2] + math.log(a1) - _LOG_2PI_F if a1 > 0.0 else -_INF
    out[3] = out[3] + math.log(a2) - _LOG_2PI_F if a2 > 0.0 else -_INF
    out[4] = out[4] - _LOG_SQRT_2PI_F
    return ok


@_jit
def _edge_integrals_many(start, stop, edges, out, ok):
    R, h1, a1, h2, a2, s_lo, s_hi = edges
    for m in range(start, stop):
        ok[m] = _edge_integrals((R[m], h1[m], a1[m], h2[m], a2[m], s_lo[m], s_hi[m]), out[m], np.empty(5))


def edge_integrals(R, h1, a1, h2, a2, s_lo, s_hi):
    """Vectorised :func:`_edge_integrals`: ``(log C1, log C2, log B1, log B2, log Z, ok)`` (1-D arrays)."""
    args = tuple(np.ascontiguousarray(np.ravel(x), dtype=np.float64) for x in (R, h1, a1, h2, a2, s_lo, s_hi))
    out = np.empty((args[0].size, 5))
    ok = np.empty(args[0].size, dtype=np.bool_)
    run_split(lambda start, stop: _edge_integrals_many(start, stop, args, out, ok), args[0].size,
              min_per_thread=_PAIRS_PER_BLOCK)
    return out[:, 0], out[:, 1], out[:, 2], out[:, 3], out[:, 4], ok


# ---------------------------------------------------------------------------------------------------
# Per-region edge structure
# ---------------------------------------------------------------------------------------------------

_PARALLEL = 1e-9  # |n_i x n_j| below this: parallel planes (no edge)
_GPAR = 1e-12  # |n_k . t| below this: plane k parallel to the edge
_SHORT = 1e-10  # relative edge length below which an edge is a point (degenerate vertex)
_DROP = C.EDGE_DROP_NATS  # nats below the largest term bound: edges left out of the mass (bounds into the error)
_DROP_MOMENTS = 50.0  # nats below the mass: edge terms of the moments left out (bounds in the error)
FALLBACK_REL = C.SOLID_FALLBACK_REL  # relative mass error bound above which a pair goes to a fallback ...
# ... times LOOSEN_WEIGHT / w (planar_kernel's) for pairs of posterior weight w below LOOSEN_WEIGHT,
MAX_LOOSEN = C.MAX_LOOSEN_REL / FALLBACK_REL  # but never beyond 1e-6 relative (as for S = 2, planar_kernel)
FACET_REL = 1e-12  # a facet mass the per-region path would integrate by slices (its planar fallback threshold)
MOMENT_TOL = 1e-10  # ... whose error bound moves the whitened moments by more than this: fallback
COV_TOL = C.COV_TOL  # covariance cancellation bound (relative to its smallest eigenvalue) above which to refine
MEAN_TOL = 1e-9  # mean error bound (relative to the smallest standard deviation) above which to refine


class SolidGeometry:
    """Whitened normals and the edge structure of each region, padded to ``F`` facets and ``E`` edges.

    An edge is a pair of facets ``(i, j)`` with its bounding facets ``khi``/``klo`` (or none: a ray),
    found once per region (translation does not change the combinatorics). Per pair, with ``D`` the
    offsets: ``e1 = (D_j - c D_i)/sn``, ``e2 = (D_i - c D_j)/sn`` (``c = n_i.n_j``, ``sn = |n_i x n_j|``),
    ``s_hi = (D_k - ah D_i - bh D_j) / gh``, likewise ``s_lo``. ``ok[r]`` False: the region goes to the
    per-region path (no facets, lineality, parallel or redundant rows, S != 3). ``chol`` (R, 3, 3), optional:
    lower-triangular factors of ``covs`` to whiten with instead of re-factoring them.
    """

    def __init__(self, polytopes, covs, chol=None):
        R = len(polytopes)
        covs = np.asarray(covs, dtype=np.float64)
        F = max([p.H.shape[0] for p in polytopes] + [1])
        self.R, self.F = R, F
        self.ok = np.zeros(R, dtype=bool)
        self.Nrm = np.zeros((R, F, 3))
        self.Hn = np.zeros((R, F, 3))  # D = cn - mu @ Hn^T
        self.cn = np.ones((R, F))
        self.fvalid = np.zeros((R, F), dtype=bool)
        self.chol = chol = whitening_factors(covs, chol)
        nf = np.array([p.H.shape[0] for p in polytopes], dtype=np.intp)
        cand = np.array([p.H.shape[0] > 0 and p.H.shape[1] == 3 and not p.lineality.size for p in polytopes],
                        dtype=bool)
        parts = []
        if chol is not None:
            for f in np.unique(nf[cand]):
                idx = np.nonzero(cand & (nf == f))[0]
                H = np.stack([polytopes[r].H for r in idx])  # (G, f, 3)
                c = np.stack([polytopes[r].c for r in idx])
                HL = np.matmul(H, chol[idx])
                nrm = np.sqrt((HL * HL).sum(axis=2))
                good = np.all(nrm > 0.0, axis=1)
                idx, H, c, HL, nrm = idx[good], H[good], c[good], HL[good], nrm[good]
                if not idx.size:
                    continue
                Nrm = HL / nrm[..., None]
                cn = c / nrm
                e = _region_edges(Nrm, cn)
                keep = e.pop("ok")
                idx = idx[keep]
                self.ok[idx] = True
                self.Nrm[idx, :f] = Nrm[keep]
                self.Hn[idx, :f] = (H / nrm[..., None])[keep]
                self.cn[idx, :f] = cn[keep]
                self.fvalid[idx, :f] = True
                parts.append((idx, {k: v[keep] for k, v in e.items()}))
        E = max([int(p[1]["real"].sum(axis=1).max(initial=0)) for p in parts] + [1])
        self.E = E
        z = lambda dt=np.float64: np.zeros((R, E), dtype=dt)
        self.ei, self.ej, self.khi, self.klo = z(np.intp), z(np.intp), z(np.intp), z(np.intp)
        self.evalid, self.has_hi, self.has_lo = z(bool), z(bool), z(bool)
        self.c, self.sn = z(), np.ones((R, E))
        self.ah, self.bh, self.gh = z(), z(), np.ones((R, E))
        self.al, self.bl, self.gl = z(), z(), np.ones((R, E))
        self.m1, self.m2 = np.zeros((R, E, 3)), np.zeros((R, E, 3))
        for idx, e in parts:
            real = e.pop("real")
            g, q = np.nonzero(real)  # region of the group, pair of facets
            slot = (np.cumsum(real, axis=1) - 1)[g, q]
            rows = idx[g]
            self.evalid[rows, slot] = True
            for name, v in e.items():
                getattr(self, name)[rows, slot] = v[g, q]
        self.arrays = SolidArrays(*(getattr(self, name) for name in SolidArrays._fields))


def _region_edges(Nrm, cn):
    """Edges of ``{Nrm y <= cn}`` for G regions of f irredundant rows each (``Nrm`` (G, f, 3), ``cn`` (G, f)).

    Returns per pair of facets ``(i, j)`` (upper triangle, P of them) the arrays of :class:`SolidGeometry`
    (G, P[, 3]), ``real`` (G, P): the pair is an edge, and ``ok`` (G,): False for degenerate combinatorics
    (a facet without edges that is not a whole plane: redundant or duplicated rows).
    """
    G, F, _ = Nrm.shape
    I, J = np.triu_indices(F, 1)
    ni, nj = Nrm[:, I], Nrm[:, J]  # (G, P, 3)
    cross = np.cross(ni, nj)
    sn = np.sqrt((cross * cross).sum(axis=2))
    c = (ni * nj).sum(axis=2)
    nonpar = sn > _PARALLEL
    t = cross / np.where(nonpar, sn, 1.0)[..., None]
    M = np.stack([ni, nj, t], axis=2)  # rows n_i, n_j, t
    M[~nonpar] = np.eye(3)
    Minv = np.linalg.inv(M)
    alpha, beta = Minv[..., 0], Minv[..., 1]  # p0 = alpha D_i + beta D_j: on both planes, orthogonal to t
    p0 = alpha * cn[:, I, None] + beta * cn[:, J, None]
    g = np.einsum("gpk,gfk->gpf", t, Nrm)  # n_k . t
    r = cn[:, None, :] - np.einsum("gpk,gfk->gpf", p0, Nrm)
    other = np.ones((I.size, F), dtype=bool)
    other[np.arange(I.size), I] = False
    other[np.arange(I.size), J] = False
    upper = other & (g > _GPAR)
    lower = other & (g < -_GPAR)
    with np.errstate(divide="ignore", invalid="ignore"):
        Q = r / np.where(upper | lower, g, 1.0)
    qh = np.where(upper, Q, np.inf)
    ql = np.where(lower, Q, -np.inf)
    khi = np.argmin(qh, axis=2)
    klo = np.argmax(ql, axis=2)
    s_hi = np.take_along_axis(qh, khi[..., None], axis=2)[..., 0]
    s_lo = np.take_along_axis(ql, klo[..., None], axis=2)[..., 0]
    par = other[None] & ~(upper | lower)
    blocked = np.any(par & (r < -1e-12 * (1.0 + np.abs(cn)[:, None, :])), axis=2)
    with np.errstate(invalid="ignore"):
        scale = (1.0 + np.where(np.isfinite(s_hi), np.abs(s_hi), 0.0)
                 + np.where(np.isfinite(s_lo), np.abs(s_lo), 0.0))
        real = nonpar & ~blocked & (s_hi - s_lo > _SHORT * scale)
    onehot = np.eye(F)
    deg = real.astype(float) @ (onehot[I] + onehot[J])  # (G, F) edges per facet
    # a facet without edges must be a whole plane: every other row parallel to it
    C = np.abs(np.einsum("gik,gjk->gij", Nrm, Nrm))
    lone = np.any(C < 1.0 - 1e-12, axis=2)  # some row not parallel
    ok = ~np.any((deg == 0) & lone, axis=1)
    has_hi, has_lo = np.isfinite(s_hi), np.isfinite(s_lo)
    nk_h = np.take_along_axis(Nrm, khi[..., None], axis=1)
    nk_l = np.take_along_axis(Nrm, klo[..., None], axis=1)
    gh = np.take_along_axis(g, khi[..., None], axis=2)[..., 0]
    gl = np.take_along_axis(g, klo[..., None], axis=2)[..., 0]
    ssafe = np.where(nonpar, sn, 1.0)[..., None]
    return {
        "ok": ok, "real": real,
        "ei": np.broadcast_to(I, real.shape), "ej": np.broadcast_to(J, real.shape), "khi": khi, "klo": klo,
        "c": c, "sn": np.where(nonpar, sn, 1.0),
        "ah": (nk_h * alpha).sum(-1), "bh": (nk_h * beta).sum(-1), "gh": np.where(has_hi, gh, 1.0),
        "al": (nk_l * alpha).sum(-1), "bl": (nk_l * beta).sum(-1), "gl": np.where(has_lo, gl, 1.0),
        "has_hi": has_hi, "has_lo": has_lo,
        "m1": (nj - c[..., None] * ni) / ssafe,  # edge normal inside facet i's plane
        "m2": (ni - c[..., None] * nj) / ssafe,  # ... inside facet j's plane
    }


@_jit
def loosen_factor(log_weight_bound):
    """Thresholds' multiplier for a pair whose posterior weight is at most exp(log_weight_bound)."""
    return capped_loosen(log_weight_bound, MAX_LOOSEN)


def loosen_factors(log_weight_bound):
    """Vectorised :func:`loosen_factor`."""
    with np.errstate(over="ignore", invalid="ignore"):
        f = LOOSEN_WEIGHT * np.exp(-np.asarray(log_weight_bound, dtype=np.float64))
    return np.where(f > 1.0, np.minimum(f, MAX_LOOSEN), 1.0)


@_jit
def _log_q(x):
    """log Q(x) = log P(N(0,1) > x) for x >= 0."""
    return math.log(0.5 * _erfcx(x / _SQRT2)) - 0.5 * x * x


@_jit
def _sign(x):
    return 1.0 if x > 0.0 else (-1.0 if x < 0.0 else 0.0)


@_jit
def _log_diff(pos, neg):
    """(log(e^pos - e^neg), e^(neg - pos)); -inf when not positive."""
    if pos == -_INF:
        return -_INF, _INF if neg > -_INF else 0.0
    ratio = math.exp(neg - pos)
    if ratio >= 1.0:
        return -_INF, ratio
    return pos + math.log1p(-ratio), ratio


@_jit
def _term_err(lt):
    """log of the absolute error of a term exp(lt) computed in log space."""
    return lt + math.log(EDGE_ULPS * _EPS_F * (1.0 + abs(lt))) if lt > -_INF else -_INF


class SolidArrays(NamedTuple):
    """The arrays of :class:`SolidGeometry` the compiled kernel reads, passed to it whole (numba types a NamedTuple
    of arrays): facets ``Nrm``, ``Hn``, ``cn``, ``fvalid`` (R, F[, 3]) and edges (R, E[, 3]) -- facet pair ``ei``,
    ``ej``, bounding facets ``khi``/``klo`` (``has_hi``/``has_lo``), ``c = n_i.n_j``, ``sn = |n_i x n_j|``, the end
    coefficients ``ah, bh, gh``/``al, bl, gl`` and the in-facet edge normals ``m1``, ``m2``."""

    Nrm: np.ndarray
    Hn: np.ndarray
    cn: np.ndarray
    fvalid: np.ndarray
    evalid: np.ndarray
    ei: np.ndarray
    ej: np.ndarray
    khi: np.ndarray
    klo: np.ndarray
    has_hi: np.ndarray
    has_lo: np.ndarray
    c: np.ndarray
    sn: np.ndarray
    ah: np.ndarray
    bh: np.ndarray
    gh: np.ndarray
    al: np.ndarray
    bl: np.ndarray
    gl: np.ndarray
    m1: np.ndarray
    m2: np.ndarray


class _Work(NamedTuple):
    """Per-thread scratch of the kernel: ``wf`` (13, max(F, E, 5)) floats, ``wb`` (4, max(F, E, 5)) flags, ``vals``
    (E, 5) the logs of each edge's five integrals."""

    wf: np.ndarray
    wb: np.ndarray
    vals: np.ndarray


@_jit
def _offsets(g, r, mu, wk):
    """``D = cn - Hn mu`` of region r into ``wk.wf[0]``: ``(inside, flagged)`` (origin on a facet plane)."""
    F = g.Nrm.shape[1]
    D = wk.wf[0, :F]
    inside = True
    flagged = False
    for f in range(F):
        D[f] = g.cn[r, f] - (g.Hn[r, f, 0] * mu[0] + g.Hn[r, f, 1] * mu[1] + g.Hn[r, f, 2] * mu[2])
        if g.fvalid[r, f]:
            if D[f] <= 0.0:
                inside = False
            if D[f] == 0.0:
                flagged = True
    return inside, flagged


@_jit
def _edges(g, r, wk):
    """Per edge: in-plane distances ``e1``, ``e2`` of the feet, ends ``[slo, shi]``, ``R2`` and ``rho2``, which
    edges are active and which facets' feet lie outside; True if a foot is on an edge line (flagged)."""
    F, E = g.Nrm.shape[1], g.evalid.shape[1]
    wf, wb = wk.wf, wk.wb
    D = wf[0, :F]
    e1, e2, slo, shi, R2, rho2 = wf[1, :E], wf[2, :E], wf[3, :E], wf[4, :E], wf[5, :E], wf[6, :E]
    act, foot_out = wb[0, :E], wb[1, :F]
    act[:] = False
    foot_out[:] = False
    wb[2, :E] = False
    wb[3, :E] = False
    flagged = False
    for k in range(E):
        if not g.evalid[r, k]:
            continue
        i, j = g.ei[r, k], g.ej[r, k]
        di, dj = D[i], D[j]
        e1[k] = (dj - g.c[r, k] * di) / g.sn[r, k]
        e2[k] = (di - g.c[r, k] * dj) / g.sn[r, k]
        shi[k] = (D[g.khi[r, k]] - g.ah[r, k] * di - g.bh[r, k] * dj) / g.gh[r, k] if g.has_hi[r, k] else _INF
        slo[k] = (D[g.klo[r, k]] - g.al[r, k] * di - g.bl[r, k] * dj) / g.gl[r, k] if g.has_lo[r, k] else -_INF
        if not slo[k] < shi[k]:
            continue
        act[k] = True
        if e1[k] <= 0.0:
            foot_out[i] = True
        if e2[k] <= 0.0:
            foot_out[j] = True
        if e1[k] == 0.0 or e2[k] == 0.0:
            flagged = True
        R2[k] = di * di + e1[k] * e1[k]
        s0 = min(max(0.0, slo[k]), shi[k])
        rho2[k] = R2[k] + s0 * s0
    return flagged


@_jit
def _edge_values(g, r, wk, k):
    """The five integrals of edge k into ``wk.vals[k]`` (once per pair); False if not resolved."""
    F = g.Nrm.shape[1]
    D, wf = wk.wf[0, :F], wk.wf
    i, j = g.ei[r, k], g.ej[r, k]
    wk.wb[2, k] = True
    edge = (wf[5, k], abs(D[i]), abs(wf[1, k]), abs(D[j]), abs(wf[2, k]), wf[3, k], wf[4, k])
    return _edge_integrals(edge, wk.vals[k], wf[12, :5])


@_jit
def _mass(g, r, wk, inside):
    """Cone decomposition ``1{inside} - sum_i sign(d_i) [foot_in_i Q(|d_i|) - sum_j sign(e_ij) C_ij]`` as signed
    log sums: ``(pos, neg, err, flagged)`` (``err``: log of the absolute error bound)."""
    F, E = g.Nrm.shape[1], g.evalid.shape[1]
    wf = wk.wf
    D, e1, e2, rho2, lq = wf[0, :F], wf[1, :E], wf[2, :E], wf[6, :E], wf[7, :F]
    act, foot_out = wk.wb[0, :E], wk.wb[1, :F]
    ref = 0.0 if inside else -_INF
    lq[:] = -_INF
    for f in range(F):
        if g.fvalid[r, f] and not foot_out[f]:
            lq[f] = _log_q(abs(D[f]))
            ref = max(ref, lq[f])
    for k in range(E):
        if act[k]:
            ref = max(ref, math.log(0.25) - 0.5 * rho2[k])
    pos = 0.0 if inside else -_INF
    neg = -_INF
    err = -_INF
    for f in range(F):
        if lq[f] > -_INF and D[f] != 0.0:
            if D[f] < 0.0:
                pos = _lse_pair(pos, lq[f])
            else:
                neg = _lse_pair(neg, lq[f])
            err = _lse_pair(err, _term_err(lq[f]))
    flagged = False
    for k in range(E):
        if not act[k]:
            continue
        bound = math.log(0.25) - 0.5 * rho2[k]
        if bound <= ref - _DROP:
            err = _lse_pair(err, bound + math.log(2.0))
            continue
        if not _edge_values(g, r, wk, k):
            flagged = True
        i, j = g.ei[r, k], g.ej[r, k]
        for side in range(2):
            lc = wk.vals[k, side]
            sg = _sign(D[i]) * _sign(e1[k]) if side == 0 else _sign(D[j]) * _sign(e2[k])
            if sg > 0.0:
                pos = _lse_pair(pos, lc)
            elif sg < 0.0:
                neg = _lse_pair(neg, lc)
            err = _lse_pair(err, _term_err(lc))
    return pos, neg, err, flagged


@_jit
def _facet_masses(g, r, wk, log_mass):
    """Facet masses ``P_i = foot_in_i - sum_j sign(e_ij) B_ij`` as signed log sums in ``wf[8:11]`` (edge terms
    below the moments' window go into the error); marks the edges used; False if an edge is not resolved."""
    F, E = g.Nrm.shape[1], g.evalid.shape[1]
    wf = wk.wf
    e1, e2, R2, rho2 = wf[1, :E], wf[2, :E], wf[5, :E], wf[6, :E]
    act, foot_out, done, use = wk.wb[0, :E], wk.wb[1, :F], wk.wb[2, :E], wk.wb[3, :E]
    lim = log_mass - _DROP_MOMENTS
    fpos, fneg, ferr = wf[8, :F], wf[9, :F], wf[10, :F]
    fpos[:] = -_INF
    fneg[:] = -_INF
    ferr[:] = -_INF
    for f in range(F):
        if g.fvalid[r, f] and not foot_out[f]:
            fpos[f] = 0.0
            ferr[f] = math.log(_EPS_F)
    for k in range(E):
        if not act[k]:
            continue
        i, j = g.ei[r, k], g.ej[r, k]
        if math.log(0.5) - 0.5 * rho2[k] <= lim:  # phi(d) B and e^{-R/2} Z are below e^{-rho^2/2}/2
            s2 = rho2[k] - R2[k]
            ferr[i] = _lse_pair(ferr[i], math.log(0.5) - 0.5 * (s2 + e1[k] * e1[k]))
            ferr[j] = _lse_pair(ferr[j], math.log(0.5) - 0.5 * (s2 + e2[k] * e2[k]))
            continue
        if not done[k] and not _edge_values(g, r, wk, k):
            return False
        use[k] = True
        for side in range(2):
            f = i if side == 0 else j
            ek = e1[k] if side == 0 else e2[k]
            lb = wk.vals[k, 2 + side]
            if ek > 0.0:
                fneg[f] = _lse_pair(fneg[f], lb)
            else:
                fpos[f] = _lse_pair(fpos[f], lb)
            ferr[f] = _lse_pair(ferr[f], _term_err(lb))
    return True


@_jit
def _first_moments(g, r, wk, log_mass, mean, cov):
    """``E[y 1] = -sum_i n_i phi(d_i) P_i`` and the facet part of ``E[yy^T 1]`` (over the mass) into ``mean`` and
    ``cov``: ``(err1, err2)`` their error bounds from the facet masses' bounds."""
    F = g.Nrm.shape[1]
    wf = wk.wf
    D, fpos, fneg, ferr = wf[0, :F], wf[8, :F], wf[9, :F], wf[10, :F]
    Nrm = g.Nrm
    for a in range(3):
        mean[a] = 0.0
        for b in range(3):
            cov[a, b] = 1.0 if a == b else 0.0
    err1 = 0.0
    err2 = 0.0
    for f in range(F):
        if not g.fvalid[r, f]:
            continue
        lp, _ = _log_diff(fpos[f], fneg[f])
        lphi = -0.5 * D[f] * D[f] - _LOG_SQRT_2PI_F
        if lp == -_INF:  # no terms left (all below the moments' window), or cancelled: only its error bound
            qe = math.exp(lphi + ferr[f] - log_mass)
            err1 += qe
            err2 += qe * (1.0 + abs(D[f]))
            continue
        q = math.exp(lphi + lp - log_mass)
        # only what the per-region path would integrate differently: its planar rule falls back to slices
        # when the cancellation sum |terms| / P_i exceeds FACET_REL / 1e-15 (~1e-15 per term)
        if _lse_pair(fpos[f], fneg[f]) - lp > math.log(FACET_REL / 1e-15):
            qe = math.exp(lphi + ferr[f] - log_mass)
            err1 += qe
            err2 += qe * (1.0 + abs(D[f]))
        for a in range(3):
            mean[a] -= q * Nrm[r, f, a]
            for b in range(3):
                cov[a, b] -= q * D[f] * Nrm[r, f, a] * Nrm[r, f, b]
    return err1, err2


@_jit
def _second_moments(g, r, wk, log_mass, mean, cov):
    """Edge part of ``E[yy^T 1]``: ``sum_edges e^{-R/2}/(2 pi) Z (n_i m_ij^T + n_j m_ji^T)``, then centred and
    symmetrised; returns ``|m|``."""
    E = g.evalid.shape[1]
    R2, use = wk.wf[5, :E], wk.wb[3, :E]
    for k in range(E):
        if not use[k]:
            continue
        v = math.exp(-0.5 * R2[k] - _LOG_2PI_F + wk.vals[k, 4] - log_mass)
        i, j = g.ei[r, k], g.ej[r, k]
        for a in range(3):
            for b in range(3):
                cov[a, b] += v * (g.Nrm[r, i, a] * g.m1[r, k, b] + g.Nrm[r, j, a] * g.m2[r, k, b])
    return _centre(mean, cov)


@_jit
def _centre(mean, cov):
    """``cov -= m m^T``, symmetrised; returns ``|m|``."""
    mn = math.sqrt(mean[0] * mean[0] + mean[1] * mean[1] + mean[2] * mean[2])
    for a in range(3):
        for b in range(3):
            cov[a, b] -= mean[a] * mean[b]
    for a in range(3):
        for b in range(a + 1, 3):
            s = 0.5 * (cov[a, b] + cov[b, a])
            cov[a, b] = s
            cov[b, a] = s
    return mn


@_jit
def _smallest_eigenvalue_bound(cov):
    """``det / e2`` (``e2``: the sum of the 2 x 2 principal minors), a lower bound on the smallest eigenvalue of a
    3 x 3 covariance; 0 when not positive."""
    e2 = (cov[0, 0] * cov[1, 1] - cov[0, 1] * cov[0, 1] + cov[0, 0] * cov[2, 2] - cov[0, 2] * cov[0, 2]
          + cov[1, 1] * cov[2, 2] - cov[1, 2] * cov[1, 2])
    det = (cov[0, 0] * (cov[1, 1] * cov[2, 2] - cov[1, 2] * cov[1, 2])
           - cov[0, 1] * (cov[0, 1] * cov[2, 2] - cov[1, 2] * cov[0, 2])
           + cov[0, 2] * (cov[0, 1] * cov[1, 2] - cov[1, 1] * cov[0, 2]))
    return det / e2 if det > 0.0 and e2 > 0.0 else 0.0


@_jit
def _needs_refine(cov, rel, mn, err1, light_log, cov_relative):
    """E[yy^T] - m m^T: a relative error delta of the mass moves the covariance by ~delta (1 + |m|^2), held to
    ``COV_TOL`` of its smallest eigenvalue (``cov_relative``, else of the whitened unit); the mean's error ~ delta
    |m| to ``MEAN_TOL`` of the smallest standard deviation. For pairs of posterior weight w below LOOSEN_WEIGHT an
    absolute allowance ``LOOSEN_WEIGHT / w - 1`` is added (``light_log = -log w``)."""
    lam = _smallest_eigenvalue_bound(cov)
    light = max(LOOSEN_WEIGHT * math.exp(min(light_log, 700.0)) - 1.0, 0.0)
    scale = lam if cov_relative else 1.0
    refine = not (rel + 64.0 * _EPS_F) * (1.0 + mn * mn) <= COV_TOL * (scale + light)
    return refine or not (rel + 64.0 * _EPS_F) * mn + err1 <= MEAN_TOL * math.sqrt(scale + light)


@_jit
def _pair(g, r, mu, lws, moments, cov_relative, mean, cov, wk):
    """One (region r of ``g``, mean ``mu``) pair: ``(log_mass, rel_err, flagged, refine)``; whitened mean and cov
    into the arrays. ``lws``: the caller's bound ``w <= exp(lws) * mass`` on the pair's posterior weight (+inf:
    none); ``cov_relative``: covariance accuracy relative to its smallest eigenvalue (else to the whitened unit)."""
    inside, flagged = _offsets(g, r, mu, wk)
    flagged = _edges(g, r, wk) or flagged
    pos, neg, err, unresolved = _mass(g, r, wk, inside)
    flagged = flagged or unresolved
    log_mass, ratio = _log_diff(pos, neg)
    if log_mass == -_INF:
        return log_mass, _INF, True, False
    rel = math.exp(err - log_mass) + 4.0 * _EPS_F * (1.0 + ratio) / max(1.0 - ratio, 1e-300)
    loosen = loosen_factor(lws + log_mass)
    # the logs of the terms are rounded to ~eps |log| (they are, in exact arithmetic, for the rounded offsets
    # too): that part of the bound is accepted up to a cancellation of 64
    if not rel <= FALLBACK_REL * loosen + 64.0 * EDGE_ULPS * _EPS_F * (1.0 + abs(log_mass)):
        flagged = True
    if moments < 1 or flagged:
        return log_mass, rel, flagged, False
    if not _facet_masses(g, r, wk, log_mass):
        return log_mass, rel, True, False
    err1, err2 = _first_moments(g, r, wk, log_mass, mean, cov)
    if moments >= 2:
        mn = _second_moments(g, r, wk, log_mass, mean, cov)
    else:
        mn = _centre(mean, cov)
    tot = err1 if moments < 2 else err2 + (2.0 * mn + 1.0) * err1
    if not tot <= MOMENT_TOL * loosen:
        flagged = True
    refine = moments >= 2 and _needs_refine(cov, rel, mn, err1, -(lws + log_mass), cov_relative)
    return log_mass, rel, flagged, refine


_PAIRS_PER_BLOCK = 256


@_jit
def _pairs_block(start, stop, g, pr, mu, lws, moments, cov_relative, out):
    """Pairs ``start:stop`` with one scratch; ``out``: (log_mass, rel, flagged, refine, mean, cov) arrays (P, ...)."""
    n = max(g.Nrm.shape[1], g.evalid.shape[1], 5)
    wk = _Work(np.empty((13, n)), np.empty((4, n), dtype=np.bool_), np.empty((g.evalid.shape[1], 5)))
    log_mass, rel, flagged, refine, mean, cov = out
    for p in range(start, stop):
        log_mass[p], rel[p], flagged[p], refine[p] = _pair(g, pr[p], mu[p], lws[p], moments, cov_relative, mean[p],
                                                           cov[p], wk)


def batch_solid_moments(geo, pr: np.ndarray, mu: np.ndarray, moments: int = 2, log_weight_scale=None,
                        cov_relative: bool = True) -> SolidPairs:
    """Whitened mass and moments for pairs (region ``pr[p]`` of ``geo``, mean ``mu[p]``), P pairs.

    Returns :class:`pairs.SolidPairs` (``log_mass (P,), mean (P, 3), cov (P, 3, 3), rel (P,), flagged (P,),
    refine (P,)``) in
    whitened coordinates of each pair's region; ``flagged`` pairs (boundary cases, cancellation beyond the
    error budget) must be recomputed by the caller; ``refine`` pairs have a covariance whose cancellation
    (``E[yy^T] - m m^T`` with ``|m|^2`` far above its smallest eigenvalue) may exceed ``COV_TOL`` relative
    to that eigenvalue (``cov_relative``; else relative to the whitened unit, Sigma_omega:
    ``PairRequest.accuracy``): the caller should use the cubature where it applies (small bounded regions).
    ``log_weight_scale`` (P,): the caller's bound
    ``w <= exp(log_weight_scale) * mass`` on each pair's posterior weight; thresholds are loosened by
    :func:`loosen_factor` for pairs of weight below ``LOOSEN_WEIGHT``.
    """
    pr = np.ascontiguousarray(pr, dtype=np.intp)
    mu = np.ascontiguousarray(mu, dtype=np.float64)
    P = pr.size
    lws = np.full(P, np.inf) if log_weight_scale is None else np.ascontiguousarray(log_weight_scale, dtype=np.float64)
    log_mass, rel = np.empty(P), np.empty(P)
    flagged, refine = np.empty(P, dtype=np.bool_), np.empty(P, dtype=np.bool_)
    mean, cov = np.zeros((P, 3)), np.zeros((P, 3, 3))
    g, out = geo.arrays, (log_mass, rel, flagged, refine, mean, cov)
    run_split(lambda start, stop: _pairs_block(start, stop, g, pr, mu, lws, moments, bool(cov_relative), out), P,
              min_per_thread=_PAIRS_PER_BLOCK, pieces_per_thread=8)
    return SolidPairs(log_mass, mean if moments >= 1 else None, cov if moments >= 2 else None, rel, flagged,
                         refine)


# ---------------------------------------------------------------------------------------------------
# Small bounded regions: direct cubature (no cancellation)
# ---------------------------------------------------------------------------------------------------


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
