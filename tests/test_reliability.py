"""Issue 19, item 2: the S = 1 interval formulas in the far tails raise no floating-point warning.

``-x^2/2`` beyond |x| = 1e154, ``exp(-a w - w^2/2)`` with a w ~ 1e300 and the closed-form variance on rows
that the continued fraction replaces all overflowed (harmless infinities, but the suite turns engine
RuntimeWarnings into errors). Oracle for the values: the limits themselves (log Z = -inf beyond float64,
the mean at the near end, the variance ~ 1/a^2) and continuity with a moderate tail.
"""

import warnings

import numpy as np

from engine.gaussian.interval import standard_interval_moments


def test_far_tail_intervals_no_overflow_warning():
    alpha = np.array([-1e200, -np.inf, 1e-3, -1e300, 2.0, -1e160, -5.0, 1e155])
    beta = np.array([-1e199, -1e160, 1e200, 1e300, 1e250, -1e159, 1e308, 1e156])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's default: overflow, divide and invalid warn (underflow is silent)
        log_z, mean, var = standard_interval_moments(alpha, beta)
    assert np.all(np.isneginf(log_z[[0, 1, 5, 7]]))
    assert log_z[3] == 0.0 and abs(log_z[6]) < 1e-6
    np.testing.assert_allclose(mean[[0, 1, 5]], beta[[0, 1, 5]], rtol=1e-12)  # at the near end
    np.testing.assert_allclose(mean[7], alpha[7], rtol=1e-12)
    assert np.all(var >= 0) and np.all(var[[0, 1, 5, 7]] < 1e-300)


def test_moderate_tail_unchanged():
    """The restructured closed forms give the same numbers where nothing overflows (a < 4, finite width)."""
    alpha = np.array([-3.0, -2.5, -8.0, 1.0])
    beta = np.array([-1.0, -2.0, -3.5, 3.0])
    log_z, mean, var = standard_interval_moments(alpha, beta)
    from scipy.stats import truncnorm

    for i in range(4):
        d = truncnorm(alpha[i], beta[i])
        np.testing.assert_allclose([mean[i], var[i]], [d.mean(), d.var()], rtol=1e-9)
