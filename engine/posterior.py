"""The exact posterior p(z | x) as an object: a mixture of Gaussians truncated to the regions (Prop. 2).

On region omega (eq. 6, eq. 7)::

    p(z | x) = N(x; b_omega, Sigma_x + A Sigma_z A^T) N(z; mu_omega(x), Sigma_omega) / p(x),   z in omega

so the posterior is the mixture, over the regions, of N(mu_omega(x), Sigma_omega) truncated to omega with
weight ``P(z in omega | x)``. Its support is all of R^S (every piece is positive on its region); ``logpdf``
is -inf only outside the regions of a partition that does not cover R^S, which enumeration never produces.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .distributions import evaluate, posterior_region_params, region_gaussians
from .errors import DGNInputError
from .network import Network
from .partition import DEFAULT_MAX_REGIONS, Partition, partition
from .validation import check_data, check_random_state

_LOG_2PI = np.log(2.0 * np.pi)


@dataclass
class PosteriorMixture:
    """p(z | x) for one data point x, in the style of a frozen ``scipy.stats`` distribution.

    ``weights`` (R,): P(z in omega | x); ``mean`` (S,), ``cov`` (S, S): the exact posterior moments;
    ``region_means``/``region_covs``: E[z | x, z in omega] and Cov[z | x, z in omega];
    ``component_means``/``component_covs``: the untruncated mu_omega(x) and Sigma_omega of eq. 7;
    ``log_marginal``: log p(x) (eq. 5).
    """

    weights: np.ndarray
    mean: np.ndarray
    cov: np.ndarray
    log_marginal: float
    region_means: np.ndarray
    region_covs: np.ndarray
    component_means: np.ndarray
    component_covs: np.ndarray
    log_prefactors: np.ndarray  # (R,) log N(x; b_omega, Sigma_x + A Sigma_z A^T)
    partition: Partition = field(repr=False)
    chol_covs: np.ndarray = field(repr=False)

    @property
    def dim(self) -> int:
        return self.mean.shape[0]

    def _as_z(self, z) -> np.ndarray:
        Z = check_data(z, self.dim, field="z", one_dim="auto")
        return Z

    def region_of(self, z) -> np.ndarray:
        """Index of the region containing each row of z (-1 outside every region)."""
        return self.partition.locate(self._as_z(z))

    def logpdf(self, z) -> np.ndarray:
        """Exact log p(z | x) (eq. 6) of each row of z: the prefactor and N(z; mu_omega, Sigma_omega) of its
        region, minus log p(x); -inf outside every region."""
        Z = self._as_z(z)
        r = self.partition.locate(Z)
        out = np.full(len(Z), -np.inf)
        inside = r >= 0
        ri, Zi = r[inside], Z[inside]
        L = self.chol_covs[ri]
        dev = np.linalg.solve(L, (Zi - self.component_means[ri])[..., None])[..., 0]
        logdet = 2.0 * np.log(np.abs(np.diagonal(L, axis1=1, axis2=2))).sum(axis=1)
        log_gauss = -0.5 * (self.dim * _LOG_2PI + logdet + np.einsum("ns,ns->n", dev, dev))
        out[inside] = self.log_prefactors[ri] + log_gauss - self.log_marginal
        return out

    def pdf(self, z) -> np.ndarray:
        return np.exp(self.logpdf(z))

    def rvs(self, size: int = 1, random_state=None, max_tries: int = 1000) -> np.ndarray:
        """``size`` exact draws (size, S): a region by its weight, then its truncated Gaussian (S = 1: inverse
        CDF in log space; S >= 2: rejection from N(mu_omega, Sigma_omega), at most ``max_tries`` rounds)."""
        if isinstance(size, bool) or not isinstance(size, int | np.integer) or size < 0:
            raise DGNInputError("size", f"must be a non-negative integer, got {size!r}")
        rng = check_random_state(random_state)
        counts = rng.multinomial(int(size), self.weights / self.weights.sum())
        out = [np.zeros((0, self.dim))]
        for r in np.nonzero(counts)[0]:
            out.append(self._draw_region(int(r), int(counts[r]), rng, max_tries))
        Z = np.vstack(out)
        return Z[rng.permutation(len(Z))]

    def _draw_region(self, r: int, k: int, rng: np.random.Generator, max_tries: int) -> np.ndarray:
        m, L = self.component_means[r], self.chol_covs[r]
        poly = self.partition[r].polytope
        if self.dim == 1:
            from scipy.stats import truncnorm

            lo, hi = poly.interval()
            sd = L[0, 0]
            return truncnorm.rvs((lo - m[0]) / sd, (hi - m[0]) / sd, loc=m[0], scale=sd, size=k,
                                 random_state=rng)[:, None]
        got, have = [], 0
        for _ in range(max_tries):
            prop = m + rng.standard_normal((max(4 * k, 256), self.dim)) @ L.T
            inside = prop[poly.contains(prop, tol=0.0)]
            got.append(inside)
            have += len(inside)
            if have >= k:
                return np.vstack(got)[:k]
        raise DGNInputError("rvs", f"region {r} has posterior weight {self.weights[r]:.3g} but its truncated "
                            "Gaussian accepts too few proposals", "draw fewer samples or use S = 1")


def posterior(net: Network, x, *, part: Partition | None = None, method: str = "auto",
              max_regions: int = DEFAULT_MAX_REGIONS, rng=None) -> PosteriorMixture:
    """The exact posterior p(z | x) of one data point (Prop. 2) as a :class:`PosteriorMixture`."""
    X = check_data(x, net.data_dim, field="x")
    if X.shape[0] != 1:
        raise DGNInputError("x", f"has {X.shape[0]} rows", "pass one data point (call posterior per row)")
    part = part if part is not None else partition(net, max_regions=max_regions)
    ev = evaluate(net, X, part=part, method=method, rng=rng)
    rg = region_gaussians(net, part)
    mu, log_norm = posterior_region_params(net, part, X, rg)
    w = np.exp(ev.region_log_weights[0])
    log_px = float(ev.log_marginal[0])
    return PosteriorMixture(weights=w, mean=ev.posterior_mean[0], cov=ev.posterior_cov[0], log_marginal=log_px,
                            region_means=ev.region_means[0], region_covs=ev.region_covs[0],
                            component_means=mu[0], component_covs=rg.cov, log_prefactors=log_norm[0],
                            partition=part, chol_covs=rg.chol_cov)


__all__ = ["PosteriorMixture", "posterior"]
