"""S = 3 compiled kernel: ``Phi_omega(mu_omega(x), Sigma_omega)`` of Theorem 1 (eq. 5) and the Sec. 4.1 moments,
one pass per (region, point) pair.

Mass: the cone-from-the-origin decomposition (NOTES §6: "a polyhedron is the signed sum of pyramids with apex m
over its facets"), the 3-D analogue of the Owen-T edge formula of ``planar``. Along each ray from 0 the region
is an interval entered through facets with ``d_i < 0`` and left through facets with ``d_i > 0``, so with
``T(r) = int_r^inf t^2 phi_3(t) dt`` the radial tail,

    P = 1{0 in omega} - sum_i sign(d_i) B_i,   B_i = mass of the cone over facet i beyond its plane.

In facet i's plane (foot of the perpendicular ``f_i = d_i n_i``, in-plane radius ``w``), ``B_i`` is the
integral of the radial function ``|d| T(rho) / rho^3`` (``rho^2 = d^2 + w^2``) over the facet polygon,
which decomposes exactly like a planar mass around ``f_i`` (``e_ij``: signed in-plane distance from
``f_i`` to edge ``j``):

    B_i = 1{f_i in facet i} Q(|d_i|) - sum_j sign(e_ij) C_ij,
    C_ij = (1/2pi) int_{s_lo}^{s_hi} |d_i| Q(rho)/rho * |e_ij| / (e_ij^2 + s^2) ds,   rho^2 = R + s^2,

because ``int T(rho)/rho^2 drho = -Q(rho)/(2 pi rho)`` in closed form (the exponential-integral parts
cancel); the ``C_ij`` are the edge integrals of :mod:`.edges`. The signed sum's cancellation is measured per
pair; pairs above ``FALLBACK_REL`` (loosened for pairs of small posterior weight, :func:`loosen_factor`), on
a boundary, or with degenerate geometry are flagged.

Moments by the divergence theorem (NOTES §3, as in ``facets``) from the same edges and the same nodes:
the facet masses ``P_i = 1{f_i in facet i} - sum_j sign(e_ij) B_ij`` (``B_ij``: the Owen-T edge term of
facet i's polygon) and the edge masses ``Z_ij`` give ``E[y 1] = -sum_i n_i phi(d_i) P_i`` and
``E[y y^T 1] = P I - sum_i phi(d_i) d_i P_i n_i n_i^T + sum_edges e^{-R/2}/(2 pi) Z (n_i m_ij^T + n_j m_ji^T)``
(``m_ij``: unit normal of edge ij inside facet i's plane). Where those signed sums cancel the caller takes
the cubature (:mod:`.cubature`) or the per-region reference path (:mod:`.reference`).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numba
import numpy as np

from .. import constants as C
from ..pairs import SolidPairs
from ..planar.kernel import LOOSEN_WEIGHT, _lse_pair, capped_loosen
from ..threads import run_split
from .edges import EDGE_ULPS, PAIRS_PER_BLOCK, _edge_integrals, _erfcx

_jit = numba.njit(cache=True, nogil=True, error_model="numpy")
_SQRT2, _INF, _LOG_2PI_F, _LOG_SQRT_2PI_F, _EPS_F = C.SQRT2, C.INF, C.LOG_2PI, C.LOG_SQRT_2PI, C.EPS
_DROP = C.EDGE_DROP_NATS  # nats below the largest term bound: edges left out of the mass (bounds into the error)
_DROP_MOMENTS = 50.0  # nats below the mass: edge terms of the moments left out (bounds in the error)
FALLBACK_REL = C.SOLID_FALLBACK_REL  # relative mass error bound above which a pair goes to a fallback ...
# ... times LOOSEN_WEIGHT / w (``planar.kernel``'s) for pairs of posterior weight w below LOOSEN_WEIGHT,
MAX_LOOSEN = C.MAX_LOOSEN_REL / FALLBACK_REL  # but never beyond 1e-6 relative (as for S = 2, ``planar.kernel``)
FACET_REL = 1e-12  # a facet mass the per-region path would integrate by slices (its planar fallback threshold)
MOMENT_TOL = 1e-10  # ... whose error bound moves the whitened moments by more than this: fallback
COV_TOL = C.COV_TOL  # covariance cancellation bound (relative to its smallest eigenvalue) above which to refine
MEAN_TOL = 1e-9  # mean error bound (relative to the smallest standard deviation) above which to refine


@_jit
def loosen_factor(log_weight_bound):
    """Thresholds' multiplier for a pair whose posterior weight is at most exp(log_weight_bound)."""
    return capped_loosen(log_weight_bound, MAX_LOOSEN)


def loosen_factors(log_weight_bound):
    """Vectorised :func:`loosen_factor`."""
    with np.errstate(over="ignore", invalid="ignore"):
        f = LOOSEN_WEIGHT * np.exp(-np.asarray(log_weight_bound, dtype=np.float64))
    return np.where(f > 1.0, np.minimum(f, MAX_LOOSEN), 1.0)


@_jit
def _log_q(x):
    """log Q(x) = log P(N(0,1) > x) for x >= 0."""
    return math.log(0.5 * _erfcx(x / _SQRT2)) - 0.5 * x * x


@_jit
def _sign(x):
    return 1.0 if x > 0.0 else (-1.0 if x < 0.0 else 0.0)


@_jit
def _log_diff(pos, neg):
    """(log(e^pos - e^neg), e^(neg - pos)); -inf when not positive."""
    if pos == -_INF:
        return -_INF, _INF if neg > -_INF else 0.0
    ratio = math.exp(neg - pos)
    if ratio >= 1.0:
        return -_INF, ratio
    return pos + math.log1p(-ratio), ratio


@_jit
def _term_err(lt):
    """log of the absolute error of a term exp(lt) computed in log space."""
    return lt + math.log(EDGE_ULPS * _EPS_F * (1.0 + abs(lt))) if lt > -_INF else -_INF


GEOM_ULPS = 16.0  # rounding of an edge's in-plane distance or end, in eps times its summands (measured: the kernel's
# error near a vertex came to <= 4 times the bound below computed with 1 eps: 160 generic polytope cases against the
# per-region slices, tests/test_s3_near_facet.py; 16 leaves a factor 4)
GEOM_AMP = 64.0  # ... counted where the Cauchy kernel amplifies it beyond this (a vertex within |D| / 64 of a foot);
# below, the edge terms' validated EDGE_ULPS bar covers it (and the bits of the bar stay those it always had)


@_jit
def _end_sensitivity(h, a, sa, s, ss, R2, cone):
    """log of ``GEOM_ULPS eps |f(s)| (a ss + |s| sa) / (a^2 + s^2)``: the endpoint parts of an edge term's derivatives
    in its end ``s`` and in its in-plane distance ``a``, times their rounding (``ss``, ``sa``: the sums of the
    magnitudes they are computed from); ``f`` the integrand's smooth factor, ``h Q(rho) / (2 pi rho)`` for the cone
    term (``cone``), ``e^{-(a^2 + s^2)/2} / 2 pi`` for the Owen-T term. -inf unless amplified beyond ``GEOM_AMP``.

    Near a vertex within ``delta`` of a foot (``a``, ``s`` ~ ``delta``) the Cauchy kernel ``a / (a^2 + s^2)`` makes a
    term's rounding-level geometry error ~eps |D| / delta relative, and the signed sum does not cancel it (each
    edge's geometry is rounded on its own): this bounds it, so that such pairs get an honest bar or the fallback."""
    if not abs(s) < _INF:
        return -_INF
    q = a * a + s * s
    w = a * ss + abs(s) * sa
    if not w > GEOM_AMP * q:
        return -_INF
    if cone:
        if h == 0.0:
            return -_INF
        rho = math.sqrt(R2 + s * s)
        lf = math.log(h) + _log_q(rho) - math.log(rho)
    else:
        lf = -0.5 * q
    return lf - _LOG_2PI_F + math.log(GEOM_ULPS * _EPS_F) + (math.log(w) - math.log(q) if q > 0.0 else _INF)


@_jit
def _edge_sensitivity(g, r, wk, k, side, cone):
    """log bound of the geometry-rounding error of side ``side`` (facet i: 0, j: 1) of edge k's cone (``cone``) or
    Owen-T term: :func:`_end_sensitivity` at both ends (``e = (d_j - c d_i) / sn``, ``s = (D_k - a d_i - b d_j) / g``:
    the sums of their summands' magnitudes)."""
    wf = wk.wf
    D = wf[0, :g.Nrm.shape[1]]
    i, j = g.ei[r, k], g.ej[r, k]
    di, dj = D[i], D[j]
    sa = (abs(dj) + abs(g.c[r, k] * di) if side == 0 else abs(di) + abs(g.c[r, k] * dj)) / g.sn[r, k]
    h = abs(di) if side == 0 else abs(dj)
    a = abs(wf[1 + side, k])
    out = -_INF
    if g.has_hi[r, k]:
        ss = (abs(D[g.khi[r, k]]) + abs(g.ah[r, k] * di) + abs(g.bh[r, k] * dj)) / abs(g.gh[r, k])
        out = _end_sensitivity(h, a, sa, wf[4, k], ss, wf[5, k], cone)
    if g.has_lo[r, k]:
        ss = (abs(D[g.klo[r, k]]) + abs(g.al[r, k] * di) + abs(g.bl[r, k] * dj)) / abs(g.gl[r, k])
        out = _add_log(out, _end_sensitivity(h, a, sa, wf[3, k], ss, wf[5, k], cone))
    return out


@_jit
def _add_log(acc, x):
    """``log(e^acc + e^x)``, ``acc`` itself (no transcendental calls) when ``x`` is -inf: the common case."""
    return acc if x == -_INF else _lse_pair(acc, x)


class _Work(NamedTuple):
    """Per-thread scratch of the kernel: ``wf`` (13, max(F, E, 5)) floats (row 11: edges near a foot), ``wb``
    (4, max(F, E, 5)) flags, ``vals`` (E, 5) the logs of each edge's five integrals."""

    wf: np.ndarray
    wb: np.ndarray
    vals: np.ndarray


@_jit
def _offsets(g, r, mu, wk):
    """``D = cn - Hn mu`` of region r into ``wk.wf[0]``: ``(inside, flagged)`` (origin on a facet plane)."""
    F = g.Nrm.shape[1]
    D = wk.wf[0, :F]
    inside = True
    flagged = False
    for f in range(F):
        D[f] = g.cn[r, f] - (g.Hn[r, f, 0] * mu[0] + g.Hn[r, f, 1] * mu[1] + g.Hn[r, f, 2] * mu[2])
        if g.fvalid[r, f]:
            if D[f] <= 0.0:
                inside = False
            if D[f] == 0.0:
                flagged = True
    return inside, flagged


@_jit
def _edges(g, r, wk):
    """Per edge: in-plane distances ``e1``, ``e2`` of the feet, ends ``[slo, shi]``, ``R2`` and ``rho2``, which
    edges are active and which facets' feet lie outside; True if a foot is on an edge line (flagged)."""
    F, E = g.Nrm.shape[1], g.evalid.shape[1]
    wf, wb = wk.wf, wk.wb
    D = wf[0, :F]
    e1, e2, slo, shi, R2, rho2 = wf[1, :E], wf[2, :E], wf[3, :E], wf[4, :E], wf[5, :E], wf[6, :E]
    act, foot_out = wb[0, :E], wb[1, :F]
    act[:] = False
    foot_out[:] = False
    wb[2, :E] = False
    wb[3, :E] = False
    flagged = False
    for k in range(E):
        if not g.evalid[r, k]:
            continue
        i, j = g.ei[r, k], g.ej[r, k]
        di, dj = D[i], D[j]
        e1[k] = (dj - g.c[r, k] * di) / g.sn[r, k]
        e2[k] = (di - g.c[r, k] * dj) / g.sn[r, k]
        shi[k] = (D[g.khi[r, k]] - g.ah[r, k] * di - g.bh[r, k] * dj) / g.gh[r, k] if g.has_hi[r, k] else _INF
        slo[k] = (D[g.klo[r, k]] - g.al[r, k] * di - g.bl[r, k] * dj) / g.gl[r, k] if g.has_lo[r, k] else -_INF
        if not slo[k] < shi[k]:
            continue
        act[k] = True
        if e1[k] <= 0.0:
            foot_out[i] = True
        if e2[k] <= 0.0:
            foot_out[j] = True
        if e1[k] == 0.0 or e2[k] == 0.0:
            flagged = True
        R2[k] = di * di + e1[k] * e1[k]
        s0 = min(max(0.0, slo[k]), shi[k])
        rho2[k] = R2[k] + s0 * s0
        sa1, sa2 = (abs(dj) + abs(g.c[r, k] * di)) / g.sn[r, k], (abs(di) + abs(g.c[r, k] * dj)) / g.sn[r, k]
        ss_hi = (abs(D[g.khi[r, k]]) + abs(g.ah[r, k] * di) + abs(g.bh[r, k] * dj)) / abs(g.gh[r, k])
        ss_lo = (abs(D[g.klo[r, k]]) + abs(g.al[r, k] * di) + abs(g.bl[r, k] * dj)) / abs(g.gl[r, k])
        wf[11, k] = _near_vertex(abs(e1[k]), abs(e2[k]), sa1, sa2, slo[k], shi[k], ss_lo, ss_hi)
    return flagged


@_jit
def _near_vertex(a1, a2, sa1, sa2, slo, shi, ss_lo, ss_hi):
    """1.0 if an end of an edge lies near a foot (``a / (a^2 + s^2)`` amplifying its geometry's rounding beyond
    ``GEOM_AMP``, :func:`_end_sensitivity`) on either side, else 0.0: only then are its terms' sensitivities
    computed (``a1``, ``a2``: the feet's in-plane distances; ``sa``, ``ss``: the rounding scales)."""
    for a, sa in ((a1, sa1), (a2, sa2)):
        for s, ss in ((slo, ss_lo), (shi, ss_hi)):
            if abs(s) < _INF and not a * ss + abs(s) * sa <= GEOM_AMP * (a * a + s * s):
                return 1.0
    return 0.0


@_jit
def _edge_values(g, r, wk, k):
    """The five integrals of edge k into ``wk.vals[k]`` (once per pair); False if not resolved."""
    F = g.Nrm.shape[1]
    D, wf = wk.wf[0, :F], wk.wf
    i, j = g.ei[r, k], g.ej[r, k]
    wk.wb[2, k] = True
    edge = (wf[5, k], abs(D[i]), abs(wf[1, k]), abs(D[j]), abs(wf[2, k]), wf[3, k], wf[4, k])
    return _edge_integrals(edge, wk.vals[k], wf[12, :5])


@_jit
def _mass(g, r, wk, inside):
    """Cone decomposition ``1{inside} - sum_i sign(d_i) [foot_in_i Q(|d_i|) - sum_j sign(e_ij) C_ij]`` as signed
    log sums: ``(pos, neg, err, flagged)`` (``err``: log of the absolute error bound)."""
    F, E = g.Nrm.shape[1], g.evalid.shape[1]
    wf = wk.wf
    D, e1, e2, rho2, lq = wf[0, :F], wf[1, :E], wf[2, :E], wf[6, :E], wf[7, :F]
    act, foot_out = wk.wb[0, :E], wk.wb[1, :F]
    ref = 0.0 if inside else -_INF
    lq[:] = -_INF
    for f in range(F):
        if g.fvalid[r, f] and not foot_out[f]:
            lq[f] = _log_q(abs(D[f]))
            ref = max(ref, lq[f])
    for k in range(E):
        if act[k]:
            ref = max(ref, math.log(0.25) - 0.5 * rho2[k])
    pos = 0.0 if inside else -_INF
    neg = -_INF
    err = -_INF
    for f in range(F):
        if lq[f] > -_INF and D[f] != 0.0:
            if D[f] < 0.0:
                pos = _lse_pair(pos, lq[f])
            else:
                neg = _lse_pair(neg, lq[f])
            err = _lse_pair(err, _term_err(lq[f]))
    flagged = False
    for k in range(E):
        if not act[k]:
            continue
        bound = math.log(0.25) - 0.5 * rho2[k]
        if bound <= ref - _DROP:
            err = _lse_pair(err, bound + math.log(2.0))
            continue
        if not _edge_values(g, r, wk, k):
            flagged = True
        i, j = g.ei[r, k], g.ej[r, k]
        for side in range(2):
            lc = wk.vals[k, side]
            sg = _sign(D[i]) * _sign(e1[k]) if side == 0 else _sign(D[j]) * _sign(e2[k])
            if sg > 0.0:
                pos = _lse_pair(pos, lc)
            elif sg < 0.0:
                neg = _lse_pair(neg, lc)
            err = _lse_pair(err, _term_err(lc))
    return pos, neg, _add_log(err, _cone_sensitivity(g, r, wk)), flagged


@_jit
def _facet_masses(g, r, wk, log_mass):
    """Facet masses ``P_i = foot_in_i - sum_j sign(e_ij) B_ij`` as signed log sums in ``wf[8:11]`` (edge terms
    below the moments' window go into the error); marks the edges used; False if an edge is not resolved."""
    F, E = g.Nrm.shape[1], g.evalid.shape[1]
    wf = wk.wf
    e1, e2, R2, rho2 = wf[1, :E], wf[2, :E], wf[5, :E], wf[6, :E]
    act, foot_out, done, use = wk.wb[0, :E], wk.wb[1, :F], wk.wb[2, :E], wk.wb[3, :E]
    lim = log_mass - _DROP_MOMENTS
    fpos, fneg, ferr = wf[8, :F], wf[9, :F], wf[10, :F]
    fpos[:] = -_INF
    fneg[:] = -_INF
    ferr[:] = -_INF
    for f in range(F):
        if g.fvalid[r, f] and not foot_out[f]:
            fpos[f] = 0.0
            ferr[f] = math.log(_EPS_F)
    for k in range(E):
        if not act[k]:
            continue
        i, j = g.ei[r, k], g.ej[r, k]
        if math.log(0.5) - 0.5 * rho2[k] <= lim:  # phi(d) B and e^{-R/2} Z are below e^{-rho^2/2}/2
            s2 = rho2[k] - R2[k]
            ferr[i] = _lse_pair(ferr[i], math.log(0.5) - 0.5 * (s2 + e1[k] * e1[k]))
            ferr[j] = _lse_pair(ferr[j], math.log(0.5) - 0.5 * (s2 + e2[k] * e2[k]))
            continue
        if not done[k] and not _edge_values(g, r, wk, k):
            return False
        use[k] = True
        for side in range(2):
            f = i if side == 0 else j
            ek = e1[k] if side == 0 else e2[k]
            lb = wk.vals[k, 2 + side]
            if ek > 0.0:
                fneg[f] = _lse_pair(fneg[f], lb)
            else:
                fpos[f] = _lse_pair(fpos[f], lb)
            ferr[f] = _lse_pair(ferr[f], _term_err(lb))
    _owen_sensitivity(g, r, wk)
    return True


@_jit
def _cone_sensitivity(g, r, wk):
    """log of the summed geometry-rounding bounds (:func:`_edge_sensitivity`) of the cone terms of the edges with an end
    near a foot (row 11 of ``wk.wf``, set by :func:`_edges`); -inf when there are none."""
    E = g.evalid.shape[1]
    out = -_INF
    for k in range(E):
        if wk.wb[0, k] and wk.wf[11, k] != 0.0:
            out = _add_log(out, _edge_sensitivity(g, r, wk, k, 0, True))
            out = _add_log(out, _edge_sensitivity(g, r, wk, k, 1, True))
    return out


@_jit
def _owen_sensitivity(g, r, wk):
    """The same bounds for the Owen-T terms of the edges used in the facet masses, into their facets' ``ferr``."""
    E, F = g.evalid.shape[1], g.Nrm.shape[1]
    ferr = wk.wf[10, :F]
    for k in range(E):
        if wk.wb[3, k] and wk.wf[11, k] != 0.0:
            i, j = g.ei[r, k], g.ej[r, k]
            ferr[i] = _add_log(ferr[i], _edge_sensitivity(g, r, wk, k, 0, False))
            ferr[j] = _add_log(ferr[j], _edge_sensitivity(g, r, wk, k, 1, False))


@_jit
def _first_moments(g, r, wk, log_mass, mean, cov):
    """``E[y 1] = -sum_i n_i phi(d_i) P_i`` and the facet part of ``E[yy^T 1]`` (over the mass) into ``mean`` and
    ``cov``: ``(err1, err2)`` their error bounds from the facet masses' bounds."""
    F = g.Nrm.shape[1]
    wf = wk.wf
    D, fpos, fneg, ferr = wf[0, :F], wf[8, :F], wf[9, :F], wf[10, :F]
    Nrm = g.Nrm
    for a in range(3):
        mean[a] = 0.0
        for b in range(3):
            cov[a, b] = 1.0 if a == b else 0.0
    err1 = 0.0
    err2 = 0.0
    for f in range(F):
        if not g.fvalid[r, f]:
            continue
        lp, _ = _log_diff(fpos[f], fneg[f])
        lphi = -0.5 * D[f] * D[f] - _LOG_SQRT_2PI_F
        if lp == -_INF:  # no terms left (all below the moments' window), or cancelled: only its error bound
            qe = math.exp(lphi + ferr[f] - log_mass)
            err1 += qe
            err2 += qe * (1.0 + abs(D[f]))
            continue
        q = math.exp(lphi + lp - log_mass)
        # only what the per-region path would integrate differently: its planar rule falls back to slices
        # when the cancellation sum |terms| / P_i exceeds FACET_REL / 1e-15 (~1e-15 per term)
        if _lse_pair(fpos[f], fneg[f]) - lp > math.log(FACET_REL / 1e-15):
            qe = math.exp(lphi + ferr[f] - log_mass)
            err1 += qe
            err2 += qe * (1.0 + abs(D[f]))
        for a in range(3):
            mean[a] -= q * Nrm[r, f, a]
            for b in range(3):
                cov[a, b] -= q * D[f] * Nrm[r, f, a] * Nrm[r, f, b]
    return err1, err2


@_jit
def _second_moments(g, r, wk, log_mass, mean, cov):
    """Edge part of ``E[yy^T 1]``: ``sum_edges e^{-R/2}/(2 pi) Z (n_i m_ij^T + n_j m_ji^T)``, then centred and
    symmetrised; returns ``|m|``."""
    E = g.evalid.shape[1]
    R2, use = wk.wf[5, :E], wk.wb[3, :E]
    for k in range(E):
        if not use[k]:
            continue
        v = math.exp(-0.5 * R2[k] - _LOG_2PI_F + wk.vals[k, 4] - log_mass)
        i, j = g.ei[r, k], g.ej[r, k]
        for a in range(3):
            for b in range(3):
                cov[a, b] += v * (g.Nrm[r, i, a] * g.m1[r, k, b] + g.Nrm[r, j, a] * g.m2[r, k, b])
    return _centre(mean, cov)


@_jit
def _centre(mean, cov):
    """``cov -= m m^T``, symmetrised; returns ``|m|``."""
    mn = math.sqrt(mean[0] * mean[0] + mean[1] * mean[1] + mean[2] * mean[2])
    for a in range(3):
        for b in range(3):
            cov[a, b] -= mean[a] * mean[b]
    for a in range(3):
        for b in range(a + 1, 3):
            s = 0.5 * (cov[a, b] + cov[b, a])
            cov[a, b] = s
            cov[b, a] = s
    return mn


@_jit
def _smallest_eigenvalue_bound(cov):
    """``det / e2`` (``e2``: the sum of the 2 x 2 principal minors), a lower bound on the smallest eigenvalue of a
    3 x 3 covariance; 0 when not positive."""
    e2 = (cov[0, 0] * cov[1, 1] - cov[0, 1] * cov[0, 1] + cov[0, 0] * cov[2, 2] - cov[0, 2] * cov[0, 2]
          + cov[1, 1] * cov[2, 2] - cov[1, 2] * cov[1, 2])
    det = (cov[0, 0] * (cov[1, 1] * cov[2, 2] - cov[1, 2] * cov[1, 2])
           - cov[0, 1] * (cov[0, 1] * cov[2, 2] - cov[1, 2] * cov[0, 2])
           + cov[0, 2] * (cov[0, 1] * cov[1, 2] - cov[1, 1] * cov[0, 2]))
    return det / e2 if det > 0.0 and e2 > 0.0 else 0.0


@_jit
def _needs_refine(cov, rel, mn, err1, light_log, cov_relative):
    """E[yy^T] - m m^T: a relative error delta of the mass moves the covariance by ~delta (1 + |m|^2), held to
    ``COV_TOL`` of its smallest eigenvalue (``cov_relative``, else of the whitened unit); the mean's error ~ delta
    |m| to ``MEAN_TOL`` of the smallest standard deviation. For pairs of posterior weight w below LOOSEN_WEIGHT an
    absolute allowance ``LOOSEN_WEIGHT / w - 1`` is added (``light_log = -log w``)."""
    lam = _smallest_eigenvalue_bound(cov)
    light = max(LOOSEN_WEIGHT * math.exp(min(light_log, 700.0)) - 1.0, 0.0)
    scale = lam if cov_relative else 1.0
    refine = not (rel + 64.0 * _EPS_F) * (1.0 + mn * mn) <= COV_TOL * (scale + light)
    return refine or not (rel + 64.0 * _EPS_F) * mn + err1 <= MEAN_TOL * math.sqrt(scale + light)


@_jit
def _pair(g, r, mu, lws, moments, cov_relative, mean, cov, wk):
    """One (region r of ``g``, mean ``mu``) pair: ``(log_mass, rel_err, flagged, refine)``; whitened mean and cov
    into the arrays. ``lws``: the caller's bound ``w <= exp(lws) * mass`` on the pair's posterior weight (+inf:
    none); ``cov_relative``: covariance accuracy relative to its smallest eigenvalue (else to the whitened unit)."""
    inside, flagged = _offsets(g, r, mu, wk)
    flagged = _edges(g, r, wk) or flagged
    pos, neg, err, unresolved = _mass(g, r, wk, inside)
    flagged = flagged or unresolved
    log_mass, ratio = _log_diff(pos, neg)
    if log_mass == -_INF:
        return log_mass, _INF, True, False
    rel = math.exp(err - log_mass) + 4.0 * _EPS_F * (1.0 + ratio) / max(1.0 - ratio, 1e-300)
    loosen = loosen_factor(lws + log_mass)
    # the logs of the terms are rounded to ~eps |log| (they are, in exact arithmetic, for the rounded offsets
    # too): that part of the bound is accepted up to a cancellation of 64
    if not rel <= FALLBACK_REL * loosen + 64.0 * EDGE_ULPS * _EPS_F * (1.0 + abs(log_mass)):
        flagged = True
    if moments < 1 or flagged:
        return log_mass, rel, flagged, False
    if not _facet_masses(g, r, wk, log_mass):
        return log_mass, rel, True, False
    err1, err2 = _first_moments(g, r, wk, log_mass, mean, cov)
    if moments >= 2:
        mn = _second_moments(g, r, wk, log_mass, mean, cov)
    else:
        mn = _centre(mean, cov)
    tot = err1 if moments < 2 else err2 + (2.0 * mn + 1.0) * err1
    if not tot <= MOMENT_TOL * loosen:
        flagged = True
    refine = moments >= 2 and _needs_refine(cov, rel, mn, err1, -(lws + log_mass), cov_relative)
    return log_mass, rel, flagged, refine


@_jit
def _pairs_block(start, stop, g, pr, mu, lws, moments, cov_relative, out):
    """Pairs ``start:stop`` with one scratch; ``out``: (log_mass, rel, flagged, refine, mean, cov) arrays (P, ...)."""
    n = max(g.Nrm.shape[1], g.evalid.shape[1], 5)
    wk = _Work(np.empty((13, n)), np.empty((4, n), dtype=np.bool_), np.empty((g.evalid.shape[1], 5)))
    log_mass, rel, flagged, refine, mean, cov = out
    for p in range(start, stop):
        log_mass[p], rel[p], flagged[p], refine[p] = _pair(g, pr[p], mu[p], lws[p], moments, cov_relative, mean[p],
                                                           cov[p], wk)


def batch_solid_moments(geo, pr: np.ndarray, mu: np.ndarray, moments: int = 2, log_weight_scale=None,
                        cov_relative: bool = True) -> SolidPairs:
    """Whitened mass and moments for pairs (region ``pr[p]`` of ``geo``, mean ``mu[p]``), P pairs.

    Returns :class:`pairs.SolidPairs` (``log_mass (P,), mean (P, 3), cov (P, 3, 3), rel (P,), flagged (P,),
    refine (P,)``) in
    whitened coordinates of each pair's region; ``flagged`` pairs (boundary cases, cancellation beyond the
    error budget) must be recomputed by the caller; ``refine`` pairs have a covariance whose cancellation
    (``E[yy^T] - m m^T`` with ``|m|^2`` far above its smallest eigenvalue) may exceed ``COV_TOL`` relative
    to that eigenvalue (``cov_relative``; else relative to the whitened unit, Sigma_omega:
    ``PairRequest.accuracy``): the caller should use the cubature where it applies (small bounded regions).
    ``log_weight_scale`` (P,): the caller's bound
    ``w <= exp(log_weight_scale) * mass`` on each pair's posterior weight; thresholds are loosened by
    :func:`loosen_factor` for pairs of weight below ``LOOSEN_WEIGHT``.
    """
    pr = np.ascontiguousarray(pr, dtype=np.intp)
    mu = np.ascontiguousarray(mu, dtype=np.float64)
    P = pr.size
    lws = np.full(P, np.inf) if log_weight_scale is None else np.ascontiguousarray(log_weight_scale, dtype=np.float64)
    log_mass, rel = np.empty(P), np.empty(P)
    flagged, refine = np.empty(P, dtype=np.bool_), np.empty(P, dtype=np.bool_)
    mean, cov = np.zeros((P, 3)), np.zeros((P, 3, 3))
    g, out = geo.arrays, (log_mass, rel, flagged, refine, mean, cov)
    run_split(lambda start, stop: _pairs_block(start, stop, g, pr, mu, lws, moments, bool(cov_relative), out), P,
              min_per_thread=PAIRS_PER_BLOCK, pieces_per_thread=8)
    return SolidPairs(log_mass, mean if moments >= 1 else None, cov if moments >= 2 else None, rel, flagged,
                         refine)
