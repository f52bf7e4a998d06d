"""S' = 5 and 6 cones: the reported error bar covers the truth on tiny regions (issue 14, k56).

``cones5`` and ``cone6_kernel`` take each S' = 4 cross-section's edge ends as ``cones`` does (``s = u . v``, projections
of vertices that lie ~1e-15 off their planes); the signed sums cancel on tiny regions far from the mean, so the ends'
rounding moved the results far beyond their bars. The bars now carry the ends' errors (``cones5.end_logs``,
``cones5.end_bound``, the S' = 4 construction of ``cones._end_bounds`` with each level's radial factor).

Oracles independent of the code under test:
- rotated boxes: the mass a product of normal-cdf differences at 40 digits (``_quadrature_oracle.truncnorm_axes``),
  the mean and covariance those of independent truncated normals;
- simplices: the planes' simplex in mpmath, Grundmann-Moller rules of degree 7 and 9
  (``_quadrature_oracle.simplex_log_mass``), a case counted only where the two agree within 1 % of the bar.
"""

from __future__ import annotations

import itertools
import math

import mpmath as mp
import numpy as np
import pytest
from _quadrature_oracle import simplex_log_mass, truncnorm_axes

from engine.gaussian.highdim import cones6
from engine.gaussian.highdim.cones5 import cone5_log_mass_batch, cone5_moments_batch


def _box(Q, a, b):
    """``Q [a, b]`` (bounded): unit rows, offsets, vertices about the mean 0, and the exact log mass (mpf), mean and
    covariance."""
    S = len(a)
    Nrm = np.vstack([Q.T, -Q.T])
    D = np.concatenate([b, -a])
    V = np.array([Q @ np.array(c) for c in itertools.product(*zip(a, b))])
    lm, m, v = truncnorm_axes(a, b)
    return Nrm, D, V, np.zeros((0, S)), lm, Q @ m, Q @ np.diag(v) @ Q.T


def _far_tiny_box(rng, S):
    """A randomly rotated box with sides 1e-5..1e-3, its near corner 3..24 from the mean (log mass -330..-50)."""
    Q, _ = np.linalg.qr(rng.standard_normal((S, S)))
    w = 10 ** rng.uniform(-5, -3, S)
    u = np.abs(rng.standard_normal(S))
    a = rng.uniform(3, 24) * u / np.linalg.norm(u)  # positive (the rotation is random): upper tails, no cancellation
    return _box(Q, a, a + w)


def _far_tiny_simplex(rng, S):
    """A random simplex with edges ~1e-5..1e-3, 3..24 from the mean: its planes from the vertices (float), the given
    vertices, and the planes' simplex's log mass (GM 9) with the two rules' difference."""
    h = 10 ** rng.uniform(-5, -3)
    u = rng.standard_normal(S)
    v0 = rng.uniform(3, 24) * u / np.linalg.norm(u)
    V = np.vstack([v0, v0 + h * rng.standard_normal((S, S))])
    Nrm, D = [], []
    for i in range(S + 1):
        others = np.delete(V, i, axis=0)
        n = np.linalg.svd(others[1:] - others[0])[2][-1]
        n = -n if n @ (V[i] - others[0]) > 0 else n
        Nrm.append(n)
        D.append(n @ others.mean(axis=0))
    Nrm, D = np.array(Nrm), np.array(D)
    l7, l9 = simplex_log_mass(Nrm, D, V)
    return Nrm, D, V, l9, abs(float(l9 - l7))


def _err(lm, exact):
    return abs(float(mp.expm1(mp.mpf(float(lm)) - exact))) if np.isfinite(lm) else np.inf


def _s5(Nrm, D, V, R):
    lm, rel, fl = cone5_log_mass_batch(Nrm, D[None], V[None], R)
    return lm[0], rel[0], fl[0]


def _s6(Nrm, D, V, R):
    r = cones6.cone6_moments_batch(Nrm, D[None], V[None], R, tol=np.inf, moments=0)[0]
    return r.log_mass, r.rel, r.flagged



def _dyadic_rotation(rng, S, n=6):
    """An exactly orthogonal rotation with dyadic entries (products of Householder reflections ``I - w w^T / 2``, ``w``
    four entries +-1, and permutations), so that the box's planes are exactly a box: the only rounding left is the
    vertices' (``Q c`` rounded) and the engine's own."""
    Q = np.eye(S)
    for _ in range(n):
        w = np.zeros(S)
        w[rng.choice(S, 4, replace=False)] = rng.choice([-1.0, 1.0], 4)
        Q = Q @ (np.eye(S) - 0.5 * np.outer(w, w)) @ np.eye(S)[rng.permutation(S)]
    return Q


def test_far_tiny_5d_boxes_within_the_bar():
    """Exactly rotated 5-D boxes 1e-5..1e-3 wide, 3..24 from the mean (log mass -330..-50): every unflagged mass
    within its bar against the closed form. Their bars are large (the signed sums cancel, ``rel`` 10..1e4): before
    the ends' errors were in them, 6 of 18 were outside, up to 48 times."""
    rng = np.random.default_rng(1)
    missed, n = [], 0
    for _ in range(24):
        Q = _dyadic_rotation(rng, 5)
        u = np.abs(rng.standard_normal(5))
        a = rng.uniform(3, 24) * u / np.linalg.norm(u)  # positive: the rotation is random
        Nrm, D, V, R, exact, _, _ = _box(Q, a, a + 10 ** rng.uniform(-5, -3, 5))
        lm, rel, fl = _s5(Nrm, D, V, R)
        n += not fl
        if not fl and not _err(lm, exact) <= rel:
            missed.append((_err(lm, exact), rel, float(exact)))
    assert n >= 12 and not missed, (n, missed)


@pytest.mark.parametrize("S, run, n", [(5, _s5, 12), (6, _s6, 14)])
def test_vertex_rounding_within_the_bar(S, run, n):
    """The mass of ``{Nrm y <= D}`` does not depend on the vertices given with it, which only locate the edges' ends:
    the same far tiny boxes (random rotations) with every vertex coordinate moved by up to 16 ulps must agree within
    the two bars. Before the ends' errors were in the bars, 8 of 12 pairs at S' = 5 were outside (up to 7.2 times)
    and 1 of 5 at S' = 6 (2.5 times); now the largest difference is ~1e-3 of the bars."""
    rng = np.random.default_rng(7)
    out, pairs = [], 0
    for _ in range(n):
        Nrm, D, V, R, _, _, _ = _far_tiny_box(rng, S)
        lm0, rel0, fl0 = run(Nrm, D, V, R)
        for _ in range(2):
            lm, rel, fl = run(Nrm, D, V * (1.0 + rng.uniform(-16, 16, V.shape) * 2.0 ** -52), R)
            if fl0 or fl:
                continue
            pairs += 1
            gap = abs(math.expm1(lm - lm0))
            if not gap <= rel + rel0 + rel * rel0:
                out.append((gap, rel, rel0))
    assert pairs >= 4 and not out, (pairs, out)


THIN5 = [  # rotated 5-D boxes with one side 1e-4..1e-3 wide: the two facets' weights phi(d_i) M_4(F_i') / P ~ 1 / width
    ([0.3, -0.5, 0.2, -2.0, -0.7], [0.3001, 1.5, 2.0, 0.1, 1.1]),
    ([-1.0, 2.0, -0.8, -1.5, -0.7], [0.7, 2.001, 1.0, 0.4, 1.1]),
]


@pytest.mark.parametrize("a, b", THIN5)
def test_thin_box_moment_bound_covers_and_is_tight(a, b):
    """The moment bound on thin boxes (``cones5._moment_bound``): the mass's relative error enters the mean through
    ``rel |m1|`` rather than through each facet's weight (two weights ~1 / width that cancel): measured 2.9e-7 and
    4.7e-8 (was 1.3e-3 and 9.0e-6, over ``MOMENT5_TOL`` = 1e-4 for the first: such pairs tried RQMC), while the mean's
    and covariance's errors against the truncated normals (40 digits; 3.7e-11, 6.4e-11) stay within it."""
    from engine.gaussian.highdim.cones5 import MOMENT5_TOL

    Q, _ = np.linalg.qr(np.random.default_rng(3).standard_normal((5, 5)))
    Nrm, D, V, R, exact, mean, cov = _box(Q, np.array(a), np.array(b))
    lm, m, c, rel, mb, fl = cone5_moments_batch(Nrm, D[None], V[None], R, moments=2)
    assert not fl[0] and _err(lm[0], exact) <= rel[0]
    em, ec = np.abs(m[0] - mean).max(), np.abs(c[0] - cov).max()
    assert em <= mb[0] and ec <= mb[0], (em, ec, mb[0])
    assert mb[0] <= 0.01 * MOMENT5_TOL, mb[0]
