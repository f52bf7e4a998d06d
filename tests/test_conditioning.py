"""``log_marginal_error`` covers the truth on ill-conditioned nets (engine.conditioning), against the exact-rational
oracle ``verify.oracles.exact`` (exact partition and region maps from the float64 weights as rationals, each
region's Gaussian integral in mpmath), which is itself checked here against an mpmath forward pass and against
the engine on a benign net.

Measured on the pinned S = 2 fuzz nets (tests/fuzz_cases; `python -m pytest -m slow tests/test_conditioning.py`):
before engine.conditioning seven of the eight nets that evaluate were off their exact value by more than their
bar (all bars 9e-16 ... 5e-15): permutation-0-e298 2.1e-14, rescaling-0 1.4e-12, permutation-5 2.5e-12,
rescaling-1 0.031 nats, permutation-0-2a94 1.9, permutation-6 2.4, permutation-4 5.1 nats. The bars are now
1.8e-7 ... 6e4 nats and cover every one.
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import mpmath as mp
import numpy as np
import pytest

import engine
from engine.conditioning import abs_maps
from verify.oracles.exact import exact_cells, exact_log_marginal

CASES = Path(__file__).parent / "fuzz_cases"


def _case(name):
    d = json.loads((CASES / f"{name}.json").read_text())
    return engine.load_network(d["model"]), np.asarray(d["data"], dtype=float)


def _s2_cases():
    return sorted(p.stem for p in CASES.glob("*.json")
                  if json.loads(p.read_text())["model"]["latent_dim"] == 2 and not p.stem.startswith("region_map"))


def test_exact_oracle_maps_match_an_mpmath_forward_pass():
    """Every exact cell's map ``A z + b`` equals the raw forward pass (50 digits, exact weights) at its centroid
    and at points a third of the way to each vertex, and the cells' patterns are the engine's regions."""
    from verify.oracles.quadrature import MPModel

    for name in ("rescaling-0-74d16ed212943430", "permutation-4-e4c24cd06fe2de78"):
        net, X = _case(name)
        cells = exact_cells(net)
        part = engine.partition(net)
        assert {c[0] for c in cells} == {tuple(bool(v) for v in s) for s in part.signs}
        model = MPModel(net, X[0])
        with mp.workdps(60):
            for _, poly, A, b in cells:
                cen = [sum(p[k] for p in poly) / len(poly) for k in range(2)]
                for z in [cen] + [[(2 * c + v) / 3 for c, v in zip(cen, p)] for p in poly]:
                    g = model.forward([mp.mpf(z[0].numerator) / z[0].denominator,
                                       mp.mpf(z[1].numerator) / z[1].denominator])
                    want = [a[0] * z[0] + a[1] * z[1] + bi for a, bi in zip(A, b)]
                    scale = 1 + max(abs(w) for w in want)
                    assert max(abs(u - (mp.mpf(w.numerator) / w.denominator)) for u, w in zip(g, want)) < 1e-40 * scale


def test_exact_oracle_agrees_with_the_engine_on_a_benign_net():
    """On a well-conditioned net both are right: they agree to 1e-13 nats (measured 0.0), within the bar."""
    net = engine.random_network([2, 3, 2], activation="leaky_relu", negative_slope=0.2, rng=4, cov_x=0.2)
    x = net.forward(np.array([[0.3, -0.5]]))[0] + 0.1
    r = exact_log_marginal(net, x, dps=25)
    ev = engine.evaluate(net, x[None])
    assert r.n_cells == len(engine.partition(net)) and r.abs_error < 1e-15
    err = abs(ev.log_marginal[0] - float(r.log_px))
    assert err < 1e-13 and err <= ev.log_marginal_error[0]


def test_composition_rounding_within_the_abs_maps_bound():
    """The model of engine.conditioning: the float64 region maps are off the exact ones by at most
    ``gamma eps`` times the composed magnitudes (checked entrywise on two extreme nets, exact rationals)."""
    eps = np.finfo(float).eps
    for name in ("rescaling-0-74d16ed212943430", "permutation-4-e4c24cd06fe2de78"):
        net, _ = _case(name)
        part = engine.partition(net)
        exact = {c[0]: c for c in exact_cells(net)}
        Aabs, babs, gamma = abs_maps(net, part.signs)
        for i, s in enumerate(part.signs):
            _, _, A, b = exact[tuple(bool(v) for v in s)]
            dA = np.array([[abs(float(Fraction(float(part.A[i][j, k])) - A[j][k])) for k in range(2)]
                           for j in range(len(b))])
            db = np.array([abs(float(Fraction(float(part.b[i][j])) - b[j])) for j in range(len(b))])
            assert np.all(dA <= gamma * eps * Aabs[i]) and np.all(db <= gamma * eps * babs[i])


def test_rounding_bar_is_small_on_ordinary_nets():
    """The bound is not vacuous: on ordinary nets the bar stays below 1e-11 nats."""
    rng = np.random.default_rng(0)
    for widths, act in (([2, 8, 8, 3], "relu"), ([2, 6, 6, 5], "leaky_relu")):
        net = engine.random_network(widths, activation=act, rng=1)
        X = net.forward(rng.normal(size=(4, 2))) + 0.3 * rng.normal(size=(4, widths[-1]))
        ev = engine.evaluate(net, X)
        assert np.all(ev.log_marginal_error > 0) and np.all(ev.log_marginal_error < 1e-11), ev.log_marginal_error


@pytest.mark.slow
@pytest.mark.parametrize("name", _s2_cases())
def test_bar_covers_the_exact_value_on_every_pinned_s2_net(name):
    """Every pinned S = 2 fuzz net that evaluates: |log p - exact| <= log_marginal_error (10-110 s each)."""
    net, X = _case(name)
    ev = engine.evaluate(net, X[:1])
    r = exact_log_marginal(net, X[0], dps=40)
    assert r.abs_error < 1e-20
    err = abs(ev.log_marginal[0] - float(r.log_px))
    assert err <= ev.log_marginal_error[0], (name, err, ev.log_marginal_error[0])


@pytest.mark.slow
def test_pinned_exact_values_of_test_extreme_nets():
    import runpy

    pins = runpy.run_path(str(Path(__file__).parent / "test_extreme_nets.py"))["EXACT_LOG_P"]
    for name, want in pins.items():
        net, X = _case(name)
        r = exact_log_marginal(net, X[0], dps=40)
        assert abs(float(r.log_px) - want) < 1e-13 and r.abs_error < 1e-20




def _bar_by_formula(net, rg, X, mu, log_norm, log_mass, means, covs, part):
    """The module docstring's bound written out pair by pair in plain Python floats (the reference for the compiled
    ``_bar_pairs``): log(1 + sum_w w (e^beta_w - 1)) over the pairs of weight above 1e-30."""
    from engine import conditioning as cn

    eps = np.finfo(float).eps
    S, D = net.latent_dim, net.data_dim
    c = 4.0 * (D + S)
    Aabs, babs, gamma = abs_maps(net, part.signs)
    inv_lx = 1.0 / np.sqrt(np.linalg.eigvalsh(net.cov_x)[0])
    X_w = np.linalg.solve(rg.chol_x, X.T).T
    out = []
    for n in range(X.shape[0]):
        lj = log_norm[n] + log_mass[n]
        w = np.exp(lj - lj.max())
        w /= w.sum()
        total = mp.mpf(0)
        for r in np.nonzero(w > cn._W_MIN)[0]:
            nA = float(np.linalg.norm(rg.A_w[r]))
            dA = eps * (gamma * inv_lx * np.linalg.norm(Aabs[r]) + c * nA)
            e = np.linalg.norm(X_w[n]) + np.linalg.norm(rg.b_w[r])
            db = eps * (gamma * inv_lx * np.linalg.norm(babs[r]) + c * e)
            m, C, mp_ = means[n, r], covs[n, r], mu[n, r]
            d = np.linalg.norm(np.linalg.solve(rg.chol_cov[r], m - mp_))
            q = max(-2.0 * (log_norm[n, r] - rg.const[r]), 0.0)
            er2 = (np.sqrt(q) + d) ** 2 + S
            ez2 = m @ m + max(np.trace(C), 0.0)
            beta = (np.sqrt(er2) * (db + dA * np.sqrt(ez2)) + d * c * eps * (e + nA * np.linalg.norm(mp_))
                    + 8 * eps * (1.0 + abs(log_norm[n, r])))
            total += mp.mpf(w[r]) * mp.expm1(beta)
        out.append(float(mp.log1p(total)))
    return np.array(out)


@pytest.mark.parametrize("scale", [1.0, 1e13])
def test_compiled_bar_is_the_formula(scale, monkeypatch):
    """``conditioning._bar_pairs`` (compiled, log space for huge beta) equals the bound written out pair by pair,
    to 1e-12 relative, on an ordinary net and on the same net with data scaled by 1e13 (beta of thousands of nats,
    the log-space branch)."""
    from engine import conditioning as cn

    net = engine.random_network([2, 6, 6, 3], rng=2, cov_x=0.1)
    X = net.sample(6, rng=3) * scale
    got = {}
    real = cn.rounding_bar

    def spy(*args):
        got["args"], got["bar"] = args, real(*args)
        return got["bar"]

    monkeypatch.setattr(cn, "rounding_bar", spy)
    engine.evaluate(net, X)
    _net, part, rg, X_, mu, log_norm, log_mass, means, covs = got["args"]
    ref = _bar_by_formula(net, rg, np.asarray(X_, float), mu, log_norm, log_mass, means, covs, part)
    assert np.all(np.isfinite(ref)) and (scale == 1.0 or ref.max() > 600.0), ref
    np.testing.assert_allclose(got["bar"], ref, rtol=1e-12, atol=0.0)
