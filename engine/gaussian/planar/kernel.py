"""S = 2 per-pair kernel: the Owen-T edge formula and divergence-theorem moments, compiled with numba.

Theorem 1's ``Phi_omega(mu_omega(x), Sigma_omega)`` (eq. 5) and the Sec. 4.1 moments for one (region, point) pair
(NOTES §3: "in 2-D a polygon's Gaussian mass has a closed form through Owen's T function").

The same mathematics, branch for branch, as the numpy reference path ``planar.planar_moments``
(``planar.reference._edge_log_B`` for the edge masses ``B_i``, ``interval.standard_interval_moments`` for the
edge masses and means of the moment formula, the cancellation analysis of ``planar.planar_log_mass``)
but one pass per (region, point) pair with the edge intervals read off the per-region adjacency of
``planar.batch.RegionGeometry``. ``tests/test_planar_kernel.py`` checks the two paths agree within
their error bounds on every branch, and both against mpmath. The numpy arrays of a batch would be
(pairs x edges x nodes); here every pair stays in registers, and a graded edge's nodes run 8 at a time on vectors
(``fastexp.panel_sums``): about 0.5 us per pair on one core.

Two refinements over the reference path, both about small polygons, whose mass is a difference of
sector masses of order 1: (1) each vertex is computed once, by one of its two lines, and the other edge
takes its end from that point, so the two angular sectors meet exactly (computing it twice left gaps
of angle ``eps / sin(crossing angle)``, measured at 1e-11 relative on a triangle of mass 3e-5); the
bound keeps the remaining residual term (``shared_vertex_log_error``); (2) a pair whose bound still
exceeds the threshold is integrated by a positive cubature when the polygon is small
(:func:`small_polygon`), which has no cancellation at all. Pairs of provably small posterior weight get
proportionally looser thresholds (:func:`loosen_factor`) and, past e^-50, are skipped.

Owen's T and erfcx are scipy's own (``scipy.special.cython_special``), bound by symbol name so that
the compiled kernel can be cached on disk (``cache=True``): a fresh process loads it instead of
compiling.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import llvmlite.binding as llvm
import numba
import numpy as np
from numba import types
from numba.extending import get_cython_function_address

from .. import constants as C
from ..fastexp import FAST_EXP_ULPS, exp8, panel_sums
from ..threads import run_split


def _scipy_special(symbol: str, cname: str, nargs: int):
    llvm.add_symbol(symbol, get_cython_function_address("scipy.special.cython_special", cname))
    return types.ExternalFunction(symbol, types.float64(*([types.float64] * nargs)))


_owens_t = _scipy_special("dgnexact_owens_t", "owens_t", 2)
_erfcx = _scipy_special("dgnexact_erfcx", "__pyx_fuse_1erfcx", 1)  # fuse 1: the float64 version

# one definition each, shared with the numpy reference path (constants)
_EPS, _LOG_2PI, _LOG_SQRT_2PI, _LOG_HALF, _SQRT2, _SQRT_HALF_PI, _INF = C.EPS, C.LOG_2PI, C.LOG_SQRT_2PI, C.LOG_HALF, \
    C.SQRT2, C.SQRT_HALF_PI, C.INF
_X20, _W20, _OWEN_H, _OWEN_REL, _WINDOW, _NEAR_FOOT = C.X20, C.W20, C.OWEN_H, C.OWEN_REL, C.EDGE_WINDOW, C.NEAR_FOOT
_GAUSS_PANEL = C.GAUSS_PANEL
_NEAR_GRADES = C.NEAR_GRADES
_X12, _W12, _X24, _W24, _X64, _W64 = C.X12, C.W12, C.X24, C.W24, C.X64, C.W64
_NARROW, _DEEP, _NEGLIGIBLE_EXPONENT, _MILLS_DEPTH = C.INTERVAL_NARROW, C.INTERVAL_DEEP, C.NEGLIGIBLE_EXPONENT, \
    C.MILLS_DEPTH
_DROP = C.EDGE_DROP_NATS
FALLBACK_REL = C.PLANAR_KERNEL_FALLBACK_REL  # relative mass error bound above which a pair goes to the exact path
LOOSEN_WEIGHT = C.LOOSEN_WEIGHT
MAX_LOOSEN = C.MAX_LOOSEN_REL / FALLBACK_REL  # mass estimates are never accepted beyond 1e-6 relative error
NEGLIGIBLE_NATS = C.NEGLIGIBLE_NATS

_jit = numba.njit(cache=True, nogil=True, error_model="numpy")
_X10, _W10 = np.polynomial.legendre.leggauss(10)  # short one-panel edges (edge_graded, _short_rule)
_SHORT_SPAN = 4.0  # nats the exponent of a short edge's integrand may vary by
_SHORT_10_WIDTH = 1.5  # longest edge window for the 10-point rule ...
_SHORT_12_WIDTH = 2.0  # ... and for the 12-point rule beyond dist / 2
_Z_SPAN = 20.0  # nats a 20-point panel's exponent may span for the edge's moments from its nodes (_graded_parts)


@_jit
def _lse_pair(a, b):
    """log(e^a + e^b), -inf when both are -inf."""
    m = max(a, b)
    if m == -_INF:
        return -_INF
    return m + math.log(math.exp(a - m) + math.exp(b - m))


@_jit
def _gl_interval(a, w, nodes, weights):
    """sum of weights * f and of weights * f * u, f = exp(-a u - u^2/2), u = w/2 (x + 1)."""
    m0 = 0.0
    m1 = 0.0
    for k in range(nodes.size):
        u = 0.5 * w * (nodes[k] + 1.0)
        f = math.exp(-a * u - 0.5 * u * u) * weights[k]
        m0 += f
        m1 += f * u
    return m0, m1


@_jit
def _mills_depth(a):
    """Terms of the Mills-ratio continued fraction at ``a >= 4``: ``MILLS_DEPTH`` (80), fewer where the truncation is
    far below rounding (on 4.5 million points of [4, 1e12], dense at the thresholds, the result is the double of 80
    terms at all but 21 points, which differ by one ulp)."""
    if a >= 9.0:
        return 20
    if a >= 6.5:
        return 30
    if a >= 5.0:
        return 40
    return _MILLS_DEPTH


@_jit
def interval_log_mass_mean(alpha, beta):
    """``(log Z, mean)`` of N(0, 1) truncated to [alpha, beta]: ``interval.standard_interval_moments``."""
    flip = (alpha + beta) > 0.0
    if flip:
        alpha, beta = -beta, -alpha
    w = beta - alpha
    a = -beta
    finite_w = math.isfinite(w)
    if finite_w:
        far = a * w + 0.5 * w * w
        narrow = w * (1.0 + abs(a)) <= _NARROW
    else:
        far = _INF
        narrow = False
    straddle = (not narrow) and beta > 0.0
    tail = (not narrow) and not straddle
    deep = tail and a >= _DEEP
    quadrature = narrow or (deep and far < _NEGLIGIBLE_EXPONENT)
    if quadrature:
        span = abs(a) * w + 0.5 * w * w
        if span <= 2.0:
            m0, m1 = _gl_interval(a, w, _X12, _W12)
        elif span <= 12.0:
            m0, m1 = _gl_interval(a, w, _X24, _W24)
        else:
            m0, m1 = _gl_interval(a, w, _X64, _W64)
        log_z = -0.5 * beta * beta - _LOG_SQRT_2PI + math.log(0.5 * w * m0)
        mean = beta - m1 / m0
    elif straddle:
        z = 0.5 * (math.erf(beta / _SQRT2) - math.erf(alpha / _SQRT2))
        pa = math.exp(-0.5 * alpha * alpha - _LOG_SQRT_2PI) if math.isfinite(alpha) else 0.0
        pb = math.exp(-0.5 * beta * beta - _LOG_SQRT_2PI) if math.isfinite(beta) else 0.0
        log_z = math.log(z)
        mean = (pa - pb) / z
    else:
        wt0 = w if finite_w else 0.0
        e_w = math.exp(-a * wt0 - 0.5 * wt0 * wt0) if finite_w else 0.0
        far_term = e_w * _erfcx((a + wt0) / _SQRT2) if finite_w else 0.0
        m0 = _SQRT_HALF_PI * (_erfcx(a / _SQRT2) - far_term)
        log_z = -0.5 * beta * beta - _LOG_SQRT_2PI + math.log(m0)
        if deep:  # half-line deep tail: Laplace's continued fraction of the Mills ratio
            t = 0.0
            for k in range(_mills_depth(a), 1, -1):
                t = k / (a + t)
            eu = 1.0 / (a + t)
        else:
            eu = (1.0 - e_w) / m0 - a
        mean = beta - eu
    if flip:
        mean = -mean
    return log_z, mean


@_jit
def edge_theta(h, s_lo, s_hi):
    """log B of an edge straddling its foot, ``h >= 8``: 2 x 20-point Gauss-Legendre in the angle over the
    40-nat window (``planar._edge_log_B``)."""
    half = math.sqrt(2.0 * _WINDOW)
    xa = math.atan(max(s_lo, -half) / h)
    xb = math.atan(min(s_hi, half) / h)
    total = 0.0
    for lo, length in ((xa, -xa), (0.0, xb)):
        for k in range(_X20.size):
            s = h * math.tan(lo + 0.5 * length * (_X20[k] + 1.0))
            total += math.exp(-0.5 * s * s) * 0.5 * length * _W20[k]
    return -0.5 * h * h - _LOG_2PI + math.log(total)


@_jit
def _short_rule(a, wb, dist):
    """Nodes and weights for a one-panel edge ``[0, wb]``: fewer than 20 where they integrate as accurately.

    The integrand ``exp(-a u - u^2/2) h / (h^2 + (a + u)^2)`` has its poles at distance ``dist = sqrt(a^2 + h^2)``
    from ``u = 0`` and its exponent varies by ``span = a wb + wb^2 / 2``. With ``span <= 4``: 10 points for
    ``wb <= dist / 4`` and ``wb <= 1.5`` (the Gaussian's own curvature), 12 for ``wb <= dist / 2`` or
    (``wb <= dist`` and ``wb <= 2``), 16 for ``wb <= dist``. Each is exact to rounding there (at most the 20-point
    rule's error, 1.0e-15 to 1.8e-15 in log B, against 40-digit mpmath on 3400 random edges including the corners
    a ~ 0 and h ~ 0; the 10-point rule reaches 3e-13 at ``wb = 2.8``, the 12-point 7e-15 at ``wb = dist = 2.8``:
    tests/test_s2_speed_paths.py); they cut the exponentials of most edges of a batch by 20-50 %."""
    n = _short_rule_size(a, wb, dist)
    if n == 10:
        return _X10, _W10
    if n == 12:
        return _X12, _W12
    if n == 16:
        return _X16, _W16
    return _X20, _W20


@_jit
def _short_rule_size(a, wb, dist):
    """The number of nodes :func:`_short_rule` takes for a one-panel edge (10, 12, 16 or 20); the padded SIMD rules
    of :func:`_one_panel` follow the same choice."""
    if a * wb + 0.5 * wb * wb <= _SHORT_SPAN and wb <= dist:
        if wb <= 0.25 * dist and wb <= _SHORT_10_WIDTH:
            return 10
        if wb <= 0.5 * dist or wb <= _SHORT_12_WIDTH:
            return 12
        return 16
    return 20


@_jit
def _pole_distance(dist):
    """The graded rule's first panel length ``rho``: the distance ``sqrt(a^2 + h^2)`` from the edge's near end to the
    integrand's poles ``s = +-i h``, so that every panel ``[rho (2^k - 1), rho (2^(k+1) - 1)]`` is no longer than its
    distance to them. An edge at the poles (``h = a = 0``, where ``B = 0``) takes ``NEAR_FOOT``.

    This was ``max(dist, NEAR_FOOT)`` until 2026-12-07, on the premise that Owen's T takes every one-sided edge
    within ``NEAR_FOOT``; it leaves the ones whose difference cancels (``OWEN_REL``), and there a first panel up to
    ``NEAR_FOOT / dist`` times the poles' distance returned ``B`` up to 100 % off under the rule's 1.2e-15 bar
    (``h = 1e-8``, near end at ``3.5 h``; tests/test_s2_near_foot_edges.py against 40-digit mpmath).

    It is at most ``GAUSS_PANEL`` (6): the poles bound the panels near the foot, the Gaussian factor
    ``e^{-a u - u^2/2}`` far from it. Until 2026-12-07 a far edge (``h >= 8.9``) with its near end at the foot took one
    20-point panel over the whole 40-nat window ``[0, 8.94]``, 1.2e-13 short under the rule's 1.2e-15 (the quadrant
    ``{x >= 9, y >= 0}`` 2x its pair's bar; tests/test_s2_far_edges.py); over ``[0, 6]`` the rule is exact to 3e-19.
    Edges with ``a < 3.7`` (``wb > 6``) and ``h > 4.9`` take one panel more; no other edge changes."""
    return min(dist, _GAUSS_PANEL) if dist > 0.0 else _NEAR_FOOT


@_jit
def _panel_count(wb, rho):
    """``ceil(log2(wb / rho + 1))`` geometric panels of length ``rho 2^k`` cover ``[0, wb]``: at most 8
    for ``rho >= NEAR_FOOT`` (``wb <= sqrt(80) < 0.05 (2^8 - 1)``), at most ``NEAR_GRADES`` below it."""
    return int(min(max(math.ceil(math.log2(wb / rho + 1.0) - 1e-12), 1.0), float(_NEAR_GRADES)))


@_jit
def _graded(h, s_lo, s_hi):
    """:func:`edge_graded` and, for one short panel that covers the whole edge, the moments of the edge's own 1-D
    normal from the same exponentials: ``(log B, z0, z1)`` with ``z0 = int_0^w exp(-a u - u^2/2) du`` and
    ``z1 = int_0^w u exp(-a u - u^2/2) du`` (``w = s_hi - s_lo``, ``u`` from the end ``a`` nearest the foot), or
    ``z0 = 0`` when the panel is long or cut at the window. The short rules integrate this pole-free factor at
    least as well as the Cauchy-weighted ``B`` (:func:`_short_rule`)."""
    flip = s_hi <= 0.0
    a = -s_hi if flip else s_lo
    b = -s_lo if flip else s_hi
    dist = math.sqrt(a * a + h * h)
    rho = _pole_distance(dist)
    uw = math.sqrt(a * a + 2.0 * _WINDOW) - a
    wb = min(b - a, uw)
    # wb <= rho: log2(wb / rho + 1) <= 1, so one panel -- the formula's own value, without its log2
    npan = 1 if wb <= rho else _panel_count(wb, rho)
    xs, ws = _short_rule(a, wb, dist) if npan == 1 else (_X20, _W20)
    whole = xs.size < 20 and wb == b - a
    total = 0.0
    z0 = 0.0
    z1 = 0.0
    left = 0.0
    for j in range(npan):
        right = wb if j == npan - 1 else min(rho * (2.0 ** (j + 1) - 1.0), wb)
        length = right - left
        for k in range(xs.size):
            u = left + 0.5 * length * (xs[k] + 1.0)
            s = a + u
            e = math.exp(-a * u - 0.5 * u * u)
            total += e * h / (h * h + s * s) * 0.5 * length * ws[k]
            if whole:
                z0 += e * ws[k]
                z1 += e * ws[k] * u
        left = right
    return -0.5 * (h * h + a * a) - _LOG_2PI + math.log(total), 0.5 * wb * z0, 0.5 * wb * z1


def _padded_rule(n, size):
    """The n-point Gauss-Legendre rule padded to ``size`` nodes (a multiple of 8) with zero weights: at 0, the last at
    1 and the one before it at -1 (the panel's ends, whose integrands ``fastexp.panel_sums`` returns)."""
    assert size - n >= 2
    x, w = np.polynomial.legendre.leggauss(n)
    x = np.concatenate([x, np.zeros(size - n)])
    x[-1] = 1.0
    x[-2] = -1.0
    return x, np.concatenate([w, np.zeros(size - n)])


# the rules of _short_rule / _graded padded to 16 or 24 nodes: fastexp.panel_sums takes 8 nodes per vector
_P10, _PW10 = _padded_rule(10, 16)
_P12, _PW12 = _padded_rule(12, 16)
_P16, _PW16 = _padded_rule(16, 24)
_P20, _PW20 = _padded_rule(20, 24)
# relative error bound of a graded edge's B by the SIMD rules: the rules' own 1e-15 (40-digit mpmath,
# tests/test_s2_speed_paths.py) plus the vector exp's FAST_EXP_ULPS ulps in each (positive) node term
GRADED_REL = 1e-15 + FAST_EXP_ULPS * _EPS


@_jit
def _graded_parts(h, s_lo, s_hi):
    """:func:`_graded` (the same panels, the same rules) by ``fastexp.panel_sums``, in parts: ``(E, total, z0, z1,
    far)`` with ``B = total e^E`` (to ``GRADED_REL`` relative), ``E = -(h^2 + a^2) / 2 - log 2 pi`` the exponent of the
    edge's end ``a`` nearest the foot (so also the exponent of that vertex's error term), ``far`` an upper bound of
    ``exp(-a w - w^2 / 2)`` (``w = b - a``: the far end's exponent is ``E + log far``; exact unless the 40-nat
    window cut the edge), ``z0 = int_0^wb exp(-a u - u^2/2) du`` and ``z1 = int_0^wb u exp(-a u - u^2/2) du`` from the
    same nodes wherever every panel's exponent spans at most ``_Z_SPAN`` nats (else 0, 0: the caller takes the interval
    rule). The kernel's edges; :func:`_graded` (libm's exp, one node at a time) stays the numpy reference path's.

    The moments' sums: a short rule's panel spans at most 4 nats (:func:`_short_rule`), a 20-point panel up to 20,
    where Gauss-Legendre integrates ``exp`` of the (concave) quadratic to 2e-14 relative in ``z0`` and 4e-15 in ``z1``
    (numpy's 20-point weights themselves carry ~1e-15; against mpmath: tests/test_s2_speed_paths.py), inside the
    interval rule's 1e-13 in log mass and 1e-12 standard deviations in the mean. Where the 40-nat window cut the edge
    (``wb < b - a``) the rest is below ``e^-40 / (a + wb)`` against ``z0 >= e^-1.5 / (a + 1)``: under 4e-17
    relative."""
    e, total, z0, z1, far, _ = _graded_scaled(h, s_lo, s_hi, 0.0, False)
    return e, total, z0, z1, far


@_jit
def _graded_scaled(h, s_lo, s_hi, ref, relative):
    """:func:`_graded_parts` with every node's exponential taken relative to ``e^ref`` when ``relative``: ``(E, total,
    z0, z1, far, first)`` with ``B = total e^ref`` and ``z0``, ``z1``, ``far`` times ``e^(E - ref)``, ``first = e^(E -
    ref)`` (the near end's scale, from the rule's node at the panel's left end) -- the kernel's ``B e^-ref`` without a
    scalar ``exp(E - ref)`` of its own. Each node's ``exp((-a u - u^2/2) + (E - ref))`` rounds its argument once more
    than ``exp(-a u - u^2/2) exp(E - ref)`` did (and skips that product's rounding): a node term ``e^arg`` (``arg < 0``
    in units of ``e^ref``) moves by at most ``eps/2 |arg| e^arg <= eps / (2e)`` of ``e^ref`` times its weight, the
    same order as the former ``exp(fl(E - ref))``'s ``eps/2 |E - ref| e^(E - ref)``; against 40-digit mpmath B stays
    within ``GRADED_REL`` plus the log-space terms' rounding, ``2 eps (h^2 + a^2 + |log B| + |E - ref| + |ref|)``
    (tests/test_s2_speed_paths.py). Not ``relative``: the shift is 0.0, the sums :func:`_graded_parts`'s bit for bit,
    ``first = 1``."""
    flip = s_hi <= 0.0
    a = -s_hi if flip else s_lo
    b = -s_lo if flip else s_hi
    e = -0.5 * (h * h + a * a) - _LOG_2PI
    shift = e - ref if relative else 0.0
    dist = math.sqrt(a * a + h * h)
    rho = _pole_distance(dist)
    uw = math.sqrt(a * a + 2.0 * _WINDOW) - a
    wb = min(b - a, uw)
    if wb <= rho:  # one panel (most edges)
        t, z0, z1, far, first = _one_panel(a, h, wb, dist, shift)
        return e, t, z0, z1, far, first
    npan = _panel_count(wb, rho)
    xs, ws = _P20, _PW20
    total = 0.0
    left = 0.0
    z0 = 0.0
    z1 = 0.0
    far = 1.0
    first = 1.0
    smooth = True
    for j in range(npan):
        right = wb if j == npan - 1 else min(rho * (2.0 ** (j + 1) - 1.0), wb)
        half = 0.5 * (right - left)
        t, y0, y1, far, f_left = panel_sums(a, h, left, half, shift, xs, ws)
        if j == 0:
            first = f_left
        total += half * t
        z0 += half * y0
        z1 += half * y1
        smooth = smooth and a * (right - left) + 0.5 * (right * right - left * left) <= _Z_SPAN
        left = right
    if not smooth:
        z0 = 0.0
        z1 = 0.0
    return e, total, z0, z1, far, first


@_jit
def _one_panel(a, h, wb, dist, shift):
    """:func:`_graded_scaled`'s single panel ``[0, wb]`` (``wb <= rho``): ``(total, z0, z1, far, first)``, the loop's
    numbers bit for bit (``half = 0.5 (wb - 0)``, each sum ``0 + half * sum``), with the padded rule chosen by
    :func:`_short_rule_size` written out per size, so that ``fastexp.panel_sums`` sees constant rules: 79 -> 57 ns an
    edge on the 1.46 million graded edges of ``bench_engine``'s S = 2 batch (one thread, min of 7)."""
    n = _short_rule_size(a, wb, dist)
    half = 0.5 * wb
    if n == 10:
        t, y0, y1, far, first = panel_sums(a, h, 0.0, half, shift, _P10, _PW10)
    elif n == 12:
        t, y0, y1, far, first = panel_sums(a, h, 0.0, half, shift, _P12, _PW12)
    elif n == 16:
        t, y0, y1, far, first = panel_sums(a, h, 0.0, half, shift, _P16, _PW16)
    else:
        t, y0, y1, far, first = panel_sums(a, h, 0.0, half, shift, _P20, _PW20)
    if a * wb + 0.5 * wb * wb <= _Z_SPAN:
        return half * t, half * y0, half * y1, far, first
    return half * t, 0.0, 0.0, far, first


@_jit
def _graded_simd(h, s_lo, s_hi):
    """``(log B, z0, z1)`` of :func:`_graded_parts` (:func:`_graded`'s form)."""
    e, total, z0, z1, _ = _graded_parts(h, s_lo, s_hi)
    return e + math.log(total), z0, z1


@_jit
def edge_graded(h, s_lo, s_hi):
    """log B of an edge on one side of its foot: 20-point Gauss-Legendre on geometric panels in s from the end
    closest to the foot, cut at 40 nats (``planar._edge_log_B``); one short panel takes 10 or 12 points
    (:func:`_short_rule`)."""
    return _graded(h, s_lo, s_hi)[0]


@_jit
def _side_log_mass_mean(s_lo, s_hi, z0, z1):
    """``(log Z, mean)`` of N(0, 1) on a one-sided ``[s_lo, s_hi]`` from :func:`_graded`'s ``z0``, ``z1``: the
    quadrature branch of :func:`interval_log_mass_mean` with the edge's own nodes (no cancellation: positive sums)."""
    flip = s_hi <= 0.0
    a = -s_hi if flip else s_lo
    mean = a + z1 / z0
    return -0.5 * a * a - _LOG_SQRT_2PI + math.log(z0), -mean if flip else mean


@_jit
def _side_mean(s_lo, s_hi, z0, z1):
    """The mean of :func:`_side_log_mass_mean` alone."""
    flip = s_hi <= 0.0
    mean = (-s_hi if flip else s_lo) + z1 / z0
    return -mean if flip else mean


@_jit
def _edges_loop(h, s_lo, s_hi, theta, out):
    for m in range(h.size):
        out[m] = edge_theta(h[m], s_lo[m], s_hi[m]) if theta else edge_graded(h[m], s_lo[m], s_hi[m])


def edges_many(h, s_lo, s_hi, theta: bool):
    """:func:`edge_theta` (``theta``) or :func:`edge_graded` over arrays: the numpy reference path's edges."""
    h, s_lo, s_hi = (np.ascontiguousarray(np.ravel(x), dtype=np.float64) for x in np.broadcast_arrays(h, s_lo, s_hi))
    out = np.empty(h.size)
    _edges_loop(h, s_lo, s_hi, bool(theta), out)
    return out


end_rounding = _jit(C.end_rounding)  # ``planar.reference.end_rounding``, compiled (the same source)
g_rounding = _jit(C.g_rounding)  # the rest of an end's rounding bound (reported, never a reason to flag)
_vertex_error_terms = _jit(C.vertex_error_terms)


@_jit
def _vertex_error(h, s, d_j, d_i, g):
    """``vertex_log_error`` as ``(exponent, factor)``, the error being ``factor * e^exponent``."""
    if not math.isfinite(s) or not h > 0.0:
        return 0.0, 0.0
    return _vertex_error_terms(h, s, end_rounding(d_j, d_i, s, g))


@_jit
def _vertex_error_of(h, s, ds):
    """:func:`_vertex_error` given the end's rounding bound ``ds = end_rounding(d_j, d_i, s, g)`` (the kernel has
    it from computing the end)."""
    if not math.isfinite(s) or not h > 0.0:
        return 0.0, 0.0
    return _vertex_error_terms(h, s, ds)


@_jit
def vertex_log_error(h, s, d_j, d_i, g):
    """``planar.reference.vertex_log_error`` of the end ``s = (d_j - d_i n_i.n_j) / g`` (``end_rounding``)."""
    exponent, factor = _vertex_error(h, s, d_j, d_i, g)
    return exponent + math.log(factor) if factor > 0.0 else -_INF


@_jit
def _shared_vertex_error(s, d_j, d_k, s_k):
    """``shared_vertex_log_error`` as ``(exponent, factor)``, the error being ``factor * e^exponent``."""
    r2 = d_j * d_j + s * s
    if not math.isfinite(s) or not r2 > 0.0:
        return 0.0, 0.0
    return -_LOG_2PI - 0.5 * r2, 4.0 * _EPS * (abs(d_j) + abs(d_k) + abs(s_k) + abs(s)) / math.sqrt(r2)


@_jit
def shared_vertex_log_error(s, d_j, d_k, s_k):
    """Mass error at a vertex computed once (``s = v.e_j`` from ``v = d_k n_k + s_k e_k`` on line k).

    ``v`` misses line j only by the residual ``d_j - v.n_j``, a few ulps of ``|d_j| + |d_k| + |s_k|``
    (no division by the lines' crossing angle), so the two sectors meeting at ``v`` differ in angle by at
    most ``dtheta = residual / |v|``, whose Gaussian mass beyond ``v`` is ``e^{-|v|^2/2} dtheta / 2 pi``.
    """
    exponent, factor = _shared_vertex_error(s, d_j, d_k, s_k)
    return exponent + math.log(factor) if factor > 0.0 else -_INF


_X16, _W16 = np.polynomial.legendre.leggauss(16)
_CUBATURE_SPAN = 3.0  # |c| L + L^2 / 2: nats the log density varies by over a small polygon (or over each piece)
SPLIT_MAX = 8  # the moments' redo (planar.batch) cuts fan triangles up to this many times a side: span <= 24
_CUBATURE_REL = 1e-14  # relative error of the 16 x 16 rule there (measured vs mpmath: tests/test_planar_kernel)


@_jit
def _polygon_frame(Nrm, d, s_lo, s_hi, act):
    """``(c0, c1, L)``: the mean ``c`` of a bounded polygon's vertices and twice the largest vertex distance from it
    (every point of the polygon lies within ``L / 2`` of ``c``), ``L = -1`` when the polygon is unbounded or has
    fewer than three edges."""
    F = d.size
    c0 = 0.0
    c1 = 0.0
    nv = 0
    for f in range(F):
        if act[f]:
            if not (math.isfinite(s_lo[f]) and math.isfinite(s_hi[f])):
                return 0.0, 0.0, -1.0
            c0 += d[f] * Nrm[f, 0] - s_lo[f] * Nrm[f, 1]
            c1 += d[f] * Nrm[f, 1] + s_lo[f] * Nrm[f, 0]
            nv += 1
    if nv < 3:
        return 0.0, 0.0, -1.0
    c0 /= nv
    c1 /= nv
    L = 0.0
    for f in range(F):
        if act[f]:
            for s in (s_lo[f], s_hi[f]):
                L = max(L, math.hypot(d[f] * Nrm[f, 0] - s * Nrm[f, 1] - c0, d[f] * Nrm[f, 1] + s * Nrm[f, 0] - c1))
    return c0, c1, 2.0 * L


@_jit
def _triangle_sums(c0, c1, p, a, e, jac, acc):
    """Add the 16 x 16 Duffy-mapped Gauss-Legendre sums of the triangle ``y = p + u (a + t e)`` (``u, t`` in [0, 1],
    ``y`` about the centre ``c``; Jacobian ``u jac``) to ``acc = (m0, m1 (2), m2 (xx, xy, yy))`` of the weight
    ``exp(-(c.y) - |y|^2 / 2)``. The 16 exponentials of a row of nodes (one ``u``) by the vector exp
    (``fastexp.exp8``, within ``FAST_EXP_ULPS`` of the exact value, as libm's), the sums node by node in order."""
    ys = np.empty((2, 16))
    args = np.empty(16)
    vals = np.empty(16)
    for i in range(16):
        u = 0.5 * (_X16[i] + 1.0)
        for j in range(16):
            t = 0.5 * (_X16[j] + 1.0)
            y0 = p[0] + u * (a[0] + t * e[0])
            y1 = p[1] + u * (a[1] + t * e[1])
            ys[0, j] = y0
            ys[1, j] = y1
            args[j] = -(c0 * y0 + c1 * y1) - 0.5 * (y0 * y0 + y1 * y1)
        exp8(args, 0, vals)
        exp8(args, 8, vals)
        for j in range(16):
            y0 = ys[0, j]
            y1 = ys[1, j]
            w = 0.25 * _W16[i] * _W16[j] * u * jac * vals[j]
            acc[0] += w
            acc[1] += w * y0
            acc[2] += w * y1
            acc[3] += w * y0 * y0
            acc[4] += w * y0 * y1
            acc[5] += w * y1 * y1


@_jit
def _fan_sums(c0, c1, a, e, det, k, acc):
    """The fan triangle ``(c, c + a, c + a + e)`` (``|a x e| = det``) into ``acc``: whole (``k = 1``, in place) or cut
    into ``k^2`` triangles of a barycentric grid (each ``det / k^2``), each summed on its own and then added (the
    two-level sums keep the rounding of the ``256 k^2`` positive terms near that of one piece)."""
    if k == 1:
        _triangle_sums(c0, c1, np.zeros(2), a, e, det, acc)
        return
    part = np.zeros(6)
    p = np.empty(2)
    a_k = np.empty(2)
    e_k = np.empty(2)
    jac = det / (k * k)
    for i in range(k):  # grid point (i, j): (i a + j (a + e)) / k
        for j in range(k - i):
            for flip in range(2 if i + j <= k - 2 else 1):
                # as p + u (a_k + t e_k): upright (i, j), (i + 1, j), (i, j + 1) for i + j <= k - 1, inverted
                # (i + 1, j + 1), (i, j + 1), (i + 1, j) for i + j <= k - 2: k^2 triangles that tile the fan triangle
                sgn = -1.0 if flip else 1.0
                for m in range(2):
                    base = (i + flip) * a[m] + (j + flip) * (a[m] + e[m])  # k x the first vertex
                    p[m] = base / k
                    a_k[m] = sgn * a[m] / k
                    e_k[m] = sgn * e[m] / k
                part[:] = 0.0
                _triangle_sums(c0, c1, p, a_k, e_k, jac, part)
                for m in range(6):
                    acc[m] += part[m]


@_jit
def small_polygon(Nrm, d, s_lo, s_hi, act, ds, moments, out, max_split=1):
    """Mass and moments of a small bounded polygon by cubature: ``(log_mass, rel_err, used, diameter)``, the mean and
    covariance (``moments``) into ``out = (mean, cov)``.

    The edge formula computes a polygon's mass as a signed sum of sector masses of order 1, so a small
    polygon (near the origin or not) loses ``eps / mass``. When the polygon is bounded, ``c`` the mean of
    its vertices and ``L`` its diameter, and the log density varies by at most ``span = |c| L + L^2/2 <= 3``
    nats over it, the fan of triangles (c, edge) integrated by a 16 x 16 Duffy-mapped Gauss-Legendre rule is
    exact to rounding (``exp`` of a quadratic of range 3 is a polynomial of degree < 32 to 1e-20), and
    every term is positive: mass, mean and covariance (about c) come without cancellation. ``max_split > 1``
    (the moments' redo, :func:`small_polygon_pairs`) also takes polygons of span up to ``3 max_split``: each fan
    triangle is cut into ``k^2`` triangles, ``k = ceil(span / 3)``, whose points lie within ``|c| + L / 2`` of the
    origin and within ``L / k`` of each other, so the log density varies by at most ``(|c| + L / 2) L / k =
    span / k <= 3`` over each: the same rule, exact to rounding on each piece (against mpmath:
    tests/test_planar_kernel.py).

    The error bound adds the polygon's own conditioning: its vertices are computed with errors up to
    ``dv_i`` (``ds`` (F, 2): rounding of the edge ends, ``planar.end_rounding``), which moves edge i by at
    most ``dv_i`` and the area by ``sum_i l_i dv_i``; relative to the mass that is at most
    ``e^{2 span} sum_i l_i dv_i / area`` (the density varies by ``e^{span}`` about c). No float64 method
    given these rows can do better, so this part never sends a pair to another path.
    """
    mean, cov = out
    c0, c1, L = _polygon_frame(Nrm, d, s_lo, s_hi, act)
    if L < 0.0:
        return -_INF, 0.0, False, 0.0
    span = math.hypot(c0, c1) * L + 0.5 * L * L
    k = 1 if span <= _CUBATURE_SPAN else int(math.ceil(span / _CUBATURE_SPAN))
    if k > max_split:
        return -_INF, 0.0, False, L
    area = 0.0
    moved = 0.0
    acc = np.zeros(6)  # m0, m1 (x, y), m2 (xx, xy, yy)
    a = np.empty(2)
    e = np.empty(2)
    for f in range(d.size):
        if not act[f]:
            continue
        a[0] = d[f] * Nrm[f, 0] - s_lo[f] * Nrm[f, 1] - c0
        a[1] = d[f] * Nrm[f, 1] + s_lo[f] * Nrm[f, 0] - c1
        e[0] = -(s_hi[f] - s_lo[f]) * Nrm[f, 1]  # b - a along the edge
        e[1] = (s_hi[f] - s_lo[f]) * Nrm[f, 0]
        det = abs(a[0] * e[1] - a[1] * e[0])
        area += 0.5 * det
        dv = max(ds[f, 0], ds[f, 1]) + 2.0 * _EPS * (abs(d[f]) + abs(s_lo[f]) + abs(s_hi[f]))
        moved += (s_hi[f] - s_lo[f]) * dv
        _fan_sums(c0, c1, a, e, det, k, acc)
    m0 = acc[0]
    log_mass = -0.5 * (c0 * c0 + c1 * c1) - _LOG_2PI + math.log(m0)
    if moments >= 1:
        dm0 = acc[1] / m0
        dm1 = acc[2] / m0
        mean[0] = c0 + dm0
        mean[1] = c1 + dm1
        if moments >= 2:
            cov[0, 0] = acc[3] / m0 - dm0 * dm0
            cov[1, 1] = acc[5] / m0 - dm1 * dm1
            cov[0, 1] = acc[4] / m0 - dm0 * dm1
            cov[1, 0] = cov[0, 1]
    # + the rounding of log_mass's own sum (|c|^2 / 2 + |log m0| + log 2 pi, eps each)
    rounding = _EPS * (c0 * c0 + c1 * c1 + abs(log_mass) + 2.0)
    return log_mass, _CUBATURE_REL + math.exp(2.0 * span) * moved / area + rounding, True, L


@_jit
def _owen_argument(s, h):
    if h > 0.0:
        return s / h
    if s > 0.0:
        return _INF
    if s < 0.0:
        return -_INF
    return math.nan  # np.sign(0) * inf


@_jit
def _edge_special(h, s_lo, s_hi):
    """``(log B, rel_err)`` of an edge that Owen's T or the angle rule takes, else ``(nan, -1)`` (a graded edge)."""
    straddle = s_lo < 0.0 and s_hi > 0.0
    near = min(abs(s_lo), abs(s_hi))
    if h < _OWEN_H and (straddle or h * h + near * near < _NEAR_FOOT * _NEAR_FOOT):
        th = _owens_t(h, _owen_argument(s_hi, h))
        tl = _owens_t(h, _owen_argument(s_lo, h))
        diff = th - tl
        r_o = 4.0 * _EPS * (abs(th) + abs(tl)) / abs(diff) + 1e-15 if diff != 0.0 else _INF
        if (straddle or r_o <= _OWEN_REL) and diff > 0.0:
            return math.log(diff), r_o
    if straddle:
        return edge_theta(h, s_lo, s_hi), 1e-15
    return math.nan, -1.0


@_jit
def _edge_B_parts(h, s_lo, s_hi):
    """One edge's ``B = scale e^E`` as ``(E, scale, rel_err, z0, z1, far)``: the graded edges' parts
    (:func:`_graded_parts`; ``far >= 0``), else ``(log B, 1, rel_err, 0, 0, -1)`` (Owen's T, the angle rule)."""
    lb, rb = _edge_special(h, s_lo, s_hi)
    if rb >= 0.0:
        return lb, 1.0, rb, 0.0, 0.0, -1.0
    e, total, z0, z1, far = _graded_parts(h, s_lo, s_hi)
    return e, total, GRADED_REL, z0, z1, far


@_jit
def _edge_B_scaled(h, s_lo, s_hi, ref):
    """The kernel's form of :func:`_edge_B_parts`, in units of ``e^ref``: ``(B e^-ref, e^(E - ref), rel_err, z0, z1,
    far, xr)`` with ``E`` the exponent of the end nearest the foot, ``z0``, ``z1``, ``far`` (``>= 0``) a graded edge's,
    times ``e^(E - ref)`` (:func:`_graded_scaled`: no scalar exp), else ``(e^(log B - ref), the same, rel_err, 0, 0,
    -1, xr)``; ``xr`` the exponents' rounding (:func:`exponent_rounding`), relative, on top of ``rel_err``."""
    lb, rb = _edge_special(h, s_lo, s_hi)
    if rb >= 0.0:
        ee = math.exp(lb - ref)
        return ee, ee, rb, 0.0, 0.0, -1.0, exponent_rounding(lb, ref)
    e, total, z0, z1, far, first = _graded_scaled(h, s_lo, s_hi, ref, True)
    return total, first, GRADED_REL, z0, z1, far, exponent_rounding(e, ref)


@_jit
def exponent_rounding(e, ref):
    """Relative error of an edge's ``B e^-ref`` (:func:`_edge_B_scaled`) from the float64 rounding of its exponents,
    beyond the rule's own ``rel_err`` (which was measured against mpmath without a shift): ``eps (3 |e| + |e - ref| +
    22)``, ``e`` the exponent ``E`` of a graded edge or ``log B`` of the others.

    A graded edge: ``E = -(h^2 + a^2) / 2 - log 2 pi`` is off by at most ``eps (h^2 + a^2) + eps/2 |E| + eps <= eps
    (2.5 |E| + 1)`` (``h^2 + a^2 <= 2 |E|``); the shift ``E - ref`` by ``eps/2 |E - ref|``, and each node's argument
    ``x + shift`` (``|x| <= 40``, the window) once more by ``eps/2 (40 + |E - ref|)``; every node term moves by
    ``e^delta - 1``, relative. Owen's T and the angle rule: ``log B`` rounds by at most ``2 eps |log B|`` (a log, or
    ``-h^2 / 2 - log 2 pi + log(sum)``), ``log B - ref`` by ``eps/2 |log B - ref|`` and ``exp`` by an ulp. Both are
    within ``eps (3 |e| + |e - ref| + 22)`` (``e^delta - 1 <= 1.01 delta`` for these ``delta``). For a far pair
    (``|E|`` ~ 70 and up) this is ~1e-13: far above the rules' 1.2e-15, so the kernel adds it to ``rel_err``
    (tests/test_s2_exponent_rounding.py, against 40-digit mpmath)."""
    return _EPS * (3.0 * abs(e) + abs(e - ref) + 22.0)


@_jit
def edge_log_B(h, s_lo, s_hi):
    """``(log B, rel_err)`` of one edge as the kernel computes it (``planar._edge_log_B``, the graded edges by
    :func:`_graded_parts`)."""
    e, scale, rb, _, _, _ = _edge_B_parts(h, s_lo, s_hi)
    return e + math.log(scale), rb


@_jit
def capped_loosen(log_weight_bound, max_loosen):
    """``LOOSEN_WEIGHT / w`` for a pair whose posterior weight is at most ``w = exp(log_weight_bound)``, kept
    within ``[1, max_loosen]`` (each kernel caps it so that no estimate is accepted beyond 1e-6 relative)."""
    f = LOOSEN_WEIGHT * math.exp(-log_weight_bound)
    if not f > 1.0:  # also NaN
        return 1.0
    return min(f, max_loosen)


@_jit
def loosen_factor(log_weight_bound):
    """Accuracy thresholds' multiplier for a pair whose posterior weight is at most exp(log_weight_bound)."""
    return capped_loosen(log_weight_bound, MAX_LOOSEN)


class PlanarArrays(NamedTuple):
    """The arrays of ``planar.batch.RegionGeometry`` the compiled kernel reads, passed to it whole (R, F): unit
    normals ``Nrm`` (R, F, 2), ``valid`` rows, the rows ``jhi``/``jlo`` that end each edge (``has_hi``/``has_lo``),
    ``paired`` (the lower end is edge ``jlo``'s upper end), ``ghi = n_jhi . e_i``, ``glo``, ``chi = n_i . n_jhi``,
    ``clo``; ``Hn`` (R, F, 2) and ``cn`` (R, F), the offsets' form ``D = cn - mu . Hn`` in the pair's mean ``mu``."""

    Nrm: np.ndarray
    valid: np.ndarray
    jhi: np.ndarray
    jlo: np.ndarray
    has_hi: np.ndarray
    has_lo: np.ndarray
    paired: np.ndarray
    ghi: np.ndarray
    glo: np.ndarray
    chi: np.ndarray
    clo: np.ndarray
    Hn: np.ndarray
    cn: np.ndarray


@_jit
def _add_g_rounding(s_lo, s_hi, p, r, g, ds):
    """Pair p's end rounding bounds ``ds`` (F, 2) completed by ``g_rounding`` (the full ``4 eps (|d_j| + |d_i| + |s|)
    / |g|`` of ``constants.g_rounding``) for :func:`small_polygon`'s conditioning; a paired lower end is its
    neighbour's upper end. Flagged pairs only: their vertex terms are summed by then."""
    for f in range(ds.shape[0]):
        if g.valid[r, f] and g.has_hi[r, f]:
            ds[f, 1] += g_rounding(s_hi[p, f], g.ghi[r, f])
    for f in range(ds.shape[0]):
        if not g.valid[r, f]:
            continue
        if g.paired[r, f]:
            ds[f, 0] = ds[g.jlo[r, f], 1]
        elif g.has_lo[r, f]:
            ds[f, 0] += g_rounding(s_lo[p, f], g.glo[r, f])


# one loop on purpose: every array a compiled function receives, or a variable bound to a NamedTuple's field, is
# reference-counted (two atomic operations); with the per-pair work in its own (numba-IR-inlined) function that was 22
# array arguments and fields a pair, 7 % of the kernel's time (perf, bench_engine's S = 2 batch). In one loop they are
# bound once per call. Rows are indexed in place (``D[p, f]``, ``Nrm[r, f, 0]``), never sliced (``D[p]``: a slice is a
# reference-counted view); the complexity limit is waived here alone (split into five compiled pieces it measured 13 %
# slower per pair).
@_jit
def _pairs(g, pr, mu, D, moments, log_weight_scale, start, stop, out):  # noqa: C901
    """Pairs ``start:stop``; ``out``: (log_mass, rel_err, flagged, loosen, mean, cov, s_lo, s_hi, act, keep).

    ``mu`` (P, 2) given (not (0, 2)): row p of the whitened offsets ``D`` is first written from the pair's mean,
    ``D[p, f] = cn[r, f] - mu[p, 0] Hn[r, f, 0] - mu[p, 1] Hn[r, f, 1]`` -- the numpy form of
    ``planar.batch.batch_planar_pairs``, operation for operation (so bit for bit), without its (P, F) temporaries.
    Pair p (region r of ``g``, whitened offsets ``D[p]``) fills row p of every output; ``ds`` (F, 2), ``bounds`` (F,),
    ``zsum`` (F, 2) (the edge's 1-D moments' sums from its own quadrature times ``e^(E - ref)``,
    :func:`_edge_B_scaled`) are the loop's scratch."""
    log_mass, rel_err, flagged, loosen, mean, cov, s_lo, s_hi, act, keep = out
    F = D.shape[1]
    ds, bounds, zsum = np.empty((F, 2)), np.empty(F), np.empty((F, 2))
    Nrm, valid, jhi, jlo, has_hi, has_lo = g.Nrm, g.valid, g.jhi, g.jlo, g.has_hi, g.has_lo
    paired, ghi, glo, chi, clo = g.paired, g.ghi, g.glo, g.chi, g.clo
    cn, Hn = g.cn, g.Hn
    from_mu = mu.shape[0] > 0
    for p in range(start, stop):
        r = pr[p]
        if from_mu:
            m0 = mu[p, 0]
            m1 = mu[p, 1]
            for f in range(F):
                D[p, f] = cn[r, f] - m0 * Hn[r, f, 0] - m1 * Hn[r, f, 1]
        lws = log_weight_scale[p]
        inside = True
        outside = False
        ref = -_INF
        for f in range(F):
            s_lo[p, f] = -_INF
            s_hi[p, f] = _INF
            act[p, f] = False
            keep[p, f] = False
            if not valid[r, f]:
                continue
            ds[f, 0] = 0.0
            ds[f, 1] = 0.0
            if has_hi[r, f]:
                j = jhi[r, f]
                s_hi[p, f] = (D[p, j] - D[p, f] * chi[r, f]) / ghi[r, f]
                ds[f, 1] = end_rounding(D[p, j], D[p, f], s_hi[p, f], ghi[r, f])
        for f in range(F):
            if not valid[r, f]:
                continue
            j = jlo[r, f]
            if paired[r, f]:  # the vertex (jlo[f], f) as edge jlo[f] computed it: s = v.e_f
                s_lo[p, f] = D[p, j] * glo[r, f] + s_hi[p, j] * clo[r, f]
                ds[f, 0] = ds[j, 1]
            elif has_lo[r, f]:
                s_lo[p, f] = (D[p, j] - D[p, f] * clo[r, f]) / glo[r, f]
                ds[f, 0] = end_rounding(D[p, j], D[p, f], s_lo[p, f], glo[r, f])
            act[p, f] = s_lo[p, f] < s_hi[p, f]
            if not D[p, f] > 0.0:
                inside = False
            if D[p, f] < 0.0:
                outside = True
        boundary = not inside and not outside
        for f in range(F):
            bounds[f] = -_INF
            if act[p, f]:
                h = abs(D[p, f])
                s_star = min(max(0.0, s_lo[p, f]), s_hi[p, f])
                bounds[f] = _LOG_HALF - 0.5 * (h * h + s_star * s_star)
                if bounds[f] > ref:
                    ref = bounds[f]
        if inside:
            ref = 0.0
        elif lws + ref < -NEGLIGIBLE_NATS:
            # origin outside: the polygon lies beyond the tangent line at its closest point, at distance
            # rho_min = min_i sqrt(h_i^2 + s*_i^2), so mass <= Phi(-rho_min) <= exp(-rho_min^2 / 2) / 2 = e^ref
            for k in range(2):
                mean[p, k] = 0.0
                cov[p, k, 0] = 0.0
                cov[p, k, 1] = 0.0
            log_mass[p] = -_INF
            rel_err[p] = 0.0
            flagged[p] = False
            loosen[p] = MAX_LOOSEN
            continue
        elif ref == -_INF:
            ref = 0.0
        # signed sum and error terms in units of e^ref: every kept term is within _DROP nats of it
        pos = 1.0 if inside else 0.0
        neg = 0.0
        err = 0.0
        rnd = 0.0  # the exponents' rounding (exponent_rounding)
        cond = 0.0  # unpaired vertices' share of g's rounding (g_rounding): reported, not a reason to flag
        for f in range(F):
            if not act[p, f]:
                continue
            if bounds[f] > ref - _DROP:
                keep[p, f] = True
                d_f = D[p, f]
                b, ee, rb, zsum[f, 0], zsum[f, 1], far, xr = _edge_B_scaled(abs(d_f), s_lo[p, f], s_hi[p, f], ref)
                err += b * (rb + _EPS)
                rnd += b * xr
                # vertex error terms: a graded edge's exponentials at its end nearest the foot (ee) and at the other
                # (far >= 0) come from its own nodes; other edges' by their own exp
                lo_w = (ee if s_hi[p, f] > 0.0 else far) if far >= 0.0 else -1.0
                hi_w = (far if s_hi[p, f] > 0.0 else ee) if far >= 0.0 else -1.0
                k = jlo[r, f]
                if paired[r, f]:
                    ex, fac = _shared_vertex_error(s_lo[p, f], d_f, D[p, k], s_hi[p, k])
                    err += fac * (lo_w if lo_w >= 0.0 else math.exp(ex - ref))
                elif has_lo[r, f]:
                    ex, fac = _vertex_error_of(abs(d_f), s_lo[p, f], ds[f, 0])  # ds: end_rounding of this end
                    w_lo = lo_w if lo_w >= 0.0 else math.exp(ex - ref)
                    err += fac * w_lo
                    cond += fac * w_lo * g_rounding(s_lo[p, f], glo[r, f]) / ds[f, 0] if ds[f, 0] > 0.0 else 0.0
                j = jhi[r, f]
                if has_hi[r, f] and not paired[r, j]:
                    ex, fac = _vertex_error_of(abs(d_f), s_hi[p, f], ds[f, 1])
                    w_hi = hi_w if hi_w >= 0.0 else math.exp(ex - ref)
                    err += fac * w_hi
                    cond += fac * w_hi * g_rounding(s_hi[p, f], ghi[r, f]) / ds[f, 1] if ds[f, 1] > 0.0 else 0.0
                if d_f < 0.0 and not inside:
                    pos += b
                elif d_f > 0.0:
                    neg += b
            else:
                err += math.exp(bounds[f] - ref)
        ratio = neg / pos
        r1 = 1.0 if ratio > 1.0 else ratio
        lp = math.log(pos)
        l1 = math.log1p(-r1)
        lm = ref + lp + l1
        # the edges' errors, their exponents' rounding (both amplified by the sum's cancellation: a path without one
        # does better, so they decide the fallback) and the sum's own rounding
        re = (err + rnd) / (pos * (1.0 - r1)) + 4.0 * _EPS * (1.0 + ratio) / max(1.0 - ratio, 1e-300)
        # reported: also the rounding of lm's own log-space sum (eps per nat: no float64 path does better)
        re_all = re + _EPS * (abs(ref) + abs(lp) + abs(l1) + abs(lm)) + cond / (pos * (1.0 - r1))
        lo = loosen_factor(lws + lm + math.log1p(min(re, 1.0)))
        fl = boundary or not math.isfinite(lm) or not re <= FALLBACK_REL * lo
        for k in range(2):
            mean[p, k] = 0.0
            cov[p, k, 0] = 0.0
            cov[p, k, 1] = 0.0
        if fl:
            _add_g_rounding(s_lo, s_hi, p, r, g, ds)
            lm_small, rel_small, used, _ = small_polygon(Nrm[r], D[p], s_lo[p], s_hi[p], act[p], ds, moments,
                                                         (mean[p], cov[p]))
            if used:
                log_mass[p] = lm_small
                rel_err[p] = rel_small
                flagged[p] = False
                loosen[p] = lo
                continue
        if moments < 1 or fl:
            log_mass[p] = lm
            rel_err[p] = re_all
            flagged[p] = fl
            loosen[p] = lo
            continue
        inv_mass = 1.0 / (pos * (1.0 - r1))  # e^(ref - log_mass)
        m0 = 0.0
        m1 = 0.0
        s00 = 1.0
        s01 = 0.0
        s10 = 0.0
        s11 = 1.0
        for f in range(F):
            if not keep[p, f]:
                continue
            d_f = D[p, f]
            if zsum[f, 0] > 0.0:  # the edge's own exponentials (a graded edge's panels, _graded_scaled):
                # q = z0 e^(E - log_mass) = (z0 e^(E - ref)) / (pos (1 - r1)), no exp or log of its own
                ms = _side_mean(s_lo[p, f], s_hi[p, f], zsum[f, 0], zsum[f, 1])
                q = zsum[f, 0] * inv_mass
            else:
                lz, ms = interval_log_mass_mean(s_lo[p, f], s_hi[p, f])
                q = math.exp(-0.5 * d_f * d_f - _LOG_SQRT_2PI + lz - lm)
            if not math.isfinite(q):
                continue
            n0 = Nrm[r, f, 0]
            n1 = Nrm[r, f, 1]
            m0 -= q * n0
            m1 -= q * n1
            face0 = d_f * n0 - ms * n1  # d n + m e, e = rot90(n) = (-n1, n0)
            face1 = d_f * n1 + ms * n0
            s00 -= q * n0 * face0
            s01 -= q * n0 * face1
            s10 -= q * n1 * face0
            s11 -= q * n1 * face1
        mean[p, 0] = m0
        mean[p, 1] = m1
        if moments >= 2:
            c01 = 0.5 * ((s01 - m0 * m1) + (s10 - m1 * m0))
            cov[p, 0, 0] = s00 - m0 * m0
            cov[p, 1, 1] = s11 - m1 * m1
            cov[p, 0, 1] = c01
            cov[p, 1, 0] = c01
        log_mass[p] = lm
        rel_err[p] = re_all
        flagged[p] = fl
        loosen[p] = lo


@_jit
def small_polygon_pairs(Nrm, pr, D, s_lo, s_hi, act, moments, max_split=1):
    """:func:`small_polygon` for given pairs (edges from :func:`pair_planar_moments`), fan triangles cut up to
    ``max_split`` times a side: ``used`` (P,), the log mass, mean, covariance and ``kappa = L^2 / lambda_min`` (the
    covariance's cancellation about the polygon's centre, L its diameter) of the pairs it could take."""
    P, F = D.shape
    log_mass = np.full(P, -_INF)
    kappa = np.full(P, _INF)
    used = np.zeros(P, dtype=np.bool_)
    mean = np.zeros((P, 2))
    cov = np.zeros((P, 2, 2))
    ds = np.zeros((F, 2))
    for p in range(P):
        # ends as computed by the kernel; without the per-end rounding the conditioning term is left out,
        # so the caller only uses this for the moments of pairs whose mass bound it already has
        log_mass[p], _, used[p], L = small_polygon(Nrm[pr[p]], D[p], s_lo[p], s_hi[p], act[p], ds, moments,
                                                   (mean[p], cov[p]), max_split)
        tr = cov[p, 0, 0] + cov[p, 1, 1]
        det = cov[p, 0, 0] * cov[p, 1, 1] - cov[p, 0, 1] * cov[p, 1, 0]
        lam = det / (0.5 * tr + math.sqrt(max(0.25 * tr * tr - det, 0.0)))
        if used[p] and lam > 0.0:
            kappa[p] = L * L / lam
    return used, log_mass, kappa, mean, cov


_MIN_PAIRS_PER_THREAD = 2048


def pair_planar_moments(geo, pr, D, moments, log_weight_scale, mu=None):
    """All pairs (region ``pr[p]`` of ``geo``, whitened offsets ``D[p]``) of a batch.

    A pair is ``flagged`` (left to the caller's exact slow path) when its origin lies on an edge line,
    its mass is not finite, or its relative error bound exceeds ``FALLBACK_REL * loosen``, where
    ``loosen = loosen_factor(log_weight_scale[p] + log_mass (1 + rel_err))``: the caller guarantees that the
    pair's posterior weight is at most ``exp(log_weight_scale) * mass`` (+inf: no guarantee, loosen 1).
    Pairs whose weight is thereby provably below ``e^-NEGLIGIBLE_NATS`` (by the distance from the origin
    to the polygon) come back as log mass -inf, as the caller's own pruning would report them.
    Returns ``log_mass, rel_err, flagged, loosen (P,)``, ``mean (P, 2)``, ``cov (P, 2, 2)`` (whitened, zero for
    flagged pairs) and the edge data ``s_lo, s_hi, act, keep (P, F)`` for the caller's fallbacks. The
    pairs are split over ``threads.worker_threads()`` threads (the kernel releases the GIL).

    ``mu`` (P, 2), optional: the pairs' means, from which the kernel writes ``D`` (P, F) itself (pass
    ``D = None``; it is returned last) -- the same numbers as ``D = geo.cn[pr] - mu @ Hn^T`` in numpy.
    """
    pr = np.ascontiguousarray(pr, dtype=np.intp)
    from_mu = mu is not None
    P = pr.size
    if from_mu:
        mu = np.ascontiguousarray(mu, dtype=np.float64)
        D = np.empty((P, geo.F))
    else:
        mu = np.zeros((0, 2))
        D = np.ascontiguousarray(D, dtype=np.float64)
    log_weight_scale = np.ascontiguousarray(log_weight_scale, dtype=np.float64)
    F = D.shape[1]
    out = (np.empty(P), np.empty(P), np.empty(P, dtype=np.bool_), np.empty(P), np.empty((P, 2)),
           np.empty((P, 2, 2)), np.empty((P, F)), np.empty((P, F)), np.empty((P, F), dtype=np.bool_),
           np.empty((P, F), dtype=np.bool_))
    g = geo.arrays
    run_split(lambda start, stop: _pairs(g, pr, mu, D, moments, log_weight_scale, start, stop, out), P,
              min_per_thread=_MIN_PAIRS_PER_THREAD, pieces_per_thread=4)
    return out + (D,) if from_mu else out


@_jit
def store_pairs(pr, pn, chol, moments, block, res):
    """Scatter a block's whitened results ``block = (mu, Lm, log_mass, err, cov, settled)`` into the region-major
    (R, N) arrays ``res = (log_mass, errors, mean, cov, settled)`` of a ``pairs.PairResult``, pair p to
    ``[pr[p], pn[p]]``: log mass, its error ``err`` (numpy's, whose SIMD log1p differs from libm's in the last bit),
    ``settled``; the mean ``mu + Lm`` (``Lm = L m``, the whitened mean mapped back as numpy's matmul rounds it:
    OpenBLAS's FMA form follows the factors' memory order, which ``planar.batch.chol_times`` replicates) and the
    covariance ``L C L^T`` (``chol`` (R, 2, 2) holds ``L``; the written-out products of the former numpy store, in the
    same order), both zero where the mass is not finite -- what ``polytopes._planar_block`` computed with (P, 2, 2)
    temporaries, bit for bit (tests/test_s2_fused_paths.py keeps that numpy store as the reference)."""
    mu, Lm, log_mass, err, cov, settled = block
    res_lm, res_err, res_mean, res_cov, res_settled = res
    for p in range(pr.size):
        r = pr[p]
        n = pn[p]
        lm = log_mass[p]
        res_lm[r, n] = lm
        res_err[r, n] = err[p]
        res_settled[r, n] = settled[p]
        if moments < 1:
            continue
        fin = math.isfinite(lm)
        res_mean[r, n, 0] = mu[p, 0] + Lm[p, 0] if fin else 0.0
        res_mean[r, n, 1] = mu[p, 1] + Lm[p, 1] if fin else 0.0
        if moments < 2:
            continue
        if not fin:
            for i in range(2):
                for j in range(2):
                    res_cov[r, n, i, j] = 0.0
            continue
        l00 = chol[r, 0, 0]
        l10 = chol[r, 1, 0]
        l11 = chol[r, 1, 1]
        c00 = cov[p, 0, 0]
        c01 = cov[p, 0, 1]
        c11 = cov[p, 1, 1]
        res_cov[r, n, 0, 0] = l00 * l00 * c00
        off = l00 * (l10 * c00 + l11 * c01)
        res_cov[r, n, 0, 1] = off
        res_cov[r, n, 1, 0] = off
        res_cov[r, n, 1, 1] = l10 * l10 * c00 + 2.0 * l10 * l11 * c01 + l11 * l11 * c11


_COV_UNIT_ERR = 2e-14  # measured covariance error of the divergence formula per unit of cancellation (planar.cancels)


@_jit
def _cancels_one(mean, cov, p, log_mass, rel, loosen, relative):
    """``planar.reference.cancels`` for pair p, the same operations in the same order (bit for bit)."""
    spread = 1.0 + (mean[p, 0] * mean[p, 0] + mean[p, 1] * mean[p, 1])
    tr = cov[p, 0, 0] + cov[p, 1, 1]
    det = cov[p, 0, 0] * cov[p, 1, 1] - cov[p, 0, 1] * cov[p, 1, 0]
    lam = det / (0.5 * tr + math.sqrt(max(0.25 * tr * tr - det, 0.0)))
    scale = lam if relative else 1.0
    kappa = spread / scale if lam > 0.0 else _INF
    return math.isfinite(log_mass) and not ((_COV_UNIT_ERR + rel) * kappa <= C.COV_TOL * loosen)


@_jit
def cancel_flags(mean, cov, log_mass, rel, loosen, relative, flagged):
    """For the batch's pairs: ``redo`` = ``cancels(..., loosen, relative=relative) & ~flagged`` and ``strict`` =
    ``cancels(..., 1.0, relative=True)`` (``planar.batch.batch_planar_pairs``), in one compiled pass over the pairs
    instead of two numpy passes of a dozen temporaries each."""
    P = log_mass.size
    redo = np.empty(P, dtype=np.bool_)
    strict = np.empty(P, dtype=np.bool_)
    for p in range(P):
        redo[p] = _cancels_one(mean, cov, p, log_mass[p], rel[p], loosen[p], relative) and not flagged[p]
        strict[p] = _cancels_one(mean, cov, p, log_mass[p], rel[p], 1.0, True)
    return redo, strict


def warm() -> None:
    """Compile (or load from the cache) the kernels an ordinary first ``evaluate`` may not reach: the small-polygon
    cubature of cancelling pairs, with the argument types ``planar.batch`` passes (``python -m engine.warmup``)."""
    F = 3
    Nrm = np.zeros((1, F, 2))
    Nrm[0, :, 0] = np.cos(np.arange(F) * 2.0 * np.pi / F)
    Nrm[0, :, 1] = np.sin(np.arange(F) * 2.0 * np.pi / F)
    pr = np.zeros(1, dtype=np.intp)
    act = np.ones((1, F), dtype=np.bool_)
    small_polygon_pairs(Nrm, pr, np.ones((1, F)), np.full((1, F), -1.0), np.ones((1, F)), act, 2, SPLIT_MAX)
