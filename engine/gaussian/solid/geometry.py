"""S = 3 region geometry: each region whitened once per ``evaluate``, its edges found once.

Whitening by ``Sigma_omega = L L^T`` (Theorem 1, eq. 5) maps region omega to ``{Nrm y <= D}``,
``y ~ N(0, I_3)``, with fixed unit normals ``Nrm = H L / |H L|`` and offsets ``D = (c - H mu) / |H L|`` affine
in the mean ``mu_omega(x)`` (as for S = 2, ``planar.batch``); the combinatorics (which facets bound which edge)
is translation invariant and found once per region (:class:`SolidGeometry`), then handed WHOLE to the compiled
kernel as the NamedTuple :class:`SolidArrays`.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..dot2 import add_product_ops
from ..dot2 import two_prod_ops as _two_prod
from ..planar.batch import whitening_factors

_PARALLEL = 1e-9  # |n_i x n_j| below this: parallel planes (no edge)
_GPAR = 1e-12  # |n_k . t| below this: plane k parallel to the edge
_SHORT = 1e-10  # relative edge length below which an edge is a point (degenerate vertex)


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
    plain = (c, sn, (nk_h * alpha).sum(-1), (nk_h * beta).sum(-1), gh, (nk_l * alpha).sum(-1), (nk_l * beta).sum(-1),
             gl)
    c2, sn2, cr = _pair_frame(ni, nj)  # c, sn, cross again, relatively accurate for (nearly) orthogonal rows
    s2 = np.where(nonpar, sn2, 1.0)
    acc = (c2, sn2) + _end_coefficients(ni, nj, nk_h, c2, cr, s2) + _end_coefficients(ni, nj, nk_l, c2, cr, s2)
    c, sn, ah, bh, gh, al, bl, gl = (_unless_inaccurate(p, a) for p, a in zip(plain, acc))
    ssafe = np.where(nonpar, sn, 1.0)
    return {
        "ok": ok, "real": real,
        "ei": np.broadcast_to(I, real.shape), "ej": np.broadcast_to(J, real.shape), "khi": khi, "klo": klo,
        "c": c, "sn": ssafe,
        "ah": ah, "bh": bh, "gh": np.where(has_hi, gh, 1.0),
        "al": al, "bl": bl, "gl": np.where(has_lo, gl, 1.0),
        "has_hi": has_hi, "has_lo": has_lo,
        "m1": (nj - c[..., None] * ni) / ssafe[..., None],  # edge normal inside facet i's plane
        "m2": (ni - c[..., None] * nj) / ssafe[..., None],  # ... inside facet j's plane
    }


PLAIN_REL = 64.0 * 2.0 ** -52  # a plain geometry coefficient this close to its Dot2 value is kept (the same bits)


def _unless_inaccurate(plain, acc):
    """``plain`` where it agrees with the Dot2 value ``acc`` to ``PLAIN_REL`` (both then within ~66 eps of exact, as
    ``solid.kernel.GEOM_ULPS`` assumes, and the S = 3 bits are those of the plain formulas), else ``acc``: plain dot
    products of (nearly) orthogonal rows that cancel to ~1e-16 and lost their digits, or an ill-conditioned inverse."""
    return np.where(np.abs(plain - acc) <= PLAIN_REL * np.abs(acc), plain, acc)


def _dot2(x, y):
    """``sum(x * y, axis=-1)`` as accurate as if computed in twice the working precision, then rounded (Ogita, Rump
    and Oishi's Dot2): error ``<= eps |x.y| + 1e-31 sum |x y|``, so a dot product of unit vectors that cancels to
    1e-16 keeps its relative accuracy, where the plain sum carries an absolute error ~1e-16."""
    p, s = _two_prod(x[..., 0], y[..., 0])
    for k in range(1, x.shape[-1]):
        h, r = _two_prod(x[..., k], y[..., k])
        p, s = add_product_ops(p, s, h, r)
    return p + s


def _pair_frame(ni, nj):
    """``c = n_i.n_j``, ``sn = |n_i x n_j|`` and the cross product ``n_i x n_j``, each component a Dot2."""
    cr = np.stack([_dot2(np.stack([ni[..., a], -ni[..., b]], -1), np.stack([nj[..., b], nj[..., a]], -1))
                   for a, b in ((1, 2), (2, 0), (0, 1))], axis=-1)
    return _dot2(ni, nj), np.sqrt(_dot2(cr, cr)), cr


def _end_coefficients(ni, nj, nk, c, cr, sn):
    """End of an edge on plane k: ``s = (D_k - a D_i - b D_j) / g`` with ``a = n_k.alpha``, ``b = n_k.beta``,
    ``g = n_k.t`` (``p0 = alpha D_i + beta D_j`` the edge line's point closest to the origin, ``t`` its unit
    direction; Gram form ``alpha = (|n_j|^2 n_i - c n_j) / sn^2``, ``beta = (|n_i|^2 n_j - c n_i) / sn^2``).

    Every dot product is a Dot2: for (nearly) orthogonal facets ``a``, ``b`` and ``c`` are ~1e-16 and must keep
    their relative accuracy -- an absolute 1e-16 error in them moves an end (or a foot's in-plane distance) by
    1e-16 |D|, which near a vertex at distance ``delta`` from a foot (a mean ``delta`` from an edge) put ~1e-16 /
    delta relative errors into the cone decomposition's Cauchy-kernel terms (rotated boxes: 3e-9 at 1e-8)."""
    dki, dkj = _dot2(nk, ni), _dot2(nk, nj)
    sn2 = sn * sn
    a = _dot2(np.stack([_dot2(nj, nj), -c], -1), np.stack([dki, dkj], -1)) / sn2
    b = _dot2(np.stack([_dot2(ni, ni), -c], -1), np.stack([dkj, dki], -1)) / sn2
    return a, b, _dot2(nk, cr) / sn


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
