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
    # to rounding, not bit for bit: OpenBLAS (0.3.31, numpy 2.4) computes the rows of a product in
    # micro-tiles, and a row that moves into a remainder tile is summed by another kernel (measured 2.2e-16)
    np.testing.assert_allclose(evaluate(net, X[perm]).log_marginal, full[perm], rtol=0, atol=1e-14)
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


# ---------------------------------------------------------------- region Gaussians against mpmath (eq. 5, 7)
_EPS = np.finfo(float).eps


def _mp_region(A, b, cov_z, cov_x, X):
    """Sigma_omega, log|Sigma_omega|, log N(x; b, Sigma_x + A Sigma_z A^T) and mu_omega(x) in 80-digit mpmath,
    from the float64 inputs taken as exact (Woodbury form, no SVD: independent of the engine's route)."""
    import mpmath

    with mpmath.workdps(80):
        def mat(a):
            return mpmath.matrix(np.atleast_2d(np.asarray(a, dtype=float)).tolist())

        A, Sz, Sx = mat(A), mat(cov_z), mat(cov_x)
        C = Sx + A * Sz * A.T
        Ci = C**-1
        K = Sz * A.T * Ci
        cov = Sz - K * A * Sz
        logdet_C = mpmath.log(mpmath.det(C))
        ln, mu = [], []
        for x in X:
            e = mpmath.matrix([mpmath.mpf(float(v)) - mpmath.mpf(float(w)) for v, w in zip(x, b)])
            ln.append(float(-(C.rows * mpmath.log(2 * mpmath.pi) + logdet_C + (e.T * Ci * e)[0]) / 2))
            mu.append([float(v) for v in K * e])
        E, Q = mpmath.eigsy(cov)
        # h^T Sigma h along Sigma's own eigenvectors (rounded to float64), the thinnest direction included
        dirs = np.array([[float(Q[i, j]) for i in range(cov.rows)] for j in range(cov.rows)])
        quad = [float((mat(h) * cov * mat(h).T)[0]) for h in dirs]
        covf = np.array([[float(cov[i, j]) for j in range(cov.cols)] for i in range(cov.rows)])
        return covf, float(mpmath.log(mpmath.det(cov))), np.array(ln), np.array(mu), dirs, np.array(quad)


def _huge_gain_cases():
    from verify.strategies import CaseSpec, build_case

    return {
        # fuzz: |A_w|^2 ~ 1e17 in R^2 -> R^1; the explicit Sigma_z^-1 + A^T A lost the unit eigenvalue (LinAlgError)
        "s2_d1_gain1e4": build_case(CaseSpec(S=2, widths=(3,), weight_scale=1e4)).net,
        # the permutation pin: |A| ~ 1e16, x ~ -4.8e14; |e - A mu|^2 + mu^2 lost up to 0.03 nats
        "s1_d1_gain1e4": build_case(CaseSpec(widths=(5, 3, 3), activations=("relu",) * 3, weight_scale=1e4)).net,
    }


def _spd(n, seed):
    G = np.random.default_rng(seed).normal(size=(n, n))
    return (G @ G.T / n + 0.1 * np.eye(n)).tolist()


_RG_CASES = {
    "s2_d3_full_covs": lambda: random_network([2, 5, 3], cov_z=[[1.5, 0.3], [0.3, 0.7]], cov_x=FULL_COV_X, rng=1),
    "s3_d2_diag_cov_z": lambda: random_network([3, 5, 2], cov_z=[2.0, 0.5, 1.0], cov_x=0.3, rng=2),
    "s2_d1": lambda: random_network([2, 4, 1], rng=3),
    "s1_d3_deep": lambda: random_network([1, 4, 4, 3], rng=4),
    "s2_d32_full_cov_x": lambda: random_network([2, 3, 32], cov_x=_spd(32, seed=5), rng=5),  # triangular-solve path
    "s2_d1_gain1e4": lambda: _huge_gain_cases()["s2_d1_gain1e4"],
    "s1_d1_gain1e4": lambda: _huge_gain_cases()["s1_d1_gain1e4"],
}


@pytest.mark.parametrize("name", sorted(_RG_CASES))
def test_region_gaussians_and_posterior_params_match_mpmath(name):
    """Sigma_omega, its factor, log|Sigma_omega|, the prefactor of eq. 5 and mu_omega(x) to a few ulps of an
    80-digit Woodbury evaluation, with D > S, D < S, full covariances and |A_w| up to 1e16 (cases whose answers
    are determined by their float64 inputs; bounds in units of eps times the size of each quantity)."""
    from engine.distributions import posterior_region_params, region_gaussians

    net = _RG_CASES[name]()
    P = partition(net)
    X = net.sample(3, rng=0)
    rg = region_gaussians(net, P)
    mu, log_norm = posterior_region_params(net, P, X, rg)
    S = net.latent_dim
    for r in range(len(P)):
        cov, logdet, ln, m, dirs, quad = _mp_region(P.A[r], P.b[r], net.cov_z, net.cov_x, X)
        lam_max = np.linalg.eigvalsh(cov)[-1]
        assert np.abs(rg.cov[r] - cov).max() <= 16 * _EPS * lam_max
        L = rg.chol_cov[r]
        assert np.array_equal(L, np.tril(L)) and np.all(np.diag(L) >= 0)
        got = ((dirs @ L) ** 2).sum(axis=1)  # h^T L L^T h, relative to h^T Sigma h even along the thinnest h
        assert np.all(np.abs(got - quad) <= 16 * _EPS * np.sqrt(lam_max * quad))
        s_max = rg.s[r].max(initial=0.0)  # log(1 + s^2) of a singular value known to eps * s_max
        assert abs(rg.logdet_cov[r] - logdet) <= 16 * _EPS * (1 + s_max + abs(logdet))
        assert np.all(np.abs(log_norm[:, r] - ln) <= 16 * _EPS * (1 + np.abs(ln)))
        assert np.all(np.abs(mu[:, r] - m) <= 16 * _EPS * (1 + np.abs(m).max(axis=1, keepdims=True)))
    assert rg.U.shape == (len(P), net.data_dim, min(net.data_dim, S)) and rg.V.shape == (len(P), S, S)


def test_region_gaussians_huge_gain_keep_the_null_space():
    """Fuzz regression (S = 2, D = 1, gain 1e4): along the null space of A_w, Sigma_omega has eigenvalue 1
    exactly; forming Sigma_z^-1 + A_w^T A_w (|A_w|^2 ~ 1e17) computed 0, -2 or 4 there and Cholesky failed."""
    from engine.distributions import region_gaussians

    net = _huge_gain_cases()["s2_d1_gain1e4"]
    P = partition(net)
    rg = region_gaussians(net, P)
    a = P.A[:, 0, :]  # (R, 2)
    live = np.abs(a).max(axis=1) > 0
    assert (np.abs(a[live]).max(axis=1) > 1e8).any()
    n = np.stack([-a[:, 1], a[:, 0]], axis=1)[live]
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    np.testing.assert_allclose(np.einsum("rs,rst,rt->r", n, rg.cov[live], n), 1.0, rtol=0, atol=4 * _EPS)
    np.testing.assert_allclose(rg.logdet_cov[live], -np.log1p(np.sum(a[live] ** 2, axis=1)), rtol=4 * _EPS)


def test_permutation_pin_prefactor_does_not_cancel():
    """The permutation pin (S = D = 1, |A| ~ 1e16, x ~ -4.8e14): |e - A mu|^2 + mu^2 cancelled and the network and
    its unit permutation differed by 1.1e-4 nats in log p(x) (1.4e-5 in the mean); now to rounding."""
    from verify.strategies import CaseSpec, build_case

    case = build_case(CaseSpec(widths=(5, 3, 3), activations=("relu",) * 3, weight_scale=1e4))
    net = case.net
    perm = np.array([2, 0, 4, 1, 3])
    layers = list(net.layers)
    layers[0] = type(layers[0])(net.layers[0].weight[perm], net.layers[0].bias[perm])
    layers[2] = type(layers[2])(net.layers[2].weight[:, perm], net.layers[2].bias)
    a, b = evaluate(net, case.X), evaluate(net.replace(layers=layers), case.X)
    assert np.abs(a.log_marginal - b.log_marginal).max() <= 8 * _EPS * (1 + np.abs(a.log_marginal).max())
    np.testing.assert_allclose(a.posterior_mean, b.posterior_mean, rtol=8 * _EPS, atol=0)


def test_posterior_region_params_chunks_agree(monkeypatch):
    """The (points, regions, D) blocks: chunks of 3 points give the results of one block."""
    import engine.distributions as dist

    net = random_network([2, 6, 6, 4], rng=2)
    P = partition(net)
    X = net.sample(20, rng=3)
    mu, ln = dist.posterior_region_params(net, P, X)
    monkeypatch.setattr(dist, "_CHUNK_FLOATS", 3 * len(P) * net.data_dim)
    mu3, ln3 = dist.posterior_region_params(net, P, X)
    np.testing.assert_allclose(mu3, mu, rtol=0, atol=4 * _EPS * np.abs(mu).max())
    np.testing.assert_allclose(ln3, ln, rtol=4 * _EPS, atol=0)
