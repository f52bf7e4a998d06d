"""S >= 4: randomised quasi-Monte-Carlo with exact planar inner integrals and an error bar.

In whitened coordinates ``y = (w, x)``, ``w`` in R^{S-2}, ``x`` in R^2, the mass is
``E_w[P_2(w)]`` where ``P_2(w)`` is the exact standard-normal mass (and moments) of the polygon
``{Nrm_x x <= D - Nrm_w w}`` (``planar``): Rao-Blackwellised conditional Monte Carlo (NOTES §3,
Genz-style separation of variables). The outer ``w`` is drawn from ``N(m, I)`` by scrambled Sobol
points, ``m`` the outer part of the polytope's point closest to the mean (:func:`closest_points`;
importance sampling toward the tail), with K independent scramblings; the spread of the K replicate estimates gives the
``log_mass_error`` (3 standard errors, relative, reported as an absolute error on log mass).
"""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp, ndtri
from scipy.stats import qmc

from .planar import planar_moments


def closest_points(Nrm, D):
    """(M, S) the point of each polyhedron ``{Nrm y <= D_m}`` closest to the origin (the origin if inside).

    Least-distance programming by non-negative least squares (Lawson and Hanson, ch. 23): with
    ``E = [Nrm^T; D^T]`` and ``f = e_{S+1}``, ``u = argmin_{u >= 0} |E u + f|`` gives ``r = E u + f`` and
    the closest point ``y = -r[:S] / r[S]``. This is the mean of the importance-sampling density: by
    convexity ``y.nu >= |nu|^2`` on the region, so the weights ``exp(-y.nu + |nu|^2 / 2)`` stay bounded.
    """
    from scipy.optimize import nnls

    M, F = D.shape
    S = Nrm.shape[1]
    out = np.zeros((M, S))
    for m in range(M):
        if np.all(D[m] >= 0):
            continue
        E = np.vstack([Nrm.T, D[m][None, :]])
        f = np.zeros(S + 1)
        f[S] = 1.0
        u, _ = nnls(E, -f)
        r = E @ u + f
        if r[S] > 1e-300:
            out[m] = -r[:S] / r[S]
    return out


def rqmc_moments(Nrm, D, Yv, *, moments=2, rng=None, n_points=256, n_reps=8, relative=True):
    """log mass, conditional mean, conditional cov and log-mass error bar for y ~ N(0, I_S); ``relative``: the
    inner planar covariances' accuracy (``PairRequest.accuracy``)."""
    D = np.atleast_2d(D)
    M, F = D.shape
    S = Nrm.shape[1]
    k = S - 2
    rng = np.random.default_rng(rng)
    Nw, Nx = Nrm[:, :k], Nrm[:, k:]
    nx = np.linalg.norm(Nx, axis=1)
    zero = nx < 1e-10
    scale = np.where(zero, 1.0, nx)
    Nn = np.where(zero[:, None], 0.0, Nx / scale[:, None])
    shift = closest_points(Nrm, D)[:, :k]
    lw_all, w_all, m_all, c_all = [], [], [], []
    for _ in range(n_reps):
        u = qmc.Sobol(k, scramble=True, seed=rng).random(n_points)
        z = ndtri(np.clip(u, 1e-300, 1.0 - 1e-16))  # (n, k)
        W = shift[:, None, :] + z[None]  # (M, n, k)
        log_ratio = -np.einsum("mnk,mk->mn", W, shift) + 0.5 * np.sum(shift * shift, axis=1)[:, None]
        off = (D[:, None, :] - np.einsum("mnk,fk->mnf", W, Nw)) / scale
        lm, mean2, cov2, _ = planar_moments(Nn, off.reshape(-1, F), moments=max(moments, 0), relative=relative)
        lw_all.append(lm.reshape(M, n_points) + log_ratio)
        w_all.append(W)
        if moments >= 1:
            m_all.append(mean2.reshape(M, n_points, 2))
        if moments >= 2:
            c_all.append(cov2.reshape(M, n_points, 2, 2))
    LW = np.stack(lw_all, axis=1)  # (M, K, n)
    rep_log = logsumexp(LW, axis=2) - np.log(n_points)  # (M, K)
    log_mass = logsumexp(rep_log, axis=1) - np.log(n_reps)
    with np.errstate(invalid="ignore", over="ignore"):
        rel = np.exp(rep_log - log_mass[:, None])
        se = np.std(rel, axis=1, ddof=1) / np.sqrt(n_reps)
        err = 3.0 * se + 1e-12
        err = np.where(np.isfinite(log_mass), err, np.inf)
    if moments < 1:
        return log_mass, None, None, err
    wts = np.exp(LW - (log_mass[:, None, None] + np.log(n_reps * n_points)))
    wts = np.where(np.isfinite(wts), wts, 0.0).reshape(M, -1)
    Wc = np.stack(w_all, axis=1).reshape(M, -1, k)
    Xm = np.stack(m_all, axis=1).reshape(M, -1, 2)
    Y = np.concatenate([Wc, Xm], axis=2)
    mean = np.einsum("mn,mnk->mk", wts, Y)
    if moments < 2:
        return log_mass, mean, None, err
    Yc = Y - mean[:, None, :]
    cov = np.einsum("mn,mnj,mnk->mjk", wts, Yc, Yc)
    Xc = np.stack(c_all, axis=1).reshape(M, -1, 2, 2)
    cov[:, k:, k:] += np.einsum("mn,mnjk->mjk", wts, Xc)
    return log_mass, mean, 0.5 * (cov + np.swapaxes(cov, 1, 2)), err
