"""S = 3 small bounded regions: ``Phi_omega`` (Theorem 1, eq. 5) and the Sec. 4.1 moments by direct cubature.

Where the signed sums of the cone decomposition (:mod:`.kernel`) cancel -- small regions, whose mass is much
smaller than the cones beyond their facets, and covariances ``E[yy^T] - m m^T`` far below ``|m|^2`` --
:func:`cubature_moments` integrates the bounded region directly: a product Gauss rule on tetrahedra (hull
triangles coned to the centroid), moments about the mean, so nothing cancels; the difference between a
degree-19 and a degree-15 rule bounds the error.
"""

from __future__ import annotations

import numpy as np

from ..constants import EPS as _EPS_F
from ..constants import LOG_SQRT_2PI as _LOG_SQRT_2PI_F
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
