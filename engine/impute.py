"""Exact missing-data imputation: p(x_miss | x_obs) of a CPA generative network (Theorem 1, Prop. 2).

Split x = (x_o, x_m) and Sigma_x accordingly. Marginalising x_m out of x = g(z) + eps leaves
``x_o = g_o(z) + eps_o`` with ``eps_o ~ N(0, Sigma_x[o, o])``: the SAME CPA model with the output rows o
of the last layer (the hidden layers, hence the partition, are unchanged; eq. 2 restricted to rows o), so
``p(x_o)`` is eq. 5 of that model and ``p(z | x_o)`` its posterior (eq. 6). Conditioning the noise too
(needed for a full Sigma_x; ``K = 0`` when it is diagonal)::

    K = Sigma_x[m, o] Sigma_x[o, o]^-1,   Sigma_m|o = Sigma_x[m, m] - K Sigma_x[o, m]
    x_m | z, x_o ~ N(g_m(z) + K (x_o - g_o(z)), Sigma_m|o)

On region omega, ``h(z) = g_m(z) - K g_o(z) = C_omega z + d_omega`` with ``C = A_m - K A_o`` and
``d = b_m - K b_o``, so with the posterior weights w, truncated means m and covariances V of eq. 6::

    E[x_m | x_o]   = K x_o + sum_omega w (C m + d)
    Cov[x_m | x_o] = Sigma_m|o + sum_omega w [C V C^T + (C m + d - hbar)(C m + d - hbar)^T]

Exact in both cases. A row with nothing observed gets the prior predictive (w, m, V of the prior
truncated to each region, Prop. 1) and log p(x_o) = 0; a row with nothing missing is ``evaluate``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .distributions import evaluate, region_truncated_moments
from .errors import DGNInputError
from .network import Linear, Network
from .partition import DEFAULT_MAX_REGIONS, Partition, partition
from .validation import check_data, check_random_state


def observed_model(net: Network, part: Partition, observed: np.ndarray) -> tuple[Network, Partition]:
    """The network of x_o (last layer's rows ``observed``, Sigma_x[o, o]) and ``part`` with A, b restricted."""
    last = net.layers[-1]
    layers = list(net.layers[:-1]) + [Linear(np.ascontiguousarray(last.weight[observed]),
                                             np.ascontiguousarray(last.bias[observed]))]
    sub = Network(layers=layers, latent_dim=net.latent_dim, cov_z_spec=net.cov_z_spec,
                  cov_x_spec=net.cov_x[np.ix_(observed, observed)])
    return sub, part.for_network(sub, part.A[:, observed], part.b[:, observed])


@dataclass
class _Pattern:
    """One missingness pattern: its rows and the conditioning quantities of the module docstring."""

    rows: np.ndarray
    observed: np.ndarray
    missing: np.ndarray
    K: np.ndarray  # (m, o)
    chol_cond: np.ndarray  # (m, m) Cholesky factor of Sigma_m|o
    sub: tuple[Network, Partition] | None  # the observed model (None when nothing is observed)


@dataclass
class Imputation:
    """Result of :func:`impute`. ``X`` (N, D): observed entries unchanged, missing ones E[x_m | x_o];
    ``log_marginal`` (N,): exact log p(x_o); ``cov`` (N, D, D): exact Cov[x | x_o] (zero in every observed
    row and column); ``missing`` (N, D): the NaN mask of the input."""

    X: np.ndarray
    log_marginal: np.ndarray
    cov: np.ndarray
    missing: np.ndarray
    net: Network = field(repr=False)
    partition: Partition = field(repr=False)
    patterns: list[_Pattern] = field(repr=False)
    data: np.ndarray = field(repr=False)

    def sample(self, n: int = 1, rng=None) -> np.ndarray:
        """``n`` exact draws of every row from p(x_m | x_o) (multiple imputation), shape (n, N, D);
        observed entries are copied. Latents come from the exact posterior of the observed model
        (:class:`engine.posterior.PosteriorMixture.rvs`), then x_m | z, x_o is Gaussian."""
        from .posterior import posterior

        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
            raise DGNInputError("n", f"must be a positive integer, got {n!r}")
        rng = check_random_state(rng, "rng")
        out = np.broadcast_to(self.data, (int(n),) + self.data.shape).copy()
        for pat in self.patterns:
            if pat.missing.size == 0:
                continue
            for i in pat.rows:
                if pat.sub is None:
                    Z = rng.standard_normal((n, self.net.latent_dim)) @ np.linalg.cholesky(self.net.cov_z).T
                    shift = 0.0
                else:
                    x_o = self.data[i, pat.observed]
                    Z = posterior(pat.sub[0], x_o, part=pat.sub[1]).rvs(int(n), rng)
                    shift = x_o @ pat.K.T
                G = self.net.forward(Z)
                h = G[:, pat.missing] - G[:, pat.observed] @ pat.K.T
                noise = rng.standard_normal((n, pat.missing.size)) @ pat.chol_cond.T
                out[:, i, pat.missing] = h + shift + noise
        return out


def _prior_moments(net: Network, part: Partition, method: str, rng):
    """log weights, truncated means and covariances of the prior on each region (Prop. 1), (1, R, ...)."""
    R, S = len(part), net.latent_dim
    covs = np.broadcast_to(net.cov_z, (R, S, S)).copy()
    log_mass, means, vs, _, _ = region_truncated_moments(part, np.zeros((1, R, S)), covs, method=method, rng=rng)
    return log_mass, means, vs


def _conditional(pat: _Pattern, part: Partition, X_o: np.ndarray, log_w: np.ndarray, means: np.ndarray,
                 covs: np.ndarray, cov_cond: np.ndarray):
    """E[x_m | x_o] (n, m) and Cov[x_m | x_o] (n, m, m) from the region posterior (module docstring)."""
    A, b = part.A, part.b
    C = A[:, pat.missing] - np.einsum("mo,ros->rms", pat.K, A[:, pat.observed])  # (R, m, S)
    d = b[:, pat.missing] - b[:, pat.observed] @ pat.K.T  # (R, m)
    w = np.exp(log_w)  # (n, R)
    live = w > 0
    means = np.where(live[..., None], means, 0.0)
    covs = np.where(live[..., None, None], covs, 0.0)
    hbar = np.einsum("rms,nrs->nrm", C, means) + d[None]  # (n, R, m)
    mean = np.einsum("nr,nrm->nm", w, hbar)
    dev = hbar - mean[:, None, :]
    within = np.einsum("rms,nrst,rkt->nrmk", C, covs, C)
    cov = cov_cond[None] + np.einsum("nr,nrmk->nmk", w, within) + np.einsum("nr,nrm,nrk->nmk", w, dev, dev)
    return mean + X_o @ pat.K.T, 0.5 * (cov + cov.transpose(0, 2, 1))


def _pattern(net: Network, part: Partition, rows: np.ndarray, miss: np.ndarray) -> tuple[_Pattern, np.ndarray]:
    observed, missing = np.flatnonzero(~miss), np.flatnonzero(miss)
    Sx = net.cov_x
    if observed.size and missing.size:
        K = np.linalg.solve(Sx[np.ix_(observed, observed)], Sx[np.ix_(observed, missing)]).T
    else:
        K = np.zeros((missing.size, observed.size))
    cov_cond = Sx[np.ix_(missing, missing)] - K @ Sx[np.ix_(observed, missing)]
    cov_cond = 0.5 * (cov_cond + cov_cond.T)
    chol = np.linalg.cholesky(cov_cond) if missing.size else np.zeros((0, 0))
    sub = observed_model(net, part, observed) if observed.size else None
    return _Pattern(rows, observed, missing, K, chol, sub), cov_cond


def impute(net: Network, X, *, part: Partition | None = None, method: str = "auto",
           max_regions: int = DEFAULT_MAX_REGIONS, rng=None) -> Imputation:
    """Exact imputation of the NaN entries of X (any pattern per row): see the module docstring.

    Rows are grouped by missingness pattern; each pattern is one vectorised ``evaluate`` of the observed
    model on the partition of ``net`` (enumerated once).
    """
    X = check_data(X, net.data_dim, field="data", allow_nan=True, min_samples=0)
    miss = np.isnan(X)
    part = part if part is not None else partition(net, max_regions=max_regions)
    N, D = X.shape
    out_X, log_px, cov = X.copy(), np.zeros(N), np.zeros((N, D, D))
    patterns = []
    prior = None
    uniq, inverse = np.unique(miss, axis=0, return_inverse=True) if N else (np.zeros((0, D), bool), None)
    for k, pattern in enumerate(uniq):
        rows = np.flatnonzero(inverse.reshape(-1) == k)
        pat, cov_cond = _pattern(net, part, rows, pattern)
        patterns.append(pat)
        X_o = X[np.ix_(rows, pat.observed)]
        if pat.sub is None:
            prior = prior or _prior_moments(net, part, method, rng)
            log_w, means, covs = (np.broadcast_to(a, (rows.size,) + a.shape[1:]) for a in prior)
            log_w = log_w - np.logaddexp.reduce(log_w, axis=1, keepdims=True)  # sums to 1 up to rounding
        else:
            ev = evaluate(pat.sub[0], X_o, part=pat.sub[1], method=method, rng=rng)
            log_px[rows] = ev.log_marginal
            log_w, means, covs = ev.region_log_weights, ev.region_means, ev.region_covs
        if pat.missing.size == 0:
            continue
        mean_m, cov_m = _conditional(pat, part, X_o, log_w, means, covs, cov_cond)
        out_X[np.ix_(rows, pat.missing)] = mean_m
        cov[np.ix_(rows, pat.missing, pat.missing)] = cov_m
    return Imputation(X=out_X, log_marginal=log_px, cov=cov, missing=miss, net=net, partition=part,
                      patterns=patterns, data=X)


__all__ = ["Imputation", "impute", "observed_model"]
