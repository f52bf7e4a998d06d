"""S' = 4 far pairs whose moments no route can certify (issue 14, ``s4-far30-D6``: 201 s CPU a point).

Far from the mean (|y*| ~ 35 whitened) the covariance is E[y y^T] - m m^T, so both routes' covariance bounds grow
like |m|^2 times the mass's relative error: the cones' 1.3-1.8e-8 missed the contract (``COV_TOL`` = 8e-9), and the
pairs went to the slices, whose bound carries the input conditioning times the window's reach squared (>= 1.5e-8
there, ``sliced.covariance_floor``; measured 1.6e-7) and whose flagged slices took the adaptive cubature: 200 s
CPU a point for a mass bar 14x and a covariance bound 9x the cones'. Now ``cones.cones_first`` keeps such pairs.

Oracles independent of the code under test: a rotated box with one half-line axis ``[dist, inf)`` has mass, mean and
covariance of independent truncated normals (mpmath at 50 digits: ``Z = Q(a) - Q(b)``, ``mean = (phi(a) - phi(b)) /
Z``, ``var = 1 + (a phi(a) - b phi(b)) / Z - mean^2``); the campaign's block oracle (``verify.highdim_campaign``:
mpmath quadrature of each block's forward pass) for ``s4-far30-D6``. Deterministic: no false-fail probability.
"""

from __future__ import annotations

import itertools

import mpmath as mp
import numpy as np
import pytest

from engine.gaussian.highdim import cones
from engine.gaussian.highdim import sliced as sl


def _truncated_normal(a, b):
    """(log mass, mean, variance) of N(0, 1) on [a, b] (b may be inf), mpmath at 50 digits."""
    with mp.workdps(50):
        a = mp.mpf(a)
        b = mp.inf if not np.isfinite(b) else mp.mpf(b)
        Z = mp.ncdf(-a) - mp.ncdf(-b)
        pa, pb = mp.npdf(a), (mp.npdf(b) if b != mp.inf else mp.mpf(0))
        bpb = b * pb if b != mp.inf else mp.mpf(0)
        mean = (pa - pb) / Z
        return float(mp.log(Z)), float(mean), float(1 + (a * pa - bpb) / Z - mean ** 2)


def _far_box(seed, dist):
    """A rotated box ``Q ([dist, inf) x [a, b]^3)`` (widths 0.5-2): whitened arrays of one pair (unit normals,
    offsets, vertices, the unit ray) and the exact log mass, mean and covariance."""
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((4, 4)))
    lo = rng.uniform(-2.0, 0.5, 3)
    a = np.concatenate([[dist], lo])
    b = np.concatenate([[np.inf], lo + rng.uniform(0.5, 2.0, 3)])
    Nrm = np.vstack([Q.T[1:], -Q.T])
    D = np.concatenate([b[1:], -a])
    V = np.array([Q @ np.array((a[0],) + c) for c in itertools.product(*[(a[i], b[i]) for i in range(1, 4)])])
    one = [_truncated_normal(a[i], b[i]) for i in range(4)]
    mean = Q @ np.array([o[1] for o in one])
    cov = Q @ np.diag([o[2] for o in one]) @ Q.T
    return (Nrm, D[None], V[None], Q[:, :1].T.copy()), sum(o[0] for o in one), mean, cov


def _never(*args, **kw):
    raise AssertionError("the fallback was asked for a pair the cones keep")


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("accuracy", ["absolute", "relative"])
def test_far_unbounded_pairs_keep_the_cones_and_their_bounds_cover(seed, accuracy):
    """Rotated half-line boxes 40 from the mean: the cones' covariance bound misses the contract, the slices' floor
    lies above it, so the cones keep the pair (the old code sent it to the fallback: this test failed there), and
    their mass bar and moment bounds cover the exact values."""
    args, lm0, mean0, cov0 = _far_box(seed, 40.0)
    Nrm, D, V, R = args
    tol = np.array([1e-10])
    out = cones.cone_moments(Nrm, D, V, R, moments=2)
    assert not cones.certified(out, tol, 2, accuracy)[0]  # the moments miss the contract ...
    assert out[3][0] <= 1e-10  # ... the mass does not
    assert sl.covariance_floor(Nrm, D, V, R)[0] > cones.COV_TOL  # and no pass of the slices can meet it
    bounds = np.full((1, 2), np.inf)
    closest, _ = sl.closest_distance(Nrm, D)
    lm, mean, cov, rel, used = cones.cones_first(_never, Nrm, D, V, R, moments=2, tol=tol, accuracy=accuracy,
                                                 closest=closest, rng=None, bounds=bounds)
    assert not used[0]
    assert abs(np.expm1(lm[0] - lm0)) <= rel[0] <= 1e-10
    assert np.abs(mean[0] - mean0).max() <= bounds[0, 0]
    assert np.abs(cov[0] - cov0).max() <= bounds[0, 1]


@pytest.mark.parametrize("dist", [2.0, 8.0])
def test_near_pairs_make_no_claim(dist):
    """Near the mean the floor lies far below the contract (no claim: the fallback keeps deciding), and a bounded
    region or a mean inside P gets no floor at all."""
    (Nrm, D, V, R), *_ = _far_box(0, dist)
    assert sl.covariance_floor(Nrm, D, V, R)[0] < 1e-2 * cones.COV_TOL
    assert sl.covariance_floor(Nrm, D, V, np.zeros((0, 4)))[0] == 0.0
    inside = D + 60.0 * np.abs(Nrm).sum(axis=1)[None]  # every offset moved out: the origin inside
    assert sl.covariance_floor(Nrm, inside, V, R)[0] == 0.0


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(2))
def test_covariance_floor_is_below_the_slices_bound(seed):
    """The floor is a floor of the code it bounds: the slices' covariance bound on the far boxes (any tolerance) is
    at least ``sliced.covariance_floor`` (and above the contract, so the slices could not certify them either)."""
    (Nrm, D, V, R), *_ = _far_box(seed, 40.0)
    floor = sl.covariance_floor(Nrm, D, V, R)[0]
    closest, _ = sl.closest_distance(Nrm, D)
    for tol in (1e-10, 1e-6):
        eb = sl.bounded_sliced_moments(Nrm, D, V, R, moments=2, tol=np.array([tol]), accuracy="absolute",
                                       closest=closest)[4]
        assert eb[0, 1] >= floor > cones.COV_TOL


@pytest.mark.slow
def test_far30_point_takes_no_slice_and_is_covered(monkeypatch):
    """``s4-far30-D6`` (rotated blocks [2, 4, 3] x 2, x 30 from the origin): no pair reaches the slices (the old
    code sliced two pairs of point 0 for 200 s CPU), and log p of both points lies within its bar of the block
    oracle, the posterior moments within 1e-6 of the posterior sd."""
    from verify.highdim_campaign import CASES, run

    calls = []

    def counted(*args, **kw):
        calls.append(np.shape(args[1])[0])
        return original(*args, **kw)

    original = sl.with_fallback
    monkeypatch.setattr(sl, "with_fallback", counted)
    rows = run({s.name: s for s in CASES}["s4-far30-D6"], variants=())
    assert calls == []
    for r in rows:
        assert r.covered and r.oracle < -1000.0, (r.point, r.log_p, r.oracle, r.err, r.bar, r.tol)
        assert r.mean_err <= 1e-6 and r.cov_err <= 1e-6, (r.point, r.mean_err, r.cov_err)
