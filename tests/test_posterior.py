"""engine.posterior: p(z | x) as a truncated-Gaussian mixture object.

Oracles: Bayes' rule evaluated directly, p(z) N(x; g(z), Sigma_x) / p(x), with g the raw forward pass and
p(x) from adaptive quadrature of that same raw integrand (S = 1, scipy quad, rel. 1e-13) or from the
engine (S = 2: the logpdf's region bookkeeping is what is tested there); moments against quadrature;
draws against the exact CDF (Kolmogorov-Smirnov, false-fail probability 1e-6).
"""

import numpy as np
import pytest
from scipy import stats
from scipy.integrate import quad

import engine
from engine import DGNInputError
from engine.posterior import posterior


def _log_joint(net, x, Z):
    """log p(z) + log N(x; g(z), Sigma_x) of the raw model."""
    G = net.forward(Z)
    return (stats.multivariate_normal(np.zeros(net.latent_dim), net.cov_z).logpdf(Z)
            + stats.multivariate_normal(cov=net.cov_x).logpdf(x - G))


@pytest.fixture(scope="module")
def s1():
    net = engine.random_network([1, 5, 3], activation="leaky_relu", rng=3, cov_x=0.2)
    x = net.sample(1, rng=2)[0]
    kinks = sorted({e for r in engine.partition(net) for e in r.polytope.interval() if np.isfinite(e)})

    def f(z, k=0):
        return np.exp(_log_joint(net, x, np.array([[z]]))) * z ** k

    opts = dict(points=kinks, limit=500, epsabs=0.0, epsrel=1e-13)
    lo, hi = -12.0, 12.0
    m = [quad(f, lo, hi, args=(k,), **opts)[0] for k in range(3)]
    return net, x, m


def test_s1_logpdf_is_bayes_rule_and_moments_match_quadrature(s1):
    net, x, (m0, m1, m2) = s1
    post = posterior(net, x)
    assert abs(post.log_marginal - np.log(m0)) < 1e-10
    Z = np.linspace(-4, 4, 41)[:, None]
    np.testing.assert_allclose(post.logpdf(Z), _log_joint(net, x, Z) - np.log(m0), rtol=0, atol=1e-10)
    np.testing.assert_allclose(post.pdf(Z), np.exp(_log_joint(net, x, Z)) / m0, rtol=1e-9)
    mean = m1 / m0
    assert abs(post.mean[0] - mean) < 1e-9
    assert abs(post.cov[0, 0] - (m2 / m0 - mean ** 2)) < 1e-9
    assert post.weights.shape == (len(post.partition),) and abs(post.weights.sum() - 1) < 1e-12


def test_s1_draws_follow_the_exact_cdf(s1):
    net, x, (m0, _, _) = s1
    post = posterior(net, x)
    draws = post.rvs(4000, random_state=0)[:, 0]
    grid = np.linspace(-8, 8, 4001)
    pdf = post.pdf(grid[:, None])
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (pdf[1:] + pdf[:-1]) * np.diff(grid))])
    ks = stats.kstest(draws, lambda t: np.interp(t, grid, cdf))
    assert ks.pvalue > 1e-6  # false-fail probability 1e-6 (KS p-value is uniform under the null)
    np.testing.assert_array_equal(post.rvs(5, random_state=3), post.rvs(5, random_state=3))


def test_s2_logpdf_is_bayes_rule_and_region_of_locates():
    net = engine.random_network([2, 6, 3], rng=1, cov_x=0.1)
    x = net.sample(1, rng=5)[0]
    post = posterior(net, x)
    Z = np.random.default_rng(0).normal(size=(200, 2)) * 2
    np.testing.assert_allclose(post.logpdf(Z), _log_joint(net, x, Z) - post.log_marginal, rtol=0, atol=1e-10)
    r = post.region_of(Z)
    for i in range(0, 200, 17):
        assert post.partition[r[i]].polytope.contains(Z[i:i + 1], tol=1e-9)[0]
    draws = post.rvs(20000, random_state=1)
    se = np.sqrt(np.diag(post.cov) / len(draws))
    assert np.all(np.abs(draws.mean(axis=0) - post.mean) < 6 * se)  # false fail < 2e-9 per coordinate
    np.testing.assert_allclose(post.weights @ post.region_means, post.mean, rtol=0, atol=1e-12)


def test_bad_input():
    net = engine.random_network([1, 3, 2], rng=0)
    with pytest.raises(DGNInputError, match="one data point"):
        posterior(net, np.zeros((2, 2)))
    with pytest.raises(DGNInputError, match="Complex"):
        posterior(net, np.zeros(2) + 1j)
    post = posterior(net, np.zeros(2))
    with pytest.raises(DGNInputError, match="z"):
        post.logpdf(np.zeros((3, 2)))
    with pytest.raises(DGNInputError, match="size"):
        post.rvs(-1)
