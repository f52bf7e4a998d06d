"""Moments from lower-dimensional masses: the divergence-theorem facet recursion (NOTES §3).

For ``y ~ N(0, I_S)`` and ``omega = {Nrm y <= D}`` with unit rows ``n_i``, Stokes' theorem applied to
``grad phi = -y phi`` gives

    E[y 1_omega]     = - sum_i n_i phi(d_i) P_i,
    E[y y^T 1_omega] = P I - sum_i n_i phi(d_i) P_i (d_i n_i + B_i m_i)^T,

with ``P_i`` the mass and ``m_i`` the conditional mean of the facet ``F_i = omega ∩ {n_i^T y = d_i}``
under the standard normal of its hyperplane (coordinates ``y = d_i n_i + B_i w``, ``w ~ N(0, I_{S-1})``).
Facets are (S-1)-dimensional problems of the same kind, so no 2^S cones and no signed cancellation
between large terms appear (Tallis 1961/1965 is the special case of S facets).
"""

from __future__ import annotations

import numpy as np

_LOG_SQRT_2PI = 0.5 * np.log(2.0 * np.pi)


def facet_system(Nrm: np.ndarray, D: np.ndarray, i: int):
    """Facet i of ``{Nrm y <= D}`` as a polytope of its hyperplane: (basis B (S, S-1), Nf, Df (M, F))."""
    S = Nrm.shape[1]
    n = Nrm[i]
    Q, _ = np.linalg.qr(np.column_stack([n, np.eye(S)]))
    B = Q[:, 1:S]
    Nb = Nrm @ B
    nb = np.linalg.norm(Nb, axis=1)
    zero = nb < 1e-10
    scale = np.where(zero, 1.0, nb)
    Nf = np.where(zero[:, None], 0.0, Nb / scale[:, None])
    Df = (D - D[:, i:i + 1] * (Nrm @ n)[None]) / scale
    Df[:, i] = 0.0
    return B, Nf, Df


def facet_moments(Nrm, D, log_mass, facet_solver, moments: int = 2):
    """Conditional mean and covariance of N(0, I) on ``{Nrm y <= D}`` given its log mass.

    ``facet_solver(i, Nf, Df)`` returns ``(log_mass_i (M,), mean_i (M, S-1))`` for facet i.
    """
    M, F = D.shape
    S = Nrm.shape[1]
    first = np.zeros((M, S))
    second = np.zeros((M, S, S))
    for i in range(F):
        B, Nf, Df = facet_system(Nrm, D, i)
        lp, mw = facet_solver(i, Nf, Df)
        with np.errstate(invalid="ignore", over="ignore"):
            q = np.exp(-0.5 * D[:, i] ** 2 - _LOG_SQRT_2PI + lp - log_mass)
        q = np.where(np.isfinite(q), q, 0.0)
        first -= q[:, None] * Nrm[i]
        if moments >= 2:
            face = D[:, i:i + 1] * Nrm[i] + mw @ B.T
            second -= q[:, None, None] * Nrm[i][None, :, None] * face[:, None, :]
    if moments < 2:
        return first, None
    second += np.eye(S)
    cov = second - first[:, :, None] * first[:, None, :]
    return first, 0.5 * (cov + np.swapaxes(cov, 1, 2))
