"""S' = 4: the fallback's slicing direction for unbounded regions (``engine.gaussian.highdim.sliver``, issue 14).

Oracles independent of the code under test: a rotated box that is unbounded along one axis (a needle: three widths
of 0.01-0.05, a half-line along the fourth axis) has mass ``prod (Phi(b_i) - Phi(a_i))``, mean and covariance of
independent truncated normals (``log_ndtr``, ``truncnorm``); the rotation puts its ray exactly perpendicular to the
slices' generic direction, so that every slice along it is unbounded. Boundedness of the slices is checked
directly (every ray's height along the direction positive).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.special import log_ndtr
from scipy.stats import truncnorm

from engine.gaussian.highdim import cones
from engine.gaussian.highdim import sliced as sl
from engine.gaussian.highdim.sliver import GOOD_MARGIN, bounded_direction, margin

GENERIC = sl._directions(np.zeros((1, 4)))[0]


def _rays_around(axis, spread, n, rng):
    """n unit rays within about ``spread`` of the unit ``axis``."""
    r = axis[None] + spread * rng.standard_normal((n, 4))
    return r / np.linalg.norm(r, axis=1)[:, None]


@pytest.mark.parametrize("seed", range(4))
def test_bounded_direction_gives_every_ray_a_positive_height(seed):
    """Pointed cones of rays around an axis perpendicular to the generic direction (mixed signs along it): the
    direction returned gives every ray a height of one sign, at least the generic one's margin; a cone the generic
    direction already slices with margin >= GOOD_MARGIN keeps it (None)."""
    rng = np.random.default_rng(seed)
    axis = rng.standard_normal(4)
    axis -= (axis @ GENERIC) * GENERIC
    axis /= np.linalg.norm(axis)
    for spread in (0.02, 0.2, 0.5):
        Yr = _rays_around(axis, spread, 6, rng)
        e = bounded_direction(Yr, GENERIC)
        assert e is not None and abs(np.linalg.norm(e) - 1.0) < 1e-12
        assert np.all(Yr @ e > 0.0)
        assert margin(Yr, e) > max(margin(Yr, GENERIC), 0.5)  # the cone lies within ~spread of its axis
    Yr = _rays_around(GENERIC, 0.05, 5, rng)
    assert margin(Yr, GENERIC) >= GOOD_MARGIN and bounded_direction(Yr, GENERIC) is None
    assert bounded_direction(np.zeros((0, 4)), GENERIC) is None


def _needle(seed, shift):
    """A rotated box ``Q [a, b]``, bounded in its first three axes (widths 0.01-0.05, centred ``shift`` away from the
    mean) and a half-line ``[c, inf)`` along the fourth, whose column of Q is perpendicular to the generic slicing
    direction: whitened arrays (one pair) and the exact log mass, mean and covariance."""
    rng = np.random.default_rng(seed)
    u = rng.standard_normal(4)
    u -= (u @ GENERIC) * GENERIC
    Q, _ = np.linalg.qr(np.column_stack([u / np.linalg.norm(u), rng.standard_normal((4, 3))]))
    Q = np.roll(Q, -1, axis=1)  # the ray's axis last
    w = rng.uniform(0.01, 0.05, 3)
    lo3 = shift + rng.uniform(-0.5, 0.5, 3)
    a = np.append(lo3, rng.uniform(-1.0, 1.0))
    b = np.append(lo3 + w, np.inf)
    Nrm = np.vstack([Q.T[:3], -Q.T])
    D = np.concatenate([b[:3], -a])
    V = np.array([Q @ np.array(c + (a[3],)) for c in itertools.product(*[(a[i], b[i]) for i in range(3)])])
    R = Q[:, 3:4].T.copy()
    up = a > 0
    hi, lo = np.where(up, log_ndtr(-a), log_ndtr(b)), np.where(up, log_ndtr(-b), log_ndtr(a))
    exact = float(np.sum(hi + np.log1p(-np.exp(lo - hi))))
    return Nrm, D[None], V[None], R, exact, Q @ truncnorm.mean(a, b), Q @ np.diag(truncnorm.var(a, b)) @ Q.T


@pytest.mark.parametrize("seed, shift", [(0, 0.0), (1, 1.0), (2, -2.0)])
def test_needles_sliced_along_the_bounded_direction_match_the_closed_form(seed, shift):
    """The needle's ray is perpendicular to the generic direction (margin 0: every generic slice unbounded); along
    ``bounded_direction`` the slices are bounded and the sliced route meets the closed form: mass within its bar
    and 1e-12, moments within 1e-9 / 1e-8 of the smallest conditional spread (the issue's posterior target)."""
    Nrm, D, V, R, exact, mean, cov = _needle(seed, shift)
    assert margin(R, GENERIC) < 1e-12
    e = bounded_direction(R, GENERIC)
    assert e is not None and margin(R, e) > 0.99
    lm, m, c, rel = sl.sliced_moments(Nrm, D, V, R, moments=2, direction=e)
    assert abs(np.expm1(lm[0] - exact)) <= rel[0] <= 1e-10
    assert abs(lm[0] - exact) <= 1e-12 * (1.0 + abs(exact))
    scale = np.sqrt(np.linalg.eigvalsh(cov)[0])
    np.testing.assert_allclose(m[0], mean, atol=1e-9 * scale)
    np.testing.assert_allclose(c[0], cov, atol=1e-8 * scale * scale)


def test_cones_first_gives_the_fallback_the_bounded_direction():
    """A needle the cones do not certify (its covariance bound against a spread of ~0.01) goes to the fallback with
    ``direction`` = the bounded one; a bounded region's fallback gets no direction (the default slices)."""
    seen = []

    def fallback(Nrm, D, Yv, Yr, **kw):
        seen.append(kw.get("direction"))
        return sl.with_fallback(Nrm, D, Yv, Yr, **kw)

    Nrm, D, V, R, exact, _, _ = _needle(0, 0.0)
    closest, _ = sl.closest_distance(Nrm, D)
    kw = dict(moments=2, tol=np.array([1e-10]), accuracy="relative", closest=closest, rng=None)
    lm, _, _, rel, _ = cones.cones_first(fallback, Nrm, D, V, R, **kw)
    assert len(seen) == 1 and seen[0] is not None and margin(R, seen[0]) > 0.99
    assert abs(np.expm1(lm[0] - exact)) <= rel[0] <= 1e-10
    assert cones._slicing_direction(np.zeros((0, 4)), closest) is None  # bounded: the default slices


# One pair of random_network([4, 8, 8, 5], rng=0, cov_x=0.1), X = net.sample(100, rng=1) (whitened, relative to the
# mean): six rays whose heights along the generic slicing direction go down to 0.0015, so its generic slices are
# bounded but up to ~650 times longer than the region. Along the generic direction the relative-accuracy moments
# pass (moments=2) gave log mass -59.17360 with a bar of 5.6e-5 in 3.4 s, 3.7e-3 from the cones' -59.169846 (bar
# 3e-12); mass only it gave the cones' value.
_LONG_NRM = np.array([
    [0.08652053618494786, 0.9895763204895398, 0.11452394030354492, -0.011711952954257747],
    [-0.9800698255344231, -0.10673024765233456, -0.11707413453557691, -0.11985590655342092],
    [-0.6683195425044159, 0.6288713481019053, -0.3766788154240575, -0.12642344186862434],
    [-0.07497144435451945, 0.46580367440675857, -0.8744971667279954, 0.1125207750829526],
    [0.03525482786802829, -0.9989522093142971, 0.024869872896362496, -0.015266631593092977],
    [0.10065747625114095, 0.9940961343626086, -0.0242540471053171, 0.03244517404919613]])
_LONG_D = np.array([[-0.4213936442610049, 0.6064731118123401, 0.7696563620349023, 4.430219149170467,
                     -0.3811650569575651, 0.44511578322612666]])
_LONG_YV = np.array([[
    [-1.5648992640264616, 0.11234362063747166, -2.443039330574509, 10.022565630807653],
    [-1.892001424052056, 0.030455822964082124, -3.1549814310530917, 13.465640560975075],
    [-1.7971866351587826, 0.17412922362795197, -2.5973872912670073, 12.017741433009794],
    [-1.9825518674146123, 0.1173652280822918, -3.031173025663375, 14.007750957166783],
    [-0.5729530577166833, 0.14253745920858085, -3.616637398973536, 8.425714116160258],
    [-0.682572012081414, 0.12218968994350689, -3.7468351700329516, 9.291907133034183]]])
_LONG_YR = np.array([
    [-0.1507148861487161, -0.011874819941694205, 0.3123803442743654, 0.9378499518875932],
    [-0.13376442316660123, -0.01652147684982484, 0.12907623738968343, 0.982432412351572],
    [-0.1489355031585758, -0.008843647723368785, 0.28574137365066127, 0.9466212934315812],
    [-0.13395894963454633, -0.01533268233267814, 0.12971438370474717, 0.982341125742678],
    [-0.12172353713676205, -0.011602557204820695, 0.2893060648460987, 0.9493949452237931],
    [-0.12548323442829426, -0.016257301008752268, 0.12865517261721637, 0.9835840099351751]])


def test_long_generic_slices_are_replaced_and_agree_with_the_cones():
    """The region above: its generic margin (0.0015) is below GOOD_MARGIN, so the fallback slices along the bounded
    direction (margin > 0.5); the sliced mass with relative-accuracy moments then agrees with the cone decomposition
    (an independent route: flags from the mean, no slices) within both bars, as do the mass-only slices."""
    assert margin(_LONG_YR, GENERIC) < GOOD_MARGIN
    e = bounded_direction(_LONG_YR, GENERIC)
    assert e is not None and margin(_LONG_YR, e) > 0.5
    lc, _, _, rc, _, fl = cones.cone_moments(_LONG_NRM, _LONG_D, _LONG_YV, _LONG_YR, moments=0)
    # the bar: 1e-11 before e4p; its term for the ridge and line distances' rounding, amplified ~c / 2 beyond the
    # edges of this long region (``cones._flag_errors``), puts it at 4.3e-10
    assert not fl[0] and rc[0] < 1e-9
    for moments in (0, 2):
        lm, _, _, rel = sl.sliced_moments(_LONG_NRM, _LONG_D, _LONG_YV, _LONG_YR, moments=moments, direction=e)
        assert rel[0] < 1e-10
        assert abs(np.expm1(lm[0] - lc[0])) <= rel[0] + rc[0]
