"""S = 1 closed forms (engine/gaussian/interval.py) against 60-digit mpmath, from the mode to 1e4 sd."""

import mpmath as mp
import numpy as np
import pytest

from engine.gaussian.interval import interval_moments, standard_interval_moments


def _reference(a, b):
    """log Z, mean, variance of N(0,1) on [a, b] at 60 digits (reflected so that no CDFs cancel)."""
    with mp.workdps(60):
        flip = a + b < 0
        if flip:
            a, b = -b, -a
        lo = mp.mpf(a) if np.isfinite(a) else mp.ninf
        hi = mp.mpf(b) if np.isfinite(b) else mp.inf

        def upper(x):
            return mp.mpf(0) if x == mp.inf else mp.erfc(x / mp.sqrt(2)) / 2

        z = 1 - upper(hi) if lo == mp.ninf else upper(lo) - upper(hi)
        if lo != mp.ninf and z < upper(lo) * mp.mpf(10) ** -40:
            z = mp.quad(mp.npdf, [lo, hi])
        pa = 0 if lo == mp.ninf else mp.npdf(lo)
        pb = 0 if hi == mp.inf else mp.npdf(hi)
        apa = 0 if lo == mp.ninf else lo * pa
        bpb = 0 if hi == mp.inf else hi * pb
        m = (pa - pb) / z
        v = 1 + (apa - bpb) / z - m * m
        return float(mp.log(z)), float(-m if flip else m), float(v)


FIXED = [(30, np.inf), (100, 101), (1000, np.inf), (37.4, 37.5), (1e4, np.inf), (8, np.inf), (4.5, 6),
         (-np.inf, -30), (-1e3, -1e3 + 1e-7), (5, 5.2), (-3, -2.9), (-np.inf, np.inf), (-np.inf, 1), (2, np.inf),
         (0.1, 0.2), (-20, -19), (50, 52), (-1, 1e-3), (-1e-9, 1e-9), (3, 3 + 1e-8), (40, 40.001)]


def _cases():
    rng = np.random.default_rng(0)
    out = list(FIXED)
    for _ in range(150):
        a = rng.normal() * 10 ** rng.uniform(-2, 3)
        out.append((a, a + 10 ** rng.uniform(-9, 2)))
    return out


def test_interval_moments_match_mpmath_everywhere():
    cases = _cases()
    a = np.array([c[0] for c in cases])
    b = np.array([c[1] for c in cases])
    log_z, mean, var = standard_interval_moments(a, b)
    ref = np.array([_reference(x, y) for x, y in cases])
    err_logz = np.abs(log_z - ref[:, 0]) / np.maximum(1.0, np.abs(ref[:, 0]))
    err_mean = np.abs(mean - ref[:, 1]) / np.maximum(np.abs(ref[:, 1]), np.sqrt(ref[:, 2]))  # relative to scale
    err_var = np.abs(var - ref[:, 2]) / ref[:, 2]
    worst = int(np.argmax(err_var))
    assert err_logz.max() < 1e-14, cases[int(np.argmax(err_logz))]
    assert err_mean.max() < 1e-13, cases[int(np.argmax(err_mean))]
    assert err_var.max() < 1e-10, (cases[worst], var[worst], ref[worst, 2])
    assert ref[:, 0].min() < -4e7, "the cases must reach masses of e^-4e7"


@pytest.mark.parametrize("mu,sd,lo,hi", [(0.3, 2.0, -1.0, 4.0), (50.0, 0.5, -np.inf, 1.0), (-3.0, 1e-3, 2.0, 3.0)])
def test_location_scale(mu, sd, lo, hi):
    log_z, mean, var = interval_moments(mu, sd, lo, hi)
    s_log_z, s_mean, s_var = standard_interval_moments((lo - mu) / sd, (hi - mu) / sd)
    assert log_z == s_log_z
    assert mean == pytest.approx(mu + sd * s_mean, rel=1e-15, abs=1e-300)
    assert var == pytest.approx(sd * sd * s_var, rel=1e-15)


def test_compiled_quadrature_is_the_numpy_form_bit_for_bit(monkeypatch):
    """The compiled sums of the Gauss-Legendre tiers (default) against the numpy form, on intervals of every tier
    (narrow ones and deep finite tails, exponent spans up to 40): the same bits (the mpmath test above checks the
    numbers themselves)."""
    import importlib

    interval = importlib.import_module("engine.gaussian.interval")
    rng = np.random.default_rng(7)
    a = np.concatenate([rng.normal(size=6000) * 10 ** rng.uniform(-2, 3, 6000), 4.0 + rng.uniform(0, 200, 3000)])
    w = np.concatenate([10 ** rng.uniform(-9, 0, 6000), rng.uniform(0, 0.3, 3000)])
    keep = np.abs(a) * w + 0.5 * w * w <= 40.0
    a, w = a[keep], w[keep]
    span = np.abs(a) * w + 0.5 * w * w
    assert min((span <= 2).sum(), ((span > 2) & (span <= 12)).sum(), (span > 12).sum()) > 200  # every tier
    out = interval._quadrature_moments(a, w, -a)
    monkeypatch.setattr(interval, "USE_COMPILED_QUADRATURE", False)
    ref = interval._quadrature_moments(a, w, -a)
    for x, y in zip(out, ref):
        assert np.array_equal(x, y)
    assert (out[2] > 0).all()
