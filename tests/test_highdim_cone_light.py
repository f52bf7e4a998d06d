"""S' = 4 cones, the light rule (issue 14, lk4): pairs of loose tolerance run the edges' integrals with fewer nodes
(``cones.LIGHT_RULE``: 20 nodes on panels of up to 45 nats, 10 on the panels of at most 4), each flag's term carrying
``cones.LIGHT_REL`` of itself into the bar; the pairs that bar does not certify are run again by the full rule.

Oracles independent of the code under test:
- rotated 4-D boxes, bounded or not, the mean inside, 1e-8..1e-3 from a ridge or an edge, or 1-6 away: mass a product
  of normal-cdf differences, mean and covariance those of independent truncated normals, each axis at 40 digits in
  mpmath (``test_highdim_cone_bar._box``);
- the tiny simplices of ``random_network([4, 16, 16, 5], rng=0, cov_x=0.1)`` (``tests/data/cone_bar_regions.npz``) at
  their stored mean and moved 2-5 away: the simplex of the planes in mpmath (``test_highdim_slice_bar``).
"""

from __future__ import annotations

import math

import mpmath as mp
import numpy as np
import pytest
from test_highdim_cone_bar import REGIONS, _box, _near_box

from engine.gaussian.highdim import cones
from engine.gaussian.highdim.cone_kernel import cone_pairs
from tests.test_highdim_slice_bar import _mp_simplex_log_mass


def _far_box(rng, unbounded):
    """A randomly rotated box (widths 0.2-5) with the mean inside (first coordinates in [-2, 1]) or 1-6 away along
    one to three axes; ``unbounded``: one or two sides at infinity."""
    Q, _ = np.linalg.qr(rng.standard_normal((4, 4)))
    a = rng.uniform(-2, 1, 4)
    for i in rng.choice(4, rng.integers(0, 4), replace=False):
        a[i] = rng.uniform(1, 6)
    b = a + 10 ** rng.uniform(-0.7, 0.7, 4)
    if unbounded:
        for i in rng.choice(4, rng.integers(1, 3), replace=False):
            b[i] = np.inf
    return Q, a, b


def _boxes(seed, n):
    rng = np.random.default_rng(seed)
    for j in range(n):
        if j % 4 == 3:
            yield _box(*_near_box(rng, 2 + j % 2, unbounded=j % 8 == 7))
        else:
            yield _box(*_far_box(rng, unbounded=j % 2 == 1))


def _light_and_full(Nrm, D, Yv, Yr):
    light = cones.cone_moments(Nrm, D, Yv, Yr, moments=2, light=np.ones(D.shape[0], dtype=bool))
    full = cones.cone_moments(Nrm, D, Yv, Yr, moments=2)
    return light, full


@pytest.mark.parametrize("seed", [1, 2])
def test_light_rule_bars_cover_rotated_boxes(seed):
    """48 boxes a seed: the light rule's mass, mean and covariance within their bars of the closed forms, and within
    the light bar of the full rule (the light rule's errors on boxes stay below the full rule's bar: the flag
    integrals below are where it matters)."""
    worst = 0.0
    for Nrm, D, Yv, Yr, lm0, m0, c0 in _boxes(seed, 48):
        (lm, m, c, rel, eb, fl), full = _light_and_full(Nrm, D, Yv, Yr)
        assert not fl[0] and not full[5][0]
        err = abs(np.expm1(lm[0] - lm0))
        assert err <= rel[0]
        assert abs(np.expm1(lm[0] - full[0][0])) <= rel[0] + full[3][0]
        assert np.abs(m[0] - m0).max() <= eb[0, 0]
        assert np.abs(c[0] - c0).max() <= eb[0, 1]
        worst = max(worst, abs(np.expm1(lm[0] - full[0][0])) / full[3][0])
    assert worst > 0.0


@pytest.mark.parametrize("r", [9474, 3701, 11039, 19799])
def test_light_rule_bars_cover_partition_simplices(r):
    """Four tiny simplices of [4, 16, 16, 5] at their stored mean and moved 2 and 5 away: the light rule's mass within
    its bar of the mpmath simplex (flagged, the signed sum cancelling past float64, exactly where the full rule is)."""
    Nrm, D, Yv = (REGIONS[f"w16_{r}_{k}"] for k in ("Nrm", "D", "Yv"))
    rng = np.random.default_rng(r)
    for dist in (0.0, 2.0, 5.0):
        s = rng.standard_normal(4)
        s *= dist / np.linalg.norm(s)
        D2, Y2 = D - Nrm @ s, Yv - s
        exact = _mp_simplex_log_mass(Nrm, D2, Y2)
        lm, _, _, rel, _, fl = cones.cone_moments(Nrm, D2[None], Y2[None], np.zeros((0, 4)), moments=0,
                                                  light=np.ones(1, dtype=bool))
        full_flagged = cones.cone_moments(Nrm, D2[None], Y2[None], np.zeros((0, 4)), moments=0)[5][0]
        assert fl[0] == full_flagged and (dist > 0.0 or not fl[0])
        if not fl[0]:
            assert abs(float(mp.expm1(mp.mpf(float(lm[0])) - exact))) <= rel[0]


def test_loose_pairs_light_or_the_full_bits():
    """``cone_pairs`` at tolerance 1e-4 (the light rule first): every certified row within its bar of the closed form,
    every row either certified by the light rule or bit for bit the full rule's (tolerance 1e-10); no row the full
    rule certifies at 1e-4 is left uncertified."""
    n_light = 0
    for Nrm, D, Yv, Yr, lm0, _, _ in _boxes(3, 24):
        shape = cones.cone_shape(Nrm, D[0], Yv[0], Yr)
        got = cone_pairs(Nrm, D, Yv, shape, moments=2, tol=1e-4, accuracy="relative")
        full = cone_pairs(Nrm, D, Yv, shape, moments=2, tol=1e-10, accuracy="relative")
        assert abs(np.expm1(got[0][0] - lm0)) <= got[3][0]
        same = all(np.array_equal(x, y) for x, y in zip(got[:6], full[:6]))
        n_light += int(not same)
        assert (got[6][0] and not same) or same
        full4 = cones.certified(cones.cone_moments(Nrm, D, Yv, Yr, moments=2, shape=shape), np.full(1, 1e-4), 2,
                                "relative")
        assert got[6][0] or not full4[0]
    assert n_light >= 12


# The flags (a, b, s_lo, s_hi, d^2) of [4, 16, 16, 5]'s points 0-1 whose light-rule terms were farthest from the full
# rule's (1.5e-10 to 2.0e-10 relative; 5.5 M flags in all): edges crossing the foot of the perpendicular ~3 away
WORST_FLAGS = [
    (0.1425711, 2.959796, -3.024943, -0.06324179, 0.2734372),
    (1.358534, 2.681546, -3.024943, -0.06324179, 0.02438837),
    (1.242274, 2.752152, -3.272228, 2.996188, 2.302919),
    (1.260965, 2.681546, -3.024943, -0.06324179, 0.2799701),
    (0.8530121, 2.764558, -3.272228, 2.996188, 3.050091),
    (0.8922289, 2.752152, -3.272228, 2.996188, 3.050091),
]


def _random_flags(rng, n):
    """Flags like the partition's: ``a, b`` 0.05-4, the edge from the foot or across it (or unbounded), ``d^2`` 0-9."""
    out = []
    for _ in range(n):
        a, b = 10 ** rng.uniform(-1.3, 0.6, 2)
        lo = rng.uniform(-6, 3)
        hi = lo + 10 ** rng.uniform(-1, 1) if rng.random() < 0.8 else math.inf
        out.append((a, b, lo, hi, rng.uniform(0, 9)))
    return out


def _mp_flag_logs(a, b, lo, hi, d2):
    """``(log E', log phi C)`` of one flag (``cones.edge_flag_logs``' two rows): ``int_0^inf e^{-(R + s^2)/2} DTheta(s)
    s / sqrt(c + s^2) [1 / (R + s^2), 1 / 4 pi^2] ds`` by mpmath quadrature split at the kinks ``|s_lo|, |s_hi|``."""
    mp.mp.dps = 30
    a, b, lo, d2 = (mp.mpf(float(x)) for x in (a, b, lo, d2))
    hi = mp.mpf(float(hi)) if math.isfinite(hi) else mp.inf
    c = a * a + b * b
    R = d2 + c

    def theta(s):
        return mp.atan(a * s / (b * mp.sqrt(c + s * s))) if mp.isfinite(s) else mp.atan(a / b)

    def dtheta(s):
        return theta(min(max(s, lo), hi)) - theta(min(max(-s, lo), hi))

    pts = sorted({mp.mpf(0), abs(lo), abs(hi)} - {mp.inf}) + [mp.inf]
    e = mp.quad(lambda s: mp.exp(-(R + s * s) / 2) / (R + s * s) * dtheta(s) * s / mp.sqrt(c + s * s), pts)
    f = mp.quad(lambda s: mp.exp(-(R + s * s) / 2) * dtheta(s) * s / mp.sqrt(c + s * s), pts)
    return mp.log(e), mp.log(f / (4 * mp.pi ** 2))


def test_light_flag_integrals_within_light_rel():
    """The flag integrals themselves: the light rule within ``LIGHT_REL`` of mpmath on the worst flags of the audit and
    on 40 random ones (the full rule within its ``TERM_ULPS`` bar), and on the worst flags beyond the full rule's
    per-term bar ``TERM_ULPS eps (1 + |log term|)``: without the ``LIGHT_REL`` term the light bars do not cover."""
    worst_ratio, beyond_full_bar = 0.0, 0
    for a, b, lo, hi, d2 in WORST_FLAGS + _random_flags(np.random.default_rng(11), 40):
        fl = np.array([[a, b, a * a + b * b, lo, hi]])
        want = _mp_flag_logs(a, b, lo, hi, d2)
        for rule in (cones.LIGHT_RULE, cones.FULL_RULE):
            out = np.empty((2, 1))
            ok, _ = cones.edge_flag_logs_rule(d2 + a * a + b * b, np.array([d2]), fl, out, rule)
            assert ok
            for row in range(2):
                err = abs(float(mp.expm1(mp.mpf(float(out[row, 0])) - want[row])))
                term_bar = cones.TERM_ULPS * cones.EPS * (1.0 + abs(out[row, 0]))
                if rule is cones.FULL_RULE:
                    assert err <= term_bar
                    continue
                assert err <= cones.LIGHT_REL
                worst_ratio = max(worst_ratio, err / cones.LIGHT_REL)
                beyond_full_bar += err > term_bar
    assert worst_ratio < 0.5 and beyond_full_bar >= 6
