"""engine.impute: exact p(x_miss | x_obs) against independent oracles.

Oracles: (1) Gaussian conditioning of N(b, W W^T + Sigma_x) for a linear decoder (PPCA / factor analysis),
1e-12; (2) quadrature of the RAW model p(z) N(x; g(z), Sigma_x), g the network's forward pass, split at the kinks
computed from the first layer's weights (S = 1: adaptive scipy quad_vec, rel. 1e-13, split at the kink
points; S = 2: adaptive quad_vec over z1 split at the z1 of the lines' intersections, composite 24-point
Gauss-Legendre over z2 in cells of width <= 0.25 split at the lines) — nothing of the partition or of the
engine's closed forms — 1e-8.
"""

import numpy as np
import pytest
from scipy.integrate import quad_vec
from scipy.stats import multivariate_normal as mvn

import engine
from engine import DGNInputError
from engine.impute import impute


def _full_cov(rng, D):
    M = rng.standard_normal((D, D))
    return M @ M.T / D + 0.2 * np.eye(D)


def _missing_rows(rng, N, D):
    X = rng.standard_normal((N, D))
    X[0, [1, 3]] = np.nan
    X[1, :] = np.nan
    X[2, D - 1] = np.nan
    X[4, : D - 1] = np.nan
    X[5, 0] = np.nan  # row 3 and rows >= 6: nothing missing
    return X


def _gaussian_conditioning(mean, C, x):
    m = np.isnan(x)
    o = ~m
    if not o.any():
        return 0.0, mean[m], C[np.ix_(m, m)]
    K = np.linalg.solve(C[np.ix_(o, o)], C[np.ix_(o, m)]).T
    return (mvn.logpdf(x[o], mean[o], C[np.ix_(o, o)]), mean[m] + K @ (x[o] - mean[o]),
            C[np.ix_(m, m)] - K @ C[np.ix_(o, m)])


@pytest.mark.parametrize("full", [False, True])
def test_linear_decoder_matches_gaussian_conditioning(full):
    rng = np.random.default_rng(1)
    S, D = 2, 5
    W, b = rng.standard_normal((D, S)), rng.standard_normal(D)
    Sx = _full_cov(rng, D) if full else np.diag(rng.uniform(0.1, 1.0, D))
    net = engine.Network([engine.Linear(W, b)], latent_dim=S, cov_x_spec=Sx)
    X = _missing_rows(rng, 8, D)
    res = impute(net, X)
    C = W @ W.T + Sx
    for i, x in enumerate(X):
        lp, mean, cov = _gaussian_conditioning(b, C, x)
        m = np.isnan(x)
        assert abs(res.log_marginal[i] - lp) <= 1e-12 * max(1.0, abs(lp))
        np.testing.assert_allclose(res.X[i, m], mean, rtol=0, atol=1e-12)
        np.testing.assert_allclose(res.cov[i][np.ix_(m, m)], cov, rtol=0, atol=1e-12)
        np.testing.assert_array_equal(res.X[i, ~m], x[~m])
        assert not res.cov[i][~m].any() and not res.cov[i][:, ~m].any()


def _raw_oracle(net, x, lines_w, lines_v):
    """(log p(x_o), E[x_m | x_o], Cov[x_m | x_o]) by adaptive quadrature of the raw model."""
    S = net.latent_dim
    m = np.isnan(x)
    o = ~m
    Sx = net.cov_x
    K = np.linalg.solve(Sx[np.ix_(o, o)], Sx[np.ix_(o, m)]).T
    cond = Sx[np.ix_(m, m)] - K @ Sx[np.ix_(o, m)]
    x_o = x[o]
    prec_z = np.linalg.inv(net.cov_z)
    logdet_z = np.linalg.slogdet(net.cov_z)[1]

    prec_o = np.linalg.inv(Sx[np.ix_(o, o)])
    const = -0.5 * ((S + o.sum()) * np.log(2 * np.pi) + logdet_z + np.linalg.slogdet(Sx[np.ix_(o, o)])[1])

    def log_joint(Z):
        r = x_o - net.forward(Z)[:, o]
        return const - 0.5 * (np.einsum("ni,ij,nj->n", r, prec_o, r) + np.einsum("ns,st,nt->n", Z, prec_z, Z))

    if S == 1:
        grid = np.linspace(-12, 12, 4001)[:, None]
    else:
        g = np.linspace(-12, 12, 401)
        grid = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
    shift = log_joint(grid).max()

    def vec_all(Z):
        G = net.forward(Z)
        h = G[:, m] - G[:, o] @ K.T + x_o @ K.T
        w = np.exp(log_joint(Z) - shift)[:, None]
        outer = (h[:, :, None] * h[:, None, :]).reshape(len(Z), -1)
        return w * np.concatenate([np.ones((len(Z), 1)), h, outer], axis=1)

    def vec(Z):
        return vec_all(Z)[0]

    opts = dict(epsabs=0.0, epsrel=1e-13, limit=2000)
    if S == 1:
        kinks = sorted(-lines_v / lines_w[:, 0])
        total = quad_vec(lambda z: vec(np.array([[z]])), -np.inf, np.inf, points=kinks, **opts)[0]
    else:
        cross = []
        for i in range(len(lines_v)):
            for j in range(i + 1, len(lines_v)):
                Mij = lines_w[[i, j]]
                if abs(np.linalg.det(Mij)) > 1e-12:
                    cross.append(np.linalg.solve(Mij, -lines_v[[i, j]])[0])

        nodes, weights = np.polynomial.legendre.leggauss(24)

        def inner(z1):
            # composite Gauss-Legendre on [-12, 12] (prior mass outside < 1e-32) in cells of width <= 0.25,
            # split at the kinks of the line z1 = const, where the integrand is analytic on every cell
            kinks = -(lines_v + lines_w[:, 0] * z1) / lines_w[:, 1]
            ends = np.unique(np.concatenate([np.linspace(-12, 12, 97), kinks[np.abs(kinks) < 12]]))
            a, b = ends[:-1, None], ends[1:, None]
            z2 = (0.5 * (a + b) + 0.5 * (b - a) * nodes).ravel()
            wq = (0.5 * (b - a) * weights).ravel()
            Z = np.column_stack([np.full_like(z2, z1), z2])
            return wq @ vec_all(Z)

        total = quad_vec(inner, -np.inf, np.inf, points=sorted(cross), **opts)[0]
    p0 = total[0]
    k = m.sum()
    mean = total[1:1 + k] / p0
    second = total[1 + k:].reshape(k, k) / p0
    return shift + np.log(p0), mean, cond + second - np.outer(mean, mean)


@pytest.mark.parametrize("S,widths,seed", [(1, [1, 6, 4], 3), pytest.param(2, [2, 3, 3], 5, marks=pytest.mark.slow)])
def test_nonlinear_decoder_matches_raw_quadrature(S, widths, seed):
    rng = np.random.default_rng(seed)
    net = engine.random_network(widths, rng=seed)
    D = widths[-1]
    net = net.replace(cov_x=_full_cov(rng, D) * 0.3)
    X = net.sample(3, rng=seed)
    X[0, 1] = np.nan
    X[1, [0, 2]] = np.nan
    X[2, 0] = np.nan
    res = impute(net, X)
    first = net.layers[0]
    for i, x in enumerate(X):
        lp, mean, cov = _raw_oracle(net, x, first.weight, first.bias)
        m = np.isnan(x)
        assert abs(res.log_marginal[i] - lp) <= 1e-8 * max(1.0, abs(lp)), (i, res.log_marginal[i], lp)
        np.testing.assert_allclose(res.X[i, m], mean, rtol=0, atol=1e-8)
        np.testing.assert_allclose(res.cov[i][np.ix_(m, m)], cov, rtol=0, atol=1e-8)


def test_nothing_missing_equals_evaluate_and_everything_missing_is_prior_predictive():
    net = engine.random_network([1, 5, 3], rng=2)
    X = net.sample(4, rng=0)
    X[3] = np.nan
    res = impute(net, X)
    ev = engine.evaluate(net, X[:3])
    np.testing.assert_array_equal(res.log_marginal[:3], ev.log_marginal)
    np.testing.assert_array_equal(res.X[:3], X[:3])
    assert res.log_marginal[3] == 0.0
    # prior predictive moments against Monte Carlo with 4e5 draws: |error| <= 6 sd (false fail < 1e-8 each)
    draws = net.sample(400_000, rng=1)
    sd = draws.std(axis=0) / np.sqrt(len(draws))
    assert np.all(np.abs(res.X[3] - draws.mean(axis=0)) <= 6 * sd)
    np.testing.assert_allclose(res.cov[3], np.cov(draws.T), rtol=0.02, atol=0.02)


def test_multiple_imputation_draws_match_the_conditional_moments():
    rng = np.random.default_rng(4)
    net = engine.random_network([2, 4, 3], rng=4).replace(cov_x=_full_cov(rng, 3) * 0.3)
    X = net.sample(2, rng=4)
    X[0, 1] = np.nan
    X[1, [0, 2]] = np.nan
    res = impute(net, X)
    n = 20_000
    draws = res.sample(n, rng=0)
    assert draws.shape == (n, 2, 3)
    np.testing.assert_array_equal(draws[:, 0, [0, 2]], np.broadcast_to(X[0, [0, 2]], (n, 2)))
    # |mean error| <= 6 standard errors: false-fail probability < 2e-9 per entry
    se = np.sqrt(np.diagonal(res.cov, axis1=1, axis2=2) / n)
    assert np.all(np.abs(draws.mean(axis=0) - res.X) <= 6 * se + 1e-12 * np.abs(res.X))
    np.testing.assert_array_equal(res.sample(5, rng=7), res.sample(5, rng=7))


@pytest.mark.parametrize("bad,match", [
    (np.ones((2, 3)) + 1j, "Complex"), (np.ones((2, 3), bool), "boolean"), ([[1.0, 2.0, 3.0], [1.0]], "ragged"),
    (np.array([[1.0, np.inf, 0.0]]), "infinite"), (np.ones((2, 4)), "output dimension"),
])
def test_bad_input_is_refused(bad, match):
    net = engine.random_network([1, 3, 3], rng=0)
    with pytest.raises(DGNInputError, match=match):
        impute(net, bad)


def test_cli_npy_and_csv(tmp_path):
    from engine.cli import main

    net = engine.random_network([1, 4, 3], rng=1)
    engine.save_network(net, tmp_path / "m.json")
    X = net.sample(5, rng=1)
    X[1, 2] = np.nan
    X[3, [0, 1]] = np.nan
    np.save(tmp_path / "x.npy", X)
    np.savetxt(tmp_path / "x.csv", X, delimiter=",")
    want = impute(net, X)
    for data in ("x.npy", "x.csv"):
        assert main(["impute", "--model", str(tmp_path / "m.json"), "--data", str(tmp_path / data),
                     "--out", str(tmp_path / "y.npy"), "--json", str(tmp_path / "r.json")]) == 0
        np.testing.assert_allclose(np.load(tmp_path / "y.npy"), want.X, rtol=1e-13, atol=1e-14)
        import json

        report = json.loads((tmp_path / "r.json").read_text())
        np.testing.assert_allclose(report["log_marginal"], want.log_marginal, rtol=1e-13)
    np.save(tmp_path / "c.npy", X + 1j)
    assert main(["impute", "--model", str(tmp_path / "m.json"), "--data", str(tmp_path / "c.npy"),
                 "--out", str(tmp_path / "y.npy")]) == 2


@pytest.mark.slow
def test_s3_conditional_mean_against_importance_sampling():
    """S = 3 (full Sigma_x): E[x_m | x_o] and log p(x_o) against self-normalised importance sampling from the
    prior with 4e5 draws; bound 6 delta-method standard errors (false-fail probability < 1e-8 per entry)."""
    rng = np.random.default_rng(7)
    net = engine.random_network([3, 4, 3], rng=7).replace(cov_x=_full_cov(rng, 3) * 0.5)
    x = net.sample(1, rng=3)[0]
    x[1] = np.nan
    res = impute(net, x[None])
    o, m = np.array([0, 2]), np.array([1])
    Sx = net.cov_x
    K = np.linalg.solve(Sx[np.ix_(o, o)], Sx[np.ix_(o, m)]).T
    Z = rng.standard_normal((400_000, 3))
    G = net.forward(Z)
    w = np.exp(mvn.logpdf(x[o] - G[:, o], cov=Sx[np.ix_(o, o)]))
    h = (G[:, m] - G[:, o] @ K.T + x[o] @ K.T)[:, 0]
    est = (w * h).sum() / w.sum()
    se = np.sqrt(((w * (h - est)) ** 2).sum()) / w.sum()
    assert abs(res.X[0, 1] - est) < 6 * se
    se_p = w.std() / np.sqrt(len(w)) / w.mean()  # relative standard error of the p(x_o) estimate
    assert abs(res.log_marginal[0] - np.log(w.mean())) < 6 * se_p
