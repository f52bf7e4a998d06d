"""The vector ``exp`` of ``engine.gaussian.fastexp`` (the S = 2 kernel's graded edge nodes) against 40-digit mpmath.

Oracle: ``mpmath.exp`` at 40 digits, the error measured in units in the last place of the correctly rounded result
(``np.spacing`` of the nearest double), as scipy's ``_mptestutils`` does. Points: a dense grid over the whole normal
range, a denser one over the kernel's arguments ``[-45, 0]``, the worst places of the range reduction (``|r|`` at its
largest, ``x = (k + 1/2) ln 2``), and the extremes (overflow, underflow into subnormals, 0, +-inf, NaN).
"""

import math

import mpmath as mp
import numpy as np

from engine.gaussian import fastexp as FE

_TINY = 2.0 ** -1074  # the smallest subnormal


def _ulp_errors(x, got):
    """|got - exp(x)| / ulp(exp(x)), exp(x) to 40 digits."""
    out = np.empty(x.size)
    with mp.workdps(40):
        for i, (xi, gi) in enumerate(zip(x.tolist(), got.tolist())):
            want = mp.exp(mp.mpf(xi))
            out[i] = float(abs(mp.mpf(gi) - want) / mp.mpf(np.spacing(float(want))))
    return out


def _worst(x, got, err):
    i = np.argsort(err)[-3:][::-1]
    return "; ".join(f"x={x[j]!r}: got {got[j]!r} ({err[j]:.3g} ulp)" for j in i)


def test_normal_range_within_the_claimed_ulps():
    rng = np.random.default_rng(0)
    k = np.arange(-1020, 1023)
    x = np.concatenate([
        np.linspace(-708.39, 709.78, 20001),
        rng.uniform(-45.0, 0.0, 15000),  # the kernel's node exponents (40-nat window)
        rng.uniform(-1.0, 1.0, 5000),
        (k + 0.5) * math.log(2.0) * (1 + rng.uniform(-1e-15, 1e-15, k.size)),  # |r| at its largest
        np.nextafter(k * math.log(2.0), np.inf),
        [709.78, 709.782712893384, -708.3964185322641, 1e-300, -1e-300, 5e-324, 1e-16, -1e-16, 0.5, -0.5],
    ])
    x = x[(x >= -708.39) & (x <= 709.782712893384)]
    got = FE.fast_exp_many(x)
    err = _ulp_errors(x, got)
    bad = err > FE.FAST_EXP_ULPS
    assert not bad.any(), f"{bad.sum()} of {x.size} beyond {FE.FAST_EXP_ULPS} ulp, worst: {_worst(x, got, err)}"


def test_subnormal_results_rounded_once():
    """Below -708.39 the result is subnormal: within one subnormal step of exp(x) (rounded once from the normal
    ``p 2^k1``), and 0 beyond -745.2."""
    x = np.concatenate([np.linspace(-745.13, -708.4, 4001), [-745.1332191019411]])
    got = FE.fast_exp_many(x)
    with mp.workdps(40):
        err = [float(abs(mp.mpf(g) - mp.exp(mp.mpf(v))) / _TINY) for v, g in zip(x.tolist(), got.tolist())]
    assert max(err) <= 1.0
    assert np.all(FE.fast_exp_many(np.array([-745.2, -746.0, -1e4, -1e300])) == 0.0)


def test_special_arguments():
    x = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 709.79, 710.0, 1e300, -np.nan, 709.782712893384])
    got = FE.fast_exp_many(x)
    assert got[0] == 1.0 and got[1] == 1.0
    assert got[2] == np.inf and got[3] == 0.0
    assert np.isnan(got[4]) and np.isnan(got[8])
    assert np.all(got[5:8] == np.inf)
    assert got[9] == np.exp(709.782712893384)  # the largest finite result
    # lengths that are not a multiple of the vector width
    for n in (1, 7, 9, 17):
        y = np.linspace(-3.0, 1.0, n)
        np.testing.assert_allclose(FE.fast_exp_many(y), np.exp(y), rtol=3e-16)
