"""S = 2 against independent mpmath quadrature (issue: S = 2 accuracy of the engine).

Oracles (verify/oracles/quadrature.py, nothing of the engine's planar code is used):
* ``polygon_moments_mp``: mass, mean and covariance of N(0, I_2) on one polygon by 40-digit nested
  tanh-sinh quadrature (exact 1-D inner integrals, covariance integrated about the mean);
* ``quad_s2``: the raw model N(x; g(z), Sx) N(z; 0, Sz) integrated over each region polygon (slow).

Tolerances: log mass 1e-12 relative; mean 1e-9 of the conditional sd; covariance 1e-8 of
``sqrt(C_ii C_jj)`` (the issue's criterion), for the batched path (``polytope_moments_batch``) and the
per-region path (``_polytope_moments_single``, methods ``auto`` and ``slices``), at whitened distances
0 to ~40 (masses down to e^-1500) and for a long thin triangle on which the slice quadrature was wrong
by 2.5e-6 before its outer rule was split where the slice ends sweep across the inner Gaussian.
"""

import numpy as np
import pytest

from engine.gaussian.planar import planar_slice_moments
from engine.gaussian.polytopes import _polytope_moments_single, polytope_moments_batch
from engine.network import random_network
from engine.partition import partition
from verify.oracles.quadrature import polygon_moments_mp


@pytest.fixture(scope="module")
def polys():
    return [r.polytope for r in partition(random_network([2, 8, 8, 3], rng=0))]


# (region, mean) pairs: typical, deep tails (the divergence formula alone lost up to 6e-5 of the
# variance on these), unbounded regions, and the thin triangle (region 36)
CASES = [
    (52, 1), (91, 1), (30, 1), (6, 1), (50, 1), (13, 1), (90, 1), (36, 3),
]


def _case(polys, r, seed):
    p = polys[r]
    rng = np.random.default_rng(seed * 1000 + r)
    ang = rng.uniform(0, 2 * np.pi)
    mu = p.interior_point() + np.array([np.cos(ang), np.sin(ang)]) * rng.choice([0.5, 3.0, 12.0, 40.0])
    return p, mu


def _errors(lm, m, C, ref):
    rlm, rm, rC, _ = ref
    sd = np.sqrt(np.diag(rC))
    return (abs(lm - rlm) / max(1.0, abs(rlm)), np.max(np.abs(m - rm) / sd),
            np.max(np.abs(C - rC) / np.outer(sd, sd)))


@pytest.mark.parametrize("r,seed", CASES)
def test_polygon_moments_vs_mpmath(polys, r, seed):
    p, mu = _case(polys, r, seed)
    ref = list(polygon_moments_mp(p.H, p.c - p.H @ mu))
    ref[1] = ref[1] + mu
    assert ref[3] < 1e-20
    b = polytope_moments_batch([p], mu[None, None], np.eye(2)[None])[0]
    for tm in (b, _polytope_moments_single(p, mu[None], np.eye(2)),
               _polytope_moments_single(p, mu[None], np.eye(2), method="slices")):
        e_lm, e_m, e_c = _errors(tm.log_mass[0], tm.mean[0], tm.cov[0], ref)
        assert e_lm < 1e-12 and e_m < 1e-9 and e_c < 1e-8, (tm.method, e_lm, e_m, e_c)


def test_thin_triangle_slice_moments(polys):
    """Long thin region, origin 1.2 outside: the slice rule alone (no divergence formula) vs mpmath."""
    p = polys[36]
    rng = np.random.default_rng(3)
    mu = p.interior_point() + rng.normal(size=2) * 2.0
    D = p.c - p.H @ mu
    ref = polygon_moments_mp(p.H, D)
    lm, m, C = planar_slice_moments(p.H, D[None])
    e = _errors(lm[0], m[0], C[0], ref)
    assert e[0] < 1e-12 and e[1] < 1e-10 and e[2] < 1e-10, e


@pytest.mark.slow
def test_evaluate_vs_nested_quadrature_s2():
    """Issue criterion: log p(x) within 1e-9 nats, posterior mean / covariance within 1e-8 (scale-relative)."""
    import engine
    from verify.oracles.quadrature import quad_s2

    rng = np.random.default_rng(5)
    A = rng.normal(size=(3, 3))
    net = random_network([2, 6, 6, 3], activation="leaky_relu", rng=1, cov_x=A @ A.T * 0.05 + 0.05 * np.eye(3))
    part = partition(net)
    X = net.forward(rng.normal(size=(1, 2))) + 0.3 * rng.normal(size=(1, 3))
    ev = engine.evaluate(net, X)
    q = quad_s2(net, X[0], part, dps=20)
    sd = np.sqrt(np.trace(q.cov) / 2)
    assert abs(ev.log_marginal[0] - q.log_px) < 1e-9
    assert np.abs(ev.posterior_mean[0] - q.mean).max() < 1e-8 * sd
    assert np.abs(ev.posterior_cov[0] - q.cov).max() < 1e-8 * sd * sd
