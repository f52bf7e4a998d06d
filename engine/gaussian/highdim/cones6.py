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

from .cones import cone_moments, cone_shape, consistent

NODES_HI, NODES_LO = 12, 6  # Gauss-Legendre nodes per panel of the ridge rule and of its error estimate
_RULE_HI = np.polynomial.legendre.leggauss(NODES_HI)
_RULE_LO = np.polynomial.legendre.leggauss(NODES_LO)
WINDOW = 40.0  # nats of the integrand's Gaussian bound kept beyond each ridge's start (the rest bounded into the bar)
DMAX = 8.0  # largest change of the integrand's Gaussian bound across one panel
_INC = 1e-9  # vertex-facet incidence tolerance (relative to 1 + |D|)
_NEAR = 1e-8  # a facet (ridge) plane closer than this to the mean (the facet's foot) is flagged: the scale is undefined
_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)
_EPS = np.finfo(float).eps
TOL = 1e-6  # the bar below which a pair is certified (issue 14's S = 6 figure: log p within 1e-6)
USE_CONES6 = True  # False: S' = 6 pairs by RQMC alone (``qmc.rqmc_moments``), the route before


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


def _panels(e, kappa):
    """Edges of the panels on ``[e, sqrt(e^2 + 2 WINDOW / kappa)]`` (``e = |e_ij| > 0``; ``kappa = 1 + delta^2 / e^2``
    the curvature of the integrand's exponent, ``delta`` a lower bound of the ridge foot's distance from ``G_ij``,
    since ``M_4(s G) <= Q(s delta)``): geometric from ``e`` (first width ``min(e, 1) / 8``), each at most ``DMAX /
    (kappa t)`` wide."""
    end = math.sqrt(e * e + 2.0 * WINDOW / kappa)
    edges, w = [e], min(e, 1.0) / 8.0
    while edges[-1] < end:
        t = edges[-1]
        edges.append(min(t + min(w, DMAX / (kappa * max(t, 1.0))), end))
        w *= 2.0
    return np.array(edges)


def _nodes(edges, rule):
    x, w = rule
    lo, hi = edges[:-1, None], edges[1:, None]
    return ((lo + hi) / 2 + (hi - lo) / 2 * x[None]).ravel(), ((hi - lo) / 2 * w[None]).ravel()


def _lse(a):
    a = np.asarray(a, dtype=np.float64)
    m = np.max(a) if a.size else -np.inf
    return m + math.log(np.sum(np.exp(a - m))) if np.isfinite(m) else -np.inf


def _log_q(x):
    return log_ndtr(-np.asarray(x, dtype=np.float64))


def _log_gap(d, u, e):
    """``log(Q(d) - Q(u d / e))`` for ``u >= e`` (the outer Gaussian's mass between the facet's plane and the ray
    through the ridge point at ``u``), from ``log Q`` differences (relative error ``~eps |log Q| / (1 - ratio)``,
    largest at the rule's first node where the integrand is smallest)."""
    lq0 = float(_log_q(d))
    diff = _log_q(u * (d / e)) - lq0
    with np.errstate(divide="ignore"):
        return lq0 + np.log(-np.expm1(np.minimum(diff, 0.0)))


class Ridge(NamedTuple):
    """One ridge term of a facet: ``log R_ij`` and its absolute error (in units of ``exp(log R)``, i.e. relative),
    ``log int phi(u) M_4 du`` (the facet's own mass term, for the moments) and its relative error, ``log M_4(G_ij)``
    at scale 1 and its relative error, and ``flagged``."""

    log_r: float
    rel_r: float
    log_m: float
    rel_m: float
    log_g: float
    rel_g: float
    flagged: bool


_BAD = Ridge(-np.inf, np.inf, -np.inf, np.inf, -np.inf, np.inf, True)


def ridge_term(G: Face, d, e) -> Ridge:
    """The integrals of one ridge ``G`` (an S' = 4 :class:`Face` of the facet, at in-plane distance ``e > 0`` from the
    facet's foot; the facet at distance ``d > 0`` from the mean) by the graded rule: ``R = int_e^inf phi(u) (Q(d) -
    Q(u d / e)) M_4((u/e) G) du``, ``int_e^inf phi(u) M_4((u/e) G) du`` and ``M_4(G)``."""
    try:
        shape = cone_shape(G.Nrm, G.D, G.Yv, G.Yr)
    except np.linalg.LinAlgError:
        return _BAD
    if not consistent(shape, G.Yv.shape[0]):
        return _BAD
    delta = max(0.0, float(-G.D.min()))
    kappa = 1.0 + (delta / e) ** 2
    edges = _panels(e, kappa)
    th, wh = _nodes(edges, _RULE_HI)
    tl, wl = _nodes(edges, _RULE_LO)
    u = np.concatenate([th, tl, [e]])
    s = u / e
    lm4, _, _, rel4, _, fl = cone_moments(G.Nrm, G.D[None] * s[:, None], G.Yv[None] * s[:, None, None], G.Yr,
                                          moments=0, shape=shape)
    if fl.any() or not np.all(np.isfinite(lm4)):
        return _BAD
    n = th.size
    lphi = -0.5 * u * u - _LOG_SQRT_2PI + lm4
    lgap = _log_gap(d, u[:-1], e)
    out = []
    for lf in (lphi[:-1] + lgap, lphi[:-1]):
        lh, ll = _lse(np.log(wh) + lf[:n]), _lse(np.log(wl) + lf[n:])
        if not np.isfinite(lh):
            return _BAD
        quad = abs(math.expm1(ll - lh))
        s4 = float(np.sum(np.exp(np.log(wh) + lf[:n] - lh) * rel4[:n]))
        out.append((lh, quad + s4 + 16 * _EPS * n))
    # beyond the window: int_end^inf phi(u) Q(d) Q(u delta / e) du <= Q(d) Q(end) Q(end delta / e)
    end = edges[-1]
    tail = float(_log_q(end) + _log_q(end * delta / e))
    (lr, rr), (lmm, rm) = out
    rr += math.exp(tail + float(_log_q(d)) - lr)
    rm += math.exp(tail - lmm)
    return Ridge(lr, rr, lmm, rm, float(lm4[-1]), float(rel4[-1]), False)


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
        err = sum(math.exp(lt - lm) * r for lt, r in self.err)
        return lm, err + 8 * _EPS * (math.exp(lp - lm) + math.exp(ln - lm)) * (1 + len(self.err)), True


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


def _facet_terms(Fi: Face, d):
    """The facet's ridge terms: a list of ``(sign e_ij, ridge row in the facet, Ridge)``, or None when flagged."""
    terms = []
    for j in range(Fi.Nrm.shape[0]):
        G = face_in_plane(Fi.Nrm, Fi.D, Fi.Yv, Fi.Yr, j)
        if not G.ok:
            continue
        e = float(Fi.D[j])
        if abs(e) < _NEAR:
            return None
        rt = ridge_term(G, d, abs(e))
        if rt.flagged:
            return None
        terms.append((1.0 if e > 0 else -1.0, j, rt))
    return terms


def cone6_moments(Nrm, D, Yv, Yr, tol=TOL, moments=2) -> Result:
    """:class:`Result` of ``N(0, I_6)`` on ``{Nrm y <= D}`` (unit rows ``Nrm`` (F, 6), offsets ``D`` (F,), vertices
    ``Yv`` (V, 6) relative to the mean, unit rays ``Yr`` (R, 6); pointed) by the ridge integrals of the module
    docstring, moments (``moments`` >= 1) by the divergence theorem. Flagged when the bar exceeds ``tol``, a facet
    plane passes within ``1e-8`` of the mean (or a ridge's within ``1e-8`` of its facet's foot), or an S' = 4 row is
    flagged."""
    Nrm, D = np.asarray(Nrm, dtype=np.float64), np.asarray(D, dtype=np.float64)
    S = Nrm.shape[1]
    Yv, Yr = np.asarray(Yv, dtype=np.float64).reshape(-1, S), np.asarray(Yr, dtype=np.float64).reshape(-1, S)
    if S != 6 or Yv.shape[0] == 0 or np.min(np.abs(D)) < _NEAR:
        return _flagged(S)
    mass = Signed()  # P = 1{0 in P} - sum_i sign(d_i) [1{0 in F_i} Q(|d_i|) - sum_j sign(e_ij) R_ij]
    if np.all(D > 0):
        mass.add(1, 0.0)
    facets = []
    for i in range(Nrm.shape[0]):
        Fi = face_in_plane(Nrm, D, Yv, Yr, i)
        if not Fi.ok:
            continue  # a redundant row or a lower-dimensional face
        terms = _facet_terms(Fi, abs(D[i]))
        if terms is None:
            return _flagged(S)
        si = 1.0 if D[i] > 0 else -1.0
        if np.all(Fi.D > 0):
            mass.add(-si, float(_log_q(abs(D[i]))), 2 * _EPS)
        for se, _, rt in terms:
            mass.add(si * se, rt.log_r, rt.rel_r)
        facets.append((i, Fi, terms))
    lm, rel, ok = mass.value()
    if not ok or not rel <= tol:
        return Result(lm, np.zeros(S), np.zeros((S, S)), rel, np.full(2, np.inf), True)
    if moments < 1:
        return Result(lm, np.zeros(S), np.zeros((S, S)), rel, np.zeros(2), False)
    return _moments(Nrm, D, facets, lm, rel)


def _moments(Nrm, D, facets, lm, rel):
    """Divergence-theorem moments (module docstring) from the facets' ridge terms; absolute error bounds from the
    terms' relative bars."""
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
            g = math.exp(-0.5 * Fi.D[j] ** 2 - _LOG_SQRT_2PI + rt.log_g - lm)  # relative to P
            v1 -= g * Fi.Nrm[j]
            ev += g * rt.rel_g
        l5, r5, ok = facet.value()
        if not ok:
            return Result(lm, np.zeros(S), np.zeros((S, S)), rel, np.full(2, np.inf), True)
        w = math.exp(-0.5 * D[i] * D[i] - _LOG_SQRT_2PI + l5 - lm)  # phi(d_i) M_5(F_i) / P
        wv = math.exp(-0.5 * D[i] * D[i] - _LOG_SQRT_2PI)
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


def cone6_log_mass(Nrm, D, Yv, Yr, tol=TOL):
    """``(log_mass, rel, flagged)`` of :func:`cone6_moments` without the moments."""
    r = cone6_moments(Nrm, D, Yv, Yr, tol, moments=0)
    return r.log_mass, r.rel, r.flagged


def region6_moments(pb, req, fallback):
    """The rows of one S' = 6 region (``polytopes.Pointed`` ``pb``; ``PairRequest`` ``req``) by :func:`cone6_moments`
    where certified (mass bar <= ``TOL``; moments' bounds <= ``TOL`` whitened), the others by ``fallback`` (``Nrm,
    D_rows -> (log_mass, mean, cov, rel)``, RQMC). Returns ``(log_mass, mean, cov, rel)`` like the fallback."""
    M = pb.D.shape[0]
    lm, rel = np.full(M, -np.inf), np.full(M, np.inf)
    mean, cov, bad = np.zeros((M, 6)), np.zeros((M, 6, 6)), np.zeros(M, dtype=bool)
    for m in range(M):
        r = cone6_moments(pb.Nrm, pb.D[m], pb.Yv[m], pb.Yr, TOL, moments=req.moments)
        lm[m], mean[m], cov[m], rel[m] = r.log_mass, r.mean, r.cov, r.rel
        bad[m] = r.flagged or not np.all(r.moment_bounds <= TOL)
    idx = np.nonzero(bad)[0]
    if idx.size:
        sub = fallback(pb.Nrm, pb.D[idx])
        lm[idx], rel[idx] = sub[0], sub[3]
        if req.moments >= 1:
            mean[idx] = sub[1]
        if req.moments >= 2:
            cov[idx] = sub[2]
    return lm, (mean if req.moments >= 1 else None), (cov if req.moments >= 2 else None), rel
