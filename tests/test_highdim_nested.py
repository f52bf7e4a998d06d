"""Deterministic nested quadrature for S' >= 3 (``engine.gaussian.highdim.nested``, issue 14) against exact answers.

Oracle: a rotated box ``Q [a, b]`` under N(0, I) has mass ``prod (Phi(b_i) - Phi(a_i))`` and conditional mean
``Q m`` with ``m_i = (phi(a_i) - phi(b_i)) / (Phi(b_i) - Phi(a_i))`` (independent truncated normals), in closed form.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import log_ndtr
from scipy.stats import truncnorm

from engine.gaussian.highdim.nested import nested_checked, nested_moments


def _box(S, a, b, seed):
    Q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((S, S)))
    Nrm = np.vstack([Q.T, -Q.T])
    D = np.concatenate([b, -a])[None]
    up = a > 0  # upper tails by symmetry: no cancellation of Phi near 1
    hi, lo = np.where(up, log_ndtr(-a), log_ndtr(b)), np.where(up, log_ndtr(-b), log_ndtr(a))
    exact = np.sum(hi + np.log1p(-np.exp(lo - hi)))
    mean = Q @ truncnorm.mean(a, b)
    cov = Q @ np.diag(truncnorm.var(a, b)) @ Q.T
    return Nrm, D, exact, mean, cov


@pytest.mark.parametrize("a, b", [
    (np.array([-1.0, -0.5, 0.2]), np.array([0.7, 1.5, 2.0])),
    (np.array([2.0, 2.5, -1.0]), np.array([3.0, 4.0, 1.0])),  # tail, mass 2.6e-5
    (np.array([9.0, -np.inf, -1.0]), np.array([np.inf, 0.5, np.inf])),  # unbounded, mass 8e-20
])
def test_nested_s3_matches_rotated_boxes(a, b):
    lo, hi = np.where(np.isfinite(a), a, -50.0), np.where(np.isfinite(b), b, 50.0)
    Nrm, D, exact, mean, cov = _box(3, lo, hi, 1)
    keep = np.abs(D[0]) < 40.0  # the +-50 sides stand for open ends: drop them
    lm, m, c, rel = nested_checked(Nrm[keep], D[:, keep], 2)
    assert abs(lm[0] - exact) <= 1e-12 * (1 + abs(exact))
    assert abs(np.expm1(lm[0] - exact)) <= rel[0]  # the error bar covers the truth
    assert rel[0] < 1e-10
    np.testing.assert_allclose(m[0], mean, atol=1e-9)
    np.testing.assert_allclose(c[0], cov, atol=1e-9)


@pytest.mark.slow
def test_nested_s4_matches_rotated_box():
    a, b = np.array([-1.0, -0.5, 0.2, -2.0]), np.array([0.7, 1.5, 2.0, 0.1])
    Nrm, D, exact, mean, cov = _box(4, a, b, 1)
    lm, m, c, rel = nested_moments(Nrm, D, 2)
    assert abs(lm[0] - exact) <= 1e-12
    assert rel[0] < 1e-10
    np.testing.assert_allclose(m[0], mean, atol=1e-9)
    np.testing.assert_allclose(c[0], cov, atol=1e-9)
