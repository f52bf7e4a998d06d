"""Monte-Carlo bounds: stated false-fail rates hold empirically; verdict logic (TFP statistical_testing)."""

from __future__ import annotations

import numpy as np

from verify.statistics import (
    FAIL,
    INCONCLUSIVE,
    PASS,
    dkw_epsilon,
    hoeffding_half_width,
    interval_verdict,
    mean_confidence_interval,
    split_budget,
)


def test_false_fail_rate_of_mean_interval_holds():
    rng = np.random.default_rng(0)
    delta, trials = 0.1, 3000
    misses = 0
    for _ in range(trials):
        x = (rng.random(100) < 0.3).astype(float)  # Bernoulli(0.3), true mean 0.3
        _, lo, hi = mean_confidence_interval(x, delta, 0.0, 1.0)
        misses += not (lo <= 0.3 <= hi)
    # a bound that claims delta = 0.1 must miss at most ~10% (+ 4 binomial sd of slack)
    assert misses / trials <= delta + 4 * np.sqrt(delta * (1 - delta) / trials)


def test_dkw_band_holds():
    rng = np.random.default_rng(1)
    delta, n, trials, misses = 0.1, 50, 2000, 0
    for _ in range(trials):
        u = np.sort(rng.random(n))
        ecdf_hi, ecdf_lo = np.arange(1, n + 1) / n, np.arange(n) / n
        misses += max(np.max(ecdf_hi - u), np.max(u - ecdf_lo)) > dkw_epsilon(n, delta)
    assert misses / trials <= delta + 4 * np.sqrt(delta * (1 - delta) / trials)


def test_interval_detects_a_wrong_mean():
    rng = np.random.default_rng(2)
    x = rng.random(100_000)
    _, lo, hi = mean_confidence_interval(x, 1e-6, 0.0, 1.0)
    assert interval_verdict(0.5, lo, hi, tol=0.0, target=0.05).status == PASS
    assert interval_verdict(0.52, lo, hi, tol=0.0, target=0.05).status == FAIL
    # too few samples to detect the target: never PASS
    _, lo, hi = mean_confidence_interval(x[:50], 1e-6, 0.0, 1.0)
    assert interval_verdict(0.5, lo, hi, tol=0.0, target=0.05).status == INCONCLUSIVE
    assert interval_verdict(np.nan, lo, hi, tol=0.0, target=0.05).status == FAIL


def test_hoeffding_and_budget():
    assert hoeffding_half_width(10_000, 0.05) == np.sqrt(np.log(40) / 20_000)
    assert split_budget(1e-6, 10) == 1e-7
