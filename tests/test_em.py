"""Exact EM (engine.em.EM): monotonicity, PPCA limit, recovery of a known network, estimator API, CLI.

Oracles: the exact log-likelihood of ``engine.evaluate`` (checked against quadrature elsewhere);
scikit-learn's PCA for the linear decoder (PPCA maximum likelihood, Tipping and Bishop 1999).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import engine
from engine.em import EM, init_pca
from engine.errors import DGNInputError
from engine.network import Linear


def _has_s2() -> bool:
    try:
        import engine.gaussian.polytopes  # noqa: F401
    except ImportError:
        return False
    return True


def _run_config(i: int):
    S = 1 if i < 25 else 2
    activation = ["relu", "leaky_relu", "abs"][i % 3]
    depth = 2 + (i // 3) % 2  # 2 or 3 linear layers
    D = 2 + i % 2
    if S == 1:
        widths = [1, 4 + i % 3, D] if depth == 2 else [1, 4, 3 + i % 3, D]
    else:
        widths = [2, 3 + i % 2, D] if depth == 2 else [2, 3, 2 + i % 2, D]
    return S, activation, widths


@pytest.mark.parametrize("i", range(50))
def test_exact_log_likelihood_never_decreases(i):
    """50 random runs (S = 1 and 2; ReLU, leaky-ReLU, abs; 2-3 linear layers; every cov_x family;
    learned Sigma_z in some; every sweep; 0-2 backtracks): the exact mean log-likelihood between
    successive iterations never falls by more than 1e-10 relative."""
    S, activation, widths = _run_config(i)
    if S == 2 and not _has_s2():
        pytest.skip("S = 2 Gaussian integrals (engine/gaussian/polytopes.py) not available")
    rng = np.random.default_rng(1000 + i)
    truth = engine.random_network(widths, activation=activation, cov_x=0.05, rng=rng)
    X = truth.sample(40 if S == 1 else 25, rng=rng)
    em = EM(widths, max_iter=8 if S == 1 else 3, tol=0.0, activation=activation, random_state=i,
            cov_x_type=["isotropic", "diagonal", "full"][i % 3], learn_cov_z=(i % 4 == 0),
            sweep=["chain", "layerwise", "chain", "joint", "none"][i % 5], max_backtracks=i % 3)
    em.fit(X)
    ll = np.array(em.log_likelihoods_)
    rel = np.diff(ll) / np.maximum(np.abs(ll[:-1]), 1.0)
    assert rel.min() >= -1e-10, (rel.min(), em.history_)
    # the recorded values are the exact log-likelihoods of the returned network
    assert abs(engine.evaluate(em.network_, X).log_marginal.mean() - ll[-1]) <= 1e-12 * max(1.0, abs(ll[-1]))
    assert len(em.history_) == em.n_iter_ == len(ll) - 1
    assert all(h["n_regions"] >= 1 for h in em.history_)


def _ppca_data(S, D=5, N=300, seed=0):
    rng = np.random.default_rng(seed)
    W = rng.normal(size=(D, S)) * np.array([3.0, 2.0][:S])
    return rng.normal(size=(N, S)) @ W.T + 0.5 * rng.normal(size=(N, D)) + rng.normal(size=D)


@pytest.mark.parametrize("S", [1, 2])
def test_linear_decoder_converges_to_ppca_maximum_likelihood(S):
    """W W^T + sigma^2 I and sigma^2 match sklearn's PCA (rescaled from its 1/(N-1) covariance to the
    maximum-likelihood 1/N) within 1e-6, starting from a random linear decoder."""
    if S == 2 and not _has_s2():
        pytest.skip("S = 2 Gaussian integrals not available")
    from sklearn.decomposition import PCA

    X = _ppca_data(S)
    N, D = X.shape
    rng = np.random.default_rng(1)
    start = engine.Network(layers=[Linear(rng.normal(size=(D, S)), np.zeros(D))], latent_dim=S,
                           cov_x_spec=1.0)
    em = EM(start, max_iter=5000, tol=1e-15).fit(X)  # PPCA's EM converges linearly; measured errors
    # at this tol: 4e-12 (S = 1) and 2.5e-8 (S = 2) on the covariance
    assert em.converged_
    net = em.network_
    W = net.layers[0].weight
    pca = PCA(n_components=S).fit(X)
    ml = (N - 1) / N  # sklearn's explained variances use 1/(N-1); PPCA's ML uses 1/N
    np.testing.assert_allclose(W @ W.T + net.cov_x, pca.get_covariance() * ml, atol=1e-6, rtol=0)
    assert abs(net.cov_x[0, 0] - pca.noise_variance_ * ml) < 1e-6
    # the bias tends to the sample mean; the likelihood is only quadratic in its error, so EM stops
    # with it accurate to a few 1e-6 (measured 5e-7 and 3e-6)
    np.testing.assert_allclose(net.layers[0].bias, X.mean(axis=0), atol=2e-5)
    # and the PCA initialisation is already that fixed point
    init = init_pca([S, D], X)
    np.testing.assert_allclose(init.layers[0].weight @ init.layers[0].weight.T + init.cov_x,
                               pca.get_covariance() * ml, atol=1e-10)


def _perturbed(net, rng, rel=0.1):
    return net.replace(layers=[
        Linear(lay.weight * (1 + rel * rng.choice([-1.0, 1.0], lay.weight.shape)),
               lay.bias * (1 + rel * rng.choice([-1.0, 1.0], lay.bias.shape)))
        if isinstance(lay, Linear) else lay for lay in net.layers])


@pytest.mark.parametrize("widths,activation", [([1, 8, 8, 2], "relu"), ([1, 6, 3], "leaky_relu"),
                                               pytest.param([2, 6, 3], "relu", marks=pytest.mark.slow)])
def test_recovers_a_known_network(widths, activation):
    """N = 2000 draws of a known network; start from it with every weight and bias moved by +-10%; the
    fitted model's exact held-out mean log-likelihood is within 0.05 nats of the true network's."""
    if widths[0] == 2 and not _has_s2():
        pytest.skip("S = 2 Gaussian integrals not available")
    truth = engine.random_network(widths, activation=activation, cov_x=0.05, rng=5)
    X_train = engine.datasets.from_network(truth, 2000, rng=1)
    X_test = engine.datasets.from_network(truth, 2000, rng=2)
    start = _perturbed(truth, np.random.default_rng(9))
    em = EM(start, max_iter=300, tol=1e-6).fit(X_train)
    ll_true = engine.evaluate(truth, X_test).log_marginal.mean()
    ll_start = engine.evaluate(start, X_test).log_marginal.mean()
    assert ll_true - ll_start > 0.05  # the perturbation matters
    assert em.score(X_test) > ll_true - 0.05


# ----------------------------------------------------------------------------- estimator API
@pytest.fixture(scope="module")
def fitted():
    X = engine.datasets.circle(120, rng=0)
    em = EM([1, 6, 2], max_iter=5, tol=0.0, random_state=0).fit(X)
    return em, X


def test_scores_are_the_exact_marginal(fitted):
    em, X = fitted
    lp = engine.evaluate(em.network_, X).log_marginal
    np.testing.assert_array_equal(em.score_samples(X), lp)
    assert em.score(X) == pytest.approx(lp.mean(), rel=1e-15)
    k = em.n_parameters()
    # weights and biases 6 + 6 + 12 + 2, minus one per ReLU unit (positive rescaling), plus sigma_x^2
    assert k == 6 + 6 + 12 + 2 - 6 + 1
    assert em.aic(X) == pytest.approx(-2 * lp.sum() + 2 * k)
    assert em.bic(X) == pytest.approx(-2 * lp.sum() + k * np.log(len(X)))


def test_history_and_attributes(fitted):
    em, X = fitted
    assert em.n_iter_ == 5 and not em.converged_
    assert len(em.log_likelihoods_) == 6 and len(em.n_regions_) == 6
    h = em.history()
    assert set(h) >= {"log_likelihoods", "converged", "n_iter", "accepted", "updates", "n_regions"}
    assert all("layer1" in a and "cov_x" in a for a in h["accepted"])  # exact steps always accepted here
    json.dumps(h)
    post = em.posterior(X[:3])
    assert post.posterior_mean.shape == (3, 1)
    Xs = em.sample(7, random_state=1)
    assert Xs.shape == (7, 2)
    Xs2, Z = em.sample(4, random_state=1, return_latent=True)
    assert Z.shape == (4, 1)


def test_warm_start_continues_and_never_decreases():
    X = engine.datasets.wave(100, rng=1)
    em = EM([1, 5, 2], max_iter=3, tol=0.0, random_state=2, warm_start=True).fit(X)
    last = em.log_likelihoods_[-1]
    em.fit(X)
    assert em.log_likelihoods_[0] == pytest.approx(last, rel=1e-13)
    assert np.diff(em.log_likelihoods_).min() >= 0


def test_cov_families_learn_cov_z_and_pca_init():
    X = engine.datasets.wave(80, rng=2)
    for kind, ndim in [("isotropic", 0), ("diagonal", 1), ("full", 2)]:
        em = EM([1, 4, 2], max_iter=2, tol=0.0, cov_x_type=kind, random_state=0).fit(X)
        assert np.ndim(em.network_.cov_x_spec) == ndim
    em = EM([1, 4, 2], max_iter=3, tol=0.0, learn_cov_z=True, init="pca", random_state=0).fit(X)
    assert not np.allclose(em.network_.cov_z, 1.0)
    assert "cov_z" in em.history()["accepted"][0]


def test_convergence_flag_and_verbose_bar(capsys):
    X = engine.datasets.circle(60, rng=3)
    em = EM([1, 3, 2], max_iter=200, tol=1e-3, random_state=0, verbose=True).fit(X)
    assert em.converged_ and em.n_iter_ < 200
    assert np.diff(em.log_likelihoods_)[-1] <= 1e-3
    assert "EM" in capsys.readouterr().err


@pytest.mark.parametrize("kwargs", [dict(max_iter=-1), dict(tol=-1.0), dict(cov_x_type="spherical"),
                                    dict(sweep="random"), dict(init="kmeans"), dict(min_cov_x=0.0),
                                    dict(max_backtracks=-1)])
def test_bad_parameters_raise_one_line_errors(kwargs):
    with pytest.raises(DGNInputError):
        EM([1, 3, 2], **kwargs).fit(engine.datasets.circle(10))


def test_bad_data_and_unfitted_use():
    with pytest.raises(DGNInputError, match="not fitted"):
        EM([1, 3, 2]).score(np.zeros((3, 2)))
    with pytest.raises(DGNInputError, match="data"):
        EM(engine.random_network([1, 3, 2], rng=0)).fit(np.zeros((3, 5)))
    with pytest.raises(DGNInputError, match="NaN"):
        EM(engine.random_network([1, 3, 2], rng=0)).fit(np.array([[0.0, np.nan]]))
    with pytest.raises(DGNInputError, match="last width"):
        EM([1, 3, 4]).fit(np.zeros((3, 2)))


# ----------------------------------------------------------------------------- CLI
def test_cli_fit_writes_network_and_history(tmp_path):
    from engine.cli import main

    net = engine.random_network([1, 4, 2], rng=0, cov_x=0.2)
    engine.save_network(net, tmp_path / "init.json")
    np.save(tmp_path / "X.npy", engine.datasets.circle(60, rng=0))
    rc = main(["fit", "--model", str(tmp_path / "init.json"), "--data", str(tmp_path / "X.npy"),
               "--max-iter", "4", "--tol", "0", "--out", str(tmp_path / "fit.json"),
               "--history", str(tmp_path / "h.json")])
    assert rc == 0
    fitted = engine.load_network(tmp_path / "fit.json")
    h = json.loads((tmp_path / "h.json").read_text())
    assert h["n_iter"] == 4 and len(h["log_likelihoods"]) == 5 and h["converged"] is False
    assert np.diff(h["log_likelihoods"]).min() >= 0
    lp = engine.evaluate(fitted, np.load(tmp_path / "X.npy")).log_marginal.mean()
    assert lp == pytest.approx(h["log_likelihoods"][-1], rel=1e-12)


def test_cli_fit_bad_input_exits_2(tmp_path, capsys):
    from engine.cli import main

    engine.save_network(engine.random_network([1, 4, 2], rng=0), tmp_path / "init.json")
    np.save(tmp_path / "X.npy", np.zeros((5, 3)))
    rc = main(["fit", "--model", str(tmp_path / "init.json"), "--data", str(tmp_path / "X.npy"),
               "--max-iter", "2", "--out", str(tmp_path / "fit.json")])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: data")
