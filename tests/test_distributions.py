"""Theorem 1 marginal and Prop. 2 posterior: S = 1 against quadrature, linear decoders exactly."""

import numpy as np
import pytest
from _quadrature_oracle import kinks_of, s1_quadrature
from scipy.stats import multivariate_normal
from sklearn.decomposition import PCA, FactorAnalysis

import engine
from engine import DGNInputError, evaluate, load_network, partition, random_network

FULL_COV_X = [[0.20, 0.05, 0.00], [0.05, 0.10, 0.02], [0.00, 0.02, 0.30]]


@pytest.mark.parametrize("act,seed", [("relu", 0), ("leaky_relu", 1), ("abs", 2)])
def test_s1_marginal_and_posterior_match_quadrature(act, seed):
    net = random_network([1, 6, 6, 3], activation=act, negative_slope=0.3, cov_x=FULL_COV_X, rng=seed)
    P = partition(net)
    X = net.sample(3, rng=seed + 10)
    ev = evaluate(net, X, part=P)
    for n in range(len(X)):
        logp, mean, var = s1_quadrature(net, X[n], kinks_of(P))
        assert abs(ev.log_marginal[n] - logp) < 1e-10
        assert abs(ev.posterior_mean[n, 0] - mean) < 1e-9
        assert abs(ev.posterior_cov[n, 0, 0] - var) < 1e-9
    np.testing.assert_allclose(ev.region_weights.sum(axis=1), 1.0, rtol=0, atol=1e-13)


def test_s1_far_off_manifold_d64_tiny_masses():
    """x far from g(R): log p(x) ~ -1e3, and regions whose masses are far below 1e-100 decide it."""
    net = random_network([1, 8, 8, 64], activation="leaky_relu", negative_slope=0.2, cov_x=0.05, rng=7)
    P = partition(net)
    rng = np.random.default_rng(3)
    X = net.forward(np.array([[0.4], [-1.2]])) + rng.normal(size=(2, 64)) * 1.5 + 2.0
    ev = evaluate(net, X, part=P)
    from engine.distributions import posterior_region_params, region_gaussians
    from engine.gaussian.interval import interval_moments

    mu, _ = posterior_region_params(net, P, X)
    sd = np.sqrt(region_gaussians(net, P).cov[:, 0, 0])
    bounds = np.array([r.polytope.interval() for r in P])
    log_mass, _, _ = interval_moments(mu[..., 0], sd, bounds[:, 0], bounds[:, 1])
    assert log_mass.min() < np.log(1e-100), "the case must exercise masses below 1e-100"
    for n in range(len(X)):
        logp, mean, var = s1_quadrature(net, X[n], kinks_of(P))
        assert logp < -500
        assert abs(ev.log_marginal[n] - logp) < 1e-10  # absolute, in nats, at log p ~ -1e3
        assert abs(ev.posterior_mean[n, 0] - mean) < 1e-9
        assert abs(ev.posterior_cov[n, 0, 0] - var) < 1e-9 * max(1.0, var)


def test_linear_decoder_is_ppca_exactly():
    rng = np.random.default_rng(0)
    W, b = rng.normal(size=(4, 2)), rng.normal(size=4)
    cov_z = [[1.5, 0.3], [0.3, 0.7]]
    cov_x = np.diag([0.1, 0.2, 0.05, 0.3])
    net = load_network({"latent_dim": 2, "cov_z": cov_z, "cov_x": cov_x.tolist(),
                        "layers": [{"type": "linear", "weight": W.tolist(), "bias": b.tolist()}]})
    X = net.sample(20, rng=1) * 3
    C = W @ np.array(cov_z) @ W.T + cov_x
    if not _has_polytope_integrals():
        pytest.skip("S >= 2 Gaussian integrals not available")
    ev = evaluate(net, X)
    assert ev.n_regions == 1
    np.testing.assert_allclose(ev.log_marginal, multivariate_normal(b, C).logpdf(X), rtol=0, atol=1e-12)
    K = np.array(cov_z) @ W.T @ np.linalg.inv(C)
    np.testing.assert_allclose(ev.posterior_mean, (X - b) @ K.T, atol=1e-12)
    np.testing.assert_allclose(ev.posterior_cov[0], np.array(cov_z) - K @ W @ np.array(cov_z), atol=1e-12)


def _has_polytope_integrals():
    try:
        import engine.gaussian.polytopes  # noqa: F401
    except ImportError:
        return False
    return True


def _pca_network(model, S):
    W = model.components_.T * np.sqrt(model.explained_variance_ - model.noise_variance_)
    return load_network({"latent_dim": S, "cov_z": 1.0, "cov_x": float(model.noise_variance_),
                         "layers": [{"type": "linear", "weight": W.tolist(), "bias": model.mean_.tolist()}]})


def test_linear_decoder_matches_sklearn_pca_score_samples():
    rng = np.random.default_rng(5)
    X = rng.normal(size=(200, 5)) @ rng.normal(size=(5, 5)) + rng.normal(size=5)
    pca = PCA(n_components=1).fit(X)
    net = _pca_network(pca, 1)
    ev = evaluate(net, X)
    np.testing.assert_allclose(ev.log_marginal, pca.score_samples(X), rtol=0, atol=1e-10)


def test_linear_decoder_matches_sklearn_factor_analysis():
    rng = np.random.default_rng(6)
    X = rng.normal(size=(300, 4)) @ rng.normal(size=(4, 4)) * [1, 2, 0.5, 1]
    fa = FactorAnalysis(n_components=1, random_state=0).fit(X)
    net = load_network({"latent_dim": 1, "cov_z": 1.0, "cov_x": fa.noise_variance_.tolist(),
                        "layers": [{"type": "linear", "weight": fa.components_.T.tolist(), "bias": fa.mean_.tolist()}]})
    np.testing.assert_allclose(evaluate(net, X).log_marginal, fa.score_samples(X), rtol=0, atol=1e-10)


def test_moments_e0_e1_E2_are_consistent():
    net = random_network([1, 8, 8, 2], rng=3, cov_x=0.05)
    X = net.sample(10, rng=2)
    ev = evaluate(net, X)
    e0, e1, E2 = ev.moments()
    np.testing.assert_allclose(e0.sum(1), 1, atol=1e-13)
    np.testing.assert_allclose(e1.sum(1), ev.posterior_mean, atol=1e-12)
    second = E2.sum(1) - ev.posterior_mean[:, :, None] * ev.posterior_mean[:, None, :]
    np.testing.assert_allclose(second, ev.posterior_cov, atol=1e-10)


def test_posterior_samples_match_moments():
    net = random_network([1, 6, 6, 2], activation="abs", rng=4, cov_x=0.2)
    x = net.sample(1, rng=9)
    ev = evaluate(net, x)
    Z = engine.sample_posterior(net, x, 40000, rng=0)
    mean, sd = ev.posterior_mean[0, 0], np.sqrt(ev.posterior_cov[0, 0, 0])
    # 6 standard errors: false-fail probability < 2e-9 under the CLT
    assert abs(Z.mean() - mean) < 6 * sd / np.sqrt(len(Z))
    assert abs(Z.var() - sd**2) < 0.05 * sd**2


def test_batch_order_and_chunking_do_not_change_results():
    net = random_network([1, 8, 8, 3], rng=1)
    X = net.sample(50, rng=0)
    full = evaluate(net, X).log_marginal
    perm = np.random.default_rng(0).permutation(50)
    np.testing.assert_array_equal(evaluate(net, X[perm]).log_marginal, full[perm])
    np.testing.assert_allclose(np.concatenate([evaluate(net, X[:7]).log_marginal, evaluate(net, X[7:]).log_marginal]),
                               full, rtol=0, atol=1e-14)


@pytest.mark.parametrize("X,message", [
    (np.zeros((3, 2)), r"data: has shape \(3, 2\) but the network's output dimension D is 3"),
    (np.array([[0.0, np.nan, 1.0]]), "data: 1 value"),
    (np.zeros((2, 3, 1)), "data: has shape"),
])
def test_bad_data_gives_one_line_errors(X, message):
    net = random_network([1, 4, 3], rng=0)
    with pytest.raises(DGNInputError, match=message):
        evaluate(net, X)
