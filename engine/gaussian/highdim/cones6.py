"""S' = 6: Gaussian mass and moments of a polyhedron, one 1-D integral of the S' = 4 flag decomposition per ridge.

Theorem 1 (eq. 5) needs ``Phi_omega(mu, Sigma_omega)``: in whitened, pointed coordinates the mass of ``y ~ N(0, I_6)``
on ``P = {Nrm y <= D}`` (unit rows ``n_i``, offsets ``d_i``). As at S' = 4, 5 (``cones``, ``cones5``, NOTES §6), along
each ray from the mean ``P`` is an interval entered through the facets with ``d_i < 0`` and left through those with
``d_i > 0``, so

    P = 1{0 in P} - sum_i sign(d_i) B_i,     B_i = int_{|d_i|}^inf phi(t) M_5((t / |d_i|) F_i) dt,

``F_i`` the facet in its hyperplane seen from its foot ``d_i n_i`` and ``M_k`` the standard k-D Gaussian mass. The
same identity one dimension down decomposes the scaled facet over its own facets (the ridges ``G_ij`` of ``P``, at
in-plane signed distance ``e_ij`` from the facet's foot; the foot of ``G_ij`` is the projection of the mean on the
ridge's 4-flat, and ``s F_i`` has the ridge ``s G_ij`` at distance ``s e_ij``):

    M_5(s F_i) = 1{0 in F_i} - sum_j sign(e_ij) int_{s |e_ij|}^inf phi(u) M_4((u / |e_ij|) G_ij) du.

Exchanging the ``t`` and ``u`` integrals (``u >= t |e_ij| / |d_i|``, ``t >= |d_i|``) integrates the outer Gaussian in
closed form, ``int_{|d_i|}^{u |d_i| / |e_ij|} phi(t) dt = Q(|d_i|) - Q(u |d_i| / |e_ij|)``, so

    B_i = 1{0 in F_i} Q(|d_i|) - sum_j sign(e_ij) R_ij,
    R_ij = int_{|e_ij|}^inf phi(u) [Q(|d_i|) - Q(u |d_i| / |e_ij|)] M_4((u / |e_ij|) G_ij) du,

one 1-D integral per ridge (an ordered pair facet > ridge) of the S' = 4 flag decomposition (``cones.cone_moments``:
one more 1-D integral per S' = 4 flag), i.e. a 2-D smooth integral per S' = 6 flag -- no more than S' = 5 needs
through ``cones5``'s scale mixture, and the (S' - 2) = 4 of NOTES §6 less the two integrals that the S' = 4 arctangent
exchange and this exchange remove. The ridge's flags do not change with the scale: one ``cone_shape`` per ridge, each
node of the ``u`` rule one row of the S' = 4 batch.

The ``u`` rule is a graded Gauss-Legendre rule (geometric panels from ``|e_ij|``, widths capped where the Gaussian
bound of the integrand changes by more than ``DMAX`` nats, cut ``WINDOW`` nats down, the rest bounded by
``Q(|d_i|) Q(end) Q(end delta / |e_ij|)``), evaluated with ``NODES_HI`` and ``NODES_LO`` nodes per panel; ``|G_hi -
G_lo|`` (the low rule's error, an over-estimate of the high rule's for these analytic integrands: validated against
closed forms and mpmath in ``tests/test_highdim_cones6.py``, not a proof) plus the S' = 4 rows' bars and the window go
into the bar, with the rounding of the signed sums. Moments by the divergence theorem (NOTES §3) from the same nodes:
``E[y 1_P] = -sum_i n_i phi(d_i) M_5(F_i)`` with ``M_5(F_i)`` the ``s = 1`` case above, and ``E[y y^T 1_P] = P I -
sum_i phi(d_i) n_i (d_i M_5(F_i) n_i + U_i E[v 1_{F_i}])^T`` with ``E[v 1_{F_i}] = -sum_j m_ij phi(e_ij) M_4(G_ij)``
(``m_ij`` the ridge's in-plane unit normal, ``U_i`` the facet's basis), one more S' = 4 row per ridge.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from scipy.special import log_ndtr

from ..constants import NEGLIGIBLE_NATS
from . import factors_and_ok, map_regions, whitened
from .cones import cone_moments, cone_shape, consistent

# Outer rules, cheapest first: (nodes per panel, nodes of the error estimate's rule, DMAX, WINDOW). A pair starts at the
# cheapest rule its tolerance allows and moves to the next while its bar exceeds the tolerance. Rows per ridge (S' = 4
# batch rows) and bars on the rotated 6-D boxes of the tests: (6, 4): ~55, bars <= 2.7e-4 (errors <= 4.4e-7);
# (8, 6): ~85, bars <= 5.8e-7 (errors <= 6.4e-10); (12, 6, 8, 40): ~150, bars <= 1.3e-7 (errors <= 2e-14).
RULES = ((6, 4, 16.0, 30.0), (8, 6, 16.0, 30.0), (12, 6, 8.0, 40.0))
NEGLIGIBLE_FACET = 1e-12  # a facet whose divergence term's bound (relative to P) is below this may cancel
CHEAP_TOL = 1e-3  # pairs asked for at least this start at the cheapest rule, the others at the second
_INC = 1e-9  # vertex-facet incidence tolerance (relative to 1 + |D|)
_NEAR = 1e-8  # a facet (ridge) plane closer than this to the mean (the facet's foot) is flagged: the scale is undefined
_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)
_EPS = np.finfo(float).eps
TOL = 1e-6  # the bar below which a pair is certified (issue 14's S = 6 figure: log p within 1e-6)
USE_CONES6 = True  # False: S' = 6 pairs by RQMC alone (``qmc.rqmc_moments``), the route before
CLOSED6 = True  # the cones by the closed outer integral (``cone6_kernel``); False: the outer rules (``RULES``)


class Face(NamedTuple):
    """A facet of a k-polyhedron in an orthonormal basis ``U`` (k, k - 1) of its hyperplane, the foot at the origin:
    unit rows ``Nrm`` (F', k - 1), offsets ``D`` (F',), vertices ``Yv`` (V', k - 1), unit rays ``Yr`` (R', k - 1), the
    index ``rows`` (F',) of each row in the parent's rows, and ``ok``: a genuine facet (dimension k - 1)."""

    Nrm: np.ndarray
    D: np.ndarray
    Yv: np.ndarray
    Yr: np.ndarray
    U: np.ndarray
    rows: np.ndarray
    ok: bool


def face_in_plane(Nrm, D, Yv, Yr, i) -> Face:
    """Facet ``i`` of ``{Nrm y <= D}`` in R^k (vertices ``Yv`` (V, k), unit rays ``Yr`` (R, k)) seen from its foot
    ``D_i n_i`` in an orthonormal basis of its hyperplane (:class:`Face`)."""
    k = Nrm.shape[1]
    n = Nrm[i]
    U = np.linalg.svd(n[None, :])[2][1:].T  # (k, k - 1) orthonormal basis of n's complement
    foot = D[i] * n
    proj = Nrm @ U
    nrm = np.linalg.norm(proj, axis=1)
    keep = (nrm > 1e-12) & (np.arange(Nrm.shape[0]) != i)
    rows = np.nonzero(keep)[0]
    Nf = proj[keep] / nrm[keep, None]
    Df = (D[keep] - Nrm[keep] @ foot) / nrm[keep]
    on = np.abs(Yv @ n - D[i]) <= _INC * (1.0 + abs(D[i]))
    Vf = (Yv[on] - foot) @ U
    Rf = np.zeros((0, k - 1))
    if Yr.size:
        Rf = Yr[np.abs(Yr @ n) <= _INC] @ U
        Rf = Rf / np.linalg.norm(Rf, axis=1, keepdims=True)
    ok = Vf.shape[0] > 0 and np.linalg.matrix_rank(np.vstack([Vf - Vf[0], Rf]), tol=1e-9) == k - 1
    return Face(Nf, Df, Vf, Rf, U, rows, bool(ok))


def _panels(es, delta, rule):
    """Edges of the panels in the scale ``sigma >= 1`` shared by the sides of a ridge (``es``: its in-plane distances
    ``|e|`` from the feet of its two facets, ``delta`` a lower bound of the ridge foot's distance from ``G``, since
    ``M_4(sigma G) <= Q(sigma delta)``): geometric from 1 (first width ``min(1, 1/e) / 8`` in ``sigma``, i.e.
    ``min(e, 1) / 8`` in ``u = sigma e``), each at most ``DMAX / (kappa max(u, 1))`` wide in ``u`` for the steepest
    side (``kappa = 1 + delta^2 / e^2``: the Gaussian bound changes by at most ``DMAX`` nats across a panel), up to
    where the flattest side's bound has fallen ``WINDOW`` nats."""
    _, _, dmax, window = rule
    e_hi, e_lo = max(es), min(es)
    kappa = 1.0 + (delta / e_hi) ** 2
    end = math.sqrt(1.0 + 2.0 * window / (e_lo * e_lo + delta * delta))
    edges, w = [1.0], min(1.0, 1.0 / e_hi) / 8.0
    while edges[-1] < end:
        t = edges[-1]
        edges.append(min(t + min(w, dmax / (kappa * max(t * e_hi, 1.0) * e_hi)), end))
        w *= 2.0
    return np.array(edges), end


def _nodes(edges, rule):
    x, w = rule
    lo, hi = edges[:-1, None], edges[1:, None]
    return ((lo + hi) / 2 + (hi - lo) / 2 * x[None]).ravel(), ((hi - lo) / 2 * w[None]).ravel()


def _lse(a):
    a = np.asarray(a, dtype=np.float64)
    m = np.max(a) if a.size else -np.inf
    return m + math.log(np.sum(np.exp(a - m))) if np.isfinite(m) else -np.inf


def _exp(x):
    """``exp(x)``, saturating at ``e^700`` (a bound that large flags the pair; it must not raise)."""
    return math.exp(min(x, 700.0))


def _log_q(x):
    return log_ndtr(-np.asarray(x, dtype=np.float64))


def _log_gap(d, sigma):
    """``log(Q(d) - Q(sigma d))`` for ``sigma >= 1`` (the outer Gaussian's mass between the facet's plane and the ray
    through the ridge point at scale ``sigma``), from ``log Q`` differences (relative error ``~eps |log Q| / (1 -
    ratio)``, largest at the rule's first node, where the integrand is smallest)."""
    lq0 = float(_log_q(d))
    diff = _log_q(sigma * d) - lq0
    with np.errstate(divide="ignore"):
        return lq0 + np.log(-np.expm1(np.minimum(diff, 0.0)))


class Ridge(NamedTuple):
    """One side of a ridge (the ridge seen from one of its two facets): ``log R_ij`` and its relative error, ``log
    int phi(u) M_4((u/e) G) du`` (the facet's own mass term, for the moments) and its relative error, ``log M_4(G)``
    (scale 1) and its relative error, and ``flagged``."""

    log_r: float
    rel_r: float
    log_m: float
    rel_m: float
    log_g: float
    rel_g: float
    flagged: bool


_BAD = Ridge(-np.inf, np.inf, -np.inf, np.inf, -np.inf, np.inf, True)


def _rule_sum(lw, lf, n):
    """log of the high rule's sum (first ``n`` terms) and its relative difference from the low rule's (the rest)."""
    lh, ll = _lse(lw[:n] + lf[:n]), _lse(lw[n:] + lf[n:])
    return lh, abs(math.expm1(ll - lh)) if np.isfinite(lh) else np.inf


def ridge_sides(G: Face, sides, rule=RULES[-1]):
    """The integrals of one ridge ``G`` (an S' = 4 :class:`Face`) for each of its ``sides`` ``(d, e)`` (the facet at
    distance ``d > 0`` from the mean, the ridge at in-plane distance ``e > 0`` from that facet's foot), from ONE set
    of S' = 4 rows in the scale ``sigma = u / e`` (M_4 is rotation invariant and the ridge's foot is the projection
    of the mean on its 4-flat, the same from both facets): ``R = e int_1^inf phi(sigma e) (Q(d) - Q(sigma d)) M_4(sigma
    G) dsigma``, ``e int_1^inf phi(sigma e) M_4(sigma G) dsigma`` and ``M_4(G)``; a list of :class:`Ridge`."""
    try:
        shape = cone_shape(G.Nrm, G.D, G.Yv, G.Yr)
    except np.linalg.LinAlgError:
        return [_BAD] * len(sides)
    if not consistent(shape, G.Yv.shape[0]):
        return [_BAD] * len(sides)
    delta = max(0.0, float(-G.D.min()))
    edges, end = _panels([e for _, e in sides], delta, rule)
    sh, wh = _nodes(edges, np.polynomial.legendre.leggauss(rule[0]))
    sl, wl = _nodes(edges, np.polynomial.legendre.leggauss(rule[1]))
    s = np.concatenate([sh, sl, [1.0]])
    lm4, _, _, rel4, _, fl = cone_moments(G.Nrm, G.D[None] * s[:, None], G.Yv[None] * s[:, None, None], G.Yr,
                                          moments=0, shape=shape)
    if fl.any() or not np.all(np.isfinite(lm4)):
        return [_BAD] * len(sides)
    n, lw = sh.size, np.log(np.concatenate([wh, wl]))
    out = []
    for d, e in sides:
        lbase = math.log(e) - 0.5 * (s[:-1] * e) ** 2 - _LOG_SQRT_2PI + lm4[:-1]
        lr, qr = _rule_sum(lw, lbase + _log_gap(d, s[:-1]), n)
        lmm, qm = _rule_sum(lw, lbase, n)
        if not (np.isfinite(lr) and np.isfinite(lmm)):
            out.append(_BAD)
            continue
        s4r = float(np.sum(np.exp(np.minimum(lw[:n] + lbase[:n] + _log_gap(d, sh) - lr, 700.0)) * rel4[:n]))
        s4m = float(np.sum(np.exp(np.minimum(lw[:n] + lbase[:n] - lmm, 700.0)) * rel4[:n]))
        # beyond the window: e int_end^inf phi(sigma e) Q(d) Q(sigma delta) dsigma <= Q(d) Q(end e) Q(end delta)
        tail = float(_log_q(end * e) + _log_q(end * delta))
        rr = qr + s4r + 16 * _EPS * n + _exp(tail + float(_log_q(d)) - lr)
        rm = qm + s4m + 16 * _EPS * n + _exp(tail - lmm)
        out.append(Ridge(lr, rr, lmm, rm, float(lm4[-1]), float(rel4[-1]), False))
    return out


class Signed:
    """A signed sum of terms kept as log-sums of each sign and an absolute error bound (in units of ``exp(scale)``)."""

    def __init__(self):
        self.pos, self.neg, self.err = [], [], []  # logs; (log term, relative error) pairs

    def add(self, sign, log_term, rel=0.0):
        (self.pos if sign > 0 else self.neg).append(log_term)
        self.err.append((log_term, rel))

    def value(self):
        """``(log of the sum, relative error bound, ok)``: ok when the sum is positive."""
        lp, ln = _lse(self.pos + [-np.inf]), _lse(self.neg + [-np.inf])
        if not lp > ln:
            return -np.inf, np.inf, False
        lm = lp + math.log1p(-math.exp(ln - lp))
        err = sum(_exp(lt - lm) * r for lt, r in self.err)
        return lm, err + 8 * _EPS * (_exp(lp - lm) + _exp(ln - lm)) * (1 + len(self.err)), True


class Result(NamedTuple):
    """``log_mass``, ``mean`` (6,), ``cov`` (6, 6), ``rel`` (the mass's relative bar), ``moment_bounds`` (2,)
    (absolute, whitened: mean, covariance; max-norm) and ``flagged``."""

    log_mass: float
    mean: np.ndarray
    cov: np.ndarray
    rel: float
    moment_bounds: np.ndarray
    flagged: bool


def _flagged(S):
    return Result(-np.inf, np.zeros(S), np.zeros((S, S)), np.inf, np.full(2, np.inf), True)


def _geometry(Nrm, D, Yv, Yr):
    """The genuine facets ``[(i, Face)]`` and their ridges: ``{(i, p): [(i, j, Face G), ...]}`` keyed by the
    pair of rows of ``P`` that meet in the ridge, one entry per facet that sees it (``j`` its row in that facet);
    None when a ridge's plane passes within ``_NEAR`` of its facet's foot."""
    facets, ridges = [], {}
    for i in range(Nrm.shape[0]):
        Fi = face_in_plane(Nrm, D, Yv, Yr, i)
        if not Fi.ok:
            continue  # a redundant row or a lower-dimensional face
        facets.append((i, Fi))
        for j in range(Fi.Nrm.shape[0]):
            G = face_in_plane(Fi.Nrm, Fi.D, Fi.Yv, Fi.Yr, j)
            if not G.ok:
                continue
            if abs(Fi.D[j]) < _NEAR:
                return None, None
            p = int(Fi.rows[j])
            ridges.setdefault((min(i, p), max(i, p)), []).append((i, j, G))
    return facets, ridges


def _share(G, sides, rule):
    """Whether the sides of a ridge take one grid (fewer panels than their own grids together; one grid is as fine
    as the steeper side over the flatter side's whole range, so sides of very different ``e`` take their own)."""
    if len(sides) < 2:
        return True
    delta = max(0.0, float(-G.D.min()))
    own = sum(_panels([e], delta, rule)[0].size - 1 for _, e in sides)
    return _panels([e for _, e in sides], delta, rule)[0].size - 1 <= own


def _ridge_terms(D, facets, ridges, rule):
    """``{i: [(sign e_ij, j, Ridge)]}`` for every facet, each ridge's S' = 4 rows computed once for its sides; None
    when a ridge is flagged."""
    terms = {i: [] for i, _ in facets}
    face = dict(facets)
    for seen in ridges.values():
        sides = [(abs(float(D[i])), abs(float(face[i].D[j]))) for i, j, _ in seen]
        if _share(seen[0][2], sides, rule):
            out = ridge_sides(seen[0][2], sides, rule)
        else:
            out = [ridge_sides(seen[0][2], [side], rule)[0] for side in sides]
        for (i, j, _), rt in zip(seen, out):
            if rt.flagged:
                return None
            terms[i].append((1.0 if face[i].D[j] > 0 else -1.0, j, rt))
    return terms


def cone6_moments(Nrm, D, Yv, Yr, tol=TOL, moments=2) -> Result:
    """:class:`Result` of ``N(0, I_6)`` on ``{Nrm y <= D}`` (unit rows ``Nrm`` (F, 6), offsets ``D`` (F,), vertices
    ``Yv`` (V, 6) relative to the mean, unit rays ``Yr`` (R, 6); pointed) by the ridge integrals of the module
    docstring, moments (``moments`` >= 1) by the divergence theorem. The outer rule starts at ``RULES[0]`` when
    ``tol >= CHEAP_TOL`` (else ``RULES[1]``) and moves on while the bar exceeds ``tol``. Flagged when the bar still
    exceeds ``tol``, a facet plane passes within ``1e-8`` of the mean (or a ridge's within ``1e-8`` of its facet's
    foot), or an S' = 4 row is flagged."""
    Nrm, D = np.asarray(Nrm, dtype=np.float64), np.asarray(D, dtype=np.float64)
    S = Nrm.shape[1]
    Yv, Yr = np.asarray(Yv, dtype=np.float64).reshape(-1, S), np.asarray(Yr, dtype=np.float64).reshape(-1, S)
    if S != 6 or Yv.shape[0] == 0 or np.min(np.abs(D)) < _NEAR:
        return _flagged(S)
    facets, ridges = _geometry(Nrm, D, Yv, Yr)
    if facets is None:
        return _flagged(S)
    res = _flagged(S)
    for rule in RULES[(0 if tol >= CHEAP_TOL else 1):]:
        res = _at_rule(Nrm, D, facets, ridges, rule, tol, moments)
        if res.rel <= tol:
            break
    return res


def _at_rule(Nrm, D, facets, ridges, rule, tol, moments):
    """:func:`cone6_moments` with one outer rule."""
    S = Nrm.shape[1]
    terms = _ridge_terms(D, facets, ridges, rule)
    if terms is None:
        return _flagged(S)
    mass = Signed()  # P = 1{0 in P} - sum_i sign(d_i) [1{0 in F_i} Q(|d_i|) - sum_j sign(e_ij) R_ij]
    if np.all(D > 0):
        mass.add(1, 0.0)
    for i, Fi in facets:
        si = 1.0 if D[i] > 0 else -1.0
        if np.all(Fi.D > 0):
            mass.add(-si, float(_log_q(abs(D[i]))), 2 * _EPS)
        for se, _, rt in terms[i]:
            mass.add(si * se, rt.log_r, rt.rel_r)
    lm, rel, ok = mass.value()
    if not ok:
        return Result(lm, np.zeros(S), np.zeros((S, S)), rel, np.full(2, np.inf), True)
    over = not rel <= tol  # flagged, but with its numbers: the caller may still prefer them to a wider RQMC bar
    if moments < 1:
        return Result(lm, np.zeros(S), np.zeros((S, S)), rel, np.zeros(2), over)
    res = _moments(Nrm, D, [(i, Fi, terms[i]) for i, Fi in facets], lm, rel)
    return res._replace(flagged=res.flagged or over)


def _moments(Nrm, D, facets, lm, rel):
    """Divergence-theorem moments (module docstring) from the facets' ridge terms; absolute error bounds from the
    terms' relative bars (infinite ones leave the bounds infinite: the caller does not take those rows)."""
    with np.errstate(over="ignore", invalid="ignore"):
        return _moment_sums(Nrm, D, facets, lm, rel)


def _moment_sums(Nrm, D, facets, lm, rel):
    S = Nrm.shape[1]
    m1, m2 = np.zeros(S), np.zeros((S, S))
    e1 = e2 = 0.0
    for i, Fi, terms in facets:
        facet = Signed()  # M_5(F_i) = 1{0 in F_i} - sum_j sign(e_ij) int phi(u) M_4 du
        if np.all(Fi.D > 0):
            facet.add(1, 0.0)
        v1 = np.zeros(S - 1)  # E[v 1_{F_i}] = -sum_j m_ij phi(e_ij) M_4(G_ij)
        ev = 0.0
        for se, j, rt in terms:
            facet.add(-se, rt.log_m, rt.rel_m)
            g = _exp(-0.5 * Fi.D[j] ** 2 - _LOG_SQRT_2PI + rt.log_g - lm)  # relative to P
            v1 -= g * Fi.Nrm[j]
            ev += g * rt.rel_g
        l5, r5, ok = facet.value()
        wv = math.exp(-0.5 * D[i] * D[i] - _LOG_SQRT_2PI)
        if not ok:  # cancelled: only a negligible facet may be left out (its bound into the moments' bounds)
            cap = _exp(-0.5 * D[i] * D[i] - _LOG_SQRT_2PI + _lse(facet.pos + facet.neg + [-np.inf]) - lm)
            if not cap <= NEGLIGIBLE_FACET:
                return Result(lm, np.zeros(S), np.zeros((S, S)), rel, np.full(2, np.inf), True)
            e1 += cap
            e2 += cap * (1.0 + abs(D[i])) + wv * ev
            continue
        w = _exp(-0.5 * D[i] * D[i] - _LOG_SQRT_2PI + l5 - lm)  # phi(d_i) M_5(F_i) / P
        m1 -= w * Nrm[i]
        m2 -= np.outer(Nrm[i], w * D[i] * Nrm[i] + wv * (Fi.U @ v1))
        e1 += w * r5
        e2 += w * r5 * abs(D[i]) + wv * ev
    m2 = np.eye(S) + 0.5 * (m2 + m2.T)
    cov = m2 - np.outer(m1, m1)
    mn = float(np.abs(m1).max())
    em = e1 + mn * rel + 8 * _EPS * mn  # E[y 1_P] / P: the sums' errors plus P's
    second = float(np.abs(m2).max())
    ec = e2 + second * rel + 16 * _EPS * (second + 1.0) + (2 * mn + em) * em
    return Result(lm, m1, cov, rel, np.array([em, ec]), False)


def cone6_moments_batch(Nrm, D, Yv, Yr, tol=TOL, moments=2, shape=None):
    """:class:`Result` per row of ``D`` (M, F) / ``Yv`` (M, V, 6) by the closed outer integral (``cone6_kernel``: the
    ridge integrals ``R_ij`` of the module docstring with their ``u`` integral in closed form, no outer rule; every
    point of the region in one compiled pass per ridge side, the flags built once), the moments by the divergence
    theorem from the same sides (:func:`_moment_sums`). ``tol`` (scalar or (M,)): rows whose bar exceeds it are
    flagged but keep their numbers (as :func:`cone6_moments`). ``shape``: ``cone6_kernel.shape6`` of the region."""
    from . import cone6_kernel as K

    D = np.atleast_2d(np.asarray(D, dtype=np.float64))
    M, S = D.shape[0], 6
    try:
        lm, rel, fl, parts = K.mass_batch(Nrm, D, Yv, Yr, shape, moments >= 1)
    except np.linalg.LinAlgError:
        return [_flagged(S)] * M
    tol = np.broadcast_to(np.asarray(tol, dtype=np.float64), (M,))
    if moments < 1:
        return [Result(lm[m], np.zeros(S), np.zeros((S, S)), rel[m], np.zeros(2), bool(fl[m] or not rel[m] <= tol[m]))
                if np.isfinite(lm[m]) and not fl[m] else _flagged(S) for m in range(M)]
    per_side = K.side_moments(parts, M, fl)
    facets, sides, _ = parts
    out = []
    for m in range(M):
        if fl[m] or not np.isfinite(lm[m]):
            out.append(_flagged(S))
            continue
        terms = {fi: [] for fi in range(len(facets))}
        for (fi, _, gr, _, e, _, _), (l_m, r_m, l_g, r_g) in zip(sides, per_side):
            rt = Ridge(-np.inf, 0.0, float(l_m[m]), float(r_m[m]), float(l_g[m]), float(r_g[m]), False)
            terms[fi].append((1.0 if e[m] > 0 else -1.0, gr.i, rt))
        fs = [(fr.i, Face(fr.Nk, D5[m], None, None, fr.U, None, True), terms[fi])
              for fi, (fr, D5, _) in enumerate(facets)]
        res = _moments(np.asarray(Nrm, dtype=np.float64), D[m], fs, float(lm[m]), float(rel[m]))
        out.append(res._replace(flagged=res.flagged or not rel[m] <= tol[m]))
    return out


def cone6_log_mass(Nrm, D, Yv, Yr, tol=TOL):
    """``(log_mass, rel, flagged)`` of :func:`cone6_moments` without the moments."""
    r = cone6_moments(Nrm, D, Yv, Yr, tol, moments=0)
    return r.log_mass, r.rel, r.flagged


# ---------------------------------------------------------------------------------------------------
# the S = 6 batch (``polytopes.BATCH_INTEGRATORS[6]``): the ridge integrals where certified, RQMC for the rest
# ---------------------------------------------------------------------------------------------------

# Per-pair tolerances follow the pair's posterior weight ``w`` (bounded by ``exp(log_weight_scale) Q(|y*|)``, y* the
# region's point closest to the mean): ``log_marginal_error`` is the pairs' bars averaged with their weights, so a
# pair asked for ``TOL max(1, LOOSEN_WEIGHT / w)`` adds at most ``TOL w + TOL LOOSEN_WEIGHT`` (5e-10 a pair; the
# weighted average of the heavy pairs' ``TOL`` terms is at most ``TOL``). Every pair takes the ridge integrals
# (``cone6_kernel``, ~40 ms of CPU a pair), RQMC where they are flagged. Pairs whose weight bound is below
# ``RQMC_WEIGHT`` would take RQMC directly (its bar, ~0.01-0.1 relative, times the bound); that route, set at 1e-8
# when the ridge integrals took ~1 s a pair, now costs more than the cones (~120 ms a row: [6,6,6,6] points 0-3 in
# one call, 131 s CPU with it at 1e-8, 92 s at 0, every bar smaller), so it is off (0).
TOL_HEAVY = 5e-7
LOOSEN_WEIGHT = 1e-3
MAX_TOL = 1e-2
RQMC_WEIGHT = 0.0
RQMC_RETRY = 0.1  # RQMC rows with a wider bar (``pairs.log_error`` is infinite from 0.5) take the cones at this tol


class Cones6Geometry:
    """Per-region data of the S = 6 batch (``polytopes.GEOMETRIES[6]``): lower-triangular factors ``chol`` (R, 6, 6)
    of Sigma_omega (the caller's accurate factors when given; None if one is not positive definite) and ``ok`` (R,):
    regions with facets, vertices and no lineality (the others take the per-region path, RQMC)."""

    def __init__(self, polytopes, covs, chol=None):
        self.chol, self.ok = factors_and_ok(polytopes, covs, chol, 6)

    def subset(self, rows):
        """The geometry of the regions ``rows``."""
        out = object.__new__(Cones6Geometry)
        out.chol = None if self.chol is None else self.chol[rows]
        out.ok = self.ok[rows]
        return out


def pair_tolerances(log_weight_scale, log_upper):
    """Per pair: (skip, cones, tol): skipped when the weight bound ``exp(log_weight_scale) Q(|y*|)`` is below
    ``e^-NEGLIGIBLE_NATS`` (``engine.evaluate``'s pruning convention, as ``sliced.pair_tolerances``: such a pair is
    mass 0 with error 0); the ridge integrals when the bound is at least ``RQMC_WEIGHT`` (every pair when it is 0 or
    without ``log_weight_scale``); the tolerance (module comment)."""
    n = log_upper.size
    if log_weight_scale is None:
        return np.zeros(n, dtype=bool), np.ones(n, dtype=bool), np.full(n, TOL_HEAVY)
    wb = log_weight_scale + log_upper
    with np.errstate(over="ignore", invalid="ignore"):
        loosen = np.clip(LOOSEN_WEIGHT * np.exp(-wb), 1.0, MAX_TOL / TOL_HEAVY)
    light = wb < math.log(RQMC_WEIGHT) if RQMC_WEIGHT > 0.0 else np.zeros(n, dtype=bool)
    return (wb < -NEGLIGIBLE_NATS, ~light, np.where(np.isfinite(loosen), loosen, 1.0) * TOL_HEAVY)


class _RowCones:
    """The cones for chosen rows of one region: :func:`cone6_moments_batch` (the closed outer integral; the region's
    flags built once, on first use) when ``CLOSED6``, else :func:`cone6_moments` row by row (the outer rules)."""

    def __init__(self, Nrm, D, Yv, Yr, moments):
        self.data, self.moments, self.shape, self.done = (Nrm, D, Yv, Yr), moments, None, {}

    def prefetch(self, idx, tol):
        """Compute the rows ``idx`` now (in a worker thread of :func:`cones6_batch`); :meth:`rows` returns them."""
        self.done.update(self.rows(idx, tol))
        return self

    def rows(self, idx, tol):
        """``[(m, Result)]`` for the rows ``idx`` at their tolerances ``tol[m]`` (rows :meth:`prefetch` computed at
        the same tolerances come from there)."""
        Nrm, D, Yv, Yr = self.data
        if all(m in self.done for m in idx.tolist()):
            return [(m, self.done[m]) for m in idx.tolist()]
        if not idx.size:
            return []
        if not CLOSED6:
            return [(m, cone6_moments(Nrm, D[m], Yv[m], Yr, float(tol[m]), moments=self.moments)) for m in idx]
        if self.shape is None:
            from .cone6_kernel import shape6

            try:
                self.shape = shape6(Nrm, D[0], Yv[0], Yr)
            except np.linalg.LinAlgError:
                return [(m, _flagged(6)) for m in idx]
        out = cone6_moments_batch(Nrm, D[idx], Yv[idx], Yr, tol[idx], self.moments, self.shape)
        return list(zip(idx.tolist(), out))

    def rules(self, m, tol):
        """Row ``m`` by the outer rules (:func:`cone6_moments`; ~1 s): their sums are grouped per ridge and may cancel
        less than the closed kernel's far from the mean."""
        Nrm, D, Yv, Yr = self.data
        return cone6_moments(Nrm, D[m], Yv[m], Yr, float(tol), moments=self.moments)


def _usable(r):
    """A :class:`Result` with numbers and finite bars (flagged or not)."""
    return bool(np.isfinite(r.rel) and np.isfinite(r.log_mass) and np.all(np.isfinite(r.moment_bounds)))


def _retry(cones, cand, idx, rqmc, use, tol):
    """Into ``cand``: for the rows ``idx`` where neither ``cand``'s bar nor RQMC's (``rqmc = (log_mass, rel)``) is
    within ``RQMC_RETRY``, the cones at that tolerance where RQMC took the row first (not ``use``), then (``CLOSED6``)
    the outer rules where still too wide, each kept where its bar is narrower."""
    lm, rel = rqmc

    def weak(m):
        return not (min(cand[m].rel if m in cand else np.inf, rel[m] if np.isfinite(lm[m]) else np.inf)
                    <= RQMC_RETRY)

    def keep(m, r):
        if _usable(r) and not (m in cand and cand[m].rel <= r.rel):
            cand[m] = r

    retry = np.array([m for m in idx if weak(m)], dtype=np.intp)
    for m, r in cones.rows(retry[~use[retry]], np.full(use.size, RQMC_RETRY)):
        keep(m, r)
    if CLOSED6:  # still too wide (the closed sums cancel): the outer rules, row by row
        for m in retry:
            if weak(m):
                keep(m, cones.rules(m, tol[m] if use[m] else RQMC_RETRY))


def region_rows(Nrm, D, Yv, Yr, use, tol, moments, fallback, cones=None):
    """The rows of one region: :func:`cone6_moments` for the rows ``use`` at their ``tol``, ``fallback`` (``D_rows
    -> (log_mass, mean, cov, rel)``, RQMC) for the others and the flagged ones; a row the cones flagged for its bar
    alone keeps their numbers where RQMC's bar is wider. Rows where neither bar is within ``RQMC_RETRY`` (or RQMC has
    no mass) take the cones at that tolerance if RQMC took them first, then (``CLOSED6``) the outer rules
    (:meth:`_RowCones.rules`, ~1 s a row), kept where their bar is narrower: the rules used to retry every row the
    closed kernel left above its tolerance, and on [6,6,6,6] points 0-3 none of 7 was certified and RQMC's bar was
    the narrower on 5. Returns ``(log_mass, mean, cov, rel, by_cones)``."""
    M = D.shape[0]
    lm, rel = np.full(M, -np.inf), np.full(M, np.inf)
    mean, cov, done = np.zeros((M, 6)), np.zeros((M, 6, 6)), np.zeros(M, dtype=bool)
    cand = {}  # flagged rows' numbers (bar above their tol), kept where RQMC's bar turns out wider

    def take(m, r):
        lm[m], mean[m], cov[m], rel[m] = r.log_mass, r.mean, r.cov, r.rel

    cones = _RowCones(Nrm, D, Yv, Yr, moments) if cones is None else cones
    for m, r in cones.rows(np.nonzero(use)[0], tol):
        if _usable(r):
            if not r.flagged:
                take(m, r)
                done[m] = True
            else:
                cand[m] = r
    idx = np.nonzero(~done)[0]
    if idx.size:
        sub = fallback(D[idx])
        lm[idx], rel[idx] = sub[0], sub[3]
        if moments >= 1:
            mean[idx] = sub[1]
        if moments >= 2:
            cov[idx] = sub[2]
    _retry(cones, cand, idx, (lm, rel), use, tol)
    for m in idx:
        if m in cand and (cand[m].rel < rel[m] or not np.isfinite(lm[m])):
            take(m, cand[m])
            done[m] = True
    return lm, mean, cov, rel, done


def cones6_batch(req, geo, res, store):
    """S = 6, ``method="auto"``: every needed (region, point) pair of the regular regions (``geo.ok``) by
    :func:`region_rows` (tolerances and routes by weight, :func:`pair_tolerances`); ``store(res, req, chol, r, rows,
    lm, mean, cov, rel)`` files whitened results. Returns the regions left to the per-region path."""
    from .qmc import rqmc_moments
    from .sliced import closest_distance

    pr_all, pn_all = np.nonzero(req.need & geo.ok[:, None])
    jobs = []
    for r in np.unique(pr_all):
        lo, hi = np.searchsorted(pr_all, [r, r + 1])  # pr_all ascending (np.nonzero of (R, N)): pn_all[pr_all == r]
        rows = pn_all[lo:hi]
        Nrm, D, Yv, Yr = whitened(req.polytopes[r], geo.chol[r], req.means[r, rows])
        _, log_upper = closest_distance(Nrm, D)
        skip, use, tol = pair_tolerances(req.weight_scale(np.full(rows.size, r), rows), log_upper)
        go = ~skip
        if np.any(go):
            data = (Nrm, D[go], Yv[go], Yr)
            jobs.append((r, rows[go], data, use[go] & USE_CONES6, tol[go], _RowCones(*data, req.moments)))
    # the cones of every region in worker threads (each region alone: the bits do not depend on the thread count),
    # then region by region in order: the RQMC fallback (its rng) and the filing
    map_regions(lambda job: job[5].prefetch(np.nonzero(job[3])[0], job[4]), jobs)
    for r, rows, (Nrm, D, Yv, Yr), use, tol, cones in jobs:

        def fallback(Dm, Nrm=Nrm):
            return rqmc_moments(Nrm, Dm, moments=req.moments, rng=req.rng, relative=req.relative)

        lm, my, cy, rel, _ = region_rows(Nrm, D, Yv, Yr, use, tol, req.moments, fallback, cones)
        store(res, req, geo.chol[r], r, rows, lm, my, cy, rel)
    res.has_error[geo.ok] = True
    for r in np.nonzero(geo.ok)[0]:
        res.methods[r] = "cones6"
    return ~geo.ok
