"""engine.EM as a scikit-learn estimator: check_estimator in full, clone, GridSearchCV, honest BIC/AIC."""

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV
from sklearn.utils.estimator_checks import check_estimator

import engine
from engine import EM, DGNInputError


def test_check_estimator_passes_every_check(monkeypatch):
    """Every check of scikit-learn's suite, none declared as an expected failure (41 checks with 1.9; the
    array-API check runs only with SCIPY_ARRAY_API set, so it is set here)."""
    monkeypatch.setenv("SCIPY_ARRAY_API", "1")
    results = check_estimator(EM(latent_dim=1, hidden=(4,), max_iter=3, random_state=0), on_fail=None)
    failed = [(r["check_name"], repr(r["exception"])[:300]) for r in results if r["status"] != "passed"]
    assert len(results) >= 40
    assert failed == []


def test_network_none_builds_the_decoder_from_the_data_width():
    X = engine.datasets.circle(60, rng=0)
    em = EM(latent_dim=1, hidden=(3,), max_iter=2, random_state=0).fit(X)
    assert em.n_features_in_ == 2 and em.network_.widths == [1, 3, 2]
    em3 = clone(em).fit(np.column_stack([X, X[:, :1]]))
    assert em3.network_.widths == [1, 3, 3] and em3.n_features_in_ == 3
    with pytest.raises(DGNInputError, match="X has 2 features, but EM is expecting 3 features"):
        em3.score_samples(X)


def test_clone_get_set_params_and_backward_compatible_network_argument():
    em = EM([1, 4, 2], max_iter=2, cov_x_type="diagonal", random_state=3)
    params = em.get_params()
    assert params["network"] == [1, 4, 2] and params["cov_x_type"] == "diagonal" and params["hidden"] == (16, 16)
    c = clone(em)
    assert c.get_params() == params and c is not em
    c.set_params(hidden=(5,), network=None)
    assert c.hidden == (5,) and c.network is None
    X = engine.datasets.circle(40, rng=1)
    a = clone(em).fit(X)
    b = clone(em).fit(X)
    np.testing.assert_array_equal(a.score_samples(X), b.score_samples(X))  # reproducible bits


def test_grid_search_over_hidden_widths():
    X = engine.datasets.circle(60, rng=2)
    gs = GridSearchCV(EM(latent_dim=1, max_iter=2, random_state=0), {"hidden": [(4,), (8,)]}, cv=2).fit(X)
    assert gs.best_params_["hidden"] in [(4,), (8,)]
    assert np.isfinite(gs.cv_results_["mean_test_score"]).all()
    assert gs.best_estimator_.network_.widths[1] == gs.best_params_["hidden"][0]


def test_one_point_and_bad_random_state_are_refused():
    x = np.array([[0.5, -0.2]])
    with pytest.raises(DGNInputError, match="1 sample"):
        EM(latent_dim=1, hidden=(3,)).fit(x)
    with pytest.raises(DGNInputError, match="random_state"):
        EM(latent_dim=1, hidden=(3,), random_state="abc").fit(engine.datasets.circle(10))


def test_identical_points_floor_cov_x_absolutely():
    """Zero data variance: the floor is min_cov_x itself (like sklearn's reg_covar), not 3e-26."""
    X = np.tile([[0.5, -0.2]], (5, 1))
    em = EM(latent_dim=1, hidden=(3,), max_iter=20, random_state=0).fit(X)
    assert em.cov_x_floor_ == 1e-6
    assert np.linalg.eigvalsh(em.network_.cov_x).min() >= 1e-6 * (1 - 1e-12)


@pytest.mark.parametrize("bad,match", [
    (np.ones((5, 2)) + 1j, "Complex data not supported"), (np.ones((5, 2), bool), "boolean"),
    ([[1.0, 2.0], [3.0]], "ragged"), (np.arange(6.0), "2-D"),
])
def test_fit_refuses_bad_input_in_one_line(bad, match):
    with pytest.raises(DGNInputError, match=match) as info:
        EM(latent_dim=1, hidden=(3,), max_iter=1).fit(bad)
    assert "\n" not in str(info.value)


def test_sparse_input_is_refused():
    from scipy import sparse

    with pytest.raises(DGNInputError, match="sparse"):
        EM(latent_dim=1, hidden=(3,), max_iter=1).fit(sparse.csr_matrix(np.eye(4)))


# ----------------------------------------------------------------------------- honest parameter counts
def _ppca_count(D, S, cov_x_type):
    """Known answer (Tipping and Bishop 1999): W and the mean, minus the S(S-1)/2 rotations of z."""
    noise = {"isotropic": 1, "diagonal": D, "full": D * (D + 1) // 2}[cov_x_type]
    return D * S + D - S * (S - 1) // 2 + noise


@pytest.mark.parametrize("cov_x_type", ["isotropic", "diagonal", "full"])
@pytest.mark.parametrize("learn_cov_z", [False, True])
def test_n_parameters_linear_decoder_is_ppca(cov_x_type, learn_cov_z):
    X = np.random.default_rng(0).standard_normal((50, 4))
    em = EM([2, 4], max_iter=1, cov_x_type=cov_x_type, learn_cov_z=learn_cov_z, random_state=0).fit(X)
    assert em.n_parameters() == _ppca_count(4, 2, cov_x_type)


def _log_likelihoods(net, X, theta, template):
    layers, k = [], 0
    for layer in template.layers:
        if isinstance(layer, engine.Linear):
            w = theta[k:k + layer.weight.size].reshape(layer.weight.shape)
            k += layer.weight.size
            b = theta[k:k + layer.bias.size]
            k += layer.bias.size
            layers.append(engine.Linear(w, b))
        else:
            layers.append(layer)
    return engine.evaluate(net.replace(layers=layers), X).log_marginal


def test_n_parameters_equals_the_rank_of_the_score_jacobian():
    """Independent oracle: the local dimension of the model is the rank of d log p(x_n) / d theta over many
    points (central differences, h = 1e-5: truncation ~1e-10; the gap between the kept and the dropped
    singular values is asserted to be > 1e4)."""
    net = engine.random_network([1, 3, 2], activation="leaky_relu", rng=0, cov_x=0.05)
    X = net.sample(300, rng=1)
    theta = np.concatenate([np.concatenate([la.weight.ravel(), la.bias]) for la in net.layers
                            if isinstance(la, engine.Linear)])
    h = 1e-5
    J = np.empty((len(X), theta.size))
    for i in range(theta.size):
        e = np.zeros(theta.size)
        e[i] = h
        J[:, i] = (_log_likelihoods(net, X, theta + e, net) - _log_likelihoods(net, X, theta - e, net)) / (2 * h)
    sv = np.linalg.svd(J, compute_uv=False)
    em = EM(net, max_iter=0).fit(X)
    k_decoder = em.n_parameters() - 1  # without sigma_x^2 (not in theta)
    assert sv[k_decoder - 1] / sv[k_decoder] > 1e4
    assert k_decoder == theta.size - 3
