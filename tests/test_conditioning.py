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


