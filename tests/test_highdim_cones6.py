"""S' = 6 by one 1-D integral of the S' = 4 flag decomposition per ridge (``engine.gaussian.highdim.cones6``, issue 14).

Oracles independent of the code under test: rotated 6-D boxes (products of ``log_ndtr`` differences, tails to e^-46,
unbounded; moments by scipy ``truncnorm``); one ridge's integrals ``R = int_e^inf phi(u) (Q(d) - Q(u d/e))
prod_k (Phi(b_k u/e) - Phi(a_k u/e)) du`` by mpmath; rotated products of a polygon (mpmath quadrature) and a 4-D box
(closed form). Every case checks that the reported bar covers the error.
"""

from __future__ import annotations

import itertools
import math

import mpmath as mp
import numpy as np
import pytest
from scipy.special import log_ndtr
from test_highdim_cones import _mp_polygon_log_mass, _polygon
from test_highdim_sliced import _box

from engine.gaussian.highdim import cones6
from engine.gaussian.highdim.cones6 import RULES, Face, cone6_log_mass, cone6_moments, ridge_sides

BOXES6 = [  # cheap ones (6-7 facets) by default; the 12-facet bounded boxes are slow (~5 s each)
    (np.array([9.0, -np.inf, -1.0, -np.inf, 0.3, -0.5]), np.array([np.inf, 0.5, np.inf, 2.0, 1.2, np.inf])),  # e^-45.9
    (np.array([-np.inf] * 6), np.array([0.5, 1.0, -0.3, 2.0, 1.5, 0.8])),  # an orthant, origin outside, 0.16
    (np.array([-np.inf, -np.inf, -1.0, 0.3, -0.2, -np.inf]), np.array([1.0, 0.2, np.inf, np.inf, 0.9, -0.4])),  # 0.021
]
BOXES6_SLOW = [
    (np.array([-1.0, -0.5, 0.2, -2.0, -0.7, -1.2]), np.array([0.7, 1.5, 2.0, 0.1, 1.1, 0.9])),  # origin outside, 0.034
    (np.array([2.0, 2.5, -1.0, -0.3, -0.5, -1.0]), np.array([3.0, 4.0, 1.0, 0.4, 0.8, 1.5])),  # tail, 9.2e-6
    (np.array([-1.0, -0.5, -0.8, -2.0, -0.7, -0.6]), np.array([0.7, 1.5, 2.0, 0.4, 1.1, 0.5])),  # origin inside, 0.047
]


def _check_box(a, b, seed=3):
    """Mass within 1e-9 of the closed form and within the bar; moments within 1e-8 of truncnorm's and within their
    bounds (measured: mass <= 3.3e-10, bars 9e-9-3.8e-7; moments <= 4e-10, bounds <= 6.5e-6)."""
    Nrm, D, V, R, exact, mean, cov = _box(a, b, seed)
    r = cone6_moments(Nrm, D, V, R)
    err = abs(math.expm1(r.log_mass - exact))
    assert not r.flagged
    assert err <= r.rel <= cones6.TOL, (r.log_mass, exact, r.rel)
    assert err <= 1e-9
    em, ec = np.abs(r.mean - mean).max(), np.abs(r.cov - cov).max()
    assert em <= r.moment_bounds[0] and ec <= r.moment_bounds[1], (em, ec, r.moment_bounds)
    assert em <= 1e-8 and ec <= 1e-8


@pytest.mark.parametrize("a, b", BOXES6)
def test_rotated_6d_boxes(a, b):
    _check_box(a, b)


@pytest.mark.slow
@pytest.mark.parametrize("a, b", BOXES6_SLOW)
def test_rotated_bounded_6d_boxes(a, b):
    _check_box(a, b)


def _box_face(a, b, Q):
    """The 4-D box ``Q [a, b]`` as a :class:`Face` (foot at the origin)."""
    I4 = np.eye(4)
    Nrm = np.vstack([I4, -I4]) @ Q.T
    corners = np.array(list(itertools.product(*zip(a, b)))) @ Q.T
    return Face(Nrm, np.concatenate([b, -a]), corners, np.zeros((0, 4)), np.eye(4), np.arange(8), True)


def test_ridge_integrals_match_mpmath():
    """One ridge (a rotated 4-box ``G``) seen from two facets ``(d, e)``: ``R``, the facet's mass term ``int phi(u)
    M_4((u/e) G) du`` and ``M_4(G)`` from one set of S' = 4 rows, against mpmath at 20 digits; within 1e-9 and within
    their bars at every rule (measured <= 2e-10 at the second rule)."""
    mp.mp.dps = 20
    a, b = np.array([-0.8, -0.3, 0.2, -1.5]), np.array([0.6, 1.1, 1.4, 0.3])
    G = _box_face(a, b, np.linalg.qr(np.random.default_rng(5).standard_normal((4, 4)))[0])
    sides = [(0.7, 0.4), (1.3, 2.1)]
    A, B = [mp.mpf(float(x)) for x in a], [mp.mpf(float(x)) for x in b]

    def m4(s):
        return mp.fprod(mp.ncdf(h * s) - mp.ncdf(lo * s) for lo, h in zip(A, B))

    wants = []
    for d, e in sides:
        d_, e_ = mp.mpf(d), mp.mpf(e)
        pts = [e_, e_ + 0.25, e_ + 1, e_ + 3, mp.inf]
        wants.append([mp.quad(lambda u, d_=d_, e_=e_: mp.npdf(u) * (mp.ncdf(-d_) - mp.ncdf(-u * d_ / e_)) * m4(u / e_),
                              pts),
                      mp.quad(lambda u, e_=e_: mp.npdf(u) * m4(u / e_), pts), m4(1)])
    for rule in RULES:
        for want, rt in zip(wants, ridge_sides(G, sides, rule)):
            assert not rt.flagged
            for got, rel, w in zip((rt.log_r, rt.log_m, rt.log_g), (rt.rel_r, rt.rel_m, rt.rel_g), want):
                err = abs(math.expm1(got - float(mp.log(w))))
                assert err <= max(rel, 1e-13), (rule, got, rel)
                assert err <= 1e-9 or rule is RULES[0]


@pytest.mark.parametrize("seed", range(2))
def test_rotated_polygon_times_orthant_matches_mpmath(seed):
    """``Q (G x 4-orthant) + shift`` (a polygon -- a wedge or bounded -- meeting its neighbours at angles other than
    90 degrees, times ``prod_k [a_k, inf)``): mass = the polygon's (mpmath) times ``prod Q(a_k)``; within 1e-9 and
    the bar."""
    rng = np.random.default_rng(300 + seed)
    N2, c2, V2, R2 = _polygon(rng, seed == 0)
    a4 = rng.uniform(-1.0, 0.8, 4)
    exact = float(_mp_polygon_log_mass(N2, c2, V2, R2)) + float(np.sum(log_ndtr(-a4)))
    Q = np.linalg.qr(rng.standard_normal((6, 6)))[0]
    Nrm = np.vstack([np.column_stack([N2, np.zeros((len(c2), 4))]),
                     np.column_stack([np.zeros((4, 2)), -np.eye(4)])]) @ Q.T
    D = np.concatenate([c2, -a4])
    V = np.array([np.concatenate([v, a4]) for v in V2]) @ Q.T
    R = np.vstack([np.column_stack([R2, np.zeros((len(R2), 4))]).reshape(-1, 6),
                   np.column_stack([np.zeros((4, 2)), np.eye(4)])]) @ Q.T
    lm, rel, fl = cone6_log_mass(Nrm, D, V, R)
    err = abs(math.expm1(lm - exact))
    assert not fl and err <= rel and err <= 1e-9, (lm, exact, rel)


def test_mean_on_a_facet_plane_is_flagged():
    """A facet plane through the mean (``d_i = 0``: the scale ``t / |d_i|`` is undefined): flagged, never a number."""
    Nrm, D, V, R, _, _, _ = _box(np.array([0.0, -1, -1, -1, -1, -np.inf]), np.array([1.0, 1, 1, 1, 1, 1]), 0)
    lm, rel, fl = cone6_log_mass(Nrm, D, V, R)
    assert fl and not np.isfinite(rel)


def _orthant_region(shift):
    """The region ``{z : z_k >= s_k}`` (an orthant of R^6 with its apex at ``shift``) as a ``Polytope``."""
    from engine.polytope import Polytope

    return Polytope(-np.eye(6), -np.asarray(shift, dtype=np.float64), np.asarray(shift, dtype=np.float64)[None],
                    np.eye(6), np.zeros((0, 6)))


@pytest.mark.parametrize("rqmc_weight", [0.0, 1e-8])
def test_batch_routes_by_weight_and_same_bits(monkeypatch, rqmc_weight):
    """Through ``polytope_moments_arrays`` at S = 6 (``BATCH_INTEGRATORS[6]``): an orthant under two means, one pair
    heavy (weight bound 1) and one light (bound e^-40). The heavy pair takes the ridge integrals (bar <= TOL_HEAVY,
    within it of the closed form ``prod Q``); the light one the ridge integrals too at its loosened tolerance
    (``RQMC_WEIGHT = 0``, the default) or, with ``RQMC_WEIGHT = 1e-8``, RQMC (its bar covers the closed form); the
    same bits with 1 and 2 threads and on a second run."""
    from engine.gaussian.polytopes import polytope_moments_arrays

    monkeypatch.setattr(cones6, "RQMC_WEIGHT", rqmc_weight)
    shift = np.array([-0.5, 0.3, -1.0, 0.2, 0.8, -0.1])
    means = np.array([[[0.0] * 6, [0.1, -0.2, 0.3, 0.0, 0.1, 0.2]]])
    exact = np.sum(log_ndtr(means[0] - shift[None]), axis=1)
    lws = np.array([[0.0, -40.0]])
    bits = set()
    for threads in ("1", "2", "2"):
        monkeypatch.setenv("DGNEXACT_THREADS", threads)
        out = polytope_moments_arrays([_orthant_region(shift)], means, np.eye(6)[None], moments=2,
                                      log_weight_scale=lws)
        bits.add(out.log_mass.tobytes() + out.mean.tobytes() + out.cov.tobytes() + out.log_mass_error.tobytes())
    assert len(bits) == 1
    assert out.methods == ["cones6"]
    err = np.abs(out.log_mass[0] - exact)
    assert out.log_mass_error[0, 0] <= 1.01 * cones6.TOL_HEAVY and err[0] <= out.log_mass_error[0, 0]
    assert err[1] <= out.log_mass_error[0, 1]
    if rqmc_weight > 0.0:
        assert out.log_mass_error[0, 1] > 1e-6  # RQMC's bar, not the cones'
    else:
        assert out.log_mass_error[0, 1] <= 1.01 * cones6.MAX_TOL  # the cones at the light pair's tolerance


@pytest.mark.slow
def test_s6_block_decoder_matches_mpmath_through_evaluate():
    """End to end: ``evaluate`` on the verifier's rotated block decoder at S = 6 (blocks 2, 2, 2; log p is the sum of
    the blocks' mpmath marginals) goes through ``cones6`` and lands within 1e-6 of mpmath and within its bar."""
    from engine.distributions import evaluate
    from verify.highdim_checks import block_case, block_log_marginals

    case, blocks, slices = block_case(6, 0, n_points=1)
    _, ref, _ = block_log_marginals(blocks, slices, case.X)
    ev = evaluate(case.net, case.X)
    err = abs(ev.log_marginal[0] - ref[0])
    assert err <= ev.log_marginal_error[0] + 1e-12 and err <= 1e-6
    assert ev.log_marginal_error[0] <= 1e-6


@pytest.mark.slow
def test_prior_masses_of_an_s6_partition_sum_to_one():
    """Prop. 1 at S = 6: the prior masses ``Phi_omega(0, I)`` of the 127 regions of ``random_network([6, 7, 6],
    rng=3)`` (no lineality) sum to 1. Measured (1.5-4 min on the shared machine): 120-122 regions resolved, their sum
    1 + 3.1e-9 with summed bars 3.9e-5; five to seven slivers at the origin (facets 0.016-0.5 from it, masses far
    below the terms of the signed sums) are resolved by neither the cones (cancellation) nor RQMC (no sample in them)
    and come back with infinite bars, not as wrong numbers with tight ones. The resolved sum may not exceed 1 by more
    than its bars."""
    import engine
    from engine.gaussian.polytopes import polytope_moments_arrays
    from engine.partition import partition

    part = partition(engine.random_network([6, 7, 6], rng=3, cov_x=0.1))
    polys = [r.polytope for r in part]
    R = len(polys)
    out = polytope_moments_arrays(polys, np.zeros((R, 1, 6)), np.broadcast_to(np.eye(6), (R, 6, 6)), moments=0)
    lm, err = out.log_mass[:, 0], out.log_mass_error[:, 0]
    ok = np.isfinite(lm) & (err < 1.0)
    assert ok.sum() >= 120 and np.all(~np.isfinite(err[~ok]))  # the rest: infinite bars, never tight wrong ones
    total = math.fsum(np.exp(lm[ok]))
    bar = math.fsum(np.exp(lm[ok]) * np.expm1(err[ok])) + 1e-13 * R
    assert total - 1.0 <= bar, (total, bar)
    assert bar <= 1e-3 and set(out.methods) == {"cones6"}


def test_unresolved_pairs_are_capped_at_the_closest_point():
    """``distributions._log_term_caps`` (S >= 4 with the batch geometry): an unresolved pair's term is capped by
    ``Q(|y*|)`` at the region's closest point instead of its most violated half-space. On the prior of a
    ``[6, 6, 6]`` partition: for two of the regions where the caps differ most, the certified mass (the cones, bar <=
    5e-7) <= the new cap < the half-space cap; resolved pairs keep the half-space cap."""
    from types import SimpleNamespace

    import engine
    from engine.distributions import _log_term_caps, log_mass_upper_bound
    from engine.partition import partition

    part = partition(engine.random_network([6, 6, 6], rng=1, cov_x=0.1))
    R = len(part)
    cov = np.broadcast_to(np.eye(6), (R, 6, 6))
    geo = cones6.Cones6Geometry([r.polytope for r in part], cov)
    err = np.full((1, R), np.inf)
    err[0, 0] = 0.0
    st = SimpleNamespace(part=part, mu=np.zeros((1, R, 6)), cov=cov, log_norm=np.zeros((1, R)), mass_err=err,
                         heavy_kwargs={"geometry": geo})
    new = _log_term_caps(st)[0]
    old = log_mass_upper_bound(part, st.mu, cov)[0]
    assert new[0] == old[0] and np.all(new <= old + 1e-12)
    checked = 0
    for r in np.argsort(new - old)[:12]:  # the farthest cones cancel (flagged): the first two the cones certify
        Nrm, D, Yv, Yr = cones6.whitened(part[r].polytope, np.eye(6), np.zeros((1, 6)))
        res = cone6_moments(Nrm, D[0], Yv[0], Yr, moments=0)
        if res.flagged:
            continue
        assert res.log_mass + res.rel <= new[r] < old[r] - 1.0
        checked += 1
        if checked == 2:
            break
    assert checked == 2


# ---------------------------------------------------------------------------------------------------
# the closed outer integral (``cone6_kernel``, ``cone6_moments_batch``): the route ``evaluate`` takes
# ---------------------------------------------------------------------------------------------------

def _check_box_closed(a, b, seed=3):
    """Mass within 1e-12 of the closed form and within the bar; moments within 1e-10 of truncnorm's and within their
    bounds (measured on the six boxes: mass <= 4.3e-14, bars <= 2.1e-11; moments <= 1.5e-12, bounds <= 3.1e-9)."""
    Nrm, D, V, R, exact, mean, cov = _box(a, b, seed)
    r = cones6.cone6_moments_batch(Nrm, D[None], V[None], R)[0]
    err = abs(math.expm1(r.log_mass - exact))
    assert not r.flagged
    assert err <= r.rel <= 1e-9, (r.log_mass, exact, r.rel)
    assert err <= 1e-12
    em, ec = np.abs(r.mean - mean).max(), np.abs(r.cov - cov).max()
    assert em <= r.moment_bounds[0] and ec <= r.moment_bounds[1], (em, ec, r.moment_bounds)
    assert em <= 1e-10 and ec <= 1e-10


@pytest.mark.parametrize("a, b", BOXES6 + BOXES6_SLOW)
def test_closed_route_rotated_6d_boxes(a, b):
    _check_box_closed(a, b)


def test_closed_route_ridge_sides_match_mpmath():
    """One side of a ridge by the compiled kernel (``cone6_kernel.side_pass``: ``R = e int_1^inf phi(sigma e) (Q(d) -
    Q(sigma d)) M_4(sigma G) dsigma`` with the outer integral closed) against mpmath at 20 digits, G a rotated 4-box
    with its foot inside or outside, sides near and far: within 2e-13 and within the bar (measured <= 1.2e-13); the
    moments' sums of the side from the same nodes likewise."""
    from engine.gaussian.highdim import cone6_kernel as K
    from engine.gaussian.highdim.cones5 import _signed_mass
    from engine.gaussian.highdim.shape_kernel import cone_shape_compiled

    mp.mp.dps = 20
    Q = np.linalg.qr(np.random.default_rng(5).standard_normal((4, 4)))[0]
    cases = [((-0.8, -0.3, 0.2, -1.5), (0.6, 1.1, 1.4, 0.3), [(0.7, 0.4), (3.0, 0.5), (0.2, 3.0)]),
             ((-0.8, -0.3, -0.2, -1.5), (0.6, 1.1, 1.4, 0.3), [(2.5, 2.1), (0.05, 0.5)]),
             ((0.5, 1.3, 0.2, -1.5), (1.6, 2.1, 1.4, 0.3), [(1.5, 1.1)])]
    for a, b, sides in cases:
        a, b = np.array(a), np.array(b)
        G = _box_face(a, b, Q)
        g = cone_shape_compiled(G.Nrm, G.D, G.Yv, G.Yr)
        A, B = [mp.mpf(float(x)) for x in a], [mp.mpf(float(x)) for x in b]

        def m4(s, A=A, B=B):
            return mp.fprod(mp.ncdf(h * s) - mp.ncdf(lo * s) for lo, h in zip(A, B))

        for d, e in sides:
            sacc, fl, shift = np.full((1, 4), -np.inf), np.zeros(1, dtype=bool), np.zeros(1)
            par = (np.array([d]), np.array([e]), np.array([1.0]))
            mom = (np.full((1, 4), -np.inf), np.full((1, 4), -np.inf))  # the side's moment sums, fused
            for edges in (False, True):
                K.side_pass(g, G.D[None].copy(), G.Yv[None].copy(), (*par, sacc[:, 3].copy()), sacc, edges, fl, mom,
                            shift)
            acc = np.full((1, 4), -np.inf)
            K.merge_side(acc, sacc, shift, 1 + g.fvalid.size + 2 * g.ri.size + 2 * g.lr.size)
            lm, rel, bad = _signed_mass(acc)
            d_, e_ = mp.mpf(d), mp.mpf(e)
            want = mp.quad(lambda u, d_=d_, e_=e_: mp.npdf(u) * (mp.ncdf(-d_) - mp.ncdf(-u * d_ / e_)) * m4(u / e_),
                           [e_, e_ + 0.25, e_ + 1, e_ + 3, mp.inf])
            err = abs(math.expm1(lm[0] - float(mp.log(want))))
            assert not (fl[0] or bad[0]) and err <= rel[0] and err <= 2e-13, (d, e, lm[0], rel[0], err)
            # the moments' sums from the same nodes: e int_1^inf phi(sigma e) M_4(sigma G) dsigma and M_4(G)
            l_m, r_m, l_g, r_g = K.side_moments((None, [(0, 0, None, g, None, None, None)], [mom]), 1, fl)[0]
            want_m = mp.quad(lambda u, e_=e_: mp.npdf(u) * m4(u / e_), [e_, e_ + 0.25, e_ + 1, e_ + 3, mp.inf])
            for got, bar, w in ((l_m, r_m, want_m), (l_g, r_g, m4(1))):
                err = abs(math.expm1(got[0] - float(mp.log(w))))
                assert err <= bar[0] and err <= 2e-13, (d, e, got[0], bar[0], err)


def test_closed_route_j_recurrence_matches_log_j():
    """``cone6_kernel.j_at_nodes`` (J at every node of a graded rule by adding the gaps from the top) against
    ``cones.log_j`` at each node, over random distances with ``A0 >= bmin^2`` (as on every edge: ``A0 = e^2 + R``,
    ``R >= b^2``): log within 1e-13 (measured 2.4e-14 over 300 rules)."""
    from engine.gaussian.highdim import cone6_kernel as K
    from engine.gaussian.highdim.cones import WINDOW, _exp_point, log_j

    rng = np.random.default_rng(0)
    xs, ws, G = np.empty(K.NBUF), np.empty(K.NBUF), np.empty(K.NBUF)
    for trial in range(60):
        d2 = rng.uniform(1e-4, 9.0) ** 2 if trial % 2 else rng.uniform(1e-4, 0.3) ** 2
        A0 = rng.uniform(1e-3, 4.0) ** 2
        sa = rng.uniform(0.0, 3.0) if trial % 3 == 0 else 0.0
        bmin = rng.uniform(1e-3, 1.0) * math.sqrt(A0)
        n, ok = K.fill_nodes(sa, _exp_point(sa, WINDOW), math.sqrt(sa * sa + bmin * bmin), xs, ws)
        assert ok and K.j_at_nodes(A0, d2, xs, n, G)
        for k in range(n):
            a2 = A0 + xs[k] ** 2
            assert abs(math.log(G[k]) - (log_j(d2, math.sqrt(a2))[0] + 0.5 * (d2 + a2))) <= 1e-13


@pytest.mark.parametrize("seed", range(2))
def test_closed_route_polygon_times_orthant_matches_mpmath(seed):
    """The rotated polygon x 4-orthant of :func:`test_rotated_polygon_times_orthant_matches_mpmath` by the closed
    route: within 1e-11 of mpmath and within the bar."""
    rng = np.random.default_rng(300 + seed)
    N2, c2, V2, R2 = _polygon(rng, seed == 0)
    a4 = rng.uniform(-1.0, 0.8, 4)
    exact = float(_mp_polygon_log_mass(N2, c2, V2, R2)) + float(np.sum(log_ndtr(-a4)))
    Q = np.linalg.qr(rng.standard_normal((6, 6)))[0]
    Nrm = np.vstack([np.column_stack([N2, np.zeros((len(c2), 4))]),
                     np.column_stack([np.zeros((4, 2)), -np.eye(4)])]) @ Q.T
    D = np.concatenate([c2, -a4])
    V = np.array([np.concatenate([v, a4]) for v in V2]) @ Q.T
    R = np.vstack([np.column_stack([R2, np.zeros((len(R2), 4))]).reshape(-1, 6),
                   np.column_stack([np.zeros((4, 2)), np.eye(4)])]) @ Q.T
    r = cones6.cone6_moments_batch(Nrm, D[None], V[None], R, moments=0)[0]
    err = abs(math.expm1(r.log_mass - exact))
    assert not r.flagged and err <= r.rel and err <= 1e-11, (r.log_mass, exact, r.rel)


@pytest.mark.parametrize("k", [3, 4, 5, 6])
def test_closed_route_mean_near_a_face_under_a_rotation(k):
    """The mean 1e-7 from a (6 - k)-face of a rotated 6-D box (nearly orthogonal facets): the ridge and line distances
    of each ridge's cross-section G carry the cosines' rounding (~eps |d|), which G's arctangents see relative to the
    distance of the foot from the face; before, 1.5-10 times the bar off (k = 6: 2.8e-8 under 2.8e-9). Now each term's
    geometric rounding is in the bar (``cones5.geom_term``): within 0.2 of it against mpmath (measured <= 0.035, bars
    <= 9e-7; <= 1.7e-6 since the bar carries the edge ends' errors, k56), two rotations."""
    from test_highdim_cones5 import _mp_box

    a = np.array([-1.0, -0.5, -0.8, -2.0, -0.7, -0.6])
    a[:k] = np.array([1.0, -1.0, -2.0, -3.0, -1.0, -2.0])[:k] * 1e-7
    for seed in (3, 4):
        Nrm, D, V, R, exact, _, _ = _mp_box(a, np.array([0.7, 1.5, 2.0, 0.4, 1.1, 0.5]), seed)
        r = cones6.cone6_moments_batch(Nrm, D[None], V[None], R, tol=2e-6, moments=0)[0]
        err = abs(math.expm1(r.log_mass - exact))
        assert not r.flagged and err <= 0.2 * r.rel and r.rel <= 2e-6, (seed, err, r.rel)


def test_theta_and_root_is_theta_diff_bit_for_bit():
    """``cone6_kernel.theta_and_root`` (one root and one arctangent where the nodes straddle the foot) returns
    ``cones.theta_diff`` and ``sqrt(c + s^2)`` bit for bit on the clipped nodes of the edge integrals: edges across
    the foot, beside it, at it, flags from 1e-9 to 1e3, nodes inside and beyond the edge."""
    from engine.gaussian.highdim.cone6_kernel import theta_and_root
    from engine.gaussian.highdim.cones import theta_diff

    rng = np.random.default_rng(6)
    bad = 0
    for _ in range(4000):
        lo = rng.choice([-1.0, 1.0, 0.0]) * 10.0 ** rng.uniform(-6, 2)
        hi = lo + 10.0 ** rng.uniform(-6, 2)
        a, b = 10.0 ** rng.uniform(-9, 3, size=2)
        c = a * a + b * b
        for sg in np.concatenate([10.0 ** rng.uniform(-8, 3, size=6), [abs(lo), abs(hi), 0.0]]):
            x, y = min(max(sg, lo), hi), min(max(-sg, lo), hi)
            got = theta_and_root(x, y, sg, a, b, c)
            want = (theta_diff(x, y, a, b, c), math.sqrt(c + sg * sg))
            bad += got[0] != want[0] or got[1] != want[1]
    assert bad == 0
