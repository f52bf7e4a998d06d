"""S' = 4 by the cone (flag) decomposition (``engine.gaussian.highdim.cones``, issue 14).

Oracles, all independent of the code under test: mpmath at 30-40 digits for the closed forms and the 1-D integrals
the decomposition rests on (the arctangent differences, ``J``, and each flag's term in its ORIGINAL nested form over
the edge, not the exchanged form the kernel uses); rotated boxes (products of ``log_ndtr`` differences); rotated
products of two polygons (mass = product of the polygons' masses, each an mpmath quadrature of ``phi(x) (Phi(U(x))
- Phi(L(x)))``); Prop. 1 (the prior masses of a complete partition sum to 1). Every case checks that the reported
bar covers the error.
"""

from __future__ import annotations

import math

import mpmath as mp
import numpy as np
import pytest
from test_highdim_sliced import BOXES, _box

from engine.gaussian.highdim.cones import cone_log_mass, cone_moments, cone_shape, edge_flag_logs, log_j, theta_diff
from engine.gaussian.highdim.sliced import whitened

EPS = np.finfo(float).eps


def _mp_j(d, a):
    """``int_a^inf e^{-(d^2 + r^2)/2} / (d^2 + r^2) dr`` as ``e^{-(d^2 + a^2)/2} int_0^inf e^{-a u - u^2/2} / (d^2 +
    (a + u)^2) du`` (mpmath, breakpoints on the integrand's scales)."""
    D, A = mp.mpf(d), mp.mpf(a)
    pts = sorted({mp.mpf(0)} | {min(D, A, 1) * 2 ** k for k in range(-2, 12)} | {mp.inf})
    inner = mp.quad(lambda u: mp.exp(-(A * u + u * u / 2)) / (D * D + (A + u) ** 2), pts)
    return mp.log(inner) - (D * D + A * A) / 2


@pytest.mark.parametrize("seed", range(3))
def test_theta_difference_keeps_relative_accuracy(seed):
    """``Theta(x) - Theta(y)`` for nearby ``x, y`` of one sign far out, where the plain difference of arctangents
    loses all digits: within 8 eps relative of mpmath at 50 digits."""
    mp.mp.dps = 50
    rng = np.random.default_rng(seed)
    for _ in range(40):
        a, b = 10 ** rng.uniform(-3, 1, 2)
        y = rng.choice([-1.0, 1.0]) * 10 ** rng.uniform(-2, 2)
        x = y + 10 ** rng.uniform(-8, 1)
        c = a * a + b * b
        got = theta_diff(x, y, a, b, c)
        th = [mp.atan(mp.mpf(a) * s / (mp.mpf(b) * mp.sqrt(mp.mpf(a) ** 2 + mp.mpf(b) ** 2 + mp.mpf(s) ** 2)))
              for s in (x, y)]
        want = th[0] - th[1]
        assert abs(got - float(want)) <= 8 * EPS * float(abs(want)), (x, y, a, b)


def test_log_j_matches_mpmath_over_every_scale():
    """``log J`` within 4 eps (1 + |log J|) of mpmath from ``d, a = 1e-3`` to 20 (J down to e^-330); the kernel's
    ``TERM_ULPS`` (64) covers it with room."""
    mp.mp.dps = 40
    rng = np.random.default_rng(0)
    for _ in range(25):
        d, a = 10 ** rng.uniform(-3, 1.3, 2)
        got, ok = log_j(d * d, a)
        want = float(_mp_j(d, a))
        assert ok
        assert abs(got - want) <= 4 * EPS * (1 + abs(want)), (d, a, got, want)


def _mp_flag(d, a, b, lo, hi):
    """A flag's term in its original form, ``E = (a b / 2 pi) int_edge W(d, omega) / (omega (b^2 + s^2)) ds`` with
    ``W = |d| J(d, omega) / 2 pi``, ``omega^2 = a^2 + b^2 + s^2`` (the kernel integrates the exchanged form)."""
    mp.mp.dps = 25  # at 20 digits the ray [3.9, inf) of a flag came out 1.2e-8 off (checked with more breakpoints)
    d, a, b = mp.mpf(d), mp.mpf(a), mp.mpf(b)

    def f(s):
        w = mp.sqrt(a * a + b * b + s * s)
        return mp.exp(_mp_j(d, w)) / (w * (b * b + s * s))

    pts = sorted({mp.mpf(lo)} | ({mp.mpf(0)} if lo < 0 < hi else set()))
    if np.isfinite(hi):
        pts.append(mp.mpf(hi))
    else:
        pts += [pts[-1] + 2 ** k for k in range(-2, 4)] + [mp.inf]
    return mp.log(a * b / (2 * mp.pi) * abs(d) / (2 * mp.pi) * mp.quad(f, pts))


@pytest.mark.parametrize("d, a, b, lo, hi", [
    (0.136, 0.0143, 0.0063, 0.482, 0.561),  # small feet distances, one-sided edge
    pytest.param(1.33, 0.156, 3.68, -2.6, np.inf, marks=pytest.mark.slow),  # a ray straddling its foot
    (3.07, 0.0176, 0.00815, -1.27, -0.697),  # foot almost on the edge's line, negative side
    pytest.param(0.0362, 4.06, 0.0507, -2.37, -1.6, marks=pytest.mark.slow),
    pytest.param(4.54, 0.104, 1.0, -0.0155, 0.372, marks=pytest.mark.slow),
    pytest.param(3.95, 4.94, 0.00354, 2.18, 11.0, marks=pytest.mark.slow),  # e^-39, long edge
])
def test_flag_term_matches_its_nested_form_in_mpmath(d, a, b, lo, hi):
    """One flag ``E_ijk`` by the kernel's exchanged 1-D form against the nested form (mpmath): within 4 eps (1 +
    |log E|) (measured <= 1.2 on 12 random flags when written)."""
    fl = np.array([[a, b, a * a + b * b, lo, hi]])
    out = np.empty((2, 1))
    ok, _ = edge_flag_logs(d * d + a * a + b * b, np.array([d * d]), fl, out)
    got = out[0, 0] + math.log(d) - math.log(4 * math.pi ** 2)
    want = float(_mp_flag(d, a, b, lo, hi))
    assert ok
    assert abs(got - want) <= 4 * EPS * (1 + abs(want))
    # the same nodes give phi(d) C, C = (1/2pi) int a b Q(omega) / (omega (b^2 + s^2)) ds (the facet's S = 3 term)
    mp.mp.dps = 30
    A, B = mp.mpf(a), mp.mpf(b)

    def f(s):
        w = mp.sqrt(A * A + B * B + s * s)
        return A * B * mp.ncdf(-w) / (w * (B * B + s * s)) / (2 * mp.pi)

    ends = [mp.mpf(lo), mp.mpf(hi) if np.isfinite(hi) else mp.inf]
    want_c = mp.log(mp.npdf(d) * mp.quad(f, [ends[0], mp.mpf(0), ends[1]] if lo < 0 < hi else ends))
    assert abs(out[1, 0] - float(want_c)) <= 4 * EPS * (1 + abs(float(want_c)))


def _check(lm, rel, fl, exact, tol=1e-12):
    err = abs(np.expm1(lm - exact))
    if fl:  # flagged: the caller slices it; the bar (when finite) still covers
        assert not np.isfinite(lm) or err <= rel
        return False
    assert err <= rel, (lm, exact, rel)
    assert abs(lm - exact) <= tol * (1 + abs(exact))
    return True


@pytest.mark.parametrize("a, b", BOXES)
def test_rotated_boxes(a, b):
    """The sliced tests' boxes (tails to 1e-198, unbounded, mean outside): error within the bar and 1e-12; the tiny
    box around the mean (mass 2.5e-8, where the signed sum cancels) is flagged, its bar still covering."""
    Nrm, D, V, R, exact, _, _ = _box(a, b, 1)
    lm, rel, fl = cone_log_mass(Nrm, D[None], V[None], R)
    done = _check(lm[0], rel[0], fl[0], exact)
    assert done == bool((b - a).max() > 0.1)
    if done:
        assert rel[0] < 1e-10


def _random_translated_boxes(seed):
    """40 random rotated boxes (some sides infinite), each with 3 means: ``(k, lo, hi, (Nrm, D, V, R), shift, Q)``,
    ``_box``'s seed k and rotation Q, the means ``shift`` (3, 4)."""
    rng = np.random.default_rng(seed)
    for k in range(40):
        lo = rng.uniform(-3, 2, 4)
        hi = lo + 10 ** rng.uniform(-1, 0.7, 4)
        lo[rng.uniform(size=4) < 0.15] = -np.inf
        hi[(rng.uniform(size=4) < 0.15) & np.isfinite(lo)] = np.inf
        Nrm, D, V, R, _, _, _ = _box(lo, hi, k)
        shift = rng.normal(0, 1.0, (3, 4))
        Q = np.linalg.qr(np.random.default_rng(k).standard_normal((4, 4)))[0]
        yield k, lo, hi, (Nrm, D, V, R), shift, Q


def test_random_rotated_boxes_and_their_translates():
    """40 random boxes (some sides infinite), each at 3 means: every bar covers the error; the certified ones are
    within 1e-12 and most are certified."""
    certified = 0
    for k, lo, hi, (Nrm, D, V, R), shift, Q in _random_translated_boxes(7):
        lm, rel, fl = cone_log_mass(Nrm, D[None] - shift @ Nrm.T, V[None] - shift[:, None, :], R)
        for m in range(3):
            z = Q.T @ shift[m]  # the box in its own axes, the mean moved to the origin
            _, _, _, _, exact, _, _ = _box(lo - z, hi - z, k)
            certified += _check(lm[m], rel[m], fl[m], exact)
    assert certified >= 100


def _polygon(rng, unbounded):
    """A convex polygon as (normals (k, 2), offsets (k,), vertices, rays): k points on a circle (or a wedge)."""
    if unbounded:
        ang = rng.uniform(0, 2 * np.pi) + np.array([0.0, rng.uniform(0.6, 2.4)])
        N = np.column_stack([np.cos(ang), np.sin(ang)])
        c = rng.uniform(-1.0, 1.5, 2)
        v = np.linalg.solve(N, c)
        rays = np.array([[-N[0, 1], N[0, 0]], [N[1, 1], -N[1, 0]]])
        rays = np.array([r if N[1 - i] @ r < 0 else -r for i, r in enumerate(rays)])
        return N, c, v[None], rays / np.linalg.norm(rays, axis=1)[:, None]
    k = int(rng.integers(3, 6))
    ang = np.sort(rng.uniform(0, 2 * np.pi, k))
    ctr, rad = rng.normal(0, 1.0, 2), 10 ** rng.uniform(-0.5, 0.4)
    V = ctr + rad * np.column_stack([np.cos(ang), np.sin(ang)])
    E = np.roll(V, -1, axis=0) - V
    N = np.column_stack([E[:, 1], -E[:, 0]])
    N /= np.linalg.norm(N, axis=1)[:, None]
    return N, np.einsum("ij,ij->i", N, V), V, np.zeros((0, 2))


def _mp_polygon_log_mass(N, c, V, rays):
    """log of the standard normal mass of ``{N x <= c}``: ``int phi(x) (Phi(U(x)) - Phi(L(x))) dx`` over the
    polygon's x-range (mpmath, breakpoints at its vertices), ``U``, ``L`` from the constraints."""
    mp.mp.dps = 30
    xs = sorted({float(v[0]) for v in V})
    lo = -mp.inf if np.any(rays[:, 0] < -1e-12) else mp.mpf(xs[0])
    hi = mp.inf if np.any(rays[:, 0] > 1e-12) else mp.mpf(xs[-1])

    def f(x):
        up, down = mp.inf, -mp.inf
        for (n0, n1), ci in zip(N, c):
            t = (ci - n0 * x) / n1 if abs(n1) > 1e-14 else None
            if t is None:
                continue
            if n1 > 0:
                up = min(up, t)
            else:
                down = max(down, t)
        if not up > down:
            return mp.mpf(0)
        return mp.npdf(x) * (mp.ncdf(up) - mp.ncdf(down))

    pts = [lo] + [mp.mpf(x) for x in xs if lo < x < hi] + [hi]
    return mp.log(mp.quad(f, pts))


@pytest.mark.parametrize("seed", range(6))
def test_rotated_products_of_polygons_match_mpmath(seed):
    """``Q (G1 x G2) + shift`` (bounded or wedge polygons): its mass is the product of the polygons' masses, each an
    mpmath quadrature; facets and ridges meet at angles other than 90 degrees within each factor."""
    rng = np.random.default_rng(100 + seed)
    g1, g2 = _polygon(rng, seed % 3 == 1), _polygon(rng, seed % 3 == 2)
    exact = float(_mp_polygon_log_mass(*g1) + _mp_polygon_log_mass(*g2))
    Q = np.linalg.qr(rng.standard_normal((4, 4)))[0]
    Nrm = np.vstack([np.column_stack([g1[0], np.zeros((len(g1[1]), 2))]),
                     np.column_stack([np.zeros((len(g2[1]), 2)), g2[0]])]) @ Q.T
    D = np.concatenate([g1[1], g2[1]])
    V = np.array([np.concatenate([v, w]) for v in g1[2] for w in g2[2]]) @ Q.T
    R = np.vstack([np.column_stack([g1[3], np.zeros((len(g1[3]), 2))]),
                   np.column_stack([np.zeros((len(g2[3]), 2)), g2[3]])]).reshape(-1, 4) @ Q.T
    lm, rel, fl = cone_log_mass(Nrm, D[None], V[None], R)
    assert _check(lm[0], rel[0], fl[0], exact)


@pytest.mark.parametrize("widths", [[4, 5, 4], [4, 6, 6], [4, 8, 8],
                                    pytest.param([4, 8, 8, 5], marks=pytest.mark.slow)])
def test_prior_masses_of_a_partition_sum_to_one(widths):
    """Prop. 1: the prior masses of every region of the complete partition of ``random_network(widths)`` (31, 57,
    163 and 2,375 regions, bounded and unbounded, down to e^-22544) sum to 1 within the sum of the bars, and none
    is flagged (``cone_log_mass`` also flags bars above 1e-6: region 73 of [4, 8, 8], a cone e^-22544 away whose
    bar is 1.4e-6 from the rounding of its logs, so the flags of ``cone_moments`` are the ones checked)."""
    import engine
    from engine.partition import partition

    net = engine.random_network(widths, rng=0)
    part = partition(net)
    L = np.linalg.cholesky(net.cov_z)
    total, bar = 0.0, 0.0
    for reg in part:
        p = reg.polytope
        Nrm, D, Yv, Yr = whitened(p, L, np.zeros((1, 4)))
        lm, _, _, rel, _, fl = cone_moments(Nrm, D, Yv, Yr, moments=0)
        assert not fl[0]
        total += math.exp(lm[0])
        bar += math.exp(lm[0]) * rel[0]
    assert abs(total - 1.0) <= bar + 4 * len(part) * EPS
    assert bar < 1e-11


def test_mean_on_a_facet_plane_is_flagged():
    Nrm, D, V, R, _, _, _ = _box(np.array([0.0, -1.0, -1.0, -1.0]), np.array([1.0, 1.0, 1.0, 1.0]), 2)
    lm, rel, fl = cone_log_mass(Nrm, D[None], V[None], R)
    assert fl[0]


def test_shape_lists_the_flags_of_a_box():
    """A 4-cube has 8 facets, 24 ridges, 32 edges; each edge lies in 3 ridges, so 96 (ridge, edge) lines."""
    Nrm, D, V, R, _, _, _ = _box(-np.ones(4), np.ones(4), 3)
    sh = cone_shape(Nrm, D, V, R)
    assert sh.fvalid.sum() == 8 and sh.ri.size == 24 and sh.eva.size == 32 and sh.lr.size == 96


@pytest.mark.parametrize("a, b", BOXES)
def test_box_moments_within_their_bounds(a, b):
    """Mean and covariance by the divergence theorem (facet masses and ridge masses from the same flags) against
    the closed forms of independent truncated normals: the errors lie within the reported bounds, and below 1e-9
    (mean) and 1e-8 (covariance, of the whitened unit) where the covariance does not cancel (|m|^2 rel < 1e-9)."""
    Nrm, D, V, R, exact, mean, cov = _box(a, b, 1)
    lm, m, c, rel, eb, fl = cone_moments(Nrm, D[None], V[None], R)
    assert abs(np.expm1(lm[0] - exact)) <= rel[0]
    em, ec = np.abs(m[0] - mean).max(), np.abs(c[0] - cov).max()
    assert em <= eb[0, 0] and ec <= eb[0, 1]
    if rel[0] * (1 + mean @ mean) < 1e-9:
        assert em < 1e-9 and ec < 1e-8


@pytest.mark.parametrize("widths", [[4, 6, 6], [4, 8, 8], pytest.param([4, 8, 8, 5], marks=pytest.mark.slow)])
def test_prior_moments_of_a_partition_add_up(widths):
    """The law of total expectation over a complete partition: ``sum_r P_r m_r = 0`` and ``sum_r P_r (C_r + m_r
    m_r^T) = I`` under the prior N(0, I) (an identity independent of the integrator), within the summed bounds."""
    import engine
    from engine.partition import partition

    part = partition(engine.random_network(widths, rng=0))
    first, second, b1, b2 = np.zeros(4), np.zeros((4, 4)), 0.0, 0.0
    for reg in part:
        Nrm, D, Yv, Yr = whitened(reg.polytope, np.eye(4), np.zeros((1, 4)))
        lm, m, c, rel, eb, fl = cone_moments(Nrm, D, Yv, Yr)
        assert not fl[0]
        P = math.exp(lm[0])
        if P == 0.0:  # underflows (e^-22544): nothing to add, and its bounds (relative to it) neither
            continue
        first += P * m[0]
        second += P * (c[0] + np.outer(m[0], m[0]))
        mn = np.abs(m[0]).max()
        b1 += P * (eb[0, 0] + rel[0] * mn)
        b2 += P * (eb[0, 1] + 2 * mn * eb[0, 0] + rel[0] * (np.abs(c[0]).max() + mn * mn))
    assert np.abs(first).max() <= b1 + 1e-14
    assert np.abs(second - np.eye(4)).max() <= b2 + 1e-14
    assert b2 < 1e-9


def test_non_simple_regions_of_a_degenerate_arrangement():
    """Six of seven hyperplanes through one point: 40 of the 94 regions have a vertex on more than 4 facets (edges
    on more than 3). Prop. 1 (masses sum to 1) and total expectation hold within the bars, none flagged."""
    from engine.network import load_network
    from engine.partition import partition

    rng = np.random.default_rng(3)
    W = np.vstack([rng.standard_normal((4, 4)).round(1), rng.standard_normal((3, 4)).round(1)])
    b = -W @ np.array([0.3, -0.2, 0.1, 0.4])
    b[6] += 0.5
    net = load_network({"format": "cpa-dgn", "version": 1, "latent_dim": 4, "cov_z": 1.0, "cov_x": 0.1,
                        "layers": [{"type": "linear", "weight": W.tolist(), "bias": b.tolist()}, {"type": "relu"},
                                   {"type": "linear", "weight": rng.standard_normal((3, 7)).tolist(),
                                    "bias": [0.0, 0.0, 0.0]}]})
    total, bar, first, b1, nonsimple = 0.0, 0.0, np.zeros(4), 0.0, 0
    for reg in partition(net):
        Nrm, D, Yv, Yr = whitened(reg.polytope, np.eye(4), np.zeros((1, 4)))
        nonsimple += int(np.any((np.abs(Yv[0] @ Nrm.T - D[0]) <= 1e-9 * (1 + np.abs(D[0]))).sum(axis=1) > 4))
        lm, m, _, rel, eb, fl = cone_moments(Nrm, D, Yv, Yr, moments=1)
        assert not fl[0]
        P = math.exp(lm[0])
        total, bar = total + P, bar + P * rel[0]
        first += P * m[0]
        b1 += P * (eb[0, 0] + rel[0] * np.abs(m[0]).max())
    assert nonsimple >= 30
    assert abs(total - 1.0) <= bar + 1e-15 and bar < 1e-11
    assert np.abs(first).max() <= b1 + 1e-15


def test_the_s4_batch_takes_the_cones_where_certified_and_slices_the_rest(monkeypatch):
    """``polytope_moments_arrays`` at S = 4 (``sliced.sliced_batch``): a box ``mu0 + L Q [a, b]`` under ``N(mu, L L^T)``
    at five means (closed forms, as in ``test_highdim_sliced``). The cones settle the pairs they certify, the
    fallback (slices) gets only the others: here the tiny box's pair around its mean, whose signed sum cancels.
    Every pair matches the closed forms within its bar and 1e-12, moments within 1e-9; with the cones switched
    off (``USE_CONES = False``) every pair is sliced, the same values to 1e-12."""
    from scipy.special import log_ndtr
    from scipy.stats import truncnorm

    import engine.gaussian.highdim.cones as cones
    import engine.gaussian.highdim.sliced as sl
    from engine.gaussian.polytopes import polytope_moments_arrays
    from engine.polytope import Polytope

    rng = np.random.default_rng(3)
    a, b = np.array([-1.0, -0.5, 0.2, -2.0]), np.array([0.7, 1.5, 2.0, 0.1])
    Nrm, D, V, _, _, _, _ = _box(a, b, 2)
    Lc = np.linalg.cholesky(np.cov(rng.standard_normal((4, 20))) + 0.5 * np.eye(4))
    mu0 = rng.standard_normal(4)
    H = Nrm @ np.linalg.inv(Lc)
    n = np.linalg.norm(H, axis=1)
    poly = Polytope(H / n[:, None], (D + H @ mu0) / n, mu0 + V @ Lc.T, np.zeros((0, 4)), np.zeros((0, 4)))
    mus = mu0 + np.array([[0.0, 0.0, 0.0, 0.0], [0.3, -0.2, 0.5, 0.1], [2.0, 1.0, -1.0, 0.5],
                          [-1.0, 0.5, 0.5, 3.0], [0.1, 0.1, -0.1, 0.0]])
    sliced_rows = []
    real = sl.with_fallback
    monkeypatch.setattr(sl, "with_fallback", lambda *args, **kw: sliced_rows.append(args[1].shape[0]) or real(*args,
                                                                                                               **kw))
    out = polytope_moments_arrays([poly], mus[None], (Lc @ Lc.T)[None])
    assert sum(sliced_rows) == 0  # every pair certified by the cones
    Q, _ = np.linalg.qr(np.random.default_rng(2).standard_normal((4, 4)))
    for i, mu in enumerate(mus):
        shift = Q.T @ np.linalg.solve(Lc, mu0 - mu)
        lo, hi = a + shift, b + shift
        up = lo > 0
        l_hi, l_lo = np.where(up, log_ndtr(-lo), log_ndtr(hi)), np.where(up, log_ndtr(-hi), log_ndtr(lo))
        exact = np.sum(l_hi + np.log1p(-np.exp(l_lo - l_hi)))
        assert abs(out.log_mass[0, i] - exact) <= min(1e-12 * (1.0 + abs(exact)), out.log_mass_error[0, i] + 1e-15)
        np.testing.assert_allclose(out.mean[0, i], mu + Lc @ (Q @ truncnorm.mean(lo, hi)), atol=1e-9)
        np.testing.assert_allclose(out.cov[0, i], Lc @ Q @ np.diag(truncnorm.var(lo, hi)) @ Q.T @ Lc.T, atol=1e-9)
    monkeypatch.setattr(cones, "USE_CONES", False)
    ref = polytope_moments_arrays([poly], mus[None], (Lc @ Lc.T)[None])
    assert sum(sliced_rows) == len(mus)
    np.testing.assert_allclose(out.log_mass, ref.log_mass, atol=1e-12)
    # the tiny box around its mean: the cones flag it, the slices take it
    Nt, Dt, Vt, Rt, exact_t, _, _ = _box(*BOXES[3], 1)
    poly_t = Polytope(Nt, Dt, Vt, Rt, np.zeros((0, 4)))
    monkeypatch.setattr(cones, "USE_CONES", True)
    sliced_rows.clear()
    out_t = polytope_moments_arrays([poly_t], np.zeros((1, 1, 4)), np.eye(4)[None], moments=0)
    assert sliced_rows == [1]
    assert abs(out_t.log_mass[0, 0] - exact_t) <= out_t.log_mass_error[0, 0] + 1e-15


def test_same_bits_across_runs_and_threads(monkeypatch):
    """The cones run in one thread per call, in a fixed order: two runs and 1 vs 2 worker threads (which the slices'
    S = 3 kernel would use) give the same bits, through the S = 4 batch too."""
    from engine.gaussian.polytopes import polytope_moments_arrays
    from engine.polytope import Polytope

    Nrm, D, V, R, _, _, _ = _box(*BOXES[5], 1)
    poly = Polytope(Nrm, D, V, R, np.zeros((0, 4)))
    mus = np.random.default_rng(1).normal(0, 0.5, (1, 3, 4))
    runs = []
    for threads in ("1", "2", "2"):
        monkeypatch.setenv("DGNEXACT_THREADS", threads)
        out = polytope_moments_arrays([poly], mus, np.eye(4)[None])
        runs.append((out.log_mass, out.log_mass_error, out.mean, out.cov))
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            np.testing.assert_array_equal(a, b)


def test_misread_incidences_flag_the_pairs():
    """A vertex moved off its facets (beyond the incidence tolerance) leaves flags missing: the combinatorial check
    flags every pair instead of summing an incomplete decomposition."""
    Nrm, D, V, R, _, _, _ = _box(np.array([-1.0, -0.5, 0.2, -2.0]), np.array([0.7, 1.5, 2.0, 0.1]), 1)
    bad = V.copy()
    bad[3] += 1e-6
    lm, rel, fl = cone_log_mass(Nrm, D[None], bad[None], R)
    assert fl[0] and not np.isfinite(rel[0])


def test_certified_moments_meet_the_rule_on_random_boxes():
    """The moment rule (``MEAN_TOL``, ``COV_TOL`` = 8e-9, issue 14's 1e-8 posterior target): on 40 random rotated
    boxes (some sides infinite) at 3 means each, every pair :func:`certified` accepts at tol 1e-10 has its whitened
    mean and covariance within the rule of the closed forms (independent truncated normals), and within its own
    bounds; the rule accepts most pairs."""
    from engine.gaussian.highdim.cones import COV_TOL, MEAN_TOL, certified

    accepted, worst = 0, 0.0
    for k, lo, hi, (Nrm, D, V, R), shift, Q in _random_translated_boxes(11):
        out = cone_moments(Nrm, D[None] - shift @ Nrm.T, V[None] - shift[:, None, :], R)
        ok = certified(out, np.full(3, 1e-10), 2, "absolute")
        for m in np.nonzero(ok)[0]:
            z = Q.T @ shift[m]
            _, _, _, _, _, mean, cov = _box(lo - z, hi - z, k)
            em, ec = np.abs(out[1][m] - mean).max(), np.abs(out[2][m] - cov).max()
            assert em <= min(out[4][m, 0], MEAN_TOL) and ec <= min(out[4][m, 1], COV_TOL), (k, m, em, ec)
            worst = max(worst, em, ec)
            accepted += 1
    assert accepted >= 100


def test_threaded_pairs_give_the_same_bits(monkeypatch):
    """``cone_moments`` splits a region's pairs over worker threads (``PAIRS_PER_THREAD`` at least a thread): 1, 2
    and 3 threads, with pieces of one pair, give the same bits as one call over all the rows."""
    import engine.gaussian.highdim.cones as cones

    Nrm, D, V, R, _, _, _ = _box(*BOXES[0], 1)
    shift = np.random.default_rng(4).normal(0, 0.7, (13, 4))
    args = (Nrm, D[None] - shift @ Nrm.T, V[None] - shift[:, None, :], R)
    monkeypatch.setattr(cones, "PAIRS_PER_THREAD", 1)
    runs = []
    for threads in ("1", "2", "3"):
        monkeypatch.setenv("DGNEXACT_THREADS", threads)
        runs.append(cone_moments(*args))
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            np.testing.assert_array_equal(a, b)
    assert np.isfinite(runs[0][0]).all()


def test_cone_mass_rule_takes_bars_up_to_cone_mass_tol():
    """``certified`` takes a pair whose mass bar is within ``CONE_MASS_TOL`` (1e-9) even below a 1e-10 tolerance,
    not one above it, and keeps a looser caller tolerance; on a rotated box the certified pair's error is within
    its bar (closed form)."""
    from engine.gaussian.highdim.cones import CONE_MASS_TOL, certified

    Nrm, D, V, R, exact, _, _ = _box(*BOXES[0], 1)
    out = list(cone_moments(Nrm, np.repeat(D[None], 3, 0), np.repeat(V[None], 3, 0), R, moments=0))
    assert abs(np.expm1(out[0][0] - exact)) <= out[3][0] <= 1e-10
    out[3] = np.array([0.5 * CONE_MASS_TOL, 2.0 * CONE_MASS_TOL, 2.0 * CONE_MASS_TOL])
    ok = certified(tuple(out), np.array([1e-10, 1e-10, 1e-8]), 0, "absolute")
    assert ok.tolist() == [True, False, True]
