"""S = 3 edge integrals of the cone decomposition (Theorem 1's ``Phi_omega``, eq. 5, and the Sec. 4.1 moments).

For ``y ~ N(0, I_3)`` the mass of the cone over facet i beyond its plane decomposes around the facet's foot
(see :mod:`.kernel`) into per-edge terms. ``s`` runs along the 3-D edge from its point closest to the origin
(squared distance ``R``), and the edge's two facets (distances ``h_k = |d_k|`` to the origin, ``a_k = |e_k|``
in-plane distances to the edge) share ``s``, ``rho^2 = R + s^2`` and ``[s_lo, s_hi]``:

    C_k = (1/2pi) int h_k Q(rho)/rho * a_k / (a_k^2 + s^2) ds      (cone term of facet k)
    B_k = (1/2pi) int e^{-(a_k^2 + s^2)/2} a_k / (a_k^2 + s^2) ds  (Owen-T edge term of facet k's polygon)
    Z   = int phi(s) ds                                          (edge mass, for the second moments)

all five from one graded Gauss-Legendre quadrature per edge (:func:`_edge_integrals`), in log space, relative to
their own size in any tail (``EDGE_ULPS``, measured against mpmath in ``tests/test_solid_batch.py``).
"""

from __future__ import annotations

import math

import llvmlite.binding as _llvm
import numba
import numpy as np
from numba import types as _types
from numba.extending import get_cython_function_address

from .. import constants as C
from ..planar.kernel import _lse_pair
from ..threads import run_split

# erfcx is scipy's own (cython_special), bound by symbol name so that the kernels can be cached on disk
_llvm.add_symbol("dgnexact_solid_erfcx",
                 get_cython_function_address("scipy.special.cython_special", "__pyx_fuse_1erfcx"))
_erfcx = _types.ExternalFunction("dgnexact_solid_erfcx", _types.float64(_types.float64))
_jit = numba.njit(cache=True, nogil=True, error_model="numpy")

_C_NODES = 16  # Gauss-Legendre nodes per panel
_CX, _CW = np.polynomial.legendre.leggauss(_C_NODES)
_C_WINDOW = 40.0  # nats kept below the maximum of each one-sided piece (e^-40 = 4e-18)
_C_DMAX = 20.0  # largest change of the Gaussian exponent s_a u + u^2/2 across one panel
_C_MAX_GRADES = 64  # geometric panels at most (edge within ~1e-18 of a foot: flagged instead)
EDGE_ULPS = 32.0  # relative error of one edge integral <= EDGE_ULPS eps (1 + |log|) (measured against mpmath,
# tests/test_solid_batch.py: at most ~20 eps (1 + |log|) over every scale; the |log| part is the rounding of the
# large exponents such as (R + s_a^2) / 2)
_SQRT2, _INF, _LOG_2PI_F, _LOG_SQRT_2PI_F, _EPS_F = C.SQRT2, C.INF, C.LOG_2PI, C.LOG_SQRT_2PI, C.EPS
PAIRS_PER_BLOCK = 256  # pairs (or edges) per thread at least


@_jit
def _exp_point(sa, e):
    """u >= 0 with s_a u + u^2/2 = e, without cancellation for large s_a."""
    return 2.0 * e / (math.sqrt(sa * sa + 2.0 * e) + sa)


@_jit
def _piece(R, a1, a2, sa, sb, amin, nodes, weights, S):
    """Add to S the five sums over ``u in [0, U]``, ``s = s_a + u``, of ``g = e^{-(s_a u + u^2/2)}`` times
    ``erfcx(rho/sqrt2)/(2 rho (a_1^2 + s^2))``, the same with ``a_2``, ``1/(a_1^2 + s^2)``, ``1/(a_2^2 + s^2)``, 1.

    Panels: geometric ``[r0 (2^k - 1), r0 (2^(k+1) - 1)]`` from the end nearest to the foot (``r0``: the distance
    from there to the nearest singularity, the poles ``s = +-i a``; the branch points of ``rho`` at
    ``+-i sqrt(R)`` are farther), each split so that the exponent changes by at most ``_C_DMAX``; ``U`` cuts
    the piece where the exponent has dropped by ``_C_WINDOW``. Returns False when the panels run out.
    """
    U = min(sb - sa, _exp_point(sa, _C_WINDOW))
    if not U > 0.0:
        return True
    r0 = math.sqrt(sa * sa + amin * amin)
    left = 0.0
    k = 0
    while left < U:
        if k >= _C_MAX_GRADES:
            return False
        right = min(r0 * (2.0 ** (k + 1) - 1.0), U)
        e_l = sa * left + 0.5 * left * left
        e_r = sa * right + 0.5 * right * right
        nsub = max(1, int(math.ceil((e_r - e_l) / _C_DMAX)))
        ul = left
        for q in range(1, nsub + 1):
            ur = right if q == nsub else _exp_point(sa, e_l + (e_r - e_l) * q / nsub)
            half = 0.5 * (ur - ul)
            mid = 0.5 * (ur + ul)
            for n in range(nodes.size):
                u = mid + half * nodes[n]
                s = sa + u
                g = weights[n] * half * math.exp(-(sa * u + 0.5 * u * u))
                rho = math.sqrt(R + s * s)
                k1 = g / (a1 * a1 + s * s)
                k2 = g / (a2 * a2 + s * s)
                c = 0.5 * _erfcx(rho / _SQRT2) / rho
                S[0] += c * k1
                S[1] += c * k2
                S[2] += k1
                S[3] += k2
                S[4] += g
            ul = ur
        left = right
        k += 1
    return True


@_jit
def _edge_integrals(edge, out, S):
    """Logs of the five integrals of one edge ``(R, h1, a1, h2, a2, s_lo, s_hi)`` over ``s in [s_lo, s_hi]`` into
    ``out``; False if not resolved (Gauss-Legendre rule ``_CX``, ``_CW`` on the panels of :func:`_piece`).

    ``C_k = (1/2pi) int h_k Q(rho)/rho a_k/(a_k^2 + s^2) ds`` (``rho^2 = R + s^2``), ``k = 1, 2`` (the edge's
    two facets: ``h = |d|``, ``a = |e|``, ``R = h^2 + a^2``); ``B_k = (1/2pi) int e^{-(a_k^2 + s^2)/2}
    a_k/(a_k^2 + s^2) ds`` (Owen-T edge term of facet k's polygon); ``Z = int phi(s) ds`` (edge mass).
    ``S``: scratch of 5 floats.
    """
    R, h1, a1, h2, a2, s_lo, s_hi = edge
    for k in range(5):
        out[k] = -_INF
    if not s_lo < s_hi:
        return True
    amin = _INF
    if a1 > 0.0:
        amin = a1
    if a2 > 0.0:
        amin = min(amin, a2)
    ok = True
    for p in range(2):
        if s_lo < 0.0 < s_hi:  # straddles the foot: [0, s_hi] and [0, -s_lo]
            sa, sb = 0.0, (s_hi if p == 0 else -s_lo)
        elif p == 1:
            break
        elif s_lo >= 0.0:
            sa, sb = s_lo, s_hi
        else:
            sa, sb = -s_hi, -s_lo
        for k in range(5):
            S[k] = 0.0
        ok = _piece(R, a1, a2, sa, sb, amin, _CX, _CW, S) and ok
        base = (-0.5 * (R + sa * sa), -0.5 * (R + sa * sa), -0.5 * (a1 * a1 + sa * sa), -0.5 * (a2 * a2 + sa * sa),
                -0.5 * sa * sa)
        for k in range(5):
            if S[k] > 0.0:
                out[k] = _lse_pair(out[k], base[k] + math.log(S[k]))
    out[0] = out[0] + math.log(h1) + math.log(a1) - _LOG_2PI_F if h1 > 0.0 and a1 > 0.0 else -_INF
    out[1] = out[1] + math.log(h2) + math.log(a2) - _LOG_2PI_F if h2 > 0.0 and a2 > 0.0 else -_INF
    out[2] = out[2] + math.log(a1) - _LOG_2PI_F if a1 > 0.0 else -_INF
    out[3] = out[3] + math.log(a2) - _LOG_2PI_F if a2 > 0.0 else -_INF
    out[4] = out[4] - _LOG_SQRT_2PI_F
    return ok


@_jit
def _edge_integrals_many(start, stop, edges, out, ok):
    R, h1, a1, h2, a2, s_lo, s_hi = edges
    for m in range(start, stop):
        ok[m] = _edge_integrals((R[m], h1[m], a1[m], h2[m], a2[m], s_lo[m], s_hi[m]), out[m], np.empty(5))


def edge_integrals(R, h1, a1, h2, a2, s_lo, s_hi):
    """Vectorised :func:`_edge_integrals`: ``(log C1, log C2, log B1, log B2, log Z, ok)`` (1-D arrays)."""
    args = tuple(np.ascontiguousarray(np.ravel(x), dtype=np.float64) for x in (R, h1, a1, h2, a2, s_lo, s_hi))
    out = np.empty((args[0].size, 5))
    ok = np.empty(args[0].size, dtype=np.bool_)
    run_split(lambda start, stop: _edge_integrals_many(start, stop, args, out, ok), args[0].size,
              min_per_thread=PAIRS_PER_BLOCK)
    return out[:, 0], out[:, 1], out[:, 2], out[:, 3], out[:, 4], ok
