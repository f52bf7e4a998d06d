"""M-step of exact EM (paper Sec. 4.2, Appendix G): closed-form updates are maximisers of Q.

Oracle: Q(theta; theta_t) from ``expected_complete_loglik`` (itself checked against quadrature in
test_em_estep.py). Q is a quadratic in each layer's (W, v), so central finite differences are exact up
to rounding: the gradient at the update must vanish to ~1e-7 relative to the gradient at theta_t.
Covariance updates must beat every perturbation inside their family.
"""

from __future__ import annotations

import numpy as np
import pytest

import engine
from engine.em import (
    cov_x_update,
    cov_z_update,
    expected_complete_loglik,
    frozen_maps,
    layer_update,
    statistics,
)
from engine.network import Linear


def _setup(activation="leaky_relu", widths=(1, 5, 4, 3), seed=0, n=60):
    rng = np.random.default_rng(seed)
    truth = engine.random_network(list(widths), activation=activation, cov_x=0.1, rng=rng)
    X = truth.sample(n, rng=rng)
    net = engine.random_network(list(widths), activation=activation, cov_x=[0.2, 0.3, 0.4][: widths[-1]],
                                rng=rng)
    ev = engine.evaluate(net, X)
    return net, X, ev


def _with_layer(net, k, weight, bias):
    layers = list(net.layers)
    layers[k] = Linear(weight, bias)
    return net.replace(layers=layers)


def _q(net, X, ev):
    return float(expected_complete_loglik(net, X, ev).sum())


def _grad(net, X, ev, k, h=1e-3):
    layer = net.layers[k]
    theta = np.hstack([layer.weight, layer.bias[:, None]])
    g = np.zeros_like(theta)
    for idx in np.ndindex(theta.shape):
        up, dn = theta.copy(), theta.copy()
        up[idx] += h
        dn[idx] -= h
        qu = _q(_with_layer(net, k, up[:, :-1], up[:, -1]), X, ev)
        qd = _q(_with_layer(net, k, dn[:, :-1], dn[:, -1]), X, ev)
        g[idx] = (qu - qd) / (2 * h)
    return g


def _has_s2() -> bool:
    try:
        import engine.gaussian.polytopes  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.parametrize("activation,S", [("relu", 1), ("leaky_relu", 1), ("abs", 1), ("leaky_relu", 2)])
def test_layer_updates_are_stationary_points_of_q(activation, S):
    if S == 2 and not _has_s2():
        pytest.skip("S = 2 Gaussian integrals (engine/gaussian/polytopes.py) not available")
    seed = {"relu": 0, "leaky_relu": 1, "abs": 2}[activation]
    net, X, ev = _setup(activation, widths=(S, 5, 4, 3), seed=seed, n=60 if S == 1 else 20)
    stats = statistics(ev, X)
    fm = frozen_maps(net, ev.partition)
    q_old = _q(net, X, ev)
    for k in [i for i, lay in enumerate(net.layers) if isinstance(lay, Linear)]:
        upd = layer_update(net, stats, fm, k)
        new = _with_layer(net, k, upd.weight, upd.bias)
        g_old = np.abs(_grad(net, X, ev, k)).max()
        g_new = np.abs(_grad(new, X, ev, k)).max()
        assert g_new <= 1e-6 * max(g_old, 1.0), (k, g_new, g_old)
        q_new = _q(new, X, ev)
        assert q_new >= q_old - 1e-9 * abs(q_old)
        rng = np.random.default_rng(k)
        for _ in range(3):  # concave quadratic: any other point is worse
            dw = 1e-2 * rng.standard_normal(upd.weight.shape)
            db = 1e-2 * rng.standard_normal(upd.bias.shape)
            assert _q(_with_layer(net, k, upd.weight + dw, upd.bias + db), X, ev) <= q_new + 1e-9 * abs(q_new)


def test_bias_block_matches_papers_v_star():
    """Sec. 4.2: v* = (sum e0 B^T Lam B)^-1 sum B^T Lam r, r = (x - other biases' terms) e0 - A_W e1.

    The paper prints the left factor without e0; the weighted sum is what stationarity gives (the
    unweighted one would count every region once per data point).
    """
    net, X, ev = _setup("leaky_relu", widths=(1, 6, 5, 2), seed=4)
    stats = statistics(ev, X)
    k = 2  # the second linear layer (inner)
    upd = layer_update(net, stats, frozen_maps(net, ev.partition), k)
    new = _with_layer(net, k, upd.weight, upd.bias)
    fm = frozen_maps(new, ev.partition)
    e0, e1, _ = ev.moments()
    Lam = np.linalg.inv(new.cov_x)
    B = fm.B[k]
    b_without = fm.b - np.einsum("rdm,m->rd", B, upd.bias)  # sum_{i != l} B^i v^i
    r = e0[..., None] * (X[:, None, :] - b_without[None]) - np.einsum("rds,nrs->nrd", fm.A, e1)
    lhs = np.einsum("nr,rdm,de,rek->mk", e0, B, Lam, B)
    rhs = np.einsum("rdm,de,nre->m", B, Lam, r)
    # our bias solves the paper's normal equations (residual, robust to the system's conditioning)
    resid = np.abs(lhs @ upd.bias - rhs).max()
    assert resid <= 1e-9 * (np.abs(lhs).max() * np.abs(upd.bias).max() + np.abs(rhs).max())


@pytest.mark.parametrize("kind", ["isotropic", "diagonal", "full"])
def test_cov_x_update_maximises_q_in_its_family(kind):
    net, X, ev = _setup("abs", seed=5)
    spec = cov_x_update(net, ev, X, kind, floor=0.0)
    best = net.replace(cov_x=spec)
    q_best = _q(best, X, ev)
    q_old = _q(net, X, ev)
    assert q_best >= q_old
    full = best.cov_x
    rng = np.random.default_rng(0)
    for _ in range(6):
        if kind == "isotropic":
            cand = float(spec) * np.exp(0.05 * rng.standard_normal())
        elif kind == "diagonal":
            cand = np.asarray(spec) * np.exp(0.05 * rng.standard_normal(len(spec)))
        else:
            E = 0.05 * rng.standard_normal(full.shape)
            cand = full + 0.1 * (E + E.T) * np.sqrt(np.outer(np.diag(full), np.diag(full)))
        assert _q(net.replace(cov_x=cand), X, ev) <= q_best + 1e-10 * abs(q_best)
    if kind == "isotropic":  # d Q / d sigma^2 = 0
        h = 1e-6 * float(spec)
        up = _q(net.replace(cov_x=float(spec) + h), X, ev)
        dq = (up - _q(net.replace(cov_x=float(spec) - h), X, ev)) / (2 * h)
        assert abs(dq) < 1e-5 * len(X) / float(spec)


def test_cov_x_floor_is_respected():
    net, X, ev = _setup("relu", seed=6)
    spec = cov_x_update(net, ev, X, "diagonal", floor=10.0)
    np.testing.assert_array_equal(spec, 10.0)
    full = cov_x_update(net, ev, X, "full", floor=10.0)
    assert np.linalg.eigvalsh(full).min() >= 10.0 - 1e-9


def test_cov_z_update_maximises_q():
    net, X, ev = _setup("leaky_relu", widths=(1, 4, 3), seed=8)
    cz = cov_z_update(statistics(ev, X))
    m = ev.posterior_mean
    want = (ev.posterior_cov + m[:, :, None] * m[:, None, :]).mean(axis=0)
    np.testing.assert_allclose(cz, want, rtol=1e-12)
    q_best = _q(net.replace(cov_z=cz), X, ev)
    for f in (0.9, 0.97, 1.03, 1.1):
        assert _q(net.replace(cov_z=cz * f), X, ev) < q_best


def test_dead_unit_update_is_finite_and_keeps_q():
    """A ReLU unit that is off everywhere leaves the normal equations singular: the proximal ridge keeps
    its incoming weights where they were and the rest of the update is unaffected."""
    rng = np.random.default_rng(3)
    net = engine.random_network([1, 4, 2], activation="relu", cov_x=0.2, rng=rng)
    w1 = net.layers[0].weight.copy()
    b1 = net.layers[0].bias.copy()
    w1[0] = 0.0
    b1[0] = -5.0  # unit 0 is dead for every z
    net = _with_layer(net, 0, w1, b1)
    X = net.sample(50, rng=rng)
    ev = engine.evaluate(net, X)
    upd = layer_update(net, statistics(ev, X), frozen_maps(net, ev.partition), 0)
    assert np.all(np.isfinite(upd.weight)) and np.all(np.isfinite(upd.bias))
    np.testing.assert_allclose(upd.weight[0], w1[0], atol=1e-8)
    np.testing.assert_allclose(upd.bias[0], b1[0], atol=1e-8)
    assert _q(_with_layer(net, 0, upd.weight, upd.bias), X, ev) >= _q(net, X, ev) - 1e-9
