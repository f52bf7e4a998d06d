"""Exact-rational oracle for S = 2 (Theorem 1 eq. 5 with every region quantity exact).

Shares nothing with the engine or with :mod:`verify.oracles.quadrature`:

1. Partition (Lemma 3, Cor. 1) by exact polygon clipping: the weights and data are the exact rationals of
   their float64 values (``fractions.Fraction``); starting from the square ``|z_i| <= B``, every
   activation splits each cell's polygon along each unit's line ``a.z + b = 0`` (exact
   Sutherland-Hodgman on a convex polygon) and applies the slope fixed by the exact sign, so every
   cell ends with its exact affine map ``g(z) = A z + b`` (eq. 2) and its exact vertices.
2. On a cell the integrand ``N(z; 0, Sigma_z) N(x; A z + b, Sigma_x)`` (eq. 4) is
   ``C exp(-(z - mu)^T P (z - mu) / 2)`` with ``P = Sigma_z^-1 + A^T Sigma_x^-1 A`` (the inverse of
   Sigma_omega, Thm. 1), ``mu = P^-1 A^T Sigma_x^-1 (x - b)`` and
   ``log C = const - (r - q^T mu) / 2``, ``r = (x - b)^T Sigma_x^-1 (x - b)``; ``P``, ``mu`` and
   ``r - q^T mu`` are exact rationals, so the quadratic form that cancels ~1e18 against ~1e1 on
   badly conditioned nets costs no digit.
3. The Gaussian integral over the exact polygon at ``dps`` digits: whiten ``y = L^T (z - mu)``
   (``P = L L^T``), then ``int_{y1} phi(y1) [Phi(hi(y1)) - Phi(lo(y1))]`` by tanh-sinh ``mp.quad``,
   split at every vertex, at 0 and wherever a steep edge crosses ``y2 in {0, +-3, +-8}``, the normal
   differences taken on the far side of 0 (no cancellation in the tails).

The error bound returned covers mp.quad's estimates, the outer cut ``|y1| <= T`` (mass <= 2 Phi(-T) of
each whitened polygon) and the prior mass outside the square (times the largest value of the
likelihood).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import mpmath as mp
import numpy as np

from engine.network import Linear, Network

BOX = 64  # half-side of the square that is partitioned (prior mass outside <= 4 Phi(-64 / sd_max))
T_CUT = 40  # whitened outer cut |y1| <= T_CUT


@dataclass
class ExactResult:
    log_px: mp.mpf  # log p(x) at dps digits
    abs_error: float  # bound on |log p(x) - log_px| (nats)
    region_log_mass: list  # [(pattern, log of the cell's term of eq. 5, float)]
    n_cells: int
    cells: list  # [dict(pattern, log_norm, log_mass, mu, A, b)]: eq. 5's factors per cell (floats; A, b exact)


def _fr(v) -> Fraction:
    return Fraction(float(v))


def _clip(poly, a, b):
    """The parts of the convex polygon ``poly`` with ``a.z + b >= 0`` and ``<= 0`` (exact)."""
    vals = [a[0] * p[0] + a[1] * p[1] + b for p in poly]
    pos, neg = [], []
    n = len(poly)
    for i in range(n):
        p, q, vp, vq = poly[i], poly[(i + 1) % n], vals[i], vals[(i + 1) % n]
        if vp >= 0:
            pos.append(p)
        if vp <= 0:
            neg.append(p)
        if (vp > 0 > vq) or (vp < 0 < vq):
            t = vp / (vp - vq)
            x = (p[0] + t * (q[0] - p[0]), p[1] + t * (q[1] - p[1]))
            pos.append(x)
            neg.append(x)
    return pos, neg


def _area2(poly) -> Fraction:
    n = len(poly)
    return sum(poly[i][0] * poly[(i + 1) % n][1] - poly[(i + 1) % n][0] * poly[i][1] for i in range(n))


def exact_cells(net: Network, box: int = BOX):
    """Every full-dimensional region of ``net`` in the square ``|z_i| <= box``, exactly.

    Returns ``[(pattern, vertices, A, b)]``: the sign pattern (tuple of bools, one per hidden unit), the
    polygon's exact vertices (counter-clockwise), and the exact affine map ``g = A z + b`` on it
    (A as D rows of S Fractions).
    """
    if net.latent_dim != 2:
        raise ValueError("exact_cells needs S = 2")
    B = Fraction(box)
    square = [(-B, -B), (B, -B), (B, B), (-B, B)]
    ident = [(Fraction(1), Fraction(0)), (Fraction(0), Fraction(1))]
    cells = [((), square, [r for r in ident], [Fraction(0), Fraction(0)])]
    for layer in net.layers:
        if isinstance(layer, Linear):
            W = [[_fr(w) for w in row] for row in np.asarray(layer.weight)]
            v = [_fr(x) for x in np.ravel(layer.bias)]
            cells = [(pat, poly,
                      [tuple(sum(w * r[k] for w, r in zip(Wj, rows)) for k in range(2)) for Wj in W],
                      [sum(w * c for w, c in zip(Wj, bias)) + vj for Wj, vj in zip(W, v)])
                     for pat, poly, rows, bias in cells]
            continue
        eta = _fr(layer.negative_slope)
        nxt = []
        for pat, poly, rows, bias in cells:
            parts = [((), poly)]
            for a, b in zip(rows, bias):
                split = []
                for sg, pp in parts:
                    pos, neg = _clip(pp, a, b)
                    if len(pos) >= 3 and _area2(pos) != 0:
                        split.append((sg + (True,), pos))
                    if len(neg) >= 3 and _area2(neg) != 0:
                        split.append((sg + (False,), neg))
                parts = split
            for sg, pp in parts:
                s = [Fraction(1) if p else eta for p in sg]
                nxt.append((pat + sg, pp, [tuple(si * x for x in r) for si, r in zip(s, rows)],
                            [si * c for si, c in zip(s, bias)]))
        cells = nxt
    return [(pat, poly, rows, bias) for pat, poly, rows, bias in cells]


def _sympy(M):
    """A Fraction matrix as an exact sympy matrix (sympy imported here: only this oracle needs it)."""
    import sympy

    return sympy.Matrix([[sympy.Rational(v.numerator, v.denominator) for v in row] for row in M])


def _fraction(r) -> Fraction:
    return Fraction(int(r.p), int(r.q))


def _inv(M):
    """Exact inverse of a square Fraction matrix (sympy, rational arithmetic)."""
    return [[_fraction(v) for v in row] for row in _sympy(M).inv().tolist()]


def _det(M):
    """Exact determinant of a square Fraction matrix (sympy, rational arithmetic)."""
    return _fraction(_sympy(M).det())


def _mpf(q: Fraction) -> mp.mpf:
    return mp.mpf(q.numerator) / q.denominator


def _far(lo, hi):
    """``Phi(hi) - Phi(lo)`` taken on the far side of 0."""
    if lo >= 0:
        return mp.ncdf(-lo) - mp.ncdf(-hi)
    if hi <= 0:
        return mp.ncdf(hi) - mp.ncdf(lo)
    return 1 - mp.ncdf(-hi) - mp.ncdf(lo)


def std_polygon_log_mass(Y, T=T_CUT):
    """``(log P(y in polygon), log of a bound on its absolute error)`` for ``y ~ N(0, I_2)``; ``Y`` the
    polygon's vertices (mpf pairs, either orientation). The bound is mp.quad's estimate plus the mass
    ``2 Phi(-T)`` that the cut ``|y1| <= T`` may leave out."""
    n = len(Y)
    orient = mp.fsum(Y[i][0] * Y[(i + 1) % n][1] - Y[(i + 1) % n][0] * Y[i][1] for i in range(n))
    sgn = 1 if orient > 0 else -1
    # half-planes h1 y1 + h2 y2 <= c from the edges (interior on the left of a counter-clockwise edge)
    edges = []
    for i in range(n):
        p, q = Y[i], Y[(i + 1) % n]
        h1, h2 = sgn * (q[1] - p[1]), -sgn * (q[0] - p[0])
        edges.append((h1, h2, h1 * p[0] + h2 * p[1], p, q))
    y1s = [p[0] for p in Y]
    lo1, hi1 = max(min(y1s), mp.mpf(-T)), min(max(y1s), mp.mpf(T))
    tail = 2 * mp.ncdf(-T)
    if not lo1 < hi1:
        return -mp.inf, mp.log(tail)
    pts = set(y1s) | {mp.mpf(0)}
    for h1, h2, c, _, _ in edges:
        if abs(h1) > abs(h2):  # a steep edge: Phi(hi(y1)) turns within 1 / slope, so split where it crosses
            for lv in (-8, -3, 0, 3, 8):  # y2 = level
                pts.add((c - h2 * lv) / h1)
    pts = sorted(t for t in pts if lo1 < t < hi1)
    pts = [lo1] + pts + [hi1]

    def seg(t):
        lo, hi = -mp.inf, mp.inf
        for h1, h2, c, _, _ in edges:
            if h2 > 0:
                hi = min(hi, (c - h1 * t) / h2)
            elif h2 < 0:
                lo = max(lo, (c - h1 * t) / h2)
        return lo, hi

    def logf(t):
        lo, hi = seg(t)
        if not lo < hi:
            return -mp.inf
        v = _far(lo, hi)
        return mp.log(v) - t * t / 2 if v > 0 else -mp.inf

    probe = pts + [(u + v) / 2 for u, v in zip(pts[:-1], pts[1:])]
    ref = max(logf(t) for t in probe)
    if ref == -mp.inf:
        return -mp.inf, mp.log(tail)
    val, err = mp.quad(lambda t: mp.exp(logf(t) - ref), pts, error=True)
    val, err = val / mp.sqrt(2 * mp.pi), err / mp.sqrt(2 * mp.pi)
    return mp.log(val) + ref, mp.log(err * mp.exp(ref) + tail)


def exact_log_marginal(net: Network, x, dps: int = 40, box: int = BOX) -> ExactResult:
    """``log p(x)`` (eq. 5) from the exact partition and exact region maps, at ``dps`` digits."""
    cells = exact_cells(net, box)
    S, D = 2, net.data_dim
    Sx = [[_fr(v) for v in row] for row in np.asarray(net.cov_x)]
    Sz = [[_fr(v) for v in row] for row in np.asarray(net.cov_z)]
    Px, Pz = _inv(Sx), _inv(Sz)
    xs = [_fr(v) for v in np.ravel(x)]
    with mp.workdps(dps):
        const = (-(D + S) * mp.log(2 * mp.pi) - mp.log(_mpf(_det(Sx))) - mp.log(_mpf(_det(Sz)))) / 2
        terms, errs, out, info = [], [], [], []
        for pat, poly, rows, bias in cells:
            e = [xi - bi for xi, bi in zip(xs, bias)]
            Pe = [sum(p * v for p, v in zip(row, e)) for row in Px]
            PA = [[sum(Px[i][j] * rows[j][k] for j in range(D)) for k in range(S)] for i in range(D)]
            P = [[Pz[k][m] + sum(rows[i][k] * PA[i][m] for i in range(D)) for m in range(S)] for k in range(S)]
            q = [sum(rows[i][k] * Pe[i] for i in range(D)) for k in range(S)]
            r = sum(a * b for a, b in zip(e, Pe))
            Pi = _inv(P)
            mu = [sum(Pi[k][m] * q[m] for m in range(S)) for k in range(S)]
            kappa = r - sum(a * b for a, b in zip(q, mu))  # exact: (x - b)^T (Sx + A Sz A^T)^-1 (x - b)
            L = mp.cholesky(mp.matrix([[_mpf(v) for v in row] for row in P]))
            Y = []
            for p in poly:
                d = [_mpf(p[k] - mu[k]) for k in range(S)]
                Y.append(tuple(mp.fsum(L[i, k] * d[i] for i in range(S)) for k in range(S)))
            lm, lerr = std_polygon_log_mass(Y)
            k = const - _mpf(kappa) / 2 + mp.log(2 * mp.pi) - mp.log(L[0, 0]) - mp.log(L[1, 1])
            terms.append(k + lm)
            errs.append(k + lerr)
            out.append((pat, float(k + lm)))
            info.append(dict(pattern=pat, log_norm=float(k), log_mass=float(lm), mu=[float(_mpf(m)) for m in mu],
                             A=rows, b=bias))
        top = max(terms)
        tot = mp.fsum(mp.exp(t - top) for t in terms)
        log_px = top + mp.log(tot)
        abs_p = mp.fsum(mp.exp(e - log_px) for e in errs)  # relative error of p(x) ~ error of log p
        # outside the square: prior mass <= sum_i 2 Phi(-box / sd_i), likelihood <= exp(const_x)
        sd = [mp.sqrt(_mpf(Sz[i][i])) for i in range(S)]
        const_x = (-D * mp.log(2 * mp.pi) - mp.log(_mpf(_det(Sx)))) / 2
        outside = mp.fsum(2 * mp.ncdf(-box / s) for s in sd) * mp.exp(const_x - log_px)
        return ExactResult(log_px, float(abs_p + outside + mp.mpf(10) ** (5 - dps)), out, len(cells), info)
