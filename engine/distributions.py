"""Marginal p(x) and posterior p(z|x) of a CPA generative network (Theorem 1, Prop. 1-2).

For each region omega with affine map ``g(z) = A z + b`` (eq. 2)::

    Sigma_omega = (Sigma_z^-1 + A^T Sigma_x^-1 A)^-1                        (eq. 7)
    mu_omega(x) = Sigma_omega A^T Sigma_x^-1 (x - b)                         (eq. 7)
    p(x) = sum_omega N(x; b, Sigma_x + A Sigma_z A^T) Phi_omega(mu_omega(x), Sigma_omega)   (eq. 5)
    p(z|x) = sum_omega 1[z in omega] N(x; b, ...) N(z; mu_omega(x), Sigma_omega) / p(x)      (eq. 6)

Everything is computed in the coordinates whitened by ``Sigma_x = L_x L_x^T`` and in log space. The
Gaussian prefactor uses the completed square (no cancellation between large terms)::

    -2 log N(x; b, Sigma_x + A Sigma_z A^T) = D log 2pi + log|Sigma_x| + log|Sigma_z| - log|Sigma_omega|
                                               + |e - A~ mu|^2 + mu^T Sigma_z^-1 mu,   e = L_x^-1 (x - b)

(matrix determinant lemma and Woodbury), so a region whose Gaussian mass is 1e-300 keeps its
relative accuracy and its contribution is summed with ``logsumexp``.
"""

from __future__ import annotations

import contextlib
import math
import threading
import weakref
from dataclasses import dataclass, field
from typing import Any

import numba
import numpy as np
from scipy.special import log_ndtr, logsumexp

from .errors import DGNInputError
from .gaussian import truncated_moments
from .gaussian.pairs import PointMoments
from .gaussian.planar.kernel import NEGLIGIBLE_NATS
from .network import Network
from .partition import DEFAULT_MAX_REGIONS, Partition, partition

_LOG_2PI = np.log(2.0 * np.pi)
_CHUNK_FLOATS = 2_000_000  # (points x regions x D) block size for the whitened residuals


@dataclass
class RegionGaussians:
    """Per-region quantities of eq. 7 that do not depend on x, in whitened coordinates.

    With ``A~ = A_w L_z = U diag(s) V^T`` (thin SVD, ``L_z`` the Cholesky factor of Sigma_z)::

        Sigma_omega = L_z V diag(1 / (1 + s^2)) V^T L_z^T,   log|Sigma_omega| = log|Sigma_z| - sum log(1 + s^2)

    so no matrix ``Sigma_z^-1 + A_w^T A_w`` is ever formed: the unit eigenvalues of ``I + A~^T A~`` along
    the null space of a huge ``A_w`` are kept exactly. Once cond(Sigma_omega) nears 1/eps (|A_w|^2 >~ 1e15)
    the dense ``cov`` can no longer carry its thin directions (rounding of O(1) entries exceeds them, and a
    Cholesky factorisation of it may fail); ``chol_cov`` still does, to relative accuracy ~eps times the ratio of
    the thick to the thin standard deviation.
    """

    A_w: np.ndarray  # (R, D, S)  L_x^-1 A
    b_w: np.ndarray  # (R, D)     L_x^-1 b
    cov: np.ndarray  # (R, S, S)  Sigma_omega
    logdet_cov: np.ndarray  # (R,)  log|Sigma_omega| (exact, from the SVD)
    prec_z: np.ndarray  # (S, S)  Sigma_z^-1
    const: np.ndarray  # (R,) -1/2 (D log 2pi + log|Sigma_x| + log|Sigma_z| - log|Sigma_omega|)
    chol_x: np.ndarray  # (D, D)
    U: np.ndarray  # (R, D, k)  left singular vectors of A~ = A_w L_z, k = min(D, S)
    s: np.ndarray  # (R, k)     singular values of A~
    V: np.ndarray  # (R, S, S)  right singular vectors of A~ (completed to a basis of R^S when D < S)
    gain: np.ndarray  # (R, S, k)  L_z V_k diag(s / (1 + s^2)): mu_omega = gain U^T e
    shrink: np.ndarray  # (R, k)  1 / (1 + s^2): the quadratic form along U is sum shrink (U^T e)^2
    chol_cov: np.ndarray  # (R, S, S)  lower-triangular L with L L^T = Sigma_omega, from the SVD (not from cov)


def _solve_lower(L: np.ndarray, B: np.ndarray) -> np.ndarray:
    """``L^-1 B`` for a lower-triangular Cholesky factor: LAPACK gesv for small L (scipy's trsm wrapper costs
    milliseconds of threading overhead there), an O(n^2) triangular solve from n = 32 on (instead of an
    O(n^3) LU)."""
    if L.shape[0] < 32:
        return np.linalg.solve(L, B)
    from scipy.linalg import solve_triangular

    return solve_triangular(L, B, lower=True, check_finite=False)


_GRADED = 1e-8  # rows scaled below this fraction of the largest: QR with the rows in decreasing order


def _graded_rows(rows: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """``rows`` (R, S, S), row u scaled by ``scale[:, u]``, with the rows of each strongly graded region (smallest
    scale below ``_GRADED`` of the largest) put in decreasing order of scale: Householder QR of a graded matrix is
    accurate row-wise only with its large rows first (Powell and Reid's row sorting). The SVD returns the
    singular values decreasing, so the shrink factors 1 / (1 + s^2) come smallest first; on the fuzz net
    permutation-4 (gains ~1e17, shrink 8e-35) that order left the factor's thin pivot at rounding level, exactly 0 on
    an AVX2 machine's LAPACK ("posterior covariance singular"), ~1e-17 elsewhere. Row order does not change
    ``rows^T rows``; regions that are not graded keep their rows as they are (and their bits)."""
    graded = scale.min(axis=1) < _GRADED * scale.max(axis=1)
    if not graded.any():
        return rows
    rows = rows.copy()
    order = np.argsort(-scale[graded], axis=1, kind="stable")
    rows[graded] = np.take_along_axis(rows[graded], order[:, :, None], axis=1)
    return rows


def region_gaussians(net: Network, part: Partition) -> RegionGaussians:
    """Sigma_omega and the constants of the prefactor of eq. 5 for every region (through the SVD of
    ``A_w L_z``; see :class:`RegionGaussians`)."""
    D, S = net.data_dim, net.latent_dim
    R = len(part)
    chol_x = np.linalg.cholesky(net.cov_x)
    chol_z = np.linalg.cholesky(net.cov_z)
    A_w = _solve_lower(chol_x, part.A.transpose(1, 0, 2).reshape(D, -1))
    A_w = A_w.reshape(D, R, S).transpose(1, 0, 2)
    b_w = np.ascontiguousarray(_solve_lower(chol_x, part.b.T).T)  # row per region (the compiled _params_pairs)
    inv_chol_z = _solve_lower(chol_z, np.eye(S))
    prec_z = inv_chol_z.T @ inv_chol_z
    k = min(D, S)
    # full_matrices only when D < S, for the S - D right singular vectors of the null space of A~
    U, sv, Vt = np.linalg.svd(A_w @ chol_z, full_matrices=D < S)  # U (R, D, k), sv (R, k), Vt (R, S, S)
    V = Vt.transpose(0, 2, 1)
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        sq = sv * sv
        shrink = 1.0 / (1.0 + sq)  # 0 when s^2 overflows
        ratio = np.where(sv > 1.0, 1.0 / (sv + 1.0 / sv), sv * shrink)  # s / (1 + s^2), no inf / inf
        log1p_sq = np.where(sv > 1.0, 2.0 * np.log(sv) + np.log1p(1.0 / sq), np.log1p(sq))  # log(1 + s^2)
    LV = np.einsum("st,rtu->rsu", chol_z, V)  # L_z V (R, S, S)
    # singular values padded with zeros (unit shrink) along the S - k directions where A~ vanishes
    scale = np.sqrt(np.concatenate([shrink, np.ones((R, S - k))], axis=1))
    half = LV * scale[:, None, :]
    cov = np.einsum("rsu,rtu->rst", half, half)
    cov = 0.5 * (cov + cov.transpose(0, 2, 1))
    # lower-triangular factor from the QR of half^T (half half^T = Sigma_omega): no Cholesky of the dense
    # matrix, whose smallest eigenvalues are lost to rounding once cond(Sigma_omega) approaches 1/eps
    upper = np.linalg.qr(_graded_rows(half.transpose(0, 2, 1), scale), mode="r")
    sign = np.where(np.diagonal(upper, axis1=1, axis2=2) < 0, -1.0, 1.0)
    chol_cov = upper.transpose(0, 2, 1) * sign[:, None, :]
    gain = LV[:, :, :k] * ratio[:, None, :]
    logdet_x = 2.0 * np.log(np.diag(chol_x)).sum()
    logdet_z = 2.0 * np.log(np.diag(chol_z)).sum()
    sum_log1p = log1p_sq.sum(axis=1)
    logdet_cov = logdet_z - sum_log1p
    const = -0.5 * (D * _LOG_2PI + logdet_x + sum_log1p)  # log|Sigma_z| - log|Sigma_omega| = sum log(1 + s^2)
    return RegionGaussians(A_w, b_w, cov, logdet_cov, prec_z, const, chol_x, U, sv, V, gain, shrink, chol_cov)


def _check_data(net: Network, X) -> np.ndarray:
    from .validation import check_data

    return check_data(X, net.data_dim, field="data", min_samples=0)


def posterior_region_params(net: Network, part: Partition, X, rg: RegionGaussians | None = None):
    """``mu_omega(x)`` (N, R, S) and ``log N(x; b_omega, Sigma_x + A Sigma_z A^T)`` (N, R), eq. 5 and 7.

    With ``e = L_x^-1 (x - b)``, ``f = U^T e`` and ``e_perp = e - U f`` (see :class:`RegionGaussians`)::

        e^T (I + A~ A~^T)^-1 e = |e_perp|^2 + sum_i f_i^2 / (1 + s_i^2),   mu = L_z V diag(s / (1 + s^2)) f

    a sum of non-negative terms: nothing cancels however large ``A_w`` is (the form
    ``|e - A_w mu|^2 + mu^T Sigma_z^-1 mu`` loses ``(eps |A_w mu|)^2``). When D <= S, U is square and
    ``e_perp`` is exactly zero.
    """
    rg = rg or region_gaussians(net, part)
    X = _check_data(net, X)
    N, S = X.shape[0], net.latent_dim
    X_w = _solve_lower(rg.chol_x, X.T).T
    mu = np.empty((N, len(part), S))
    log_norm = np.empty((N, len(part)))
    for s in range(0, N, _param_rows(rg)):
        _params_block(rg, X_w, s, slice(None), mu, log_norm)
    return mu, log_norm


def _param_rows(rg: RegionGaussians) -> int:
    """Rows of X per block of :func:`posterior_region_params` (about ``_CHUNK_FLOATS`` of (R, n, D) residuals);
    the screened path of :func:`evaluate` uses the same blocks, so every product has the same shapes."""
    return max(1, _CHUNK_FLOATS // max(1, rg.U.shape[0] * rg.U.shape[1]))


def _params_block(rg: RegionGaussians, X_w, s: int, regions, mu, log_norm) -> None:
    """mu and log_norm (eq. 5, 7) of the rows ``s : s + _param_rows(rg)`` of the whitened data and the regions
    ``regions`` (a slice or an index array), written into ``mu`` (N, R, S) and ``log_norm`` (N, R). Every pair by
    the compiled :func:`_params_pairs`, so a pair's numbers do not depend on which other pairs are computed."""
    n = X_w[s:s + _param_rows(rg)].shape[0]
    regs = np.ascontiguousarray(np.arange(rg.U.shape[0])[regions], dtype=np.intp)
    if regs.size and n:  # the pairs (rows s .. s + n, regs) region-major, without their (n R,) index arrays
        _params_rect(np.ascontiguousarray(X_w), rg.b_w, rg.U, rg.shrink, rg.gain, rg.const, regs, s, n, mu, log_norm)


def _fill_pairs(rg: RegionGaussians, X_w, regs, rows, mu, log_norm) -> None:
    """:func:`_params_pairs` for the pairs (``rows[p]``, ``regs[p]``) (region-major order keeps U[r] in cache)."""
    if regs.size:
        _params_pairs(np.ascontiguousarray(X_w), rg.b_w, rg.U, rg.shrink, rg.gain, rg.const,
                      np.ascontiguousarray(regs, dtype=np.intp), np.ascontiguousarray(rows, dtype=np.intp),
                      mu, log_norm)


@numba.njit(cache=True, nogil=True)
def _params_pairs(X_w, b_w, U, shrink, gain, const, regs, rows, mu, log_norm):  # pragma: no cover (compiled)
    """``mu_omega(x)`` and the log prefactor of eq. 5 for pairs (x_w = ``X_w[rows[p]]``, omega = ``regs[p]``), in
    the sum-of-squares form of :func:`posterior_region_params`: ``e = x_w - b_w``, ``f = U^T e``,
    ``quad = sum shrink f^2 + |e - U f|^2`` (the second term only when D > k), ``mu = gain f``,
    ``log_norm = const - quad / 2``. One pair at a time, no (R, n, D) temporaries; the loops in a fixed order, so
    a pair's bits do not depend on the other pairs."""
    D = U.shape[1]
    k = U.shape[2]
    S = gain.shape[1]
    e = np.empty(D)
    f = np.empty(k)
    for p in range(regs.size):
        r = regs[p]
        n = rows[p]
        for d in range(D):
            e[d] = X_w[n, d] - b_w[r, d]
        quad = 0.0
        for j in range(k):
            acc = 0.0
            for d in range(D):
                acc += e[d] * U[r, d, j]
            f[j] = acc
            g = acc * math.sqrt(shrink[r, j])
            quad += g * g
        if D > k:  # the part of e outside span(U)
            perp = 0.0
            for d in range(D):
                t = 0.0
                for j in range(k):
                    t += f[j] * U[r, d, j]
                t = e[d] - t
                perp += t * t
            quad += perp
        for i in range(S):
            acc = 0.0
            for j in range(k):
                acc += f[j] * gain[r, i, j]
            mu[n, r, i] = acc
        log_norm[n, r] = const[r] - 0.5 * quad


@numba.njit(cache=True, nogil=True)
def _params_rect(X_w, b_w, U, shrink, gain, const, regs, s, m, mu, log_norm):  # pragma: no cover (compiled)
    """:func:`_params_pairs` of the pairs (rows ``s .. s + m``, regions ``regs``), region-major: the same pairs in
    the same order as ``_params_pairs(..., np.repeat(regs, m), np.tile(np.arange(s, s + m), regs.size), ...)``,
    and the same loop body (written out again: a shared inlined helper ran 2x slower), without those index arrays
    (~4 ms of an S = 2 evaluate)."""
    D = U.shape[1]
    k = U.shape[2]
    S = gain.shape[1]
    e = np.empty(D)
    f = np.empty(k)
    for r in regs:
        for n in range(s, s + m):
            for d in range(D):
                e[d] = X_w[n, d] - b_w[r, d]
            quad = 0.0
            for j in range(k):
                acc = 0.0
                for d in range(D):
                    acc += e[d] * U[r, d, j]
                f[j] = acc
                g = acc * math.sqrt(shrink[r, j])
                quad += g * g
            if D > k:  # the part of e outside span(U)
                perp = 0.0
                for d in range(D):
                    t = 0.0
                    for j in range(k):
                        t += f[j] * U[r, d, j]
                    t = e[d] - t
                    perp += t * t
                quad += perp
            for i in range(S):
                acc = 0.0
                for j in range(k):
                    acc += f[j] * gain[r, i, j]
                mu[n, r, i] = acc
            log_norm[n, r] = const[r] - 0.5 * quad


@dataclass
class Evaluation:
    """Exact marginal and posterior of a batch of points (Theorem 1, Prop. 2, Sec. 4.1 notation).

    ``region_weights[n, r]`` is e0 = P(z in omega_r | x_n); ``region_means`` and ``region_covs`` are the
    conditional moments E[z | x, z in omega_r] and Cov[z | x, z in omega_r], so that
    ``e1 = e0 * mean`` and ``E2 = e0 * (cov + mean mean^T)``.
    """

    log_marginal: np.ndarray  # (N,)
    posterior_mean: np.ndarray  # (N, S)
    posterior_cov: np.ndarray  # (N, S, S)
    region_log_weights: np.ndarray  # (N, R)
    region_means: np.ndarray  # (N, R, S)
    region_covs: np.ndarray  # (N, R, S, S)
    n_regions: int
    method: str
    log_marginal_error: np.ndarray | None = None  # (N,) error bar on log p(x) when a method estimates
    posterior_mean_error: np.ndarray | None = None  # (N,) bound on max |error| of posterior_mean's entries (S = 3-5)
    posterior_cov_error: np.ndarray | None = None  # (N,) bound on max |error| of posterior_cov's entries (S = 3-5)
    partition: Partition | None = field(default=None, repr=False)
    # evaluate(..., defer=True): the S = 2 heavy pass still to run (see complete()); None when complete
    _pending: Any = field(default=None, repr=False, compare=False)

    @property
    def region_weights(self) -> np.ndarray:
        return np.exp(self.region_log_weights)

    def moments(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The E-step statistics (e0, e1, E2) of Sec. 4.1, shapes (N,R), (N,R,S), (N,R,S,S)."""
        if self.region_log_weights is None:
            raise DGNInputError("region_terms", "was False, so this evaluation kept no per-region terms",
                                "evaluate with region_terms=True to get the E-step statistics")
        e0 = self.region_weights
        e1 = e0[..., None] * self.region_means
        outer = self.region_means[..., :, None] * self.region_means[..., None, :]
        E2 = e0[..., None, None] * (self.region_covs + outer)
        return e0, e1, E2

    def to_dict(self) -> dict[str, Any]:
        out = {
            "log_marginal": self.log_marginal.tolist(),
            "posterior_mean": self.posterior_mean.tolist(),
            "posterior_cov": self.posterior_cov.tolist(),
            "region_weights": None if self.region_log_weights is None else self.region_weights.tolist(),
            "n_regions": int(self.n_regions),
            "method": self.method,
        }
        if self.log_marginal_error is not None:
            out["log_marginal_error"] = self.log_marginal_error.tolist()
        for name in ("posterior_mean_error", "posterior_cov_error"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name).tolist()
        return out


def region_truncated_moments(part: Partition, mu: np.ndarray, covs: np.ndarray, *, moments: int = 2,
                             method: str = "auto", rng=None, need: np.ndarray | None = None,
                             log_weight_scale: np.ndarray | None = None, geometry=None,
                             lower_bound_only: bool = False, accuracy: str = "relative") -> PointMoments:
    """log Phi_omega(mu, Sigma_omega) (N, R), conditional means (N, R, S), covariances (N, R, S, S) (eq. 5-7).

    A :class:`gaussian.pairs.PointMoments`: also the method name and the (N, R) absolute error bounds on the
    log masses (or None). ``need`` (N, R) marks the pairs to compute (S >= 2); the others come back as -inf
    mass. ``log_weight_scale`` (N, R) bounds each pair's posterior weight by ``exp(log_weight_scale) * mass``
    so that pairs of small weight are integrated to proportionally looser thresholds. ``geometry``:
    ``polytopes.batch_geometry`` of the regions and ``covs``, reused across calls. ``lower_bound_only`` and
    ``accuracy``: see :class:`gaussian.pairs.PairRequest`.
    """
    N, R, S = mu.shape
    if S == 1:
        from .gaussian.interval import interval_moments

        bounds = part.intervals()
        sd = np.sqrt(covs[:, 0, 0])
        log_mass, m, v = interval_moments(mu[..., 0], sd[None], bounds[None, :, 0], bounds[None, :, 1],
                                          moments=max(moments, 2))
        return PointMoments(log_mass, m[..., None], v[..., None, None], "interval-closed-form", None)
    return _region_pairs(part, mu, covs, moments=moments, method=method, rng=rng, need=need,
                         log_weight_scale=log_weight_scale, geometry=geometry, lower_bound_only=lower_bound_only,
                         accuracy=accuracy).by_point(S)


def _region_pairs(part: Partition, mu: np.ndarray, covs: np.ndarray, *, need=None, log_weight_scale=None,
                  **kwargs):
    """:func:`region_truncated_moments` for S >= 2 as the region-major ``gaussian.pairs.PairResult`` (which
    also carries the ``settled`` pairs); ``need`` and ``log_weight_scale`` point-major (N, R)."""
    from .gaussian.polytopes import polytope_moments_arrays

    return polytope_moments_arrays([r.polytope for r in part], mu.transpose(1, 0, 2), covs,
                                   need=None if need is None else need.T,
                                   log_weight_scale=None if log_weight_scale is None else log_weight_scale.T,
                                   **kwargs)


PRUNE_NATS = NEGLIGIBLE_NATS  # pairs provably below e^-50 of p(x) are skipped (S >= 2); see evaluate()


def log_mass_upper_bound(part: Partition, mu: np.ndarray, covs: np.ndarray, keep=None) -> np.ndarray:
    """(N, R) upper bound on log Phi_omega(mu, Sigma_omega): the mass of the most violated half-space.

    A region lies inside each of its half-spaces ``h_i.z <= c_i``, whose Gaussian mass is
    ``Phi((c_i - h_i.mu) / sqrt(h_i^T Sigma h_i))``; the smallest of these bounds the region's mass.
    ``keep`` (N, R): only these pairs are bounded, the others get the trivial bound 0.
    """
    Hs, scaled_c = _scaled_half_spaces(part, covs)
    mu = np.ascontiguousarray(mu, dtype=np.float64)
    if keep is None:
        return log_ndtr(_min_slack(mu, Hs, scaled_c, np.ones(mu.shape[:2], dtype=bool)))
    keep = np.ascontiguousarray(keep, dtype=bool)
    slack = _min_slack(mu, Hs, scaled_c, keep)
    out = np.zeros(slack.shape)  # log_ndtr(+inf) = 0: the pairs not kept, without evaluating it on each of them
    out[keep] = log_ndtr(slack[keep])
    return out


_HALF_SPACES: list = [None, None, None]  # (weakref to the last partition, its covs, _scaled_half_spaces)


def _scaled_half_spaces(part: Partition, covs: np.ndarray):
    """The facets of :func:`log_mass_upper_bound` scaled by ``sqrt(h^T Sigma h)``: ``(Hs (R, F, S), scaled_c (R, F))``,
    kept for the last (partition, covs) pair (the row blocks of one evaluate call it several times each)."""
    ref, cv, hit = _HALF_SPACES
    if ref is not None and ref() is part and cv is covs:
        return hit
    H, c = part.padded_facets()  # (R, F, S), (R, F) with +inf offsets on padding rows
    # h^T Sigma h >= 0 exactly; rounding leaves it a few ulps below zero along a direction of nearly no spread
    den = np.sqrt(np.maximum(np.einsum("rfs,rst,rft->rf", H, covs, H), 0.0))
    width = den > 0  # rows of zero width (H_i = 0, padding) bound nothing
    safe = np.where(width, den, 1.0)
    hit = (np.ascontiguousarray(H / safe[..., None]), np.where(width, c / safe, np.inf))
    _HALF_SPACES[:] = [weakref.ref(part), covs, hit]
    return hit


@numba.njit(cache=True, nogil=True)
def _min_slack(mu, Hs, sc, keep):
    """``min_f (sc[r, f] - Hs[r, f] . mu[n, r])`` (N, R), +inf with no rows or where ``keep`` is False, NaN if any
    term is NaN: the standardised distance of each point's mean to its region's most violated half-space, without
    the (R, N, F) temporary."""
    N, R, S = mu.shape
    F = Hs.shape[1]
    out = np.empty((N, R))
    for n in range(N):
        for r in range(R):
            best = np.inf
            if not keep[n, r]:
                out[n, r] = best
                continue
            for f in range(F):
                dot = 0.0
                for k in range(S):
                    dot += mu[n, r, k] * Hs[r, f, k]
                v = sc[r, f] - dot
                if v != v:  # NaN propagates, as in numpy's min
                    best = v
                    break
                if v < best:
                    best = v
            out[n, r] = best
    return out


@numba.njit(cache=True, nogil=True)
def _top_rows(upper, k):
    """``(first, unsure)``: ``first[n]`` marks the ``k`` largest entries of ``upper[n]`` where that set is unique --
    no NaN in the row and the k-th largest strictly above the (k+1)-th -- so that it is the set numpy's
    ``argpartition(-upper, k - 1)[:, :k]`` picks; ``unsure[n]`` where it is not (the caller asks argpartition).
    One pass over the row keeping its k + 1 largest values, instead of an introselect and an index array."""
    N, R = upper.shape
    first = np.zeros((N, R), dtype=np.bool_)
    unsure = np.zeros(N, dtype=np.bool_)
    if R <= k:
        first[:] = True
        return first, unsure
    vals = np.empty(k + 1)
    idx = np.empty(k + 1, dtype=np.intp)
    for n in range(N):
        vals[:] = -np.inf
        idx[:] = -1
        for r in range(R):
            v = upper[n, r]
            if v != v:
                unsure[n] = True
                break
            if v > vals[k]:
                j = k
                while j > 0 and v > vals[j - 1]:
                    vals[j] = vals[j - 1]
                    idx[j] = idx[j - 1]
                    j -= 1
                vals[j] = v
                idx[j] = r
        if unsure[n] or not vals[k - 1] > vals[k]:
            unsure[n] = True
            continue
        for j in range(k):
            first[n, idx[j]] = True
    return first, unsure


LOWER_PAIRS = 32  # S = 2: lower bound of log p(x) from each point's this many most promising pairs (3 at S >= 3)


def _lower_pairs(S: int, R: int) -> int:
    """How many of each point's most promising pairs (by ``upper``) give the lower bound of log p(x)
    (:func:`_first_lower`): ``LOWER_PAIRS`` at S = 2, where a mass lower bound costs ~1 us a pair, else 3."""
    return min(LOWER_PAIRS if S == 2 else 3, R)


def _top_set(upper, k):
    """(N, R) bool: each row's ``k`` largest ``upper`` (:func:`_top_rows`; rows with ties at the k-th place or NaN
    take ``argpartition``'s own choice)."""
    first, unsure = _top_rows(upper, k)
    rows = np.nonzero(unsure)[0]
    if rows.size:
        top = np.zeros((rows.size, upper.shape[1]), dtype=bool)
        np.put_along_axis(top, np.argpartition(-upper[rows], k - 1, axis=1)[:, :k], True, axis=1)
        first[rows] = top
    return first


def _first_lower(part, mu, covs, log_norm, upper, method, rng, geometry, accuracy):
    """Each point's three most promising pairs by ``upper`` (N, R) and the lower bound of log p(x) (eq. 5) from the
    rigorous mass lower bounds of its :func:`_lower_pairs` most promising pairs, and those pairs: ``(first, lower,
    counted)``, (N, R) bool, (N,) and (N, R) bool. At S = 2 that is 32 pairs, not 3: on a wide decoder
    ([2,128,128,64]) the half-space bound ranks the regions that carry the posterior up to ~160th, and three pairs
    left ``lower`` up to 306 nats below log p(x) (10 % of the points more than 4.5), which kept pairs the pruning
    could drop and, above all, kept the kernel's thresholds strict (``log_weight_scale = log_norm - lower``): 104
    flagged pairs per 300 points went to the slow reference path. With 32 pairs: at most 2.9 nats, no flagged pair
    (300 points, ``benchmarks/bench_scale.py``'s data)."""
    N, R = log_norm.shape
    k = min(3, R)
    first = _top_set(upper, k)
    K = _lower_pairs(mu.shape[2], R)
    probe = _top_set(upper, K) if K > k else first
    if mu.shape[2] == 4 and getattr(geometry, "chol", None) is not None and hasattr(geometry, "cone_shape"):
        return first, _cone_lower(part, mu, covs, log_norm, probe, method, rng, geometry, accuracy), probe
    probe_mass, _, _, _, probe_error = region_truncated_moments(part, mu, covs, moments=0, method=method, rng=rng,
                                                                need=probe, geometry=geometry, lower_bound_only=True,
                                                                accuracy=accuracy)
    lower_mass = probe_mass if probe_error is None else probe_mass - probe_error
    # logsumexp over each row's K marked pairs only, (N, K) not (N, R): the other terms are exp(-inf) = 0 (for K = 3
    # this is the full row's logsumexp bit for bit, tests/test_s2_fused_paths.py; for K = 32 the same sum in another
    # order, a lower bound either way)
    rows, cols = np.nonzero(probe)  # max(K, k) a row, in column order
    terms = (log_norm[rows, cols] + lower_mass[rows, cols]).reshape(N, max(K, k))
    return first, logsumexp(terms, axis=1), probe


def _cone_lower(part, mu, covs, log_norm, probe, method, rng, geometry, accuracy):
    """S = 4 (:func:`_first_lower`): the lower bound of log p(x) (eq. 5) from the ``probe`` pairs (N, R) by the cones
    alone (``highdim.budget.raised_lower``: the cones' mass minus its bar where they certify it, else 0), the pairs of
    irregular regions (lineality, ``geometry.ok`` False) by :func:`region_truncated_moments` as before. Asking the
    full integrator for a pair the cones leave sends it to the slices at 1e-10, and a lower bound does not need
    that: on ``random_network([4, 16, 16, 5], rng=0, cov_x=0.1)`` point 54's first pairs include two narrow
    simplicial cones (one vertex, four rays; cone bars 0.27 and 2.8e-4, masses e^-1e6 and e^-8147) and points 49, 51
    and 55 thin 5-facet simplices (bars 1e-2 to 9e-9): their slices fell back to the nested S = 3 reference
    quadrature, ~330 polytopes at ~2 s, 870 s of the block 49-55's 1,090 s wall (one thread, shared machine)."""
    from .gaussian.highdim.budget import raised_lower

    N = log_norm.shape[0]
    lower = raised_lower(part, mu, log_norm, probe, np.full(N, -np.inf), geometry)
    odd = probe & ~geometry.ok[None] & np.isfinite(log_norm)
    if odd.any():
        mass, _, _, _, err = region_truncated_moments(part, mu, covs, moments=0, method=method, rng=rng, need=odd,
                                                      geometry=geometry, lower_bound_only=True, accuracy=accuracy)
        low = mass if err is None else mass - err
        lower = np.logaddexp(lower, logsumexp(np.where(odd, log_norm + low, -np.inf), axis=1))
    return lower


def _pruned_truncated_moments(part, mu, covs, log_norm, method, rng, geometry=None, accuracy="relative", pre=None):
    """Truncated moments of the pairs that can matter: a pair whose upper bound log_norm + log-mass
    bound lies PRUNE_NATS below a lower bound of log p(x) contributes less than e^-50 p(x).

    The lower bound comes from the masses of each point's most promising regions by that upper bound (32 at S = 2,
    three at S >= 3, :func:`_lower_pairs`), computed to a rigorous error bound only. The pairs that remain are
    integrated to an accuracy that follows their posterior weight, bounded by ``w <= exp(log_norm - lower) * mass``:
    below weight 1e-3 the thresholds are loosened by 1e-3 / w (``planar.kernel.loosen_factor``), so a pair's
    weighted mass error is ``<= 4e-12 w + 4e-15`` and its weighted covariance error ``<= 3e-9 w + 3e-12`` (units of
    Sigma_omega), far below the contracts of eq. 5-6 summed over regions. S >= 4 (``method="auto"``) also skips the
    lightest pairs up to ``SKIP_BUDGET`` (:func:`_target_prune`). ``pre``: ``(upper, first, lower, counted)`` already
    computed (:func:`_screened_params`). Returns the ``PairResult`` and the (N,) log
    of the skipped pairs' summed bounds (None: nothing pruned to the target)."""
    N, R = log_norm.shape
    if pre is None:
        upper = log_norm + log_mass_upper_bound(part, mu, covs)
        first, lower, _ = _first_lower(part, mu, covs, log_norm, upper, method, rng, geometry, accuracy)
    else:
        upper, first, lower, _ = pre
    need = upper >= lower[:, None] - PRUNE_NATS
    skipped = None
    caps = upper.copy()  # log upper bounds on each term of eq. 5 (the moments' bar, engine.moment_bar)
    if mu.shape[2] == 4 and geometry is not None:  # S = 4: prune to the target (skipped bounds go into the bar)
        need, skipped, lower, bounds = _target_prune(part, mu, log_norm, upper, lower, need & ~first, geometry)
        caps = np.minimum(caps, bounds)
        need |= first
    elif mu.shape[2] >= 5 and geometry is not None:  # S >= 5: the same, by the closest point's half-space alone
        need, skipped = _closest_point_prune(part, mu, log_norm, upper, lower, need & ~first, geometry)
        need |= first
    with np.errstate(invalid="ignore"):  # lower = -inf (no mass resolved): no weight guarantee, +inf
        scale = np.where(np.isfinite(lower)[:, None], log_norm - lower[:, None], np.inf)
    out = _region_pairs(part, mu, covs, method=method, rng=rng, need=need, log_weight_scale=scale,
                        geometry=geometry, accuracy=accuracy)
    if out.skipped is not None:  # S = 4: pairs the cones left, skipped within their budget (relative to lower)
        skipped = np.logaddexp(-np.inf if skipped is None else skipped, lower + out.skipped)
    return out, skipped, _integrator_caps(out, need, caps, log_norm, lower, mu.shape[2])


def _integrator_caps(out, need, caps, log_norm, lower, S):
    """``caps`` (N, R) (log upper bounds on the terms of eq. 5) tightened for the needed pairs a batch skipped (mass
    -inf, finite bar): by the bound it kept (``PairResult.log_mass_cap``, pairs skipped within ``FLAGGED_BUDGET``),
    else, at S >= 4, by ``lower - NEGLIGIBLE_NATS``: the batches skip a pair only where its weight bound
    ``log_norm - lower + log B`` is below ``-NEGLIGIBLE_NATS`` (``highdim.sliced.pair_tolerances``, cones6's)."""
    lm = out.log_mass.T
    err = np.zeros(lm.shape) if out.log_mass_error is None else out.log_mass_error.T
    inside = need & ~np.isfinite(lm) & np.isfinite(err)
    if not inside.any():
        return caps
    caps = caps.copy()
    kept = np.full(lm.shape, np.inf) if out.log_mass_cap is None else out.log_mass_cap.T
    has = inside & np.isfinite(kept)
    caps[has] = np.minimum(caps[has], log_norm[has] + kept[has])  # only there: screened pairs' log_norm may be inf
    if S >= 4:
        rule = inside & ~has
        with np.errstate(invalid="ignore"):
            caps[rule] = np.minimum(caps[rule], np.broadcast_to(lower[:, None] - NEGLIGIBLE_NATS, lm.shape)[rule])
    return caps


SCREEN = True  # evaluate (S >= 2, prune): screen the (point, region) pairs by _screen_log_norm_bound first
SCREEN_MAX_ROWS = 8  # ... when the exact blocks have at most this many rows (R D >= _CHUNK_FLOATS / 8): the
# screen works per (block, region), so with long blocks it skips nothing and costs ~10 % ([2,16,16,5])
SCREEN_NATS = 20.0  # first candidates: log_norm bound within this of the point's best bound
# (wide decoder, 30 points: _screened_params 1.7 s at 10 or 30 nats, 3.2 s at 60)
_SCREEN_REL = 1e-12  # rounding margin of the screen, per (D + k + 2) and unit of |x_w|^2 + |b_w|^2


def _screen_log_norm_bound(rg: RegionGaussians, X_w: np.ndarray) -> np.ndarray:
    """(N, R) upper bound on ``log_norm`` as :func:`posterior_region_params` computes it, from GEMMs only (eq. 5).

    With ``f = U^T x_w - U^T b_w`` and ``U^T U = I``, the quadratic form is
    ``|e|^2 - sum_i f_i^2 (1 - shrink_i)`` with ``|e|^2 = |x_w|^2 - 2 x_w.b_w + |b_w|^2``: products over
    (N, D) x (D, R k), but the form cancels. Every dot product of length <= D + k has a rounding error below
    ``(D + k) eps`` times the sum of its terms' magnitudes, each of which is below ``2 (|x_w|^2 + |b_w|^2)``;
    the same holds for the sum-of-squares form of :func:`posterior_region_params` and for ``U`` being orthonormal
    only to ``O(D eps)``. So both forms lie within ``c (D + k) eps (|x_w|^2 + |b_w|^2)`` of the exact form with
    ``c`` below a few hundred; the margin ``_SCREEN_REL (D + k + 2) (|x_w|^2 + |b_w|^2)`` is ``4500 eps`` per unit
    (tests/test_wide_screen.py checks it on adversarial pairs). A NaN bound (overflow) screens nothing. The
    x-independent parts come from :func:`_screen_parts` (once per ``rg``); the elementwise rest is compiled
    (:func:`_screen_combine`, the same operations in the same order as the numpy form it replaced)."""
    R, D, k = rg.U.shape
    U2, bU, bb, along = _screen_parts(rg)
    N = X_w.shape[0]
    out = np.empty((N, R))
    step = max(1, _CHUNK_FLOATS // max(1, R * k))
    with np.errstate(over="ignore", invalid="ignore"):
        for s in range(0, N, step):
            x = np.ascontiguousarray(X_w[s:s + step])
            xx = np.einsum("nd,nd->n", x, x)
            out[s:s + step] = _screen_combine(x @ U2, x @ rg.b_w.T, xx, bU, bb, along, rg.const,
                                              _SCREEN_REL * (D + k + 2))
    return out


_SCREEN_PARTS: list = [None, None]  # (weakref to the last RegionGaussians screened, its _screen_parts)


def _screen_parts(rg: RegionGaussians):
    """``(U2, bU, bb, along)`` of :func:`_screen_log_norm_bound`: U as one (D, R k) matrix, ``U^T b_w`` (R, k),
    ``|b_w|^2`` (R,) and ``1 - shrink`` (R, k); kept for the last ``rg`` (the row blocks of one evaluate share it)."""
    ref, parts = _SCREEN_PARTS
    if ref is not None and ref() is rg:
        return parts
    R, D, k = rg.U.shape
    parts = (np.ascontiguousarray(rg.U.transpose(1, 0, 2).reshape(D, R * k)), np.einsum("rd,rdk->rk", rg.b_w, rg.U),
             np.einsum("rd,rd->r", rg.b_w, rg.b_w), np.ascontiguousarray(1.0 - rg.shrink))
    _SCREEN_PARTS[:] = [weakref.ref(rg), parts]
    return parts


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _screen_combine(xU, xb, xx, bU, bb, along, const, rel):  # pragma: no cover (compiled)
    """The bound of :func:`_screen_log_norm_bound` from its GEMMs ``xU = x U2`` (n, R k), ``xb = x b_w^T`` (n, R):
    ``f = xU - bU``, ``quad = xx - 2 xb + bb - sum_j along_j f_j^2``, ``low = quad - rel (xx + bb)``,
    ``bound = const - low / 2``, plus ``1e-12 (|const| + |low|)`` for the rounding of that line."""
    n, R = xb.shape
    k = bU.shape[1]
    out = np.empty((n, R))
    for i in range(n):
        for r in range(R):
            s = 0.0
            for j in range(k):
                f = xU[i, r * k + j] - bU[r, j]
                s += f * f * along[r, j]
            quad = xx[i] - 2.0 * xb[i, r] + bb[r] - s
            low = quad - rel * (xx[i] + bb[r])
            out[i, r] = const[r] - 0.5 * low + 1e-12 * (abs(const[r]) + abs(low))
    return out


def _screened_params(net, part, X, rg, method, rng, geometry, accuracy):
    """:func:`posterior_region_params` for the pairs that can matter only, and the ``(upper, first, lower)`` of
    :func:`_pruned_truncated_moments` -- every number bit for bit what the unscreened path gives.

    Candidates: pairs whose screen bound (:func:`_screen_log_norm_bound`) is within ``SCREEN_NATS`` of the point's
    best. A point keeps them if its K-th largest ``upper`` (K = :func:`_lower_pairs`: 32 at S = 2, else 3) among
    them is strictly above every other pair's bound and strictly above its (K+1)-th (so its K most promising pairs,
    which give ``lower``, are those of the full computation), else it takes every pair whose bound reaches that K-th
    ``upper`` and checks again, and then all regions. With ``lower`` known, every pair whose bound reaches
    ``lower - PRUNE_NATS`` is added; the rest are pairs the unscreened path prunes (``upper <= log_norm <= bound``).
    Only the wanted pairs are computed (:func:`_fill_params`); the others come back with ``log_norm = -inf``,
    ``mu = 0`` (the pruned pairs' outputs do not depend on either). Returns ``(mu, log_norm, pre)``."""
    X = _check_data(net, X)
    N, R, S = X.shape[0], len(part), net.latent_dim
    X_w = _solve_lower(rg.chol_x, X.T).T
    bound = _screen_log_norm_bound(rg, X_w)
    with np.errstate(invalid="ignore"):
        cand = ~(bound < np.max(bound, axis=1, keepdims=True) - SCREEN_NATS)
    mu = np.zeros((N, R, S))
    log_norm = np.full((N, R), -np.inf)
    done = np.zeros((N, R), dtype=bool)
    _fill_params(rg, X_w, cand, done, mu, log_norm)
    upper = log_norm + log_mass_upper_bound(part, mu, rg.cov, keep=done)
    for last in (False, True):  # widen uncertain rows to every pair that could beat their K-th; then to all
        ok, third = _top_is_certain(upper, np.where(done, -np.inf, bound), _lower_pairs(S, R))
        if ok.all():
            break
        with np.errstate(invalid="ignore"):
            want = ~ok[:, None] & (True if last else ~(bound < third[:, None]))
        _fill_params(rg, X_w, want, done, mu, log_norm)
        rows = np.nonzero(~ok)[0]
        upper[rows] = log_norm[rows] + log_mass_upper_bound(part, mu[rows], rg.cov, keep=done[rows])
    first, lower, counted = _first_lower(part, mu, rg.cov, log_norm, upper, method, rng, geometry, accuracy)
    with np.errstate(invalid="ignore"):
        more = ~done & ~(bound < lower[:, None] - PRUNE_NATS)
    if more.any():
        _fill_params(rg, X_w, more, done, mu, log_norm)
        rows = np.nonzero(more.any(axis=1))[0]
        upper[rows] = log_norm[rows] + log_mass_upper_bound(part, mu[rows], rg.cov, keep=done[rows])
    return mu, log_norm, (upper, first, lower, counted)


def _hinted_lower(part, mu, covs, log_norm, pre, extra, method, rng, geometry):
    """``pre = (upper, first, lower, counted)`` of :func:`_pruned_truncated_moments` with the lower bound of log p(x)
    raised by the pairs ``extra`` (N, R) that ``lower`` does not count yet: ``lower = log(e^lower + sum e^(log_norm +
    rigorous lower log-mass))`` over ``extra & ~counted`` (distinct terms of eq. 5, so still a lower bound)."""
    extra = np.asarray(extra)
    if extra.dtype != bool:  # a float mask (NaN, 0.5, ...) is not silently read as True / False
        raise DGNInputError("lower_pairs", f"has dtype {extra.dtype}, not bool",
                            "pass a boolean (points, regions) mask")
    if extra.shape != log_norm.shape:
        raise DGNInputError("lower_pairs", f"has shape {extra.shape}, not (points, regions) = {log_norm.shape}")
    if pre is None:
        upper = log_norm + log_mass_upper_bound(part, mu, covs)
        first, lower, counted = _first_lower(part, mu, covs, log_norm, upper, method, rng, geometry, "absolute")
    else:
        upper, first, lower, counted = pre
    more = extra & ~counted & np.isfinite(log_norm)
    if not more.any():
        return upper, first, lower, counted
    if mu.shape[2] == 4 and getattr(geometry, "chol", None) is not None and hasattr(geometry, "cone_shape"):
        more_lower = _cone_lower(part, mu, covs, log_norm, more, method, rng, geometry, "absolute")
        return upper, first, np.logaddexp(lower, more_lower), counted | more
    mass, _, _, _, err = region_truncated_moments(part, mu, covs, moments=0, method=method, rng=rng, need=more,
                                                  geometry=geometry, lower_bound_only=True, accuracy="absolute")
    low = mass if err is None else mass - err
    lower = np.logaddexp(lower, logsumexp(np.where(more, log_norm + low, -np.inf), axis=1))
    return upper, first, lower, counted | more


def _top_is_certain(upper, outside, k=3):
    """``(ok, third)``: (N,) whether each row's ``k`` largest ``upper`` are strictly above its next and above
    ``outside``'s max (no NaN anywhere), and the ``k``-th largest ``upper``."""
    R = upper.shape[1]
    k = min(k, R)
    # both the k-th and the (k+1)-th largest in their sorted places (with one kth, the k-1 entries before it
    # are the top k in no particular order, and srt[:, k - 1] need not be the k-th largest)
    srt = -np.partition(-upper, [k - 1, k] if R > k else k - 1, axis=1)
    third = srt[:, k - 1]
    ok = (third > np.max(outside, axis=1)) & ~np.isnan(upper).any(axis=1)
    if upper.shape[1] > k:
        ok &= third > srt[:, k]
    return ok, third


def _fill_params(rg, X_w, want, done, mu, log_norm):
    """mu and log_norm (:func:`_params_pairs`) of the pairs in ``want`` (N, R) not yet ``done``, pair by pair (the
    same bits as the full pass of :func:`posterior_region_params`); marks them ``done``."""
    regs, rows = np.nonzero((want & ~done).T)  # region-major
    _fill_pairs(rg, X_w, regs, rows, mu, log_norm)
    done[rows, regs] = True


SKIP_BUDGET = 1e-9  # S >= 4: pairs whose rigorous bounds sum below this fraction of p(x) are not integrated
_SKIP_CANDIDATE = 1e-3  # ... only pairs whose half-space bound is below this fraction are candidates
SKIP_CANDIDATE_S4 = np.inf  # S = 4: every candidate gets the certified bound (budget.pair_bounds), not only those
# whose half-space bound is below _SKIP_CANDIDATE of p(x): [4,16,16,5] point 1 (one thread, shared machine) 8,788 ->
# 17,140 pairs skipped of 32,720 (6,142 of them the sliced batch dropped later as negligible, ~2,200 fewer to the cones)
# for ~0.8 s more of bounds


def _target_prune(part, mu, log_norm, upper, lower, cand, geometry):
    """S = 4: the pairs ``cand`` (N, R) whose rigorous upper bounds on their terms of eq. 5, smallest first, sum
    to at most ``SKIP_BUDGET`` times a lower bound of p(x) are skipped (``gaussian.highdim.budget.target_prune``:
    bounds from the closest point's supporting half-space and the region's volume, the lower bound ``lower`` raised
    by the mass lower bounds of each point's most promising pairs). Returns the pairs still needed, the (N,) log of
    the sum of the skipped bounds (``-inf``: none), which :func:`evaluate` adds to ``log_marginal_error``, the
    raised lower bound (N,), which then sets the pairs' tolerances (``log_weight_scale``), and the (N, R) log upper
    bounds of the candidates' terms (``+inf`` elsewhere), which cap the moments' bar (``engine.moment_bar``)."""
    from .gaussian.highdim.budget import target_prune

    bounds = np.full(upper.shape, np.inf)
    need, skipped, lower = target_prune(part, mu, log_norm, upper, lower, cand, geometry, SKIP_BUDGET,
                                        SKIP_CANDIDATE_S4, bounds_out=bounds)
    return need, skipped, lower, bounds


def _closest_point_prune(part, mu, log_norm, upper, lower, cand, geometry):
    """S >= 5 (S = 4 has :func:`_target_prune`, whose volume bounds and raised lower bound are built for S' = 4): the
    pairs ``cand`` (N, R) whose rigorous upper bounds on their terms of eq. 5, smallest first, sum to at most
    ``SKIP_BUDGET`` times the lower bound ``lower`` (N,) of p(x) are skipped. The bound of a pair is
    its prefactor times ``Q(|y*|)``, the mass beyond the supporting half-space at the region's point ``y*``
    closest to the mean in whitened coordinates (``highdim.sliced.closest_distance``; tighter than the most
    violated facet's ``upper``, which is used where the region has lineality). Returns the pairs still needed and
    the (N,) log of the sum of the skipped bounds (``-inf``: none), which :func:`evaluate` adds to
    ``log_marginal_error``."""
    from .gaussian.highdim.budget import skip_lightest
    from .gaussian.highdim.sliced import closest_distance, whitened

    R = upper.shape[1]
    bound = np.where(cand, upper, -np.inf)
    with np.errstate(invalid="ignore"):
        maybe = cand & (upper < lower[:, None] + np.log(_SKIP_CANDIDATE))
    ok = getattr(geometry, "ok", np.zeros(R, dtype=bool)) & (getattr(geometry, "chol", None) is not None)
    for r in np.nonzero(maybe.any(axis=0) & ok)[0]:
        rows = np.nonzero(maybe[:, r])[0]
        Nrm, D, _, _ = whitened(part[r].polytope, geometry.chol[r], mu[rows, r])
        _, log_q = closest_distance(Nrm, D)
        bound[rows, r] = np.minimum(bound[rows, r], log_norm[rows, r] + log_q)
    return skip_lightest(cand, bound, lower, SKIP_BUDGET, maybe)


REDO_SETTLED = False  # True: the heavy pass redoes every heavy pair (the reference of tests/test_s2_heavy_pass.py)


def _heavy_pass(part, mu, covs, log_joint, means, covs_r, settled, geometry=None, log_px=None, inplace=False,
                **kwargs):
    """The second S = 2 pass of :func:`evaluate`: pairs of posterior weight above 1e-3 (eq. 6) get their
    conditional moments at relative accuracy. Pairs the first (absolute-accuracy) pass ``settled`` --
    moments already exactly those of the relative pass (``planar.batch.batch_planar_pairs``) -- are kept,
    unless ``REDO_SETTLED`` (the always-redo reference). Only the regions with a pair to redo are integrated
    (their rows of ``geometry``), so the pass costs what it redoes, not N x R. ``log_px``: the caller's
    ``logsumexp(log_joint, axis=1)``, if it has it. The moments come back as copies in the memory order of
    ``means`` and ``covs_r`` (transposed views of region-major arrays: a copy in C order costs 4x more), or, with
    ``inplace``, written into ``means`` and ``covs_r`` themselves."""
    from .gaussian.polytopes import polytope_moments_arrays

    log_px = logsumexp(log_joint, axis=1) if log_px is None else log_px
    heavy = log_joint - log_px[:, None] > np.log(1e-3)
    redo = heavy if settled is None or REDO_SETTLED else heavy & ~settled
    if not np.any(redo):
        return means, covs_r
    rows = np.nonzero(redo.any(axis=0))[0]
    sub = redo[:, rows]
    res = polytope_moments_arrays([part[r].polytope for r in rows], mu[:, rows].transpose(1, 0, 2), covs[rows],
                                  need=sub.T, geometry=None if geometry is None else geometry.subset(rows), **kwargs)
    n, k = np.nonzero(sub)
    if not inplace:
        means, covs_r = means.copy(order="K"), covs_r.copy(order="K")
    means[n, rows[k]] = res.mean[k, n]
    covs_r[n, rows[k]] = res.cov[k, n]
    return means, covs_r


def evaluate(net: Network, X, *, method: str = "auto", part: Partition | None = None,
             max_regions: int = DEFAULT_MAX_REGIONS, rng=None, prune: bool = True, chunk_size: int | None = None,
             workers: int = 1, scheduler=None, region_terms: bool = True, defer: bool = False,
             lower_pairs=None) -> Evaluation:
    """Exact log p(x), posterior mean/covariance and per-region posterior terms for each row of X.

    Rows are evaluated in blocks of ``chunk_size`` (default: about 1e6 (point, region) pairs a block, 4e6 at S = 4), so
    memory follows the block, not N x R; ``workers`` > 1 spreads the blocks over local processes and
    ``scheduler`` (a Dask address or ``distributed.Client``) over a cluster, with the partition computed
    once and shipped (:mod:`engine.scaling`). ``region_terms=False`` leaves out the (N, R, ...) per-region
    arrays of the result. None of these change a number.

    For S >= 2 and ``prune=True``, a (point, region) pair is integrated only if an upper bound of its
    term of eq. 5 (prefactor times the mass of the region's most violated half-space) is within
    ``PRUNE_NATS`` = 50 nats of a lower bound of log p(x). Every skipped pair contributes less than
    e^-50 p(x), so all skipped pairs together change log p(x) by less than R e^-50 (below float64
    resolution for any R under 1e5); their posterior weights are reported as 0. For S >= 4 the lightest pairs
    are also skipped while their bounds (closest-point half-space) sum below ``SKIP_BUDGET`` = 1e-9 of p(x);
    that sum is added to ``log_marginal_error``.

    ``defer=True`` (S = 2, one block in this process): the second pass, relative-accuracy moments of the pairs
    of posterior weight above 1e-3, is left for :func:`complete`. ``log_marginal`` and its error are final
    (they do not depend on that pass); the moments are those of the first pass (accurate relative to
    Sigma_omega). EM's guard uses this: a rejected candidate never needs its moments.

    ``lower_pairs`` (N, R) bool, optional (S >= 2, pruned, one block in this process): pairs whose rigorous mass lower
    bounds join each point's most promising ones in the lower bound of log p(x) (:func:`_hinted_lower`). Any
    choice keeps every result exact: the bound only decides the pruning and how far the accuracy of a pair of small
    provable weight is loosened (``w <= exp(log_norm - lower) * mass``). A choice that covers the posterior (EM passes
    the regions of draws from the previous posterior) makes the bound tight and the integration cheaper.
    """
    from .errors import check_float64_range
    from .gaussian.polytopes import METHODS
    from .network import as_network

    net = as_network(net)  # options are checked at every S, before anything is computed
    if method not in METHODS:
        raise DGNInputError("method", f"unknown integration method {method!r}", f"use one of {', '.join(METHODS)}")
    X = _check_data(net, X)
    check_float64_range("data", X)
    part = part if part is not None else partition(net, max_regions=max_regions)
    from .scaling import check_block_options, evaluate_many, rows_per_block

    check_block_options(chunk_size, workers, scheduler)
    if scheduler is not None or workers > 1 or X.shape[0] > (chunk_size or rows_per_block(len(part), net.latent_dim)):
        return evaluate_many(net, X, part, chunk_size=chunk_size, workers=workers, scheduler=scheduler,
                             region_terms=region_terms, method=method, rng=rng, prune=prune)
    with one_blas_thread():
        return _evaluate_block(net, X, part, method, rng, prune, region_terms, defer, lower_pairs)


def _evaluate_block(net, X, part, method, rng, prune, region_terms, defer, lower_pairs) -> Evaluation:
    """:func:`evaluate` of one block of rows in this process (its arguments checked)."""
    rg, geometry = _gaussians_and_geometry(net, part, method == "auto")
    pruned = prune and net.latent_dim >= 2 and len(part) > 3
    pre = None
    if pruned and SCREEN and _param_rows(rg) <= SCREEN_MAX_ROWS:
        mu, log_norm, pre = _screened_params(net, part, X, rg, method, rng, geometry, "absolute")
    else:
        mu, log_norm = posterior_region_params(net, part, X, rg)
    if pruned and lower_pairs is not None:
        pre = _hinted_lower(part, mu, rg.cov, log_norm, pre, lower_pairs, method, rng, geometry)

    # First pass: region covariances accurate relative to Sigma_omega, enough for regions of small
    # posterior weight; the pairs that carry weight are then redone to full relative accuracy.
    settled = None
    skipped = None
    caps = moment_error = None
    if pruned:
        first, skipped, caps = _pruned_truncated_moments(part, mu, rg.cov, log_norm, method, rng, geometry,
                                                         accuracy="absolute", pre=pre)
        settled = first.settled.T
        moment_error = None if first.moment_error is None else first.moment_error.transpose(1, 0, 2)
        first = first.by_point(net.latent_dim)
    elif net.latent_dim >= 2:
        first = _region_pairs(part, mu, rg.cov, method=method, rng=rng, geometry=geometry, accuracy="absolute")
        settled = first.settled.T
        moment_error = None if first.moment_error is None else first.moment_error.transpose(1, 0, 2)
        first = first.by_point(net.latent_dim)
    else:
        first = region_truncated_moments(part, mu, rg.cov, method=method, rng=rng, accuracy="absolute")
    log_mass, means, covs, used, mass_err = first
    from .conditioning import rounding_bar

    rounding = None if mass_err is None else rounding_bar(net, part, rg, X, mu, log_norm, log_mass, means, covs)
    state = _FirstPass(part, mu, rg.cov, log_norm, log_mass, means, covs, used, mass_err, settled,
                       dict(method=method, rng=rng, geometry=geometry), region_terms, skipped, rounding,
                       moment_error, caps)
    if net.latent_dim == 2 and defer:
        ev = _finish(state, heavy=False)
        ev._pending = state
        return ev
    return _finish(state, heavy=net.latent_dim == 2, own=True)


_BLAS_LOCK = threading.Lock()
_BLAS: dict = {"controller": None, "depth": 0, "limiter": None}


@contextlib.contextmanager
def one_blas_thread():
    """BLAS single-threaded while an evaluation runs in this process (threadpoolctl, as ``EM.fit`` does), restored
    after. Its BLAS work is small (whitening solves of (N, D) data, 2 x 2 stacks), so OpenBLAS's threads mostly spin
    after each call: ~50 ms of a second core per ``[2,16,16,5]`` N = 1000 evaluate (8 % of its CPU), taken from the
    S = 2 kernel's own threads. The numbers do not change with it (measured: every ``Evaluation`` field the same bit
    for bit with OpenBLAS's threads and without, tests/test_s2_overhead.py). Nested and concurrent evaluations share
    one limit: the first in sets it, the last out restores what it found."""
    ctl = _blas_controller()
    if not ctl:  # no threadpoolctl
        yield
        return
    with _BLAS_LOCK:
        if _BLAS["depth"] == 0:
            _BLAS["limiter"] = ctl.limit(limits=1, user_api="blas")
        _BLAS["depth"] += 1
    try:
        yield
    finally:
        with _BLAS_LOCK:
            _BLAS["depth"] -= 1
            if _BLAS["depth"] == 0:
                _BLAS["limiter"].restore_original_limits()
                _BLAS["limiter"] = None


def _blas_controller():
    """The process's ``threadpoolctl.ThreadpoolController`` (made once, after scipy's BLAS is loaded: ~0.4 ms; a
    limit through it then costs ~10 us), or False without threadpoolctl."""
    if _BLAS["controller"] is None:
        try:
            import scipy.linalg  # noqa: F401  (scipy's own BLAS, loaded before the controller lists the libraries)
            from threadpoolctl import ThreadpoolController

            _BLAS["controller"] = ThreadpoolController()
        except ImportError:  # pragma: no cover (threadpoolctl ships with scikit-learn, a dependency)
            _BLAS["controller"] = False
    return _BLAS["controller"]


# the last partition evaluated -> (key, RegionGaussians, geometry); weak, so the entry goes with the partition
_GAUSSIANS_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _gaussians_and_geometry(net, part, with_geometry: bool):
    """:func:`region_gaussians` and the whitened region geometry (``polytopes.batch_geometry``, from the accurate
    factor of Sigma_omega; None unless ``with_geometry``) for every pass of :func:`evaluate`. Both depend on the
    (immutable) partition and on ``cov_x``, ``cov_z`` only, so the row blocks of one partition
    (``scaling.evaluate_many``) share them: one entry, the last partition's, dropped with the partition."""
    from .gaussian.polytopes import batch_geometry

    key = (net.cov_x.tobytes(), net.cov_z.tobytes(), with_geometry)
    hit = _GAUSSIANS_CACHE.get(part)
    if hit is not None and hit[0] == key:
        return hit[1], hit[2]
    rg = region_gaussians(net, part)
    geometry = batch_geometry([r.polytope for r in part], rg.cov, rg.chol_cov) if with_geometry else None
    _GAUSSIANS_CACHE.clear()
    _GAUSSIANS_CACHE[part] = (key, rg, geometry)
    return rg, geometry


@dataclass
class _FirstPass:
    """What :func:`evaluate` has after its first (absolute-accuracy) pass: enough to finish it, now or later."""

    part: Partition
    mu: np.ndarray
    cov: np.ndarray
    log_norm: np.ndarray
    log_mass: np.ndarray
    means: np.ndarray
    covs: np.ndarray
    used: str
    mass_err: np.ndarray | None
    settled: np.ndarray | None
    heavy_kwargs: dict
    region_terms: bool
    skipped: np.ndarray | None = None  # S >= 4: (N,) log of the summed bounds of the pairs pruned to the target
    rounding: np.ndarray | None = None  # (N,) float64 rounding of the region maps and terms (engine.conditioning)
    moment_error: np.ndarray | None = None  # (N, R, 2) the pairs' moment bounds (PairResult.moment_error), or None
    term_caps: np.ndarray | None = None  # (N, R) log upper bounds on the terms of eq. 5 (pruned evaluations)


def _finish(st: _FirstPass, heavy: bool, own: bool = False) -> Evaluation:
    """Eq. 5-6 from the first pass; ``heavy``: the S = 2 heavy pass first (the pairs of posterior weight above
    1e-3 get relative-accuracy moments). ``log_marginal`` and its error do not depend on ``heavy``. ``own``: nothing
    else holds the first pass's moments (:func:`evaluate` without ``defer``), so the heavy pass writes into them
    instead of into copies."""
    part, log_norm, log_mass, means, covs = st.part, st.log_norm, st.log_mass, st.means, st.covs
    log_joint = log_norm + log_mass
    log_px = logsumexp(log_joint, axis=1)
    if heavy:
        means, covs = _heavy_pass(part, st.mu, st.cov, log_joint, means, covs, st.settled, log_px=log_px,
                                  inplace=own, **st.heavy_kwargs)
    log_w = log_joint - log_px[:, None]
    w = np.exp(log_w)
    post_mean, post_cov = _posterior_moments(w, means, covs)
    caps = _LazyCaps(st)
    err = None
    if st.mass_err is not None:
        err = _log_marginal_error(w, st.mass_err, lambda: _over_p(caps(), log_px))
    if err is not None and st.rounding is not None:
        err = err + st.rounding
    if st.skipped is not None:  # p = p^ e^d + skipped, 0 <= skipped <= s p^: |log p - log p^| <= log(e^err + s)
        err = np.logaddexp(0.0 if err is None else err, st.skipped - log_px)
    mean_err = cov_err = None
    if st.moment_error is not None and err is not None:
        from .moment_bar import posterior_moment_errors

        if st.term_caps is None:
            st.term_caps = caps()
        mean_err, cov_err = posterior_moment_errors(st, w, log_px, err, post_mean, post_cov, means, covs)
    if not st.region_terms:
        log_w = means = covs = None
    return Evaluation(log_marginal=log_px, posterior_mean=post_mean, posterior_cov=post_cov,
                      region_log_weights=log_w, region_means=means, region_covs=covs, n_regions=len(part),
                      method=st.used, log_marginal_error=err, partition=part, posterior_mean_error=mean_err,
                      posterior_cov_error=cov_err)


class _LazyCaps:
    """:func:`_log_term_caps` of a first pass, computed on the first call only (shared by ``log_marginal_error``
    and the moments' bar)."""

    def __init__(self, st: _FirstPass):
        self.st, self.caps = st, None

    def __call__(self) -> np.ndarray:
        if self.caps is None:
            self.caps = _log_term_caps(self.st)
        return self.caps


def _over_p(log_caps, log_px):
    """The caps ``log_caps`` (N, R) over p^ (``log_px`` (N,)) for :func:`_log_marginal_error`."""
    with np.errstate(over="ignore"):  # a cap beyond e^709 p^ is inf: no bound (far pairs whose slices' bar is >= 0.5)
        return np.exp(log_caps - log_px[:, None])


def _log_term_caps(st: _FirstPass):
    """(N, R) rigorous log caps of each term of eq. 5 (:func:`_log_marginal_error` takes them over p^): the
    prefactor times the mass of the region's most violated half-space; at S >= 4 with the batch geometry, for the
    unresolved pairs, the tighter ``Q(|y*|)`` beyond the supporting half-space at the region's point closest to the
    mean (as :func:`_target_prune`), and at S >= 5 the box bound of a thin region (``highdim.thin.log_mass_bound``).
    A far S = 6 cone that neither route resolved (weight 1.6e-21) had a half-space cap of 0.034 of p(x); a thin S = 6
    region near the mean (``[6,6,6,6]`` point 9, weight 1.7e-19) had a ``Q(|y*|)`` cap of 1.7e-3 and has a box cap of
    3.1e-17."""
    caps = st.log_norm + log_mass_upper_bound(st.part, st.mu, st.cov)
    geo = st.heavy_kwargs.get("geometry")
    if st.mu.shape[2] >= 4 and geo is not None and getattr(geo, "chol", None) is not None and st.mass_err is not None:
        from .gaussian.highdim.sliced import closest_distance, whitened
        from .gaussian.highdim.thin import log_mass_bound

        bad = ~np.isfinite(st.mass_err)
        ok = getattr(geo, "ok", np.zeros(caps.shape[1], dtype=bool))
        for r in np.nonzero(bad.any(axis=0) & ok)[0]:
            rows = np.nonzero(bad[:, r])[0]
            Nrm, D, _, _ = whitened(st.part[r].polytope, geo.chol[r], st.mu[rows, r])
            cap = closest_distance(Nrm, D)[1]
            if st.mu.shape[2] >= 5:
                cap = np.minimum(cap, log_mass_bound(st.part[r].polytope, geo.chol[r], st.mu[rows, r]))
            caps[rows, r] = np.minimum(caps[rows, r], st.log_norm[rows, r] + cap)
    return caps


def _posterior_moments(w, means, covs):
    """Posterior mean (N, S) and covariance (N, S, S) of the mixture of eq. 6 (Prop. 2): compiled for S >= 2, where
    it is numpy's einsum bit for bit (tests/test_s2_fused_paths.py); for S = 1 the region axis is contiguous and
    einsum sums it in SIMD partial sums, so S = 1 keeps einsum."""
    if means.shape[2] >= 2:
        return _mixture_moments(w, means, covs)
    post_mean = np.einsum("nr,nrs->ns", w, means)
    dev = means - post_mean[:, None, :]
    return post_mean, np.einsum("nr,nrst->nst", w, covs) + np.einsum("nr,nrs,nrt->nst", w, dev, dev)


@numba.njit(cache=True, nogil=True)  # compiled lazily: an eager signature costs ~1 s at import
def _mixture_moments(w, means, covs):
    """Posterior mean and covariance of the mixture of eq. 6, ``sum_r w_r m_r`` and
    ``sum_r w_r C_r + sum_r w_r (m_r - mean)(m_r - mean)^T`` for weights ``w`` (N, R), conditional means (N, R, S)
    and covariances (N, R, S, S): numpy's ``einsum`` forms (each sum over r in order, the products left to right,
    the two covariance sums added last), bit for bit, without the (N, R, S) deviations. Loops run region-outer,
    along the memory of the region-major arrays ``means`` and ``covs`` are views of."""
    N, R, S = means.shape
    mean = np.zeros((N, S))
    within = np.zeros((N, S, S))
    between = np.zeros((N, S, S))
    for r in range(R):
        for n in range(N):
            for s in range(S):
                mean[n, s] += w[n, r] * means[n, r, s]
    for r in range(R):
        for n in range(N):
            for s in range(S):
                ds = means[n, r, s] - mean[n, s]
                for t in range(S):
                    within[n, s, t] += w[n, r] * covs[n, r, s, t]
                    between[n, s, t] += w[n, r] * ds * (means[n, r, t] - mean[n, t])
    return mean, within + between


def complete(ev: Evaluation) -> Evaluation:
    """The full :func:`evaluate` result of an ``evaluate(..., defer=True)`` (bit for bit what ``defer=False``
    gives): runs the deferred S = 2 heavy pass; ``ev`` itself when nothing was deferred."""
    if ev._pending is None:
        return ev
    with one_blas_thread():
        return _finish(ev._pending, heavy=True)


def _log_marginal_error(w: np.ndarray, mass_err: np.ndarray, term_caps) -> np.ndarray:
    """(N,) bound on |log p(x) - log p^(x)| from per-pair log-mass errors ``|d_r| <= mass_err_r``.

    With posterior weights ``w_r`` (sum 1) of the estimate, ``p / p^ = sum_r w_r e^{d_r}`` lies in
    ``[1 - sum_r w_r (1 - e^-err_r), 1 + sum_r w_r (e^err_r - 1)]``. A pair whose mass a method could not
    resolve (infinite error) can still only move down by its own weight, and up by at most its term's
    rigorous upper bound over p^ (``term_caps()``, (N, R): prefactor times the mass of the region's most
    violated half-space); the bound is infinite only if the unresolved pairs carry all the weight.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        up = np.where(w > 0, w * np.expm1(mass_err), 0.0)
        down = np.where(w > 0, -w * np.expm1(-mass_err), 0.0)
    unresolved = ~np.isfinite(mass_err) | ~np.isfinite(up)
    if unresolved.any():
        up = np.where(unresolved, term_caps(), up)
    with np.errstate(divide="ignore"):
        return np.maximum(np.log1p(up.sum(axis=1)), -np.log1p(-np.minimum(down.sum(axis=1), 1.0)))


def log_marginal(net: Network, X, **kwargs) -> np.ndarray:
    """Exact ``log p(x)`` (eq. 5) for each row of X."""
    return evaluate(net, X, **kwargs).log_marginal


def prior_region_log_masses(net: Network, part: Partition | None = None, method: str = "auto") -> np.ndarray:
    """log Phi_omega(0, Sigma_z) for each region: the mixture weights of Prop. 1 (they sum to 1)."""
    part = part if part is not None else partition(net)
    zero = np.zeros((1, net.latent_dim))
    if net.latent_dim == 1:
        from .gaussian.interval import interval_moments

        bounds = part.intervals()
        log_mass, _, _ = interval_moments(0.0, np.sqrt(net.cov_z[0, 0]), bounds[:, 0], bounds[:, 1])
        return log_mass
    return np.array([truncated_moments(r.polytope, zero, net.cov_z, moments=0, method=method).log_mass[0]
                     for r in part])


def prior_region_masses(net: Network, part: Partition | None = None, method: str = "auto") -> np.ndarray:
    """Phi_omega(0, Sigma_z) for each region (Prop. 1)."""
    return np.exp(prior_region_log_masses(net, part, method))


def sample_posterior(net: Network, x, n: int, rng=None, part: Partition | None = None,
                     max_tries: int = 1000) -> np.ndarray:
    """Exact draws from p(z | x) (eq. 6): a region by its posterior weight, then the truncated Gaussian.

    S = 1 uses the inverse CDF in log space (exact in any tail). For S >= 2 the truncated Gaussian is
    drawn by rejection from N(mu_omega(x), Sigma_omega), exact but slow when a region's mass is tiny;
    ``max_tries`` rounds of proposals bound the work and a clear error is raised past it.
    """
    rng = np.random.default_rng(rng)
    x = _check_data(net, x)
    if x.shape[0] != 1:
        raise DGNInputError("x", f"has {x.shape[0]} rows", "pass one data point")
    part = part if part is not None else partition(net)
    ev = evaluate(net, x, part=part)
    rg = region_gaussians(net, part)
    mu_full, _ = posterior_region_params(net, part, x, rg)  # untruncated means mu_omega(x) of eq. 7
    w = ev.region_weights[0]
    counts = rng.multinomial(n, w / w.sum())
    out = []
    S = net.latent_dim
    for r in np.nonzero(counts)[0]:
        k = counts[r]
        m, cov = mu_full[0, r], rg.cov[r]
        if S == 1:
            from scipy.stats import truncnorm

            lo, hi = part[r].polytope.interval()
            sd = np.sqrt(cov[0, 0])
            draws = truncnorm.rvs((lo - m[0]) / sd, (hi - m[0]) / sd, loc=m[0], scale=sd, size=k,
                                  random_state=rng)
            out.append(draws[:, None])
            continue
        chol = np.linalg.cholesky(cov)
        got: list[np.ndarray] = []
        have = 0
        for _ in range(max_tries):
            prop = m + rng.standard_normal((max(4 * k, 256), S)) @ chol.T
            inside = prop[part[r].polytope.contains(prop, tol=0.0)]
            got.append(inside)
            have += len(inside)
            if have >= k:
                break
        else:
            raise DGNInputError("sample_posterior", f"region {r} has posterior mass {w[r]:.3g} but its truncated "
                                "Gaussian accepts too few proposals", "draw fewer samples or use S = 1")
        out.append(np.vstack(got)[:k])
    Z = np.vstack(out)
    return Z[rng.permutation(len(Z))]
