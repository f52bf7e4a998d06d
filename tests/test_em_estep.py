"""E-step of exact EM (paper Sec. 4.1): Q(theta; theta_t) against adaptive quadrature and the paper's formula.

Oracle: ``scipy.integrate.quad`` of ``p(z | x, theta_t) log p(x, z | theta)`` over each region of theta_t
(S = 1), with the posterior density formed from the network's forward pass and the exact log p(x); the
decoder of theta is evaluated with theta_t's activation masks by an independent forward pass (no use of
``engine.em``). Tolerance: 1e-7 relative (quad reaches ~1e-10 on these smooth integrands).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.integrate import quad
from scipy.stats import multivariate_normal

import engine
from engine.em import expected_complete_loglik
from engine.network import Activation, Linear


def _perturb(net, rng, scale=0.2, cov_x=None, cov_z=None):
    layers = [Linear(lay.weight * (1 + scale * rng.standard_normal(lay.weight.shape)),
                     lay.bias + scale * rng.standard_normal(lay.bias.shape))
              if isinstance(lay, Linear) else lay for lay in net.layers]
    return net.replace(layers=layers, cov_x=cov_x, cov_z=cov_z)


def _forward_with_signs(theta, signs, Z):
    """g_theta(Z) with the activation masks given by ``signs`` (rows: concatenated units)."""
    h = np.atleast_2d(Z)
    start = 0
    for layer in theta.layers:
        if isinstance(layer, Linear):
            h = h @ layer.weight.T + layer.bias
        else:
            assert isinstance(layer, Activation)
            w = h.shape[1]
            h = layer.slopes(signs[:, start:start + w]) * h
            start += w
    return h


def _frozen_forward(theta, net_t, z):
    """g_theta(z) with the activation masks of net_t at z (independent of engine.em)."""
    z = np.atleast_2d(z)
    return _forward_with_signs(theta, net_t.sign_patterns(z), z)[0]


def _q_by_quadrature(theta, net_t, x, log_px, part):
    mvn_x = multivariate_normal(np.zeros(theta.data_dim), theta.cov_x)
    sz = np.sqrt(theta.cov_z[0, 0])

    def post(z):
        g = net_t.forward(np.array([[z]]))[0]
        return np.exp(multivariate_normal.logpdf(x, g, net_t.cov_x)
                      + multivariate_normal.logpdf(z, 0.0, net_t.cov_z[0, 0]) - log_px)

    def integrand(z):
        g = _frozen_forward(theta, net_t, np.array([z]))
        log_joint = mvn_x.logpdf(x - g) - 0.5 * (z / sz) ** 2 - np.log(sz) - 0.5 * np.log(2 * np.pi)
        return post(z) * log_joint

    total = 0.0
    for region in part:
        lo, hi = region.polytope.interval()
        total += quad(integrand, lo, hi, epsabs=1e-13, epsrel=1e-11, limit=200)[0]
    return total


@pytest.mark.parametrize("activation", ["relu", "leaky_relu", "abs"])
def test_q_matches_quadrature_s1(activation):
    rng = np.random.default_rng({"relu": 1, "leaky_relu": 2, "abs": 3}[activation])
    net_t = engine.random_network([1, 5, 4, 2], activation=activation, cov_x=0.3, rng=rng)
    X = net_t.sample(4, rng=rng)
    ev = engine.evaluate(net_t, X)
    # theta = theta_t (the paper's E-step value) and a theta with every layer and both covariances moved
    thetas = [net_t, _perturb(net_t, rng, cov_x=[0.2, 0.5], cov_z=1.7)]
    for theta in thetas:
        q = expected_complete_loglik(theta, X, ev)
        want = np.array([_q_by_quadrature(theta, net_t, x, lp, ev.partition)
                         for x, lp in zip(X, ev.log_marginal)])
        np.testing.assert_allclose(q, want, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("S", [1, 2])
def test_q_equals_paper_expanded_formula(S):
    """Sec. 4.1's E-step written with e0, e1, E2 (the paper's expanded form) equals our centred form."""
    if S == 2:
        pytest.importorskip("engine.gaussian.polytopes")
    rng = np.random.default_rng(7)
    net = engine.random_network([S, 6, 6, 3], activation="leaky_relu", cov_x=[0.1, 0.2, 0.3], cov_z=1.3,
                                rng=rng)
    X = net.sample(20 if S == 1 else 8, rng=rng)
    ev = engine.evaluate(net, X)
    e0, e1, E2 = ev.moments()
    A, b = ev.partition.A, ev.partition.b
    Lam = np.linalg.inv(net.cov_x)
    S, D = net.latent_dim, net.data_dim
    const = -0.5 * np.log((2 * np.pi) ** (S + D) * np.linalg.det(net.cov_x) * np.linalg.det(net.cov_z))
    E2tot = E2.sum(axis=1)
    prior = -0.5 * np.einsum("st,nts->n", np.linalg.inv(net.cov_z), E2tot)
    fit = np.einsum("rds,nrs->nd", A, e1) + np.einsum("nr,rd->nd", e0, b)
    term = (np.einsum("nd,de,nd->n", X, Lam, X) - 2 * np.einsum("nd,de,ne->n", X, Lam, fit)
            + np.einsum("rds,de,ret,nrts->n", A, Lam, A, E2)
            + np.einsum("nrd,de,re->n", e0[..., None] * b[None] + 2 * np.einsum("rds,nrs->nrd", A, e1),
                        Lam, b))
    paper = const + prior - 0.5 * term
    np.testing.assert_allclose(expected_complete_loglik(net, X, ev), paper, rtol=1e-10, atol=1e-10)


def test_q_lower_bound_identity():
    """EM identity: log p(x) = Q(theta_t; theta_t) + H[p(z|x)], checked with the entropy by quadrature."""
    rng = np.random.default_rng(11)
    net = engine.random_network([1, 4, 2], activation="abs", cov_x=0.2, rng=rng)
    X = net.sample(3, rng=rng)
    ev = engine.evaluate(net, X)
    q = expected_complete_loglik(net, X, ev)
    for x, lp, qn in zip(X, ev.log_marginal, q):
        def neg_plogp(z, x=x, lp=lp):
            lj = (multivariate_normal.logpdf(x, net.forward(np.array([[z]]))[0], net.cov_x)
                  + multivariate_normal.logpdf(z, 0.0, net.cov_z[0, 0]) - lp)
            return -np.exp(lj) * lj
        H = sum(quad(neg_plogp, *r.polytope.interval(), epsabs=1e-13, epsrel=1e-11, limit=200)[0]
                for r in ev.partition)
        assert abs(lp - (qn + H)) < 1e-8


def test_q_matches_exact_posterior_monte_carlo_s2():
    """S = 2: Q(theta; theta_t) against the mean of log p(x, z | theta) over exact posterior draws
    (``engine.sample_posterior``, rejection from the truncated Gaussians). 40,000 draws per point;
    tolerance 5 standard errors (~0.06 nats here, the smallest error it detects): false-fail
    probability ~6e-7 per point (CLT), seeded."""
    pytest.importorskip("engine.gaussian.polytopes")
    rng = np.random.default_rng(21)
    net_t = engine.random_network([2, 4, 3, 2], activation="leaky_relu", cov_x=0.3, rng=rng)
    theta = _perturb(net_t, rng, cov_x=[0.2, 0.5], cov_z=[[1.5, 0.3], [0.3, 0.8]])
    X = net_t.sample(3, rng=rng)
    ev = engine.evaluate(net_t, X)
    q = expected_complete_loglik(theta, X, ev)
    mvn_z = multivariate_normal(np.zeros(2), theta.cov_z)
    for n, x in enumerate(X):
        Z = engine.sample_posterior(net_t, x[None], 40_000, rng=np.random.default_rng(n))
        G = _forward_with_signs(theta, net_t.sign_patterns(Z), Z)
        vals = multivariate_normal(np.zeros(2), theta.cov_x).logpdf(x - G) + mvn_z.logpdf(Z)
        se = vals.std(ddof=1) / np.sqrt(len(vals))
        assert abs(vals.mean() - q[n]) <= 5 * se, (vals.mean(), q[n], se)
