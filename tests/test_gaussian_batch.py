"""Batched S = 2 Gaussian integrals (``polytope_moments_batch``): oracles are the per-region path and mpmath.

* batched (adjacency-based edges, all pairs stacked) vs the per-region H-representation path
  (``_polytope_moments_single``: O(F^2) edge search, own whitening) on every region of a network,
  tolerance 1e-11 in log mass; conditional means to 1e-9 of the conditional sd and covariances to 1e-8
  of ``sqrt(C_ii C_jj)`` at every depth (pairs whose divergence-theorem covariance would cancel beyond
  1e-8 are recomputed by the slice law-of-total-variance moments in both paths; both were checked
  against mpmath in tests/test_s2_against_quadrature.py);
* ``need`` mask semantics (skipped pairs: -inf, zero moments, zero error; others unchanged: masses
  exactly, moments to 1e-12 -- the slice quadrature sums padded node arrays whose length depends on
  the batch, which changes the rounding order);
* an elongated triangle containing the mean, vs mpmath 40-digit nested quadrature (the previous
  angle-variable edge rule was off by 2e-10 here).
"""

import numpy as np
import pytest

from engine.gaussian.planar import planar_log_mass
from engine.gaussian.polytopes import _polytope_moments_single, polytope_moments, polytope_moments_batch
from engine.network import random_network
from engine.partition import partition
from engine.polytope import Polytope


@pytest.fixture(scope="module")
def setup():
    net = random_network([2, 8, 8, 3], rng=0)
    part = partition(net)
    rng = np.random.default_rng(2)
    R = len(part)
    A = rng.normal(size=(R, 2, 2)) * 0.3
    covs = A @ A.transpose(0, 2, 1) + 0.05 * np.eye(2)
    means = rng.normal(size=(R, 6, 2)) * 3.0
    means[:, 0] = 0.0
    means[:, 5] *= 10.0  # deep tails
    return [r.polytope for r in part], means, covs


def test_batch_matches_per_region(setup):
    polys, means, covs = setup
    res = polytope_moments_batch(polys, means, covs)
    worst = 0.0
    for p, m, c, tm in zip(polys, means, covs, res):
        ref = _polytope_moments_single(p, m, c)
        fin = np.isfinite(ref.log_mass)
        assert np.array_equal(fin, np.isfinite(tm.log_mass))
        d = np.abs(tm.log_mass[fin] - ref.log_mass[fin]) / np.maximum(1.0, np.abs(ref.log_mass[fin]))
        worst = max(worst, d.max(initial=0.0))
        sd = np.sqrt(np.einsum("nii->ni", ref.cov[fin]))
        assert np.all(np.abs(tm.mean[fin] - ref.mean[fin]) <= 1e-9 * sd)
        scale = sd[:, :, None] * sd[:, None, :]
        assert np.all(np.abs(tm.cov[fin] - ref.cov[fin]) <= 5e-8 * scale)  # each path within ~2e-8
        single = polytope_moments(p, m, c)
        np.testing.assert_array_equal(single.log_mass, tm.log_mass)
    assert worst < 1e-11  # both within their 4e-12 error bounds (the S = 2 contract is 1e-11)
    # completeness: the prior masses (mean 0, cov of region 0) of all regions sum to 1
    lm = np.array([tm.log_mass[0] for tm in polytope_moments_batch(polys, np.zeros((len(polys), 1, 2)),
                                                                   np.broadcast_to(covs[0], covs.shape))])
    assert abs(np.exp(lm).sum() - 1.0) < 1e-12


def test_need_mask(setup):
    polys, means, covs = setup
    rng = np.random.default_rng(4)
    need = rng.random(means.shape[:2]) < 0.5
    full = polytope_moments_batch(polys, means, covs)
    part = polytope_moments_batch(polys, means, covs, need=need)
    for r, (a, b) in enumerate(zip(full, part)):
        skip = ~need[r]
        assert np.all(b.log_mass[skip] == -np.inf)
        assert np.all(b.mean[skip] == 0.0) and np.all(b.cov[skip] == 0.0)
        assert np.all(b.log_mass_error[skip] == 0.0)
        np.testing.assert_array_equal(a.log_mass[need[r]], b.log_mass[need[r]])
        # whitened coordinates (unit scale): a pair's moments may be summed in another order when the mask changes
        # which pairs share a fallback batch, so equality is to rounding of the unit, not relative to tiny entries
        np.testing.assert_allclose(a.mean[need[r]], b.mean[need[r]], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(a.cov[need[r]], b.cov[need[r]], rtol=1e-12, atol=1e-14)
    with pytest.raises(Exception, match="need"):
        polytope_moments_batch(polys, means, covs, need=need[:, :2])


def test_need_mask_s3_loop():
    cone = Polytope(-np.eye(3), np.zeros(3), np.zeros((1, 3)), np.eye(3), np.zeros((0, 3)))
    means = np.zeros((1, 3, 3))
    out = polytope_moments_batch([cone], means, np.eye(3)[None], need=np.array([[True, False, True]]))[0]
    np.testing.assert_allclose(out.log_mass[[0, 2]], 3 * np.log(0.5), rtol=1e-9)
    assert out.log_mass[1] == -np.inf and np.all(out.mean[1] == 0.0)


def test_elongated_triangle_vs_mpmath():
    """Origin inside a long triangle with an edge at distance 1.26: mpmath 40-digit value."""
    N = np.array([[0.92420964, 0.38188551], [0.30551338, 0.95218778], [-0.33789204, -0.94118488]])
    N /= np.linalg.norm(N, axis=1)[:, None]
    D = np.array([1.3505024, 0.19530299, 1.2600827])
    ref = -0.7684362385327673528  # mpmath nested quadrature, 200 panels, 40 digits
    lm, rel = planar_log_mass(N, D[None])
    assert abs(lm[0] - ref) < 1e-14
    V = np.array([np.linalg.solve(N[[i, j]], D[[i, j]]) for i, j in [(0, 1), (0, 2), (1, 2)]])
    poly = Polytope(N, D, V, np.zeros((0, 2)), np.zeros((0, 2)))
    tm = polytope_moments(poly, np.zeros((1, 2)), np.eye(2))
    assert abs(tm.log_mass[0] - ref) < 1e-14
