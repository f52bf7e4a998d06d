"""Shared exact pieces of eq. 5-7 for the deliberately wrong implementations."""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp

import engine
from engine.distributions import posterior_region_params, region_truncated_moments


def exact_terms(model: dict, X: np.ndarray):
    """Network, partition, log joint terms (N, R), region means (N, R, S), covariances (N, R, S, S)."""
    net = engine.load_network(model)
    part = engine.partition(net)
    rg = engine.region_gaussians(net, part)
    mu, log_norm = posterior_region_params(net, part, X, rg)
    log_mass, means, covs, _, _ = region_truncated_moments(part, mu, rg.cov)
    return net, part, log_norm + log_mass, means, covs


def mixture_claims(log_joint: np.ndarray, means: np.ndarray, covs: np.ndarray, spread: bool = True) -> dict:
    """log p(x), posterior mean and covariance of the truncated-Gaussian mixture (Prop. 2)."""
    log_px = logsumexp(log_joint, axis=1)
    w = np.exp(log_joint - log_px[:, None])
    mean = np.einsum("nr,nrs->ns", w, means)
    cov = np.einsum("nr,nrst->nst", w, covs)
    if spread:
        dev = means - mean[:, None, :]
        cov = cov + np.einsum("nr,nrs,nrt->nst", w, dev, dev)
    return {"log_marginal": log_px, "posterior_mean": mean, "posterior_cov": cov}
