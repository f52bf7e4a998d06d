"""Exact ELBO of a Gaussian q under a CPA decoder (engine.baselines.exact_elbo).

Oracles: adaptive scipy quadrature split at the region boundaries (S = 1, tolerance 1e-9 nats);
the closed-form Gaussian posterior of a linear decoder (KL = 0 to 1e-10); Monte Carlo for S = 2
(tolerance 6 standard errors, false-fail probability < 1e-8 per point).
"""

import numpy as np
import pytest
from scipy import integrate

from engine import DGNInputError, Linear, Network, evaluate, partition, random_network
from engine.baselines import exact_elbo, iwae_estimate


def _log_joint_1d(net, x, z):
    g = net.forward(z[:, None])
    P = np.linalg.inv(net.cov_x)
    d = x - g
    _, logdet = np.linalg.slogdet(2 * np.pi * net.cov_x)
    return (-0.5 * (logdet + np.einsum("nd,de,ne->n", d, P, d))
            - 0.5 * (np.log(2 * np.pi * net.cov_z[0, 0]) + z ** 2 / net.cov_z[0, 0]))


@pytest.mark.parametrize("activation,seed", [("relu", 3), ("leaky_relu", 4), ("abs", 5)])
def test_exact_elbo_matches_quadrature_s1(activation, seed):
    net = random_network([1, 8, 8, 2], activation=activation, cov_x=0.05, rng=seed)
    X = net.sample(12, rng=seed)
    part = partition(net)
    ev = evaluate(net, X, part=part)
    m = ev.posterior_mean + 0.2
    C = ev.posterior_cov * 1.7
    res = exact_elbo(net, X, m, C, part=part)
    breaks = sorted({b for reg in part for b in reg.polytope.interval() if np.isfinite(b)})
    for n in range(len(X)):
        mu, sd = m[n, 0], np.sqrt(C[n, 0, 0])

        def f(z, n=n, mu=mu, sd=sd):
            u = (z - mu) / sd
            logq = -0.5 * u * u - np.log(sd * np.sqrt(2 * np.pi))
            return np.exp(logq) * (_log_joint_1d(net, X[n], np.array([z]))[0] - logq)

        lo, hi = mu - 14 * sd, mu + 14 * sd
        pts = [b for b in breaks if lo < b < hi]
        val, _ = integrate.quad(f, lo, hi, points=pts or None, limit=800, epsabs=1e-13, epsrel=1e-13)
        assert abs(val - res.elbo[n]) < 1e-9 * (1 + abs(val))
    assert np.all(res.kl >= 0)
    assert np.max(np.abs(res.kl - (ev.log_marginal - res.elbo))) <= 1e-8


@pytest.mark.parametrize("S,D", [(1, 2), (2, 3), (3, 5)])
def test_linear_decoder_exact_posterior_has_zero_kl(S, D):
    rng = np.random.default_rng(S)
    net = Network([Linear(rng.normal(size=(D, S)), rng.normal(size=D))], latent_dim=S,
                  cov_z_spec=list(rng.uniform(0.5, 2.0, S)), cov_x_spec=list(rng.uniform(0.05, 0.3, D)))
    X = net.sample(25, rng=1)
    ev = evaluate(net, X)
    res = exact_elbo(net, X, ev.posterior_mean, ev.posterior_cov)
    assert np.max(np.abs(res.kl)) < 1e-10
    # a worse q has strictly positive KL
    worse = exact_elbo(net, X, ev.posterior_mean + 0.3, ev.posterior_cov)
    assert np.all(worse.kl > 1e-3)


def test_exact_elbo_s2_monte_carlo():
    pytest.importorskip("engine.gaussian.polytopes")
    net = random_network([2, 6, 3], cov_x=0.1, rng=7)
    X = net.sample(3, rng=2)
    ev = evaluate(net, X)
    m = ev.posterior_mean
    C = ev.posterior_cov + 0.05 * np.eye(2)
    res = exact_elbo(net, X, m, C, log_marginal=ev.log_marginal)
    assert np.all(res.kl >= -1e-10)
    rng = np.random.default_rng(0)
    n_mc = 100_000
    Lx = np.linalg.cholesky(net.cov_x)
    for n in range(len(X)):
        L = np.linalg.cholesky(C[n])
        eps = rng.standard_normal((n_mc, 2))
        Z = m[n] + eps @ L.T
        r = np.linalg.solve(Lx, (X[n] - net.forward(Z)).T)
        logp = (-0.5 * (r * r).sum(0) - np.log(np.diag(Lx)).sum() - 1.5 * np.log(2 * np.pi)
                - 0.5 * (Z * Z).sum(1) - np.log(2 * np.pi))
        logq = -0.5 * (eps * eps).sum(1) - np.log(np.diag(L)).sum() - np.log(2 * np.pi)
        vals = logp - logq
        assert abs(vals.mean() - res.elbo[n]) < 6 * vals.std() / np.sqrt(n_mc)


def test_iwae_k1_mean_is_the_exact_elbo():
    """E[IWAE-1] = ELBO. q under-dispersed (half the posterior covariance) keeps log-weights light-tailed,
    so the Monte-Carlo standard error is reliable; tolerance 5 s.e. (false-fail < 1e-6 per point)."""
    net = random_network([1, 8, 8, 2], cov_x=0.2, rng=3)
    X = net.sample(10, rng=1)
    ev = evaluate(net, X)
    m, C = ev.posterior_mean, 0.5 * ev.posterior_cov
    res = exact_elbo(net, X, m, C, log_marginal=ev.log_marginal)
    reps = 4000
    est = iwae_estimate(net, np.repeat(X, reps, 0), np.repeat(m, reps, 0), np.repeat(C, reps, 0), 1, rng=0)
    est = est.reshape(len(X), reps)
    se = est.std(axis=1, ddof=1) / np.sqrt(reps)
    assert np.all(np.abs(est.mean(axis=1) - res.elbo) < 5 * se + 1e-12)


def test_iwae_gap_shrinks_with_k():
    """Mean of log p(x) - IWAE_K over 200 points, q = N(exact posterior mean, covariance)."""
    net = random_network([1, 8, 8, 2], cov_x=0.2, rng=3)
    X = net.sample(200, rng=1)
    ev = evaluate(net, X)
    m, C = ev.posterior_mean, ev.posterior_cov
    gaps, ses = [], []
    for K in (1, 10, 100, 1000):
        g = ev.log_marginal - iwae_estimate(net, X, m, C, K, rng=K)
        gaps.append(g.mean())
        ses.append(g.std(ddof=1) / np.sqrt(len(g)))
    assert gaps[0] > gaps[2] + 3 * (ses[0] + ses[2])
    assert all(g > -5 * s for g, s in zip(gaps, ses))  # a lower bound in expectation
    assert abs(gaps[3]) < 5 * ses[3] + 0.01


def test_bad_q_raises():
    net = random_network([1, 4, 2], rng=0)
    X = net.sample(3, rng=0)
    with pytest.raises(DGNInputError):
        exact_elbo(net, X, np.full((3, 1), np.nan), np.ones((3, 1, 1)))
    with pytest.raises(DGNInputError):
        exact_elbo(net, X, np.zeros((3, 1)), -np.ones((3, 1, 1)))
    with pytest.raises(DGNInputError):
        exact_elbo(net, X, np.zeros((4, 1)), np.ones((3, 1, 1)))
