"""An explicitly vectorised ``exp`` and the S = 2 kernel's graded edge panel built on it (numba has no SVML here).

The kernel's quadrature nodes (``planar.kernel``: the Gauss-Legendre sums of each graded edge's integral, eq. 5
through NOTES §3's Owen-T edge formula) call ``exp`` at every node, and libm's ``exp`` is an opaque scalar call. Here
the node loop is written in LLVM IR on ``<8 x double>`` vectors (a numba ``@intrinsic``), so it is SIMD code whatever
LLVM's loop vectoriser would decide for 10 to 24 nodes, and its bits do not depend on that decision:

* ``exp`` (:func:`_vexp`): Cody-Waite range reduction ``k = round(x / ln 2)`` (the 1.5 * 2^52 shifter),
  ``r = (x - k ln2_hi) - k ln2_lo`` (``ln2_hi`` of 32 significant bits, so ``k ln2_hi`` is exact, and FMA), ``|r| <=
  0.3466``; a degree-13 Taylor polynomial by FMAs (:func:`_poly`; truncation ``|r|^14 / 14! <= 4.1e-18``
  relative); ``2^k`` as ``2^k1 2^k2`` built from their IEEE bits (``k1 = k >> 1``): two exact multiplications while
  the result is normal.
  Selects, no branches: ``x <= -745.5`` gives 0, ``x >= 709.9`` gives ``+inf``, NaN gives NaN.
* accuracy (``tests/test_fast_exp.py``, against 40-digit mpmath on a dense grid of ``[-745, 709.78]`` plus the extreme
  and special arguments, 45,000 points): at most ``FAST_EXP_ULPS`` (1; measured worst 0.84) unit in the last place
  wherever the result is a normal double (``x >= -708.39``); subnormal results are within one subnormal step (rounded
  once, from the normal ``p 2^k1``). libm's ``exp`` is within 0.5-1 ulp too, so the kernel's bound grows by one
  ulp of each node term at most (``planar.kernel.GRADED_REL``).
* FMA is the ``llvm.fma`` intrinsic, fused on every x86-64 with FMA3 and correctly emulated elsewhere: the same bits.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

FAST_EXP_ULPS = 1.0  # error bound on normal results, in ulps (measured worst 0.84: tests/test_fast_exp.py)
LANES = 8
_LOG2E = 1.4426950408889634  # 1 / ln 2
_SHIFTER = 6755399441055744.0  # 1.5 * 2^52: y + shifter - shifter rounds y to an integer (|y| < 2^51)
_LN2_HI = 0.6931471803691238  # ln 2 to 32 significant bits (fdlibm's ln2HI: k * _LN2_HI is exact for |k| < 2^21)
_LN2_LO = 1.9082149292705877e-10  # ln 2 - _LN2_HI
_LO = -745.5  # exp(_LO) rounds to 0
_HI = 709.9  # exp(_HI) overflows
_INV = tuple(1.0 / math.factorial(k) for k in range(14))

_F64 = ir.DoubleType()
_V = ir.VectorType(_F64, LANES)
_VI = ir.VectorType(ir.IntType(64), LANES)


def _splat(v):
    return ir.Constant(_V, [float(v)] * LANES)


def _fma(builder, a, b, c):
    """``a b + c`` rounded once (``llvm.fma`` on ``<8 x double>``)."""
    fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_V, [_V, _V, _V]), "llvm.fma.v8f64")
    return builder.call(fn, [a, b, c])


def _poly(builder, r):
    """``sum_k r^k / k!``, ``k <= 13``: the tail ``sum_{k >= 4} r^(k-4) / k!`` by Estrin's scheme (4 FMAs deep), then
    Horner's last four steps ``1 + r (1 + r (1/2 + r (1/6 + r tail)))``, which keep Horner's rounding (the tail's
    error is scaled by ``r^4 / 24 <= 6e-4``) at 8 FMA latencies instead of 13."""
    r2 = builder.fmul(r, r)
    r4 = builder.fmul(r2, r2)
    c = _INV[4:]  # c[j] = 1 / (j + 4)!, j = 0..9
    q = [_fma(builder, _splat(c[2 * i + 1]), r, _splat(c[2 * i])) for i in range(5)]
    s0 = _fma(builder, q[1], r2, q[0])
    s1 = _fma(builder, q[3], r2, q[2])
    tail = _fma(builder, _fma(builder, q[4], r4, s1), r4, s0)
    p = tail
    for k in (3, 2, 1, 0):
        p = _fma(builder, p, r, _splat(_INV[k]))
    return p


def _vexp(builder, x):
    """``exp`` of the ``<8 x double>`` value ``x`` (module docstring), as LLVM IR."""
    xc = builder.select(builder.fcmp_ordered(">", x, _splat(_LO)), x, _splat(_LO))  # NaN -> _LO, restored below
    xc = builder.select(builder.fcmp_ordered("<", xc, _splat(_HI)), xc, _splat(_HI))
    kf = builder.fsub(builder.fadd(builder.fmul(xc, _splat(_LOG2E)), _splat(_SHIFTER)), _splat(_SHIFTER))
    nkf = builder.fneg(kf)
    r = _fma(builder, nkf, _splat(_LN2_HI), xc)
    r = _fma(builder, nkf, _splat(_LN2_LO), r)
    p = _poly(builder, r)
    k = builder.fptosi(kf, _VI)
    k1 = builder.ashr(k, ir.Constant(_VI, [1] * LANES))
    k2 = builder.sub(k, k1)

    def pow2(e):
        bits = builder.shl(builder.add(e, ir.Constant(_VI, [1023] * LANES)), ir.Constant(_VI, [52] * LANES))
        return builder.bitcast(bits, _V)

    y = builder.fmul(builder.fmul(p, pow2(k1)), pow2(k2))
    return builder.select(builder.fcmp_unordered("uno", x, x), x, y)


def _load8(context, builder, aryty, ary, offset):
    """``<8 x double>`` from a float64 array at element ``offset``."""
    data = context.make_array(aryty)(context, builder, ary).data
    ptr = builder.bitcast(builder.gep(data, [offset]), _V.as_pointer())
    return builder.load(ptr, align=8)


def _hsum(builder, v):
    """The 8 lanes of ``v`` summed in a fixed tree, ((0+4)+(2+6)) + ((1+5)+(3+7)), by halving shuffles."""
    i32 = ir.IntType(32)

    def half(x, n):
        lo = builder.shuffle_vector(x, x, ir.Constant(ir.VectorType(i32, n), list(range(n))))
        hi = builder.shuffle_vector(x, x, ir.Constant(ir.VectorType(i32, n), list(range(n, 2 * n))))
        return builder.fadd(lo, hi)

    s2 = half(half(v, 4), 2)  # [(0+4)+(2+6), (1+5)+(3+7)]
    lane = [builder.extract_element(s2, ir.Constant(i32, i)) for i in range(2)]
    return builder.fadd(lane[0], lane[1])


@intrinsic
def exp8(typingctx, x, offset, out):
    """``out[offset:offset + 8] = exp(x[offset:offset + 8])`` by :func:`_vexp` (the tests' handle on the exp)."""
    sig = types.void(x, offset, out)

    def codegen(context, builder, signature, args):
        xa, off, oa = args
        v = _vexp(builder, _load8(context, builder, x, xa, off))
        data = context.make_array(out)(context, builder, oa).data
        builder.store(v, builder.bitcast(builder.gep(data, [off]), _V.as_pointer()), align=8)
        return context.get_dummy_value()

    return sig, codegen


def _panel_chunk(builder, a, h, hh, left, half, shift, x, w):
    """Eight nodes of :func:`panel_sums`: ``(w f h / (h^2 + s^2), w f, w f u)`` and ``f`` itself, as vectors."""
    u = builder.fadd(left, builder.fmul(half, builder.fadd(x, _splat(1.0))))
    s = builder.fadd(a, u)
    arg = builder.fsub(builder.fneg(builder.fmul(a, u)), builder.fmul(_splat(0.5), builder.fmul(u, u)))
    arg = builder.fadd(arg, shift)  # + 0.0 leaves every argument but -0.0 as it was (and exp(-0) = exp(+0))
    f = _vexp(builder, arg)
    e = builder.fmul(f, w)
    t = builder.fdiv(builder.fmul(e, h), builder.fadd(hh, builder.fmul(s, s)))
    return (t, e, builder.fmul(e, u)), f


@intrinsic
def panel_sums(typingctx, a, h, left, half, shift, xs, ws):
    """``(sum_k w_k f_k h / (h^2 + s_k^2), sum_k w_k f_k, sum_k w_k f_k u_k, f_last, f_first)`` over the nodes ``u_k =
    left + half (x_k + 1)`` of a padded rule (``xs``, ``ws`` of 16 or 24 nodes, zero weights at the padding, whose last
    node is ``x = 1``: ``f_last = f`` at the panel's right end ``left + 2 half``, and the one before it ``x = -1``:
    ``f_first = f`` at ``left``), ``s_k = a + u_k``, ``f_k = exp((-a u_k - u_k^2 / 2) + shift)`` (the caller's scale
    ``e^shift`` inside the one exponential: ``shift = 0`` gives the unscaled sums bit for bit): 8 nodes per vector, the
    chunks added lane by lane in order, the lanes in a fixed tree (:func:`_hsum`), so the same bits on every
    machine."""
    sig = types.Tuple((types.float64,) * 5)(a, h, left, half, shift, xs, ws)

    def codegen(context, builder, signature, args):
        av, hv, lv, fv, sv, xa, wa = args
        a8, h8, l8, f8, s8 = (_splat_value(builder, v) for v in (av, hv, lv, fv, sv))
        hh8 = builder.fmul(h8, h8)
        i64 = ir.IntType(64)
        i32 = ir.IntType(32)

        def chunk(j):
            return _panel_chunk(builder, a8, h8, hh8, l8, f8, s8,
                                _load8(context, builder, xs, xa, ir.Constant(i64, 8 * j)),
                                _load8(context, builder, ws, wa, ir.Constant(i64, 8 * j)))

        c0, _ = chunk(0)
        c1, f1 = chunk(1)
        slots = [cgutils.alloca_once_value(builder, builder.fadd(u, v)) for u, v in zip(c0, c1)]
        last = cgutils.alloca_once_value(builder, builder.extract_element(f1, ir.Constant(i32, 7)))
        first = cgutils.alloca_once_value(builder, builder.extract_element(f1, ir.Constant(i32, 6)))
        n = context.make_array(xs)(context, builder, xa).nitems
        with builder.if_then(builder.icmp_signed(">", n, ir.Constant(n.type, 16))):
            c2, f2 = chunk(2)
            for slot, v in zip(slots, c2):
                builder.store(builder.fadd(builder.load(slot), v), slot)
            builder.store(builder.extract_element(f2, ir.Constant(i32, 7)), last)
            builder.store(builder.extract_element(f2, ir.Constant(i32, 6)), first)
        out = [_hsum(builder, builder.load(slot)) for slot in slots] + [builder.load(last), builder.load(first)]
        return context.make_tuple(builder, signature.return_type, out)

    return sig, codegen


def _splat_value(builder, v):
    """A scalar double broadcast to ``<8 x double>``."""
    vec = builder.insert_element(ir.Constant(_V, ir.Undefined), v, ir.Constant(ir.IntType(32), 0))
    return builder.shuffle_vector(vec, ir.Constant(_V, ir.Undefined), ir.Constant(ir.VectorType(ir.IntType(32), LANES),
                                                                                   [0] * LANES))


@numba.njit(cache=True, nogil=True)
def fast_exp_many(x):
    """:func:`_vexp` over an array (padded to a multiple of 8): the vector exp the kernel runs, for the tests."""
    n = x.size
    m = (n + LANES - 1) // LANES * LANES
    xp = np.zeros(m)
    xp[:n] = x
    out = np.empty(m)
    for i in range(0, m, LANES):
        exp8(xp, i, out)
    return out[:n]
