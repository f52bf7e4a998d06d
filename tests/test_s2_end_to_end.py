"""Theorem 1 for S = 2 end to end against independent nested quadrature of the raw model.

The oracle integrates exp(log N(x; g(z), Sigma_x) + log N(z; 0, Sigma_z) - shift) with g the network's
forward pass (none of the engine's closed forms), by scipy's adaptive Gauss-Kronrod in z2 inside each
region polygon's slice at z1, then in z1 over the polygon's extent, piecewise between its vertices' z1
(where the slice's ends change formula; infinite ends included), and sums the regions. The shift is
the integrand's maximum found by a grid search refined with Nelder-Mead, so points far off the
manifold integrate as accurately as typical ones. The polygons come from the partition, whose
geometry is checked separately against sampled sign patterns.
"""

import numpy as np
import pytest
from scipy import integrate, optimize

import engine

FULL_COV_X = [[0.30, 0.05, 0.00], [0.05, 0.20, 0.02], [0.00, 0.02, 0.25]]


def _slice(region, z1):
    """The segment {z2 : H (z1, z2) <= c}, or None when empty."""
    H, c = region.H, region.c
    rhs = c - H[:, 0] * z1
    lo, hi = -np.inf, np.inf
    for h2, r in zip(H[:, 1], rhs):
        if abs(h2) < 1e-14:
            if r < 0:
                return None
        elif h2 > 0:
            hi = min(hi, r / h2)
        else:
            lo = max(lo, r / h2)
    return (lo, hi) if lo < hi else None


def _z1_extent(region):
    V, R = region.vertices, region.rays
    lo, hi = V[:, 0].min(), V[:, 0].max()
    if len(R):
        if (R[:, 0] < -1e-12).any():
            lo = -np.inf
        if (R[:, 0] > 1e-12).any():
            hi = np.inf
    return lo, hi


def nested_quadrature(net, part, x):
    """(log p(x), E[z|x], Cov[z|x]) by nested adaptive quadrature of the raw joint density."""
    prec = np.linalg.inv(net.cov_x)
    prec_z = np.linalg.inv(net.cov_z)
    const = -0.5 * (net.data_dim + 2) * np.log(2 * np.pi) - 0.5 * np.linalg.slogdet(net.cov_x)[1] \
        - 0.5 * np.linalg.slogdet(net.cov_z)[1]

    def log_joint(z):
        z = np.atleast_2d(z)
        r = x - net.forward(z)
        return const - 0.5 * np.einsum("nd,de,ne->n", r, prec, r) - 0.5 * np.einsum("ns,st,nt->n", z, prec_z, z)

    grid = np.stack(np.meshgrid(np.linspace(-8, 8, 321), np.linspace(-8, 8, 321)), -1).reshape(-1, 2)
    best = grid[np.argmax(log_joint(grid))]
    best = optimize.minimize(lambda z: -log_joint(z)[0], best, method="Nelder-Mead",
                             options={"xatol": 1e-10, "fatol": 1e-12}).x
    shift = log_joint(best)[0]
    totals = np.zeros(6)  # m0, m1 (2), m2 (xx, xy, yy)
    moment_fns = (lambda z1, z2: 1.0, lambda z1, z2: z1, lambda z1, z2: z2,
                  lambda z1, z2: z1 * z1, lambda z1, z2: z1 * z2, lambda z1, z2: z2 * z2)
    for region in part:
        lo1, hi1 = _z1_extent(region)
        for k, f in enumerate(moment_fns):
            def inner(z1, f=f, region=region):
                seg = _slice(region, z1)
                if seg is None:
                    return 0.0
                return integrate.quad(lambda z2: f(z1, z2) * np.exp(log_joint([z1, z2])[0] - shift),
                                      seg[0], seg[1], epsabs=0, epsrel=1e-12, limit=200)[0]

            # the slice's ends change formula at the vertices' z1: integrate piecewise between them
            knots = np.concatenate([[lo1], np.unique(region.vertices[:, 0]), [hi1]])
            knots = np.unique(knots[(knots >= lo1) & (knots <= hi1)])
            totals[k] += sum(integrate.quad(inner, a, b, epsabs=0, epsrel=1e-11, limit=200)[0]
                             for a, b in zip(knots[:-1], knots[1:]) if a < b)
    m0 = totals[0]
    mean = totals[1:3] / m0
    second = np.array([[totals[3], totals[4]], [totals[4], totals[5]]]) / m0
    return shift + np.log(m0), mean, second - np.outer(mean, mean)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::scipy.integrate.IntegrationWarning")
@pytest.mark.parametrize("act,seed", [("relu", 0), ("leaky_relu", 1), ("abs", 2)])
def test_s2_evaluate_matches_nested_quadrature(act, seed):
    net = engine.random_network([2, 4, 4, 3], activation=act, negative_slope=0.3, cov_x=FULL_COV_X, rng=seed)
    part = engine.partition(net)
    X = net.sample(1, rng=seed + 20)
    ev = engine.evaluate(net, X, part=part)
    for n in range(len(X)):
        logp, mean, cov = nested_quadrature(net, part, X[n])
        assert abs(ev.log_marginal[n] - logp) < 1e-9
        np.testing.assert_allclose(ev.posterior_mean[n], mean, rtol=0, atol=1e-8)
        np.testing.assert_allclose(ev.posterior_cov[n], cov, rtol=0, atol=1e-8)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::scipy.integrate.IntegrationWarning")
def test_s2_far_off_manifold_d64():
    """x far from g(R^2) in D = 64: log p(x) ~ -1e3 and region masses far below 1e-100 take part."""
    net = engine.random_network([2, 4, 4, 64], activation="leaky_relu", negative_slope=0.2, cov_x=0.3, rng=4)
    part = engine.partition(net)
    rng = np.random.default_rng(0)
    X = net.forward(np.array([[0.3, -0.5]])) + 1.0 + rng.normal(size=(1, 64))
    ev = engine.evaluate(net, X, part=part)
    logp, mean, cov = nested_quadrature(net, part, X[0])
    assert logp < -100
    assert abs(ev.log_marginal[0] - logp) < 1e-9
    np.testing.assert_allclose(ev.posterior_mean[0], mean, rtol=0, atol=1e-8)
    np.testing.assert_allclose(ev.posterior_cov[0], cov, rtol=0, atol=1e-8)
