"""S >= 4: randomised quasi-Monte-Carlo with exact planar inner integrals and an error bar.

In whitened coordinates ``y = (w, x)``, ``w`` in R^{S-2}, ``x`` in R^2, the mass is
``E_w[P_2(w)]`` where ``P_2(w)`` is the exact standard-normal mass (and moments) of the polygon
``{Nrm_x x <= D - Nrm_w w}`` (``planar``): Rao-Blackwellised conditional Monte Carlo (NOTES §3,
Genz-style separation of variables). The outer ``w`` is drawn from ``N(m, I)`` by scrambled Sobol
points, ``m`` the outer part of the polytope's point closest to the mean (:func:`closest_points`;
importance sampling toward the tail), with K independent scramblings; the spread of the K replicate estimates gives the
``log_mass_error``: the two-sided 99.73 % Student-t half-width ``t_{K-1} SE`` (``t_7 = 4.53`` for K = 8, where a normal
``3 SE`` would miss 2 % of the time), relative, reported as an absolute error on log mass.

Reproducible by default: without ``rng`` the scramblings are seeded from the bytes of the problem itself
(:func:`default_seed`), so the same inputs give the same bits in every run, process and thread count.
"""

from __future__ import annotations

import zlib

import numpy as np
from scipy.special import logsumexp, ndtri

from ..planar import cancels, planar_slice_moments
from .nested import _planar

_COV_LOOSEN = 1e6  # slice covariances to 3e-3 relative (``planar.cancels``): far below the RQMC spread
_COV_WEIGHT = 1e-9  # relative sample weight above which a cancelling slice covariance is recomputed exactly


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


COVERAGE = 0.9973  # two-sided coverage of the error bar (that of a normal 3 sigma)


def t_factor(n_reps: int) -> float:
    """Student-t quantile ``t_{K-1}((1 + COVERAGE) / 2)``: the half-width of the bar in standard errors."""
    from scipy.stats import t as student_t  # scipy.stats takes ~1 s to import: only the S >= 4 RQMC path needs it

    return float(student_t.ppf(0.5 * (1.0 + COVERAGE), n_reps - 1))


def default_seed(Nrm, D, n_points: int = 256) -> np.random.SeedSequence:
    """A seed that is a pure function of the problem's bytes (normals and offsets) and the number of points:
    reproducible RQMC, and a refinement with more points independent of the first pass."""
    a = np.ascontiguousarray(Nrm, dtype=np.float64).tobytes()
    b = np.ascontiguousarray(D, dtype=np.float64).tobytes()
    return np.random.SeedSequence([zlib.crc32(a), zlib.crc32(b), len(b), int(n_points)])


def _redo_cancelled_cov(Nn, off, lm, mean2, cov2, prel, lw, relative=True):
    """Slices whose divergence-theorem covariance cancels (``planar.cancels`` loosened by ``_COV_LOOSEN``): the
    exact slice quadrature for those of relative sample weight above ``_COV_WEIGHT`` (per point), zero for the
    rest (a slice that thin has a conditional variance far below the spread of its mean). In place."""
    redo = cancels(mean2, cov2, lm, prel, loosen=_COV_LOOSEN, relative=relative)
    if not np.any(redo):
        return
    top = np.max(lw, axis=1, keepdims=True)  # lw (M, n): per point
    heavy = redo & (lw > top + np.log(_COV_WEIGHT)).ravel()
    cov2[redo & ~heavy] = 0.0
    if np.any(heavy):
        _, mean2[heavy], cov2[heavy] = planar_slice_moments(Nn, off[heavy])


REFINE_REL = 0.05  # rows whose relative error bar exceeds this are redone once with REFINE_FACTOR x the points
REFINE_FACTOR = 4


def rqmc_moments(Nrm, D, *, moments=2, rng=None, n_points=256, n_reps=8, refine=True, relative=True):
    """log mass, conditional mean, conditional cov and relative mass error bar for y ~ N(0, I_S).

    ``rng``: None (seeded from the problem, :func:`default_seed`), a seed or a Generator. ``refine``: rows
    whose bar exceeds ``REFINE_REL`` are replaced by an independent estimate with ``REFINE_FACTOR`` times the
    points (its own bar; independent of the first pass, so the selection does not bias its coverage).
    ``relative``: the inner planar covariances' accuracy (``PairRequest.accuracy``)."""
    out = _rqmc_once(Nrm, D, moments, rng, n_points, n_reps, relative)
    redo = ~(out[3] <= REFINE_REL)
    if refine and np.any(redo):
        sub = _rqmc_once(Nrm, np.atleast_2d(D)[redo], moments, None if rng is None else rng,
                         REFINE_FACTOR * n_points, n_reps, relative)
        for full, part in zip(out, sub):
            if full is not None:
                full[redo] = part
    return out


def _rqmc_once(Nrm, D, moments, rng, n_points, n_reps, relative=True):
    """One RQMC pass: K scramblings of ``n_points`` Sobol points (see :func:`rqmc_moments`)."""
    D = np.atleast_2d(D)
    M, F = D.shape
    S = Nrm.shape[1]
    k = S - 2
    if n_reps < 2:
        raise ValueError("n_reps must be >= 2 for an error bar")
    rng = np.random.default_rng(default_seed(Nrm, D, n_points) if rng is None else rng)
    Nw, Nx = Nrm[:, :k], Nrm[:, k:]
    nx = np.linalg.norm(Nx, axis=1)
    zero = nx < 1e-10
    scale = np.where(zero, 1.0, nx)
    Nn = np.where(zero[:, None], 0.0, Nx / scale[:, None])
    shift = closest_points(Nrm, D)[:, :k]
    from scipy.stats import qmc  # see t_factor's import

    lw_all, w_all, m_all, c_all, rel_all = [], [], [], [], []
    for _ in range(n_reps):
        u = qmc.Sobol(k, scramble=True, seed=rng).random(n_points)
        z = ndtri(np.clip(u, 1e-300, 1.0 - 1e-16))  # (n, k)
        W = shift[:, None, :] + z[None]  # (M, n, k)
        log_ratio = -np.einsum("mnk,mk->mn", W, shift) + 0.5 * np.sum(shift * shift, axis=1)[:, None]
        off = (D[:, None, :] - np.einsum("mnk,fk->mnf", W, Nw)) / scale
        lm, mean2, cov2, prel = _planar(Nn, off.reshape(-1, F), max(moments, 0), redo_cov=False)
        if moments >= 2:
            _redo_cancelled_cov(Nn, off.reshape(-1, F), lm, mean2, cov2, prel,
                                lm.reshape(M, n_points) + log_ratio, relative)
        lw_all.append(lm.reshape(M, n_points) + log_ratio)
        rel_all.append(prel.reshape(M, n_points))
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
        # planar bounds (the fast edge sums, without the slow fallback) weighted like the samples
        wq = np.exp(LW - (log_mass[:, None, None] + np.log(n_reps * n_points)))
        prel = np.sum(np.where(wq > 0.0, wq * np.stack(rel_all, axis=1), 0.0), axis=(1, 2))
        err = t_factor(n_reps) * se + prel + 1e-12
        err = np.where(np.isfinite(log_mass) & ~np.isnan(err), err, np.inf)
    if moments < 1:
        return log_mass, None, None, err
    with np.errstate(invalid="ignore"):  # a pair with no sample inside (log_mass = -inf): -inf - -inf, weight 0 below
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
