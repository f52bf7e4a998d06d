"""S' = 4 cone (flag) decomposition: one compiled call per region for the kernel, its moment bounds and the
certification (issue 14).

``cones.cone_moments`` runs the compiled per-pair kernel (``cones.pair_moments``: Theorem 1's ``Phi_omega`` of eq. 5
and the moments of eq. 6 by NOTES §6's orthoschemes ``m -> foot on a facet -> foot on a ridge -> foot on an edge``)
and then, in numpy on arrays of a few rows, checks the flags (``cones.consistent``), bounds the moments' errors
(``cones.moment_bounds``) and ``cones.cones_first`` decides which rows it keeps (``cones.certified``, an ``eigvalsh``
per call). On ``[4, 16, 16, 5]`` a region is asked for 1 to 7 points at a time (``evaluate``'s row blocks), and those
numpy steps cost ~0.1 ms a call against ~0.3 ms a pair for the kernel itself. Here they are the same steps, compiled,
in one call per region: :func:`region_pairs` (rows independent, so worker threads split them without changing a bit).
The kernel is ``cones.pair_moments`` itself: the values are ``cones.cone_moments``' bits.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from ..constants import LOOSEN_WEIGHT
from ..threads import run_split
from .cones import _HEAVY_TOL, CONE_MASS_TOL, COV_TOL, EPS, LIGHT_TOL, MEAN_TOL, PAIRS_PER_THREAD, pair_moments
from .sliced import MAX_TOL

REGION_PAIRS_PER_THREAD = PAIRS_PER_THREAD  # fewest rows of one region call worth a worker thread

_jit = numba.njit(cache=True, nogil=True, error_model="numpy")


@_jit
def consistent_c(g, n_vertices):
    """``cones.consistent`` compiled: every vertex an end of >= 4 edges, every ridge with >= 2 (edge, ridge) lines,
    every valid facet in >= 3 ridges."""
    if g.eva.size == 0:
        return False
    anyf = False
    for f in range(g.fvalid.size):
        anyf = anyf or g.fvalid[f]
    if not anyf:
        return False
    ends = np.zeros(n_vertices, dtype=np.intp)
    for k in range(g.eva.size):
        ends[g.eva[k]] += 1
        if g.evb[k] >= 0:
            ends[g.evb[k]] += 1
    per_ridge = np.zeros(g.ri.size, dtype=np.intp)
    for m in range(g.lr.size):
        per_ridge[g.lr[m]] += 1
    per_facet = np.zeros(g.fvalid.size, dtype=np.intp)
    for r in range(g.ri.size):
        per_facet[g.ri[r]] += 1
        per_facet[g.rj[r]] += 1
    for v in range(n_vertices):
        if ends[v] < 4:
            return False
    for r in range(g.ri.size):
        if per_ridge[r] < 2:
            return False
    for f in range(g.fvalid.size):
        if g.fvalid[f] and per_facet[f] < 3:
            return False
    return True


@_jit
def _nanmax0(x, y):
    """``np.maximum`` (NaN propagates)."""
    if x != x or y != y:
        return math.nan
    return max(x, y)


@_jit
def row_bounds(mean, cov, rel, e1, e2):
    """``cones.moment_bounds`` of one row: ``(err_mean, err_cov)``, the same operations."""
    r = rel / _nanmax0(1.0 - rel, 1e-300)
    mn = 0.0
    for a in range(4):
        mn = _nanmax0(mn, abs(mean[a])) if a else abs(mean[a])
    em = e1 + mn * r + 8.0 * EPS * mn
    second = 0.0
    for a in range(4):
        for b in range(4):
            t = abs(cov[a, b] + mean[a] * mean[b])
            second = t if a == 0 and b == 0 else _nanmax0(second, t)
    es = e2 + second * r + 16.0 * EPS * second
    return em, es + (2.0 * mn + em) * em


@_jit
def row_certified(lm, rel, fl, eb, cov, tol, moments, relative):
    """``cones.certified`` of one row: not flagged, mass bar within ``max(tol, CONE_MASS_TOL)``, moment bounds
    within ``MEAN_TOL`` / ``COV_TOL`` (times ``tol / 1e-10`` for light pairs) of the smallest eigenvalue of the
    covariance (``relative``) or of the whitened unit."""
    if fl or not math.isfinite(lm) or not rel <= max(tol, CONE_MASS_TOL):
        return False
    if moments < 1:
        return True
    scale = max(tol / _HEAVY_TOL, 1.0)
    lam = 1.0
    if moments >= 2 and relative:
        finite = True
        for a in range(4):
            for b in range(4):
                finite = finite and math.isfinite(cov[a, b])
        lam = np.linalg.eigvalsh(cov)[0] if finite else 0.0
        lam = max(lam, 0.0)
    if not eb[0] <= MEAN_TOL * scale * math.sqrt(lam):
        return False
    return moments < 2 or eb[1] <= COV_TOL * scale * lam


@_jit
def retuned(tol, lws, lm, rel, fl):
    """The tolerance of a pair of log weight scale ``lws`` from its own mass ``e^lm`` (relative bar ``rel``):
    ``_HEAVY_TOL * clip(LOOSEN_WEIGHT / w, 1, MAX_TOL / _HEAVY_TOL)`` with ``w = e^(lws + lm) (1 + rel)``, where that
    is looser than ``tol``; ``tol`` where the row is flagged, its bar above 1/2 or ``lws`` not finite (no weight scale).

    ``sliced.pair_tolerances`` gives a pair ``tol`` by the same formula from ``w = e^(lws + log_upper)``, ``log_upper``
    the closest-point / volume bound of its mass (``budget``), a median 3.4-8 nats above the mass on [4, 16, 16, 5].
    Once the kernel has the mass to its bar, ``e^(lws + lm) (1 + rel)`` bounds the posterior weight too (eq. 6: ``lws =
    log_norm - lower``, ``lower`` a lower bound of log p(x)), so the pair meets the same contract (weighted mass error
    at most ``LOOSEN_WEIGHT * _HEAVY_TOL`` for weights below ``LOOSEN_WEIGHT``) at the looser tolerance: fewer light
    pairs run again by the full rule and fewer pairs go to the slices (s4p, points 0-2 of [4, 16, 16, 5]: 6,211 ->
    6,171 full-rule runs on every 4th cone call replayed, slices in 2 regions instead of 19; log p the same bits, bars
    up by <= 0.5 %)."""
    if fl or not (math.isfinite(lws) and math.isfinite(lm) and rel <= 0.5):
        return tol
    f = LOOSEN_WEIGHT * math.exp(-(lws + lm + math.log1p(rel)))
    if not f > 1.0:
        return tol
    return max(tol, _HEAVY_TOL * min(f, MAX_TOL / _HEAVY_TOL))


@_jit
def region_pairs(g, Nrm, D, Yv, moments, limits, relative, good, out):
    """Every row ``m`` of one region: ``cones.pair_moments`` (skipped when the flags are not ``good``:
    ``cones.consistent`` failed, the row stays flagged), :func:`row_bounds` and :func:`row_certified` against
    :func:`retuned` (``limits = (tol, lws)``: the rows' tolerances and log weight scales (M,), +inf: none); rows with
    ``tol >= cones.LIGHT_TOL`` by the light rule first, again by the full rule where that is not certified (light
    first from 1e-7 or 1e-9 paid nothing: 82 % and 67 % of the extra light runs certified, s4p). ``out = (lm, rel,
    flagged, mean, cov, bounds (M, 2), certified)``, rows filled in place."""
    lm, rel, fl, mean, cov, eb, cert = out
    tol, lws = limits
    for m in range(D.shape[0]):
        light = tol[m] >= LIGHT_TOL
        for _ in range(2):
            e1, e2 = math.inf, math.inf
            if good:
                lm[m], rel[m], fl[m], e1, e2 = pair_moments(g, Nrm, D[m], Yv[m], moments, mean[m], cov[m], light)
            eb[m, 0], eb[m, 1] = row_bounds(mean[m], cov[m], rel[m], e1, e2)
            t = retuned(tol[m], lws[m], lm[m], rel[m], fl[m])
            cert[m] = row_certified(lm[m], rel[m], fl[m], eb[m], cov[m], t, moments, relative)
            if cert[m] or not light or not good:
                break
            light = False


def cone_pairs(Nrm, D, Yv, shape, *, moments, tol, accuracy, log_weight_scale=None):
    """``cones.cone_moments`` and ``cones.certified`` of one region's rows in one compiled call per thread piece:
    ``(log_mass, mean, cov, rel, bounds, flagged, certified)`` (the first six as ``cone_moments`` returns them);
    ``log_weight_scale`` (M,): the rows' ``lws`` of ``sliced.pair_tolerances``, whose tolerances the rows' own masses
    loosen (:func:`retuned`; None: ``tol`` as given)."""
    D = np.ascontiguousarray(D, dtype=np.float64)
    Yv = np.ascontiguousarray(Yv, dtype=np.float64)
    Nrm = np.ascontiguousarray(Nrm, dtype=np.float64)
    tol = np.ascontiguousarray(np.broadcast_to(np.asarray(tol, dtype=np.float64), (D.shape[0],)))
    M = D.shape[0]
    lws = np.full(M, np.inf) if log_weight_scale is None else np.ascontiguousarray(log_weight_scale, dtype=np.float64)
    lws = np.where(np.isnan(lws), np.inf, lws)
    out = (np.full(M, -np.inf), np.full(M, np.inf), np.ones(M, dtype=np.bool_), np.zeros((M, 4)), np.zeros((M, 4, 4)),
           np.zeros((M, 2)), np.zeros(M, dtype=np.bool_))
    good = consistent_c(shape, Yv.shape[1])
    rel_acc = accuracy == "relative"

    def work(a, b):
        region_pairs(shape, Nrm, D[a:b], Yv[a:b], int(moments), (tol[a:b], lws[a:b]), rel_acc, good,
                     tuple(o[a:b] for o in out))

    run_split(work, M, min_per_thread=REGION_PAIRS_PER_THREAD, pieces_per_thread=4)
    lm, rel, fl, mean, cov, eb, cert = out
    return lm, mean, cov, rel, eb, fl, cert


def warm() -> None:
    """Compile (into numba's cache) what :func:`cone_pairs` runs, on a rotated 4-D box at 1 and at 16 means (the
    worker threads' pieces too): ``python -m engine.warmup`` calls this."""
    from .cones import cone_shape

    Q, _ = np.linalg.qr(np.arange(16.0).reshape(4, 4) ** 1.5 + np.eye(4))
    a, b = np.array([-1.0, -0.5, 0.2, -2.0]), np.array([0.7, 1.5, 2.0, 0.1])
    Nrm = np.vstack([Q.T, -Q.T])
    corners = np.array(np.meshgrid(*zip(a, b), indexing="ij")).reshape(4, -1).T @ Q.T
    D = np.concatenate([b, -a])
    shape = cone_shape(Nrm, D, corners, np.zeros((0, 4)))
    for M in (1, 16):
        for moments in (0, 2):
            cone_pairs(Nrm, np.repeat(D[None], M, axis=0), np.repeat(corners[None], M, axis=0), shape,
                       moments=moments, tol=1e-10, accuracy="relative")
