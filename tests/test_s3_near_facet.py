"""S = 3 boxes ``{y : lo <= Q^T y <= hi}`` under random rotations Q, the mean 1e-8..1e-4 from two facets (near
their edge) and from a third (near a corner), against the truncated-normal closed forms in 40-digit mpmath.

Until 2026-12-07 the solid geometry's coefficients ``c = n_i.n_j``, ``a = n_k.alpha``, ``b = n_k.beta`` were plain
float dot products (and a 3 x 3 inverse): for orthogonal facets under a rotation they came out ~1e-16 with an
absolute error ~1e-16, which moved the in-plane feet and the edges' ends by ~1e-16 |D| and, with a vertex within
``delta`` of a foot, put ~1e-16 / delta relative errors into the cone decomposition's Cauchy-kernel terms: mass off
by 3.2e-9 (1e-8 from the facets, k = 3.5) under a 2.1e-12 bar. They are now Dot2 (``solid.geometry._dot2``) where the
plain values lost their digits.

The same amplification with accurate coefficients (generic polytopes, a foot within delta of a vertex: errors
~eps |D| / delta) is now in the kernel's bar (``kernel._end_sensitivity``), checked against the per-region slices.
"""

import mpmath as mp
import numpy as np
import pytest
from _quadrature_oracle import truncnorm_axes
from scipy.stats import special_ortho_group

from engine.gaussian import constants as C
from engine.gaussian.polytopes import polytope_moments_batch
from engine.gaussian.solid import kernel as K
from engine.polytope import Polytope


def _cases():
    """(seed of Q, lo, hi): the mean ``eps``, ``k eps`` from two facets and (``corner``) ``2 eps`` from a third."""
    out = []
    for seed in (1, 2, 5):
        for eps in (1e-8, 1e-6, 1e-4):
            for k in (3.5, 30.0):
                for corner in (False, True):
                    lo = np.array([eps, k * eps, 2 * eps if corner else -1.0])
                    out.append((seed, lo, np.array([1.5, 0.05, 2.0])))
    return out


def _box(Q, lo, hi):
    z = np.zeros((0, 3))
    return Polytope(np.concatenate([-Q.T, Q.T]), np.concatenate([-lo, hi]), z, z, z)


@pytest.fixture(scope="module")
def results():
    cases = _cases()
    Qs = {s: special_ortho_group.rvs(3, random_state=s) for s in {c[0] for c in cases}}
    polys = [_box(Qs[s], lo, hi) for s, lo, hi in cases]
    means, covs = np.zeros((len(cases), 1, 3)), np.broadcast_to(np.eye(3), (len(cases), 3, 3))
    return cases, Qs, {m: polytope_moments_batch(polys, means, covs, moments=m) for m in (0, 2)}


def test_mass_within_its_bar(results):
    """Every box and both moment orders: ``|mass / closed form - 1| <= bar`` (``expm1`` of ``log_mass_error``) on the
    cone path. Measured: worst 0.12 of the bar (2.4e-13, bar 2.0e-12); before the fix 3400 x the bar (7.6e-9)."""
    cases, _, res = results
    worst = 0.0
    for m, tms in res.items():
        for (seed, lo, hi), tm in zip(cases, tms):
            want, _, _ = truncnorm_axes(lo, hi)
            assert tm.method == "solid-cones"
            err = float(abs(mp.expm1(mp.mpf(float(tm.log_mass[0])) - want)))
            bar = float(np.expm1(tm.log_mass_error[0]))
            assert err <= bar, (m, seed, lo, err, bar)
            worst = max(worst, err / bar)
    assert worst > 0.0


def test_moments_within_tolerance(results):
    """Mean and covariance (``y = Q z``, z independent truncated normals) to the kernel's refinement tolerances:
    mean to ``MEAN_TOL`` of the smallest standard deviation, covariance to ``COV_TOL`` of its smallest eigenvalue.
    Measured: worst 0.009 and 0.37 of them; before the fix 630 and 25000 x."""
    cases, Qs, res = results
    for (seed, lo, hi), tm in zip(cases, res[2]):
        Q = Qs[seed]
        _, mz, vz = truncnorm_axes(lo, hi)
        mean, cov = Q @ mz, (Q * vz) @ Q.T
        lam = vz.min()
        assert np.all(np.abs(tm.mean[0] - mean) <= K.MEAN_TOL * np.sqrt(lam)), (seed, lo, tm.mean[0] - mean)
        assert np.all(np.abs(tm.cov[0] - cov) <= C.COV_TOL * lam), (seed, lo, np.abs(tm.cov[0] - cov).max(), lam)


def test_dot2_keeps_relative_accuracy():
    """Dot2 of rows of a rotation (exactly orthogonal in exact arithmetic: their float dot products are ~1e-16)
    against the exact rational dot product of the float entries: relative error <= 2 eps."""
    from fractions import Fraction

    from engine.gaussian.solid.geometry import _dot2

    for s in range(20):
        Q = special_ortho_group.rvs(3, random_state=s)
        for i, j in ((0, 1), (0, 2), (1, 2)):
            exact = sum(Fraction(float(a)) * Fraction(float(b)) for a, b in zip(Q[i], Q[j]))
            got = _dot2(Q[i], Q[j])
            assert abs(Fraction(float(got)) - exact) <= 2 * 2.0 ** -52 * abs(exact)


def _generic_polytope(rng):
    """A bounded polytope of random unit normals (10 drawn, the irredundant ones kept) with its vertices; None when
    unbounded (checked by LP along the axes)."""
    import itertools

    from scipy.optimize import linprog

    H = rng.normal(size=(10, 3))
    H /= np.linalg.norm(H, axis=1)[:, None]
    c = rng.uniform(0.5, 1.5, 10)
    axes = np.vstack([np.eye(3), -np.eye(3)])
    if any(linprog(u, A_ub=H, b_ub=c, bounds=[(None, None)] * 3).status != 0 for u in axes):
        return None
    V = []
    for t in itertools.combinations(range(10), 3):
        A = H[list(t)]
        if abs(np.linalg.det(A)) > 1e-9:
            v = np.linalg.solve(A, c[list(t)])
            if np.all(H @ v <= c + 1e-9):
                V.append(v)
    V = np.unique(np.round(np.array(V), 12), axis=0)
    act = [i for i in range(10) if np.sum(np.abs(H[i] @ V.T - c[i]) < 1e-9) >= 3]
    z = np.zeros((0, 3))
    return Polytope(H[act], c[act], V, z, z)


def test_foot_near_a_vertex_generic_polytopes():
    """Generic polytopes (no orthogonal facets), the mean on (or 1e-8..1e-4 off) the normal line of a facet through
    one of its vertices, 1 or 0.05 outside or inside: the compiled kernel's mass within its own bar (``rel``, whether
    or not it flags the pair) plus the bar of the independent per-region slices (nested quadrature).

    The Cauchy kernel of the cone terms amplifies the geometry's rounding by |D| / delta there (delta: the foot's
    distance to the vertex); until 2026-12-07 that was not in the bar: errors 1e-8 (delta 1e-8) to 2.5e-4 (delta 0)
    under a 1e-13 bar. ``kernel._end_sensitivity`` now bounds it: measured worst 0.25 of the bar (160 cases)."""
    from engine.gaussian.polytopes import polytope_moments
    from engine.gaussian.solid.geometry import SolidGeometry

    checked = flagged = 0
    for seed in (3, 4):
        rng = np.random.default_rng(seed)
        for _ in range(2):
            P = _generic_polytope(rng)
            if P is None:
                continue
            geo = SolidGeometry([P], np.eye(3)[None])
            n0 = P.H[0]
            vx = next(v for v in P.vertices if abs(n0 @ v - P.c[0]) < 1e-9)
            u = np.cross(n0, rng.normal(size=3))
            u /= np.linalg.norm(u)
            for dist in (1.0, -0.05):
                for d in (0.0, 1e-8, 1e-4):
                    mu = vx + dist * n0 + d * u
                    out = K.batch_solid_moments(geo, np.zeros(1, dtype=np.intp), mu[None], moments=0)
                    ref = polytope_moments(P, mu, np.eye(3), moments=0, method="slices")
                    err = abs(np.expm1(out.log_mass[0] - ref.log_mass[0]))
                    assert err <= out.rel[0] + np.expm1(ref.log_mass_error[0]), (seed, dist, d, err, out.rel[0])
                    checked += 1
                    flagged += bool(out.flagged[0])
    assert checked >= 12 and flagged >= 2
