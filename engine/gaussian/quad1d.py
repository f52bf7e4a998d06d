"""Log-space quadrature of a strongly log-concave, piecewise-analytic function on a line.

Used for the outer integral of slice masses (NOTES §3: "deterministic nested quadrature"):
for ``y ~ N(0, I)`` restricted to a convex set, the marginal density of ``t = u^T y`` is
``exp(g(t))`` with ``g'' <= -1`` (a marginal of a 1-strongly log-concave density is 1-strongly
log-concave, Prekopa / Brascamp-Lieb). Hence the integrand is unimodal, its mass lies within
``sqrt(2 * drop)`` of the mode, and on each side of the mode it falls monotonically. Between the
breakpoints (vertex heights, where the combinatorics of the slice changes) it is analytic.

The rule: (1) bound the support by ``g <= -t^2/2 - log sqrt(2 pi)``; (2) golden-section search for
the mode; (3) bisection for the points where ``g`` has dropped by ``drop`` nats; (4) composite
20-point Gauss-Legendre on the window, split at the mode and at every breakpoint inside it, two
panels per segment. On a segment the log-integrand varies by at most ``drop`` = 40 nats, and the
20-point rule integrates ``exp(-lambda u)`` with ``lambda h <= 20`` to ~1e-20 relative.
"""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp

_X, _W = np.polynomial.legendre.leggauss(20)
# two panels per segment: nodes on [0, 1] and their weights
_PX = np.concatenate([0.25 * (_X + 1.0), 0.5 + 0.25 * (_X + 1.0)])
_PW = np.concatenate([0.25 * _W, 0.25 * _W])
_LOG_SQRT_2PI = 0.5 * np.log(2.0 * np.pi)
_GOLDEN = 0.5 * (np.sqrt(5.0) - 1.0)


def integrate_logconcave(logf, lo, hi, breaks, *, drop: float = 40.0, golden_iters: int = 40,
                         bisect_iters: int = 24):
    """``log int_lo^hi exp(logf(t)) dt`` for each of M problems.

    ``logf(T)`` maps an (M, Q) array of abscissae to the (M, Q) log-integrand (``-inf`` outside the
    support). ``lo``, ``hi`` (M,) may be infinite; ``breaks`` (M, K) are the points (NaN: none) where
    ``logf`` may have a kink. ``logf(t) <= -t^2/2 - log sqrt(2 pi)`` must hold (true for marginals of
    the standard normal). Returns ``(log_integral, nodes, log_weights)`` with (M, Q') nodes and
    ``log_weights = log(w) + logf(nodes)`` so that callers can form moments.
    """
    lo = np.asarray(lo, dtype=np.float64)
    hi = np.asarray(hi, dtype=np.float64)
    M = lo.shape[0]
    breaks = np.asarray(breaks, dtype=np.float64).reshape(M, -1)
    fin = np.where(np.isfinite(breaks), breaks, np.nan)
    with np.errstate(invalid="ignore"):
        sb = np.sort(fin, axis=1)
        mids = 0.5 * (sb[:, 1:] + sb[:, :-1])
    anchor = np.clip(0.0, lo, hi)
    cand = np.concatenate([anchor[:, None], mids, np.clip(sb, lo[:, None], hi[:, None]),
                           np.clip(np.stack([lo + 1.0, hi - 1.0], 1), lo[:, None], hi[:, None])], axis=1)
    cand = np.where(np.isfinite(cand), cand, anchor[:, None])
    gc = logf(cand)
    gref = np.max(np.where(np.isnan(gc), -np.inf, gc), axis=1)
    ok = np.isfinite(gref)
    gref = np.where(ok, gref, 0.0)
    T = np.sqrt(2.0 * np.maximum(drop + 5.0 - gref - _LOG_SQRT_2PI, 1.0))
    A = np.maximum(lo, -T)
    B = np.minimum(hi, T)
    B = np.maximum(A, B)

    # (2) golden section for the mode on [A, B]
    a, b = A.copy(), B.copy()
    x1 = b - _GOLDEN * (b - a)
    x2 = a + _GOLDEN * (b - a)
    f12 = logf(np.stack([x1, x2], axis=1))
    f1, f2 = f12[:, 0], f12[:, 1]
    for _ in range(golden_iters):
        left = f1 >= f2  # the maximum is in [a, x2]
        b = np.where(left, x2, b)
        a = np.where(left, a, x1)
        nx1 = np.where(left, b - _GOLDEN * (b - a), x2)
        nx2 = np.where(left, x1, a + _GOLDEN * (b - a))
        newpt = np.where(left, nx1, nx2)
        fn = logf(newpt[:, None])[:, 0]
        f1n = np.where(left, fn, f2)
        f2n = np.where(left, f1, fn)
        x1, x2, f1, f2 = nx1, nx2, f1n, f2n
    tstar = np.where(f1 >= f2, x1, x2)
    gstar = np.maximum(f1, f2)
    gstar = np.where(np.isfinite(gstar), gstar, gref)
    target = gstar - drop

    # (3) window ends by bisection on each side
    gAB = logf(np.stack([A, B], axis=1))
    left_lo, left_hi = A.copy(), tstar.copy()
    right_lo, right_hi = tstar.copy(), B.copy()
    need_l = gAB[:, 0] < target
    need_r = gAB[:, 1] < target
    for _ in range(bisect_iters):
        ml = 0.5 * (left_lo + left_hi)
        mr = 0.5 * (right_lo + right_hi)
        g = logf(np.stack([ml, mr], axis=1))
        above_l = g[:, 0] >= target
        left_hi = np.where(above_l, ml, left_hi)
        left_lo = np.where(above_l, left_lo, ml)
        above_r = g[:, 1] >= target
        right_lo = np.where(above_r, mr, right_lo)
        right_hi = np.where(above_r, right_hi, mr)
    wa = np.where(need_l, left_lo, A)
    wb = np.where(need_r, right_hi, B)

    # (4) composite Gauss-Legendre, split at the mode and at the breakpoints inside the window
    inside = (fin > wa[:, None]) & (fin < wb[:, None])
    kmax = int(inside.sum(axis=1).max()) if inside.size else 0
    inner = np.sort(np.where(inside, fin, np.inf), axis=1)[:, :kmax]
    inner = np.where(np.isfinite(inner), inner, wb[:, None])
    pts = np.sort(np.concatenate([wa[:, None], np.clip(tstar, wa, wb)[:, None], inner, wb[:, None]], axis=1),
                  axis=1)
    left_end, length = pts[:, :-1], np.diff(pts, axis=1)
    nodes = (left_end[:, :, None] + length[:, :, None] * _PX).reshape(M, -1)
    with np.errstate(divide="ignore"):
        logw = (np.log(length)[:, :, None] + np.log(_PW)).reshape(M, -1)
    vals = logf(nodes)
    lw = np.where(np.isfinite(logw), logw + vals, -np.inf)
    lw = np.where(np.isnan(lw), -np.inf, lw)
    total = logsumexp(lw, axis=1)
    total = np.where(ok, total, -np.inf)
    return total, nodes, lw
