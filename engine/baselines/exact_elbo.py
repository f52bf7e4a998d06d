"""Exact ELBO of a Gaussian q(z) = N(m, C) under a CPA decoder, and KL(q || p(z|x)) (paper Sec. 4.3).

For a decoder affine on each region, ``g(z) = A_w z + b_w`` on ``w`` (eq. 2), the Gaussian
log-likelihood is a quadratic in z on each region, so its expectation under q needs only q's mass,
mean and covariance on each region (the same truncated moments as the E-step of Sec. 4.1, but under
q instead of the posterior). With ``Sigma_x = L L^T``, ``e_w = L^-1 (x - b_w)``, ``A~_w = L^-1 A_w``
and ``pi_w, mu_w, V_w`` q's mass, conditional mean and conditional covariance on ``w``::

    E_q[log p(x|z)] = -1/2 (D log 2pi + log|Sigma_x|)
                      -1/2 sum_w pi_w ( |e_w - A~_w mu_w|^2 + tr(A~_w^T A~_w V_w) )
    E_q[log p(z)]   = -1/2 (S log 2pi + log|Sigma_z| + tr(Sigma_z^-1 (C + m m^T)))
    H(q)            =  1/2 (S (1 + log 2pi) + log|C|)
    ELBO = E_q[log p(x|z)] + E_q[log p(z)] + H(q),     KL(q || p(z|x)) = log p(x) - ELBO   (eq. 3)

Every region term is a non-negative quadratic times a mass, so the sum has no cancellation. The
exact ``log p(x)`` comes from Theorem 1 (:func:`engine.evaluate`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..distributions import _check_data, evaluate, region_gaussians
from ..errors import DGNInputError
from ..network import Network
from ..partition import Partition, partition

_LOG_2PI = np.log(2.0 * np.pi)
_CHUNK_FLOATS = 2_000_000


@dataclass
class ExactELBO:
    """Per-point terms of the exact ELBO of q = N(mean, cov); ``kl`` is KL(q || p(z|x))."""

    elbo: np.ndarray  # (N,)
    expected_log_likelihood: np.ndarray  # (N,) E_q[log p(x|z)]
    expected_log_prior: np.ndarray  # (N,) E_q[log p(z)]
    entropy: np.ndarray  # (N,) H(q)
    region_log_mass: np.ndarray  # (N, R) log q(z in omega)
    log_marginal: np.ndarray | None = None  # (N,) exact log p(x) (Theorem 1)
    kl: np.ndarray | None = None  # (N,) log p(x) - elbo


def _check_q(mean, cov, N: int, S: int) -> tuple[np.ndarray, np.ndarray]:
    try:
        m = np.asarray(mean, dtype=np.float64)
        C = np.asarray(cov, dtype=np.float64)
    except (TypeError, ValueError):
        raise DGNInputError("q", "mean/cov are not numeric arrays") from None
    if m.ndim == 1 and S == 1 and m.shape == (N,):
        m = m[:, None]
    if m.shape != (N, S):
        raise DGNInputError("q.mean", f"has shape {m.shape}, expected ({N}, {S})",
                            "give one mean per data point")
    if C.shape == (S, S):
        C = np.broadcast_to(C, (N, S, S))
    elif S == 1 and C.shape in {(N,), (N, 1)}:
        C = C.reshape(N, 1, 1)
    if C.shape != (N, S, S):
        raise DGNInputError("q.cov", f"has shape {C.shape}, expected ({N}, {S}, {S}) or ({S}, {S})")
    if not (np.all(np.isfinite(m)) and np.all(np.isfinite(C))):
        raise DGNInputError("q", "mean or cov contains NaN or infinite values")
    try:
        np.linalg.cholesky(C)
    except np.linalg.LinAlgError:
        raise DGNInputError("q.cov", "is not positive definite for every point") from None
    return m, np.ascontiguousarray(C)


def q_region_moments(part: Partition, mean: np.ndarray, cov: np.ndarray, *, method: str = "auto", rng=None):
    """q's log mass (N, R), conditional mean (N, R, S) and covariance (N, R, S, S) on every region.

    S = 1: closed form, vectorised over (points x regions). A region without facets (the whole of
    R^S, e.g. a linear decoder) has mass 1 and q's own moments. S >= 2: one
    :func:`engine.gaussian.truncated_moments` call per region when all points share one covariance,
    otherwise per (point, region), since that routine takes one covariance per call.
    """
    N, S = mean.shape
    R = len(part)
    if S == 1:
        from ..gaussian.interval import interval_moments

        bounds = part.intervals()  # (R, 2)
        sd = np.sqrt(cov[:, 0, 0])[:, None]
        log_mass, m, v = interval_moments(mean[:, :1], sd, bounds[None, :, 0], bounds[None, :, 1])
        return log_mass, m[..., None], v[..., None, None]
    log_mass = np.empty((N, R))
    means = np.empty((N, R, S))
    covs = np.empty((N, R, S, S))
    shared = bool(np.all(cov == cov[:1]))
    for r, region in enumerate(part):
        if region.polytope.n_facets == 0:
            log_mass[:, r], means[:, r], covs[:, r] = 0.0, mean, cov
            continue
        from ..gaussian import truncated_moments

        if shared:
            tm = truncated_moments(region.polytope, mean, cov[0], moments=2, method=method, rng=rng)
            log_mass[:, r], means[:, r], covs[:, r] = tm.log_mass, tm.mean, tm.cov
        else:
            for n in range(N):
                tm = truncated_moments(region.polytope, mean[n:n + 1], cov[n], moments=2, method=method,
                                       rng=rng)
                log_mass[n, r], means[n, r], covs[n, r] = tm.log_mass[0], tm.mean[0], tm.cov[0]
    return log_mass, means, covs


def exact_elbo(net: Network, X, mean, cov, *, part: Partition | None = None, with_kl: bool = True,
               log_marginal: np.ndarray | None = None, method: str = "auto", rng=None) -> ExactELBO:
    """The exact ELBO of ``q_n = N(mean[n], cov[n])`` for each row ``x_n`` of X, and KL(q || p(z|x)).

    ``cov`` is (N, S, S) or one shared (S, S). With ``with_kl`` the exact log p(x) (Theorem 1) is
    computed (or taken from ``log_marginal``) and ``kl = log p(x) - elbo``.
    """
    X = _check_data(net, X)
    N, S, D = X.shape[0], net.latent_dim, net.data_dim
    m, C = _check_q(mean, cov, N, S)
    part = part if part is not None else partition(net)
    rg = region_gaussians(net, part)
    log_mass, mu, V = q_region_moments(part, m, C, method=method, rng=rng)
    w = np.exp(log_mass)  # (N, R)
    X_w = np.linalg.solve(rg.chol_x, X.T).T
    gram = np.einsum("rds,rdt->rst", rg.A_w, rg.A_w)  # (R, S, S)
    weighted = np.empty(N)
    chunk = max(1, _CHUNK_FLOATS // max(1, len(part) * D))
    for s in range(0, N, chunk):
        sl = slice(s, s + chunk)
        resid = X_w[sl, None, :] - rg.b_w[None] - np.einsum("rds,nrs->nrd", rg.A_w, mu[sl])
        quad = np.einsum("nrd,nrd->nr", resid, resid) + np.einsum("rst,nrts->nr", gram, V[sl])
        weighted[sl] = np.einsum("nr,nr->n", w[sl], quad)
    logdet_x = 2.0 * np.log(np.diag(rg.chol_x)).sum()
    ell = -0.5 * (D * _LOG_2PI + logdet_x) - 0.5 * weighted
    chol_z = np.linalg.cholesky(net.cov_z)
    logdet_z = 2.0 * np.log(np.diag(chol_z)).sum()
    second = C + m[:, :, None] * m[:, None, :]
    elp = -0.5 * (S * _LOG_2PI + logdet_z + np.einsum("st,nts->n", rg.prec_z, second))
    chol_q = np.linalg.cholesky(C)
    logdet_q = 2.0 * np.log(np.diagonal(chol_q, axis1=1, axis2=2)).sum(axis=1)
    ent = 0.5 * (S * (1.0 + _LOG_2PI) + logdet_q)
    elbo = ell + elp + ent
    out = ExactELBO(elbo=elbo, expected_log_likelihood=ell, expected_log_prior=elp, entropy=ent,
                    region_log_mass=log_mass)
    if with_kl:
        if log_marginal is None:
            log_marginal = evaluate(net, X, part=part, method=method, rng=rng).log_marginal
        out.log_marginal = np.asarray(log_marginal, dtype=np.float64)
        out.kl = out.log_marginal - elbo
    return out


def iwae_estimate(net: Network, X, mean, cov, n_samples: int, rng=None,
                  chunk_floats: int = 4_000_000) -> np.ndarray:
    """The IWAE-K estimate ``log (1/K) sum_k p(x, z_k) / q(z_k)``, z_k ~ q = N(mean, cov), per point.

    It is the log of an unbiased, non-negative estimate of p(x), so ``E[estimate] <= log p(x)``
    (Burda et al. 2016) and ``P(estimate > log p(x) + t) <= exp(-t)`` (Markov).
    """
    from scipy.special import logsumexp

    X = _check_data(net, X)
    N, S, D = X.shape[0], net.latent_dim, net.data_dim
    m, C = _check_q(mean, cov, N, S)
    if int(n_samples) < 1:
        raise DGNInputError("n_samples", f"must be a positive integer, got {n_samples!r}")
    K = int(n_samples)
    rng = np.random.default_rng(rng)
    chol_q = np.linalg.cholesky(C)
    logdet_q = 2.0 * np.log(np.diagonal(chol_q, axis1=1, axis2=2)).sum(axis=1)
    chol_x = np.linalg.cholesky(net.cov_x)
    logdet_x = 2.0 * np.log(np.diag(chol_x)).sum()
    chol_z = np.linalg.cholesky(net.cov_z)
    logdet_z = 2.0 * np.log(np.diag(chol_z)).sum()
    out = np.empty(N)
    step = max(1, chunk_floats // max(1, K * (D + S)))
    for s in range(0, N, step):
        sl = slice(s, s + step)
        n = len(X[sl])
        eps = rng.standard_normal((n, K, S))
        Z = m[sl, None, :] + np.einsum("nst,nkt->nks", chol_q[sl], eps)
        log_q = -0.5 * (S * _LOG_2PI + logdet_q[sl, None] + np.sum(eps * eps, axis=2))
        u = np.linalg.solve(chol_z, Z.reshape(-1, S).T).T.reshape(n, K, S)
        log_pz = -0.5 * (S * _LOG_2PI + logdet_z + np.sum(u * u, axis=2))
        G = net.forward(Z.reshape(-1, S)).reshape(n, K, D)
        r = np.linalg.solve(chol_x, (X[sl, None, :] - G).reshape(-1, D).T).T.reshape(n, K, D)
        log_px_z = -0.5 * (D * _LOG_2PI + logdet_x + np.sum(r * r, axis=2))
        out[sl] = logsumexp(log_px_z + log_pz - log_q, axis=1) - np.log(K)
    return out
