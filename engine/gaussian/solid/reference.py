"""S = 3 per-region reference path: ``log Phi_omega`` (Theorem 1, eq. 5) by nested quadrature of exact slices.

For ``y ~ N(0, I_3)`` and ``omega = {Nrm y <= D}``, slicing along a generic direction ``u`` gives

    P(omega) = int phi(t) P_2(omega ∩ {u^T y = t}) dt,

each slice a polygon whose standard-normal mass ``P_2`` is exact (``planar.planar_log_mass``, NOTES §3: "in
2-D a polygon's Gaussian mass has a closed form through Owen's T function"); the outer integrand is log-concave
and integrated in log space between the vertices' abscissae (``quad1d.integrate_logconcave``). This is what
flagged pairs that neither the compiled cone kernel (:mod:`.kernel`) nor the cubature (:mod:`.cubature`)
resolves fall back to.
"""

from __future__ import annotations

import numpy as np

from ..constants import LOG_SQRT_2PI as _LOG_SQRT_2PI_F
from ..planar.reference import planar_log_mass
from ..quad1d import integrate_logconcave

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
