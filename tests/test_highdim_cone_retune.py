"""S' = 4 cones, tolerances from the pair's own mass (issue 14, s4p; ``cone_kernel.retuned``).

``sliced.pair_tolerances`` sets a pair's tolerance from a bound of its posterior weight, ``e^lws`` times the
closest-point / volume bound of its mass; the kernel then certifies the pair against the tolerance that its own mass
gives (``e^lws e^lm (1 + rel)``, also a bound of the weight) where that is looser. Checked here:
- the formula is ``pair_tolerances``' own (its code, not a copy) with the mass bound in place of the closest-point one;
- on rotated 4-D boxes (mass a product of normal-cdf differences at 40 digits, ``test_highdim_cone_bar._box``) with
  the mean 1e-8..1e-3 from a ridge, an edge or a vertex, or 1-6 away, at weight scales that put the weight at 1e-12 to
  1e-2: every certified row's bar covers the closed form, its weighted bar stays within the contract
  ``LOOSEN_WEIGHT * 1e-10`` (against the exact weight), the rows certified without a weight scale stay certified with
  the same bits, and some rows are certified only with it (the test exercises the new path).
"""

from __future__ import annotations

import numpy as np
from test_highdim_cone_bar import _box, _near_box
from test_highdim_cone_light import _far_box

from engine.gaussian.constants import LOOSEN_WEIGHT
from engine.gaussian.highdim import cones, sliced
from engine.gaussian.highdim.cone_kernel import MAX_TOL, cone_pairs, retuned


def test_retuned_is_pair_tolerances_with_the_mass():
    """``retuned(tol, lws, lm, rel)`` is ``max(tol, pair_tolerances(lws, lm + log1p(rel)))`` (to rounding), ``tol`` for
    flagged rows, bars above 1/2 and rows without a weight scale."""
    assert MAX_TOL == sliced.MAX_TOL
    rng = np.random.default_rng(14)
    lws = rng.uniform(-60.0, 10.0, 400)
    lm = rng.uniform(-80.0, 0.0, 400)
    rel = 10 ** rng.uniform(-16, np.log10(0.5), 400)
    tol = 10 ** rng.uniform(-10, -4, 400)
    _, ref = sliced.pair_tolerances(lws, lm + np.log1p(rel))
    got = np.array([retuned(t, w, m, r, False) for t, w, m, r in zip(tol, lws, lm, rel)])
    np.testing.assert_allclose(got, np.maximum(tol, ref), rtol=1e-12)
    assert np.all(got >= tol) and np.any(got > tol) and np.any(got == tol)
    for args in ((1e-10, -40.0, -5.0, 1e-3, True), (1e-10, -40.0, -5.0, 0.6, False), (1e-10, np.inf, -5.0, 0.0, False),
                 (1e-10, -40.0, -np.inf, 0.0, False), (1e-10, -40.0, -5.0, np.nan, False)):
        assert retuned(*args) == 1e-10


def _cases(seed, n):
    rng = np.random.default_rng(seed)
    for j in range(n):
        box = _box(*_near_box(rng, 2 + j % 3)) if j % 2 else _box(*_far_box(rng, unbounded=j % 4 == 2))
        yield box, rng.uniform(-12.0, -2.0)


def test_retuned_rows_within_their_bars_and_the_contract():
    """48 boxes at log10 weights -12..-2 (tolerance 1e-10 as given): certified rows' masses within their bars of the
    closed form, ``w rel <= LOOSEN_WEIGHT * 1e-10`` or ``rel <= 1e-10`` with ``w`` the exact weight, rows certified
    without the weight scale the same bits with it, and more rows certified with it than without."""
    plain_n, retuned_n = 0, 0
    for (Nrm, D, Yv, Yr, lm0, _, _), log10_w in _cases(5, 48):
        lws = np.array([log10_w * np.log(10.0) - lm0])
        shape = cones.cone_shape(Nrm, D[0], Yv[0], Yr)
        plain = cone_pairs(Nrm, D, Yv, shape, moments=2, tol=1e-10, accuracy="relative")
        got = cone_pairs(Nrm, D, Yv, shape, moments=2, tol=1e-10, accuracy="relative", log_weight_scale=lws)
        assert all(np.array_equal(x, y) for x, y in zip(plain[:6], got[:6]))  # the same rule: only the verdict moves
        assert got[6][0] or not plain[6][0]
        plain_n += int(plain[6][0])
        retuned_n += int(got[6][0])
        if got[6][0]:
            rel = got[3][0]
            assert abs(np.expm1(got[0][0] - lm0)) <= rel
            assert rel <= 1e-9 or 10.0 ** log10_w * rel <= LOOSEN_WEIGHT * 1e-10 * (1.0 + 1e-9)
    assert retuned_n > plain_n
