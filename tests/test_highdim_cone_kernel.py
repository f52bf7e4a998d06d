"""``highdim.cone_kernel``: the S = 4 cones' kernel, moment bounds and certification in one compiled call per region.

Oracles: the rotated 4-D boxes of ``test_highdim_sliced`` (closed forms: products of ``log_ndtr`` differences and
``scipy.stats.truncnorm`` moments, independent of the code) for the values and their bars; and, for the compiled
bookkeeping, the numpy steps it replaces (``cones.cone_moments``, ``cones.consistent``, ``cones.moment_bounds``,
``cones.certified``), which must agree bit for bit, since ``evaluate`` must not change with the route.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_highdim_sliced import BOXES, _box

from engine.gaussian.highdim import cones
from engine.gaussian.highdim.cone_kernel import cone_pairs, consistent_c, row_bounds


def _translated(seed, n_means=6):
    """Random rotated boxes (some sides infinite), each at ``n_means`` means: ``(args, exact (M,), means)``."""
    rng = np.random.default_rng(seed)
    for k in range(12):
        lo = rng.uniform(-3, 2, 4)
        hi = lo + 10 ** rng.uniform(-1, 0.7, 4)
        lo[rng.uniform(size=4) < 0.15] = -np.inf
        hi[(rng.uniform(size=4) < 0.15) & np.isfinite(lo)] = np.inf
        Nrm, D, V, R, _, _, _ = _box(lo, hi, k)
        shift = rng.normal(0, 1.0, (n_means, 4))
        Q = np.linalg.qr(np.random.default_rng(k).standard_normal((4, 4)))[0]
        exact = np.array([_box(lo - Q.T @ s, hi - Q.T @ s, k)[4] for s in shift])
        yield (Nrm, D[None] - shift @ Nrm.T, V[None] - shift[:, None, :], R), exact


def _numpy_route(Nrm, D, Yv, Yr, shape, moments, tol, accuracy):
    return cones.cones_numpy(Nrm, D, Yv, Yr, shape, moments, np.broadcast_to(tol, (D.shape[0],)), accuracy)


@pytest.mark.parametrize("moments, accuracy", [(0, "relative"), (1, "absolute"), (2, "relative"), (2, "absolute")])
def test_same_bits_as_the_numpy_steps(moments, accuracy):
    """12 random boxes at 6 means each, tolerances from 1e-12 to 1e-4: log mass, moments, bars, moment bounds,
    flags and the certification equal to ``cone_moments`` + ``certified`` bit for bit."""
    rng = np.random.default_rng(moments)
    for (Nrm, D, Yv, Yr), _ in _translated(11):
        shape = cones.cone_shape(Nrm, D[0], Yv[0], Yr)
        tol = 10 ** rng.uniform(-12, -4, D.shape[0])
        want, ok = _numpy_route(Nrm, D, Yv, Yr, shape, moments, tol, accuracy)
        got = cone_pairs(Nrm, D, Yv, shape, moments=moments, tol=tol, accuracy=accuracy)
        for w, g in zip(want, got[:6]):
            np.testing.assert_array_equal(g, w)
        np.testing.assert_array_equal(got[6], ok)


@pytest.mark.parametrize("a, b", BOXES)
def test_rotated_boxes_within_their_bars(a, b):
    """The sliced tests' boxes (tails to 1e-198, unbounded, the mean outside): the certified rows are within their
    bars of the closed forms (log mass, ``truncnorm`` mean and covariance within the moment bounds)."""
    Nrm, D, V, R, exact, mean, cov = _box(a, b, 1)
    shape = cones.cone_shape(Nrm, D, V, R)
    lm, m, c, rel, eb, fl, ok = cone_pairs(Nrm, D[None], V[None], shape, moments=2, tol=1e-10, accuracy="absolute")
    assert abs(np.expm1(lm[0] - exact)) <= rel[0] or fl[0]
    if ok[0]:
        assert abs(lm[0] - exact) <= 1e-12 * (1.0 + abs(exact))
        assert np.max(np.abs(m[0] - mean)) <= eb[0, 0] + 1e-12
        assert np.max(np.abs(c[0] - cov)) <= eb[0, 1] + 1e-12
    if (b - a).max() < 0.1:  # the tiny box around the mean cancels: left to the slices
        assert not ok[0]
    elif exact > -100.0:  # (the 1e-198 box's covariance, ~1e-3 wide, is not certified to 8e-9 absolute)
        assert ok[0]


def test_translated_boxes_bars_cover_and_most_certified():
    """72 pairs (12 boxes x 6 means): every unflagged bar covers the closed form; the certified ones are within
    1e-12 in log mass and at least half are certified (40 today; the rest by their moment bounds)."""
    n_ok = 0
    for (Nrm, D, Yv, Yr), exact in _translated(5):
        shape = cones.cone_shape(Nrm, D[0], Yv[0], Yr)
        lm, _, _, rel, _, fl, ok = cone_pairs(Nrm, D, Yv, shape, moments=2, tol=1e-10, accuracy="relative")
        for m in range(D.shape[0]):
            if not fl[m]:
                assert abs(np.expm1(lm[m] - exact[m])) <= rel[m]
            if ok[m]:
                assert abs(lm[m] - exact[m]) <= 1e-12 * (1.0 + abs(exact[m]))
        n_ok += int(ok.sum())
    assert n_ok >= 36


def test_consistent_matches_numpy_and_catches_broken_flags():
    """``consistent_c`` equals ``cones.consistent`` on the boxes, and both refuse flags with an edge or a ridge's
    line removed (a vertex with 3 edges, a ridge with 1 line)."""
    for (Nrm, D, Yv, Yr), _ in _translated(3, n_means=1):
        shape = cones.cone_shape(Nrm, D[0], Yv[0], Yr)
        assert consistent_c(shape, Yv.shape[1]) == cones.consistent(shape, Yv.shape[1])
        if shape.eva.size < 2:
            continue
        cut = shape._replace(eva=shape.eva[1:].copy(), evb=shape.evb[1:].copy())
        assert consistent_c(cut, Yv.shape[1]) == cones.consistent(cut, Yv.shape[1])
        assert not consistent_c(cut, Yv.shape[1])
        one = shape._replace(lr=np.delete(shape.lr, 0))
        assert consistent_c(one, Yv.shape[1]) == cones.consistent(one, Yv.shape[1])


def test_row_bounds_match_moment_bounds_on_edge_rows():
    """``row_bounds`` = ``cones.moment_bounds`` bit for bit, also for unresolved rows (infinite bars, NaN)."""
    rng = np.random.default_rng(2)
    M = 40
    mean = rng.normal(0, 2, (M, 4))
    A = rng.normal(0, 1, (M, 4, 4))
    cov = A @ np.swapaxes(A, 1, 2)
    rel = 10 ** rng.uniform(-16, 0, M)
    rel[:3] = [np.inf, 1.0, 0.0]
    e1, e2 = 10 ** rng.uniform(-16, -6, M), 10 ** rng.uniform(-16, -6, M)
    e1[3], e2[4], mean[5, 2] = np.inf, np.inf, np.nan
    want = cones.moment_bounds(mean, cov, rel, e1, e2)
    got = np.array([row_bounds(mean[m], cov[m], rel[m], e1[m], e2[m]) for m in range(M)])
    np.testing.assert_array_equal(got, want)


def test_same_bits_with_1_and_2_threads(monkeypatch):
    """40 rows of one region (above ``PAIRS_PER_THREAD``: split over worker threads), tolerances 1e-10 to 1e-4 (the
    light rule and its reruns among them): the same bits with ``DGNEXACT_THREADS`` = 1 and 2."""
    (Nrm, D, Yv, Yr), _ = next(_translated(9, n_means=40))
    shape = cones.cone_shape(Nrm, D[0], Yv[0], Yr)
    tol = 10.0 ** np.linspace(-10, -4, D.shape[0])
    runs = []
    for n in ("1", "2"):
        monkeypatch.setenv("DGNEXACT_THREADS", n)
        runs.append(cone_pairs(Nrm, D, Yv, shape, moments=2, tol=tol, accuracy="relative"))
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)


def test_cones_first_same_bits_either_route(monkeypatch):
    """``cones.cones_first`` with the compiled region call and with the numpy steps (``COMPILED_REGION``): the same
    values, bars and fallback rows."""
    calls = []

    def fallback(Nrm, D, Yv, Yr, **kw):
        calls.append(D.shape[0])
        M = D.shape[0]
        return np.zeros(M), np.zeros((M, 4)), np.zeros((M, 4, 4)), np.full(M, 0.5), np.zeros(M, dtype=bool)

    (Nrm, D, Yv, Yr), _ = next(_translated(4, n_means=8))
    outs = []
    for compiled in (True, False):
        monkeypatch.setattr(cones, "COMPILED_REGION", compiled)
        kw = dict(moments=2, tol=np.full(8, 1e-10), accuracy="relative", closest=np.zeros((8, 4)), rng=None)
        outs.append(cones.cones_first(fallback, Nrm, D, Yv, Yr, **kw))
    assert calls[0] == calls[1]
    for a, b in zip(*outs):
        np.testing.assert_array_equal(a, b)
