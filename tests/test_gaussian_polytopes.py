"""Gaussian integrals over polytopes, S >= 2 (issue 3): oracles are independent methods.

Oracles: mpmath nested quadrature at 40 digits (S = 2), the slice quadrature vs the Owen-T edge formula
(two independent S = 2 mass algorithms), the paper's triangulation + inclusion-exclusion path on masses
>= 1e-6, completeness of the prior masses of a partition, and Monte Carlo for S = 3, 4 (seeded).
"""

import mpmath as mp
import numpy as np
import pytest
from scipy.spatial import ConvexHull
from scipy.special import logsumexp

from engine.gaussian import truncated_moments
from engine.gaussian.planar import planar_log_mass, planar_slice_log_mass
from engine.network import random_network
from engine.partition import partition
from engine.polytope import Polytope


def _polygon(V):
    hull = ConvexHull(V)
    V = V[hull.vertices]
    c = V.mean(0)
    H, off = [], []
    for i in range(len(V)):
        e = V[(i + 1) % len(V)] - V[i]
        n = np.array([e[1], -e[0]]) / np.linalg.norm(e)
        if n @ (c - V[i]) > 0:
            n = -n
        H.append(n)
        off.append(n @ V[i])
    return np.array(H), np.array(off), V


def _mp_log_mass(H, off, V):
    mp.mp.dps = 40
    xs = sorted(float(v) for v in V[:, 0])

    def slice_mass(x):
        lo, hi = -mp.inf, mp.inf
        for (a, b), d in zip(H, off):
            if abs(b) < 1e-15:
                continue
            bound = (mp.mpf(d) - mp.mpf(a) * x) / mp.mpf(b)
            hi, lo = (min(hi, bound), lo) if b > 0 else (hi, max(lo, bound))
        if hi <= lo:
            return mp.mpf(0)
        return mp.npdf(x) * (mp.ncdf(hi) - mp.ncdf(lo))

    pts = []
    for a, b in zip(xs[:-1], xs[1:]):
        pts.extend(np.linspace(a, b, 12)[:-1])
    pts.append(xs[-1])
    return float(mp.log(mp.quad(slice_mass, pts)))


@pytest.mark.parametrize("shift", [0.0, 1.5, 4.0, 8.0])
def test_planar_mass_vs_mpmath(shift):
    rng = np.random.default_rng(int(shift * 10))
    H, off, V = _polygon(rng.normal(size=(7, 2)) * 0.8 + np.array([shift, 0.4 * shift]))
    lm, rel = planar_log_mass(H, off[None])
    assert abs(lm[0] - _mp_log_mass(H, off, V)) < 1e-11
    assert rel[0] < 1e-12


@pytest.mark.parametrize("shift", [10.0, 20.0, 40.0, 200.0])
def test_planar_tail_owen_vs_slices(shift):
    """Masses 1e-20 ... 1e-9000: two independent algorithms agree to ~1e-13 relative."""
    rng = np.random.default_rng(7)
    H, off, _ = _polygon(rng.normal(size=(6, 2)) * 0.5 + np.array([shift, -0.3 * shift]))
    lm, _ = planar_log_mass(H, off[None], fallback=False)
    ls, _ = planar_slice_log_mass(H, off[None])
    assert lm[0] < -40
    assert abs(lm[0] - ls[0]) < 1e-12 * max(1.0, abs(lm[0])) ** 0.5 * 10


def _net_setup(arch, seed=0):
    net = random_network(arch, rng=seed)
    part = partition(net)
    S = arch[0]
    A = np.random.default_rng(1).normal(size=(S, S))
    return part, A @ A.T + 0.5 * np.eye(S)


def test_prior_masses_sum_to_one_and_moments_s2():
    part, cov = _net_setup([2, 8, 8, 3])
    res = [truncated_moments(r.polytope, np.zeros((1, 2)), cov) for r in part]
    lm = np.array([r.log_mass[0] for r in res])
    assert abs(np.exp(logsumexp(lm)) - 1.0) < 1e-12
    w = np.exp(lm)
    mean = sum(wi * r.mean[0] for wi, r in zip(w, res))
    second = sum(wi * (r.cov[0] + np.outer(r.mean[0], r.mean[0])) for wi, r in zip(w, res))
    assert np.abs(mean).max() < 1e-12
    assert np.abs(second - cov).max() < 1e-12


def _both_paths(arch, mu):
    """(region, fast result, triangulation result, cov) for every region of mass >= 1e-6 at mean ``mu``."""
    part, cov = _net_setup(arch)
    for r in part:
        a = truncated_moments(r.polytope, mu, cov)
        if a.log_mass[0] >= np.log(1e-6):
            yield r, a, truncated_moments(r.polytope, mu, cov, method="triangulation"), cov


def test_triangulation_agrees_s2():
    n = 0
    for _, a, t, _ in _both_paths([2, 8, 8, 3], np.array([[0.3, -0.2]])):
        n += 1
        assert abs(t.log_mass[0] - a.log_mass[0]) < 1e-9
        assert np.abs(t.mean - a.mean).max() < 1e-8
    assert n > 20


def test_triangulation_prism_s3():
    """A generalised simplex with one ray (S = 3: a semi-infinite triangular prism): its three side normals
    are coplanar, so one inclusion-exclusion term is a cylinder (it used to raise LinAlgError). Exact: the
    triangle's planar mass times a 1-D tail, the coordinates being independent."""
    from scipy.special import log_ndtr

    H = np.array([[-1.0, 0, 0], [0, -1, 0], [1, 1, 0], [0, 0, -1]])
    c = np.array([0, 0, 1, 0.5])
    V = np.array([[0, 0, -0.5], [1, 0, -0.5], [0, 1, -0.5]])
    prism = Polytope(H, c, V, np.array([[0, 0, 1.0]]), np.zeros((0, 3)))
    triangle = Polytope(H[:3, :2], c[:3], V[:, :2], np.zeros((0, 2)), np.zeros((0, 2)))
    mu = np.array([[0.2, 0.3, 0.1], [1.0, -0.5, 2.0], [-1.5, 2.0, -2.5]])
    exact = truncated_moments(triangle, mu[:, :2], np.eye(2)).log_mass + log_ndtr(mu[:, 2] + 0.5)
    tri = truncated_moments(prism, mu, np.eye(3), method="triangulation")
    fast = truncated_moments(prism, mu, np.eye(3))
    np.testing.assert_allclose(tri.log_mass, exact, rtol=0, atol=1e-12)
    np.testing.assert_allclose(fast.log_mass, exact, rtol=0, atol=1e-12)
    np.testing.assert_allclose(tri.mean, fast.mean, rtol=0, atol=1e-10)
    np.testing.assert_allclose(tri.cov, fast.cov, rtol=0, atol=1e-10)


def test_trivariate_orthant_vs_cone_decomposition():
    """The triangulation path's trivariate normal CDF (1-D adaptive quadrature of the Owen-T bivariate CDF)
    against the S = 3 cone decomposition of the same simplicial cone {A y <= c}, y ~ N(0, I_3): two
    independent algorithms, agreeing to 1e-13 absolute (scipy's randomised CDF was off by up to 4e-7)."""
    from engine.gaussian.triangulation import _tvn_cdf

    rng = np.random.default_rng(7)
    for _ in range(6):
        A = rng.normal(size=(3, 3))
        c = rng.normal(size=3)
        Ainv = np.linalg.inv(A)
        cone = Polytope(A, c, (Ainv @ c)[None], -Ainv.T, np.zeros((0, 3)))
        sd = np.linalg.norm(A, axis=1)
        R = (A @ A.T) / np.outer(sd, sd)
        got = _tvn_cdf((c / sd)[None], R)[0]
        want = np.exp(truncated_moments(cone, np.zeros((1, 3)), np.eye(3), moments=0).log_mass[0])
        assert abs(got - want) < 1e-13, (got, want)


def _facet_conditioning(polytope, mu, cov):
    """max cond(A_J) over the independent facet triples of the triangulation's generalised simplices."""
    from itertools import combinations

    from engine.gaussian.triangulation import _simplex_facets, generalised_simplices

    Li = np.linalg.inv(np.linalg.cholesky(cov))
    Yv = (polytope.vertices - mu) @ Li.T
    Yr = polytope.rays @ Li.T
    if len(Yr):
        Yr = Yr / np.linalg.norm(Yr, axis=1)[:, None]
    worst = 1.0
    for verts, rays in generalised_simplices(Yv, Yr):
        Vs, Rs = Yv[verts], (Yr[rays] if rays else np.zeros((0, 3)))
        if abs(np.linalg.det(np.vstack([Vs[1:] - Vs[0], Rs]))) < 1e-13:
            continue
        A, _ = _simplex_facets(Vs, Rs)
        for J in combinations(range(len(A)), 3):
            sv = np.linalg.svd(A[list(J)], compute_uv=False)
            if sv[-1] > 1e-10 * sv[0]:
                worst = max(worst, sv[0] / sv[-1])
    return worst


def test_triangulation_agrees_s3():
    """The paper's method vs the fast path on every region of mass >= 1e-6 of an S = 3 partition (84 regions,
    bounded and unbounded, one to six rays, facet triples with correlations up to 1 - 4e-7): log-mass to
    1e-9 (measured worst 1.8e-10). Moments on masses >= 1e-3: within 1e-7 plus the inclusion-exclusion
    amplification ``eps cond(A_J)^2 / mass`` (an orthant's y-moments are ``A_J^-1`` times its u-moments:
    measured 3.7e-7 on a region of mass 1e-2 with cond(A_J) = 1.7e4; 1e-7 elsewhere)."""
    mu = np.array([[0.3, -0.2, 0.1]])
    n = solid = 0
    for r, a, t, cov in _both_paths([3, 5, 5, 3], mu):
        n += 1
        assert abs(t.log_mass[0] - a.log_mass[0]) < 1e-9
        if a.log_mass[0] >= np.log(1e-3):
            solid += 1
            tol = 1e-7 + np.finfo(float).eps * _facet_conditioning(r.polytope, mu[0], cov) ** 2 / np.exp(a.log_mass[0])
            assert np.abs(t.mean - a.mean).max() < tol
            assert np.abs(t.cov - a.cov).max() < tol
    assert n > 50 and solid > 10


def test_s2_posterior_moments_vs_slices_far_off_manifold():
    """Data far off the manifold: means far in the tail; facet moments vs slice-quadrature masses."""
    part, cov = _net_setup([2, 8, 8, 3])
    mu = np.array([[25.0, -30.0], [-60.0, 5.0]])
    for r in list(part)[::7]:
        a = truncated_moments(r.polytope, mu, 0.01 * cov)
        s = truncated_moments(r.polytope, mu, 0.01 * cov, method="slices")
        np.testing.assert_allclose(a.log_mass, s.log_mass, rtol=1e-12, atol=1e-9)
        # whitened distance ~600: divergence-theorem sums cancel, measured agreement 2.3e-8 relative
        np.testing.assert_allclose(a.mean, s.mean, rtol=1e-7, atol=1e-8)
        assert np.all(np.isfinite(a.cov))


def test_moments_vs_monte_carlo_s2_wedge_and_strip():
    """A wedge and a strip (lineality) vs 4e5 Monte Carlo draws: 6-sigma bands (false-fail < 1e-8)."""
    rng = np.random.default_rng(3)
    cov = np.array([[1.0, 0.3], [0.3, 0.5]])
    mu = np.array([[0.2, -0.1]])
    wedge = Polytope(np.array([[-1.0, 0.0], [0.0, -1.0]]), np.array([0.0, 0.0]), np.zeros((1, 2)),
                     np.eye(2), np.zeros((0, 2)))
    strip = Polytope(np.array([[0.6, 0.8], [-0.6, -0.8]]), np.array([0.5, 0.3]),
                     np.zeros((0, 2)), np.zeros((0, 2)), np.array([[0.8, -0.6]]))
    z = rng.multivariate_normal(mu[0], cov, size=400000)
    for poly in (wedge, strip):
        inside = poly.contains(z, tol=0.0)
        p = inside.mean()
        res = truncated_moments(poly, mu, cov)
        assert abs(np.exp(res.log_mass[0]) - p) < 6 * np.sqrt(p * (1 - p) / len(z))
        zi = z[inside]
        se = np.sqrt(np.diag(np.cov(zi.T)) / len(zi))
        assert np.all(np.abs(res.mean[0] - zi.mean(0)) < 6 * se)
        np.testing.assert_allclose(res.cov[0], np.cov(zi.T), atol=0.02)


def test_s3_cube_corner_and_mc():
    """S = 3 unbounded orthant-like cone (exact: product of 1-D masses) and a bounded simplex vs MC."""
    cone = Polytope(-np.eye(3), np.array([-0.5, 0.2, -1.0]), np.array([[0.5, -0.2, 1.0]]), np.eye(3),
                    np.zeros((0, 3)))
    mu = np.array([[0.0, 0.0, 0.0], [-3.0, 1.0, -2.0]])
    res = truncated_moments(cone, mu, np.eye(3))
    from scipy.special import log_ndtr
    exact = log_ndtr(-(np.array([0.5, -0.2, 1.0]) - mu)).sum(axis=1)
    np.testing.assert_allclose(res.log_mass, exact, rtol=1e-9)
    from engine.gaussian.interval import interval_moments
    _, m1, v1 = interval_moments(mu, 1.0, np.array([0.5, -0.2, 1.0]), np.inf)
    np.testing.assert_allclose(res.mean, m1, atol=1e-8)
    np.testing.assert_allclose(np.diagonal(res.cov, axis1=1, axis2=2), v1, atol=1e-8)
    tri = truncated_moments(cone, mu, np.eye(3), method="triangulation")
    np.testing.assert_allclose(tri.log_mass, exact, rtol=1e-9)


def test_s4_regions_with_lineality_take_the_cone_path():
    """S = 4 regions with a one-dimensional lineality reduce to S' = 3 problems: they go through the cone
    decomposition (the nested quadrature was off by 1.7e-6 claiming 1.5e-13 on region 6 of this network).
    Oracle: the triangulation path; and the prior masses must sum to one."""
    net = random_network([4, 3, 3], "leaky_relu", cov_x=0.4, rng=18)
    part = partition(net)
    fast, tri = [], []
    for r in part:
        assert r.polytope.lineality.shape[0] == 1
        a = truncated_moments(r.polytope, np.zeros((1, 4)), net.cov_z, moments=0)
        assert a.method == "solid-cones"
        fast.append(a.log_mass[0])
        tri.append(truncated_moments(r.polytope, np.zeros((1, 4)), net.cov_z, moments=0,
                                     method="triangulation").log_mass[0])
    np.testing.assert_allclose(fast, tri, rtol=0, atol=1e-12)
    assert abs(logsumexp(fast)) < 1e-12


def test_s4_rqmc_error_bar():
    """S = 4 orthant cone: exact mass is a product of log_ndtr; RQMC within 3x its error bar."""
    c = np.array([0.3, -0.4, 0.1, 0.5])
    cone = Polytope(-np.eye(4), -c, c[None], np.eye(4), np.zeros((0, 4)))
    mu = np.array([[0.0, 0.0, 0.0, 0.0], [1.0, -1.0, 0.5, 0.0]])
    res = truncated_moments(cone, mu, np.eye(4), rng=0)
    from scipy.special import log_ndtr
    exact = log_ndtr(-(c - mu)).sum(axis=1)
    assert np.all(np.abs(res.log_mass - exact) <= 3 * res.log_mass_error + 1e-12)
    assert np.all(res.log_mass_error < 2e-2)  # outer integrand is discontinuous: plain RQMC rate


@pytest.mark.slow
def test_prior_masses_sum_to_one_s3():
    part, cov = _net_setup([3, 6, 6, 3])
    lm = np.array([truncated_moments(r.polytope, np.zeros((1, 3)), cov, moments=0).log_mass[0] for r in part])
    assert abs(np.exp(logsumexp(lm)) - 1.0) < 1e-9


def test_closest_points_are_the_projection_of_the_origin():
    """Least-distance programming (NNLS) against a direct QP (scipy SLSQP) on random polyhedra, S = 4."""
    from scipy.optimize import minimize

    from engine.gaussian.highdim.qmc import closest_points

    rng = np.random.default_rng(3)
    for _ in range(10):
        N = rng.normal(size=(7, 4))
        N /= np.linalg.norm(N, axis=1)[:, None]
        inside = rng.normal(size=4) * 2
        D = N @ inside + rng.uniform(0.1, 1.0, size=7)  # a polyhedron around `inside`
        got = closest_points(N, D[None])[0]
        ref = minimize(lambda y: y @ y, inside, jac=lambda y: 2 * y, method="SLSQP",
                       constraints={"type": "ineq", "fun": lambda y, D=D, N=N: D - N @ y,
                                    "jac": lambda y, N=N: -N},
                       options={"ftol": 1e-14, "maxiter": 500}).x
        assert np.all(N @ got <= D + 1e-9)
        np.testing.assert_allclose(got, ref, atol=1e-6)
    assert np.all(closest_points(N, (np.abs(D) + 1.0)[None]) == 0.0)  # origin inside: no shift


def test_log_marginal_error_combines_pairs():
    """|log p - log p^| bound: small errors add by weight; an unresolved pair moves p down by at most its weight
    and up by at most its term's cap; only unresolved pairs carrying all the weight make it infinite."""
    from engine.distributions import _log_marginal_error

    w = np.array([[0.7, 0.3, 0.0]])
    caps = lambda: np.array([[1.0, 1.0, 0.05]])  # noqa: E731
    small = _log_marginal_error(w, np.array([[1e-10, 2e-10, 0.0]]), caps)
    assert abs(small[0] - (0.7 * 1e-10 + 0.3 * 2e-10)) < 1e-18
    one = _log_marginal_error(w, np.array([[1e-10, np.inf, np.inf]]), caps)  # third: weight 0, cap 0.05
    assert np.isclose(one[0], max(np.log1p(0.7 * 1e-10 + 1.0 + 0.05), -np.log1p(-(0.3 + 0.7 * 1e-10))))
    assert np.isinf(_log_marginal_error(w, np.full((1, 3), np.inf), caps)[0])
