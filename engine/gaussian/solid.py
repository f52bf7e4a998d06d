"""S = 3: Gaussian mass of a polyhedron by outer 1-D quadrature over exact 2-D slice masses.

In whitened coordinates ``y ~ N(0, I_3)`` on ``{Nrm y <= D}``, the slice ``t = u^T y`` is the polygon
``{(Nrm V) x <= D - t Nrm u}`` (``V`` an orthonormal basis of ``u^perp``), whose standard-normal mass
comes from ``planar.planar_log_mass`` with relative accuracy in the tails. The marginal
``phi(t) P_2(t)`` is 1-strongly log-concave and analytic between vertex heights ``u^T v``, so
``quad1d.integrate_logconcave`` integrates it to ~1e-13 relative (NOTES §3, nested quadrature).
Moments follow from the facet recursion (``facets.facet_moments``), each facet being a polygon.
"""

from __future__ import annotations

import numpy as np

from .planar import planar_log_mass
from .quad1d import integrate_logconcave

_LOG_SQRT_2PI = 0.5 * np.log(2.0 * np.pi)
_ZERO = 1e-10


def _direction(Yv: np.ndarray) -> np.ndarray:
    u = Yv.reshape(-1, 3).mean(axis=0) if Yv.size else np.zeros(3)
    u = u + np.array([0.1234, 0.0567, -0.0891]) * 1e-3  # generic: avoid exact alignment with a facet
    n = np.linalg.norm(u)
    return u / n if n > 1e-6 else np.array([0.8, 0.48, 0.36])


def solid_log_mass(Nrm: np.ndarray, D: np.ndarray, Yv: np.ndarray, Yr: np.ndarray):
    """log P(y in {Nrm y <= D}) for y ~ N(0, I_3); Yv (M, V, 3) vertices, Yr (R, 3) rays (whitened)."""
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
        return -0.5 * T * T - _LOG_SQRT_2PI + lm

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
