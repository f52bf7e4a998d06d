"""S = 4 pair budget (issue 14, ``engine.gaussian.highdim.budget`` and the skips of ``highdim.sliced.sliced_batch``):
the bounds on a pair's mass hold against closed forms (rotated boxes, masses in mpmath), the certified distance never
exceeds the true one, and the pairs skipped by the budgets move log p(x) by less than the reported bar on a decoder
whose log p(x) is known independently (two S = 2 blocks hidden by a rotation, ``verify.highdim_checks.block_case``)."""

from __future__ import annotations

import mpmath as mp
import numpy as np
import pytest

import engine.distributions as dist
import engine.gaussian.highdim.sliced as sl
from engine.distributions import evaluate
from engine.gaussian.highdim.budget import VERTEX_ERR, certified_distance, log_mass_bounds, log_volume
from engine.gaussian.highdim.qmc import closest_points
from engine.partition import partition
from engine.polytope import Polytope
from verify.highdim_checks import block_case

mp.mp.dps = 40


def _box(lo, hi, Q):
    """The box ``[lo, hi]`` (4,) in the axes of the rotation ``Q`` (z = Q u): a bounded Polytope."""
    H = np.vstack([Q.T, -Q.T])
    c = np.concatenate([hi, -lo])
    corners = np.array(np.meshgrid(*[[lo[i], hi[i]] for i in range(4)], indexing="ij")).reshape(4, -1).T
    return Polytope(H, c, corners @ Q.T, np.zeros((0, 4)), np.zeros((0, 4)))


def _log_box_mass(lo, hi):
    """log of the standard normal mass of the box ``[lo, hi]`` in mpmath (40 digits)."""
    total = mp.mpf(0)
    for a, b in zip(lo, hi):
        total += mp.log(mp.ncdf(mp.mpf(float(b))) - mp.ncdf(mp.mpf(float(a))))
    return float(total)


def _random_boxes(seed, n):
    """``n`` rotated boxes, sides 10^-2.5 to 10^0.5, offsets within +-6 of the mean: (lo, hi, Q)."""
    rng = np.random.default_rng(seed)
    for _ in range(n):
        lo = rng.uniform(-6.0, 5.0, 4)
        hi = lo + 10 ** rng.uniform(-2.5, 0.5, 4)
        yield lo, hi, np.linalg.qr(rng.standard_normal((4, 4)))[0]


def _bound(poly):
    """:func:`log_mass_bounds` of ``poly`` under N(0, I_4) (chol = I), whitened as the engine does."""
    Nrm, D, Yv, Yr = sl.whitened(poly, np.eye(4), np.zeros((1, 4)))
    y = closest_points(Nrm, D)
    return log_mass_bounds(certified_distance(y, Yv, Yr), log_volume(poly, np.eye(4)))[0], y


def test_volume_and_distance_bounds_cover_box_masses():
    """200 random rotated boxes: ``log_mass_bounds`` lies above the mpmath mass on every one; the volume term is the
    tighter one on the small far boxes (so the test exercises it), and there it is within 12 nats."""
    tighter = 0
    for lo, hi, Q in _random_boxes(3, 200):
        b, _ = _bound(_box(lo, hi, Q))
        exact = _log_box_mass(lo, hi)
        assert b >= exact, (lo, hi, b, exact)
        d = np.linalg.norm(np.clip(0.0, lo, hi))
        if b < float(mp.log(mp.ncdf(-d))) - 1.0:
            tighter += 1
            assert b - exact < 12.0
    assert tighter >= 50


def test_log_volume_of_boxes_and_of_whitening():
    """A box's log volume is ``sum log(hi - lo)`` plus at most the vertex-rounding margin (``area VERTEX_ERR (1 +
    max |v|)``), minus ``log |det L|`` under a factor L; unbounded regions give +inf."""
    for lo, hi, Q in _random_boxes(5, 20):
        poly = _box(lo, hi, Q)
        side = hi - lo
        exact = np.sum(np.log(side))
        area = 2.0 * sum(np.prod(np.delete(side, i)) for i in range(4))
        margin = np.log1p(area * VERTEX_ERR * (1.0 + np.abs(poly.vertices).max()) / np.exp(exact))
        got = log_volume(poly, np.eye(4))
        assert -1e-12 <= got - exact <= margin + 1e-12
        L = np.diag([2.0, 0.5, 3.0, 1.5])
        assert abs(log_volume(poly, L) - (got - np.log(4.5))) < 1e-12
    ray = Polytope(np.eye(4), np.ones(4), np.ones((1, 4)), -np.eye(4), np.zeros((0, 4)))
    assert log_volume(ray, np.eye(4)) == np.inf


def test_certified_distance_never_exceeds_the_true_distance():
    """Boxes (true distance ``|clip(0, lo, hi)|`` in the box's axes) with the exact closest point and with perturbed
    ones (the certificate trusts only the vertices): the certified distance is at most the true one, and with the
    exact closest point within 1e-9 of it."""
    rng = np.random.default_rng(11)
    for lo, hi, Q in _random_boxes(7, 60):
        poly = _box(lo, hi, Q)
        Nrm, D, Yv, Yr = sl.whitened(poly, np.eye(4), np.zeros((1, 4)))
        y = closest_points(Nrm, D)
        true = np.linalg.norm(np.clip(0.0, lo, hi))
        d = certified_distance(y, Yv, Yr)[0]
        assert d <= true and true - d < 1e-9 * (1.0 + true)
        wrong = y + rng.normal(0.0, 0.5, (1, 4))
        assert certified_distance(wrong, Yv, Yr)[0] <= true


def test_certified_distance_with_rays_pointing_back():
    """An unbounded region whose rays run back toward the mean along the closest point's direction is not supported
    by that direction: the certificate is 0 (no bound), never a wrong positive distance."""
    y = np.array([[3.0, 0.0, 0.0, 0.0]])
    Yv = np.array([[[3.0, 0.0, 0.0, 0.0], [3.0, 1.0, 0.0, 0.0]]])
    back = np.array([[-1.0, 0.0, 0.0, 0.0]])
    assert certified_distance(y, Yv, back)[0] == 0.0
    side = np.array([[0.0, 1.0, 0.0, 0.0]])
    assert abs(certified_distance(y, Yv, side)[0] - 3.0) < 1e-10


def test_bounds_cover_the_cone_masses_of_partition_regions():
    """Every pointed region of ``random_network([4, 8, 8, 5])`` at the posterior means of two points: the cones' mass
    (validated against mpmath in tests/test_highdim_cones.py), minus its bar, is below ``log_mass_bounds``."""
    import engine
    from engine.distributions import posterior_region_params, region_gaussians
    from engine.gaussian.highdim.cones import cone_log_mass

    net = engine.random_network([4, 8, 8, 5], rng=0, cov_x=0.1)
    part = partition(net)
    rg = region_gaussians(net, part)
    mu, _ = posterior_region_params(net, part, net.sample(2, rng=1), rg)
    checked = 0
    for r in range(len(part)):
        p = part[r].polytope
        if p.lineality.size or not p.vertices.size:
            continue
        Nrm, D, Yv, Yr = sl.whitened(p, rg.chol_cov[r], mu[:, r])
        lm, rel, fl = cone_log_mass(Nrm, D, Yv, Yr)
        b = log_mass_bounds(certified_distance(closest_points(Nrm, D), Yv, Yr), log_volume(p, rg.chol_cov[r]))
        ok = ~fl & np.isfinite(lm)
        assert np.all(lm[ok] + np.log1p(-np.minimum(rel[ok], 0.5)) <= b[ok])
        checked += int(ok.sum())
    assert checked > 2000


def _blocks_truth(blocks, slices, X):
    return sum(evaluate(net, X[:, s], part=partition(net)).log_marginal for net, s in zip(blocks, slices))


@pytest.fixture(scope="module")
def s4_case():
    case, blocks, slices = block_case(4, 41, n_points=2)
    return case, partition(case.net), _blocks_truth(blocks, slices, case.X)


def test_flagged_budget_skips_and_the_bar_covers_the_truth(s4_case, monkeypatch):
    """With ``FLAGGED_BUDGET`` 1e-3 the pairs the cones leave are skipped (the cones are switched off so that every
    pair is such a pair): log p moves, only down, and the bar (which takes the skipped bounds in) covers the error."""
    case, part, truth = s4_case
    monkeypatch.setattr(sl, "FLAGGED_BUDGET", 1e-3)
    monkeypatch.setattr("engine.gaussian.highdim.cones.USE_CONES", False)
    seen = []
    real = sl._settle_deferred

    def spy(*a, **k):
        out = real(*a, **k)
        seen.append(int(out.skip.sum()))
        return out

    monkeypatch.setattr(sl, "_settle_deferred", spy)
    ev = evaluate(case.net, case.X, part=part)
    err = np.abs(ev.log_marginal - truth)
    assert sum(seen) > 0 and np.max(err) > 1e-9
    assert np.all(err <= ev.log_marginal_error), (err, ev.log_marginal_error)
    assert np.all(ev.log_marginal <= truth + 1e-12)
    assert np.all(ev.log_marginal_error <= 2e-3)


def test_raised_lower_bound_is_below_log_p(s4_case, monkeypatch):
    """The lower bound of p(x) that sets the skips and tolerances, after ``raised_lower``: below the known log p(x),
    and within 3 nats of it (the three pairs of the first bound alone can be 11 nats off)."""
    case, part, truth = s4_case
    lows = []
    real = dist._target_prune

    def keep(*a, **k):
        out = real(*a, **k)
        lows.append(out[2])
        return out

    monkeypatch.setattr(dist, "_target_prune", keep)
    evaluate(case.net, case.X, part=part)
    low = np.concatenate(lows)
    assert np.all(low <= truth) and np.all(low >= truth - 3.0), (low, truth)


def test_same_bits_twice_with_the_caches(s4_case):
    """The flags and volumes kept on the geometry between calls do not change a bit (a second evaluate reuses them)."""
    case, part, _ = s4_case
    a = evaluate(case.net, case.X, part=part)
    b = evaluate(case.net, case.X, part=part)
    assert a.log_marginal.tobytes() == b.log_marginal.tobytes()
    assert a.log_marginal_error.tobytes() == b.log_marginal_error.tobytes()
    assert a.posterior_cov.tobytes() == b.posterior_cov.tobytes()


def test_compiled_closest_point_agrees_with_scipy_and_certifies_boxes():
    """``closest_and_distance`` (compiled Lawson-Hanson) against ``qmc.closest_points`` (scipy's nnls) on 60 rotated
    boxes at 3 means each: the same closest point to 1e-9 (relative to 1 + |y|), a certified distance at most the
    box's true distance and within 1e-9 of it."""
    from engine.gaussian.highdim.budget import closest_and_distance

    rng = np.random.default_rng(13)
    for lo, hi, Q in _random_boxes(17, 60):
        poly = _box(lo, hi, Q)
        shift = rng.normal(0.0, 1.0, (3, 4))
        Nrm, D, Yv, Yr = sl.whitened(poly, np.eye(4), shift @ Q.T)
        y, d = closest_and_distance(Nrm, np.ascontiguousarray(D), np.ascontiguousarray(Yv), Yr)
        ref = closest_points(Nrm, D)
        assert np.all(np.abs(y - ref) <= 1e-9 * (1.0 + np.linalg.norm(ref, axis=1))[:, None])
        true = np.linalg.norm(np.clip(shift, lo, hi) - shift, axis=1)
        assert np.all(d <= true) and np.all(true - d <= 1e-9 * (1.0 + true))


def test_first_lower_at_s4_uses_the_cones_only_and_stays_below_log_p(s4_case, monkeypatch):
    """``distributions._first_lower`` at S = 4 never asks the slices (on ``[4, 16, 16, 5]`` points 49-55 that cost 870 s
    for a lower bound): its lower bound is below the known log p(x); with the cones refusing every pair (bar 0.9) the
    pairs count 0 and the bound is -inf, still no slice; ``evaluate`` then stays within its bar of the truth."""
    import engine.gaussian.highdim.cones as cn
    from engine.distributions import _gaussians_and_geometry, _screened_params

    case, part, truth = s4_case

    def no_slices(*a, **k):
        raise AssertionError("the slices were asked for a lower bound")

    rg, geo = _gaussians_and_geometry(case.net, part, True)
    mu, log_norm, (upper, first, _, _) = _screened_params(case.net, part, case.X, rg, "auto", None, geo, "absolute")
    monkeypatch.setattr(sl, "sliced_moments", no_slices)
    _, lower, counted = dist._first_lower(part, mu, rg.cov, log_norm, upper, "auto", None, geo, "absolute")
    assert np.all(counted.sum(axis=1) == 3) and np.all(lower <= truth) and np.all(lower > truth - 12.0), (lower, truth)
    real = cn.cone_log_mass

    def refuse(*a, **k):
        lm, rel, fl = real(*a, **k)
        return lm, np.full(rel.shape, 0.9), fl

    monkeypatch.setattr(cn, "cone_log_mass", refuse)
    _, lower, _ = dist._first_lower(part, mu, rg.cov, log_norm, upper, "auto", None, geo, "absolute")
    assert np.all(lower == -np.inf)
    monkeypatch.undo()
    ev = evaluate(case.net, case.X, part=part)
    assert np.all(np.abs(ev.log_marginal - truth) <= ev.log_marginal_error)


def test_every_skipped_pair_of_a_real_partition_lies_below_its_bound(monkeypatch):
    """``random_network([4, 8, 8, 5])``, two points: every pair ``_target_prune`` skips (now every candidate, not only
    those whose half-space bound is below 1e-3 of p(x): ``SKIP_CANDIDATE_S4``) has its cone mass, minus the cones'
    bar, below the bound it was skipped with (the cones are checked against mpmath in tests/test_highdim_cones.py),
    the skipped bounds sum within ``SKIP_BUDGET`` of p(x), and more pairs are skipped than with the old 1e-3 share."""
    import engine
    from engine.gaussian.highdim import budget as bd
    from engine.gaussian.highdim.cones import cone_log_mass

    net = engine.random_network([4, 8, 8, 5], rng=0, cov_x=0.1)
    part = partition(net)
    X = net.sample(2, rng=1)
    seen = {}
    real_skip, real_prune = bd.skip_lightest, dist._target_prune

    def spy_skip(cand, bound, lower, budget, maybe=None):
        out = real_skip(cand, bound, lower, budget, maybe)
        seen.update(skip=cand & ~out[0], bound=bound, lower=lower, total=out[1])
        return out

    def spy_prune(*a):
        seen.update(mu=a[1], log_norm=a[2], geometry=a[6])
        return real_prune(*a)

    monkeypatch.setattr(bd, "skip_lightest", spy_skip)
    monkeypatch.setattr(dist, "_target_prune", spy_prune)
    counts = {}
    for share in (1e-3, np.inf):
        monkeypatch.setattr(dist, "SKIP_CANDIDATE_S4", share)
        ev = evaluate(net, X, part=part)
        counts[share] = int(seen["skip"].sum())
    assert counts[np.inf] > counts[1e-3] > 0, counts
    assert np.all(seen["total"] <= seen["lower"] + np.log(dist.SKIP_BUDGET) + 1e-12)
    assert np.all(seen["total"] - ev.log_marginal <= np.log(ev.log_marginal_error) + 1e-6)  # the bar takes them in
    geo, mu, log_norm = seen["geometry"], seen["mu"], seen["log_norm"]
    checked = 0
    for r in np.nonzero(seen["skip"].any(axis=0))[0]:
        rows = np.nonzero(seen["skip"][:, r])[0]
        Nrm, D, Yv, Yr = geo.whitened(r, mu[rows, r])
        lm, rel, fl = cone_log_mass(Nrm, D, Yv, Yr, shape=geo.cone_shape(r))
        ok = ~fl & np.isfinite(lm) & (rel < 0.5)
        low = lm + np.log1p(-np.minimum(rel, 0.5))
        assert np.all(log_norm[rows, r][ok] + low[ok] <= seen["bound"][rows, r][ok]), r
        checked += int(ok.sum())
    assert checked >= 0.9 * counts[np.inf]


def test_hinted_lower_at_s4_uses_the_cones_only(s4_case, monkeypatch):
    """``evaluate(lower_pairs=...)`` (EM's hint) at S = 4: the hinted pairs raise the lower bound through the cones
    alone (no slice is asked for it even where the cones certify nothing: before, each such pair went to the slices at
    1e-10), and log p stays within its bar of the known value."""
    case, part, truth = s4_case
    calls = []
    real_hint, real_slices = dist._hinted_lower, sl.sliced_moments

    import engine.gaussian.highdim.cones as cn

    real_certified = cn.certified

    def hint(*a, **k):  # the cones certify nothing here: the full integrator would have to slice every hinted pair
        calls.append("hint")
        cn.certified = lambda out, *args: np.zeros(out[0].size, dtype=bool)
        try:
            out = real_hint(*a, **k)
        finally:
            cn.certified = real_certified
        calls.append("done")
        return out

    def slices(*a, **k):
        calls.append("slices")
        return real_slices(*a, **k)

    monkeypatch.setattr(dist, "_hinted_lower", hint)
    monkeypatch.setattr(sl, "sliced_moments", slices)
    extra = np.zeros((case.X.shape[0], len(part)), dtype=bool)
    extra[:, :40] = True
    ev = evaluate(case.net, case.X, part=part, lower_pairs=extra)
    assert calls[:2] == ["hint", "done"], calls
    assert np.all(np.abs(ev.log_marginal - truth) <= ev.log_marginal_error)


def test_pair_bounds_in_threads_give_the_region_loop_bits(monkeypatch):
    """``budget.pair_bounds`` runs its regions in worker threads, ``BOUND_REGIONS_PER_ROUND`` at a time: with 1 and
    2 threads and rounds of 7 regions (many rounds, the last one short) every entry is bit for bit the sequential
    region loop it replaced (``geometry.whitened`` and ``sliced._closest_bounds`` per region, filed in place), +inf
    outside the pairs asked for."""
    import engine
    from engine.distributions import posterior_region_params, region_gaussians
    from engine.gaussian.highdim import budget as bd
    from engine.gaussian.polytopes import batch_geometry

    net = engine.random_network([4, 8, 8, 5], rng=0, cov_x=0.1)
    part = partition(net)
    rg = region_gaussians(net, part)
    mu, log_norm = posterior_region_params(net, part, net.sample(3, rng=1), rg)
    geo = batch_geometry([r.polytope for r in part], rg.cov, rg.chol_cov)
    pairs = np.random.default_rng(0).random(log_norm.shape) < 0.6
    want = np.full(pairs.shape, np.inf)
    for r in np.nonzero(pairs.any(axis=0) & geo.ok)[0]:
        rows = np.nonzero(pairs[:, r])[0]
        Nrm, D, Yv, Yr = geo.whitened(r, mu[rows, r])
        want[rows, r] = log_norm[rows, r] + sl._closest_bounds(Nrm, D, Yv, Yr, geo.log_volumes([r])[0])[1]
    assert np.isfinite(want).sum() > 3000
    monkeypatch.setattr(bd, "BOUND_REGIONS_PER_ROUND", 7)
    for threads in ("1", "2"):
        monkeypatch.setenv("DGNEXACT_THREADS", threads)
        got = bd.pair_bounds(part, mu, log_norm, pairs, geo)
        assert got.tobytes() == want.tobytes(), threads


def test_s4_blocks_hold_120_points_of_a_33k_region_partition():
    """``scaling.rows_per_block`` at S >= 4: ``HIGHDIM_PAIRS_PER_BLOCK`` pairs a block at S = 4, 16 / S^2 of it above
    (``[4, 16, 16, 5]``'s 33,153 regions: 120 points a block, 7 before); S <= 3 keep ``PAIRS_PER_BLOCK`` scaled."""
    from engine.scaling import HIGHDIM_PAIRS_PER_BLOCK, PAIRS_PER_BLOCK, rows_per_block

    assert rows_per_block(33153, 4) == HIGHDIM_PAIRS_PER_BLOCK // 33153 == 120
    assert rows_per_block(33153, 6) == HIGHDIM_PAIRS_PER_BLOCK * 16 // 36 // 33153 == 53
    assert rows_per_block(33153, 5) == 77
    assert rows_per_block(4297, 3) == PAIRS_PER_BLOCK // (4297 * 2)
    assert rows_per_block(473, 2) == PAIRS_PER_BLOCK // 473
    assert rows_per_block(33153, 4, pairs=PAIRS_PER_BLOCK) == 7  # an explicit pair count keeps the S x S scaling
    assert rows_per_block(10 ** 9, 5) == 1
