"""S >= 4: which (point, region) pairs of Theorem 1 (eq. 5) are integrated, and the bound on the rest.

``p(x) = sum_omega N(x; b_omega, Sigma_x + A_omega Sigma_z A_omega^T) Phi_omega(mu_omega(x), Sigma_omega)`` (eq. 5):
a pair whose term is provably tiny is left out and its rigorous upper bound added to ``log_marginal_error``
(``engine.distributions._target_prune``). The lightest pairs are skipped while their bounds sum to at most
``budget`` times a lower bound of p(x). Three things decide how many pairs that drops, all sharpened here:

* **The bound of a pair** (:func:`log_mass_bounds`), in whitened coordinates ``y ~ N(0, I_4)`` on P: with ``d`` a
  certified lower bound on the distance from the mean to P (:func:`certified_distance`: the closest point ``y*``'s
  direction ``nu`` supports P, checked on P's vertices and rays, ``d = min(|y*|, min_v nu . v)``), P lies beyond
  the half-space ``nu . y >= d`` (mass ``Q(d)``), and, for a bounded P of volume ``V``, the density on P is at most
  ``phi_4(d)``, so the mass is at most ``V phi_4(d) = V (2 pi)^-2 e^{-d^2/2}``. On ``[4, 16, 16, 5]`` (point 0) the
  closest-point bound alone lies a median 8.1 nats above the pair's true mass, the smaller of the two 3.4 nats.
* **The lower bound of p(x)**: the three pairs ranked first by the most violated half-space (``_first_lower``)
  left it 11.4 and 6.3 nats below log p(x) on points 0 and 1 of ``[4, 16, 16, 5]``, which shrinks the budget by
  e^-11. The ``LOWER_PAIRS`` pairs of largest bound here give their rigorous mass lower bounds (moments 0, the
  cones' bars) and raise it to within ~1 nat (:func:`raised_lower`). The three pairs' own bound
  (``distributions._cone_lower``) is the cones' too, uncertified pairs counting 0: asking the full integrator sent
  first pairs the cones leave (narrow simplicial cones, thin simplices) to the slices at 1e-10, and on points 49-55
  to the nested S = 3 reference quadrature (453 s of CPU for 7 points; 86 s after, one thread, cold caches).
* **Which pairs get the certified bound**: every candidate (``distributions.SKIP_CANDIDATE_S4 = inf``). With only
  those whose half-space bound is below 1e-3 of p(x), slivers near the mean (half-space bound near 1/2, volume bound
  far smaller) could not be skipped: on points 0-2 that kept 5,900 pairs for the cones (48,769 -> 42,869).

The volume is that of the convex hull of the region's vertices (qhull), in ``z`` and divided by ``|det L|``
(``Sigma_omega = L L^T``), enlarged by ``area * VERTEX_ERR (1 + max |v|)`` for the vertices' own rounding.
"""

from __future__ import annotations

import numba
import numpy as np
from scipy.special import log_ndtr, logsumexp

from ...errors import DGNInputError

VERTEX_ERR = 1e-9  # the partition's vertices are within this of the true ones, relative to 1 + max |v| (generous)
LOWER_PAIRS = 64  # pairs per point whose mass lower bounds raise the lower bound of p(x) (raised_lower)
PROBE = 4  # ... chosen by their pair_bounds among the PROBE * LOWER_PAIRS pairs of largest half-space bound
_LOG_2PI = np.log(2.0 * np.pi)
_RAY_TOL = 1e-12  # a ray with nu . r below -this leaves P unsupported by nu: no bound from the half-space


def log_volume(polytope, chol) -> float:
    """log of the whitened volume of a bounded 4-D region (``vol_z / |det L|``), enlarged for the vertices' rounding
    (module docstring); ``+inf`` where the region is unbounded, has lineality, or qhull cannot build the hull."""
    from scipy.spatial import ConvexHull, QhullError

    if polytope.rays.size or polytope.lineality.size or polytope.vertices.shape[0] < 5:
        return np.inf
    V = polytope.vertices
    try:
        hull = ConvexHull(V)
    except (QhullError, ValueError):
        return np.inf
    vol = hull.volume + hull.area * VERTEX_ERR * (1.0 + np.abs(V).max())
    if not vol > 0.0:
        return np.inf
    return float(np.log(vol) - np.sum(np.log(np.abs(np.diag(chol)))))


def certified_distance(closest, Yv, Yr):
    """(M,) lower bound on the distance from the origin to each ``P_m`` (whitened; vertices ``Yv`` (M, V, 4), unit rays
    ``Yr`` (R, 4)): ``min(|y*|, min_v nu . v)`` with ``nu = y* / |y*|`` when every ray has ``nu . r >= 0`` (then
    ``nu . y >= min_v nu . v`` on all of P), else 0; a point inside (``y* = 0``) gives 0. It does not trust the
    closest point's optimality, only the vertices."""
    r = np.linalg.norm(closest, axis=1)
    out = np.zeros(r.size)
    pos = r > 0.0
    if not np.any(pos):
        return out
    nu = closest[pos] / r[pos, None]
    low = np.einsum("mvk,mk->mv", Yv[pos], nu).min(axis=1)
    if Yr.size:
        ok = (nu @ Yr.T).min(axis=1) >= -_RAY_TOL
        low = np.where(ok, low, 0.0)
    out[pos] = np.maximum(np.minimum(r[pos], low) * (1.0 - 1e-12) - 1e-12, 0.0)
    return out


def log_mass_bounds(d, log_vol):
    """(M,) log upper bounds on the standard normal mass of P from the certified distance ``d`` (M,) and P's whitened
    log volume ``log_vol`` (+inf: unbounded): ``min(log Q(d), log_vol - 2 log(2 pi) - d^2 / 2)``."""
    with np.errstate(invalid="ignore"):
        vol = log_vol - 2.0 * _LOG_2PI - 0.5 * d * d
    return np.minimum(log_ndtr(-d), np.where(np.isfinite(vol), vol, np.inf))


BOUND_REGIONS_PER_ROUND = 2048  # regions whose closest points (pair_bounds) run together in worker threads


def pair_bounds(part, mu, log_norm, pairs, geometry):
    """(N, R) log upper bounds on the terms of eq. 5 of the ``pairs`` (N, R) in regular regions of ``geometry``
    (``log_norm`` plus :func:`log_mass_bounds`); +inf elsewhere. The regions run in worker threads
    (``highdim.map_regions``: the compiled closest point releases the GIL), ``BOUND_REGIONS_PER_ROUND`` at a time;
    each region is computed alone and filed in its own entries, so the bits do not depend on the thread count. A
    geometry with ``keep_closest`` (``sliced.SlicedGeometry``) keeps the bounds for the batch's
    ``sliced._region_cones``, which would compute the same ones again (~18 s CPU of [4, 16, 16, 5] x 100)."""
    from . import map_regions
    from .sliced import _closest_bounds, whitened

    N, R = pairs.shape
    out = np.full((N, R), np.inf)
    ok = geometry.ok & (geometry.chol is not None)
    regs = np.nonzero(pairs.any(axis=0) & ok)[0]
    cached = hasattr(geometry, "log_volumes")

    def region(r):
        lv = geometry.log_volumes([r])[0] if cached else np.inf  # in the thread: qhull runs without the GIL
        rows = np.nonzero(pairs[:, r])[0]
        means = mu[rows, r]
        if cached:
            Nrm, D, Yv, Yr = geometry.whitened(r, means)
        else:
            Nrm, D, Yv, Yr = whitened(part[r].polytope, geometry.chol[r], means)
        return rows, means, D, _closest_bounds(Nrm, D, Yv, Yr, lv)[1]

    jobs = regs.tolist()
    keep = hasattr(geometry, "keep_closest")
    for start in range(0, len(jobs), BOUND_REGIONS_PER_ROUND):
        chunk = jobs[start:start + BOUND_REGIONS_PER_ROUND]
        for r, (rows, means, D, log_b) in zip(chunk, map_regions(region, chunk), strict=True):
            out[rows, r] = log_norm[rows, r] + log_b
            if keep:
                geometry.keep_closest(r, rows, means, D, log_b)
    return out


def _top(score, k):
    """(N, R) bool: each row's ``k`` largest finite ``score`` (``argpartition``'s choice among ties)."""
    N, R = score.shape
    k = min(k, R)
    top = np.zeros((N, R), dtype=bool)
    if k < 1:
        return top
    safe = np.where(np.isnan(score), -np.inf, score)
    np.put_along_axis(top, np.argpartition(-safe, k - 1, axis=1)[:, :k], True, axis=1)
    return top & np.isfinite(safe)


def raised_lower(part, mu, log_norm, top, lower, geometry):
    """(N,) ``lower`` raised by rigorous mass lower bounds of the pairs ``top`` (N, R): ``max(lower, log sum_top
    e^(log_norm + lower log-mass))``, both lower bounds of log p(x) (distinct terms of eq. 5). The masses are the
    cones' (``cones.cone_log_mass``, minus their bars) where they certify them and 0 elsewhere (a pair they leave
    is not worth the slices here: on ``random_network([4, 5, 4], rng=5)`` one such pair at the slices' default
    1e-10 took minutes). The regions run in worker threads (``highdim.map_regions``), each alone and filed in its own
    entries: the same bits with any thread count."""
    from . import map_regions
    from .cones import cone_log_mass

    top = top & np.isfinite(log_norm) & geometry.ok[None]
    if not top.any():
        return lower
    cached = hasattr(geometry, "whitened")

    def region(r):
        rows = np.nonzero(top[:, r])[0]
        if cached:
            Nrm, D, Yv, Yr = geometry.whitened(r, mu[rows, r])
        else:
            from .sliced import whitened

            Nrm, D, Yv, Yr = whitened(part[r].polytope, geometry.chol[r], mu[rows, r])
        try:
            lm, rel, fl = cone_log_mass(Nrm, D, Yv, Yr, shape=geometry.cone_shape(r) if cached else None)
        except np.linalg.LinAlgError:
            return rows, np.full(rows.size, -np.inf)
        good = ~fl & np.isfinite(lm) & (rel < 0.5)
        with np.errstate(invalid="ignore", divide="ignore"):
            return rows, np.where(good, log_norm[rows, r] + lm + np.log1p(-np.minimum(rel, 0.5)), -np.inf)

    terms = np.full(top.shape, -np.inf)
    regs = np.nonzero(top.any(axis=0))[0].tolist()
    for r, (rows, t) in zip(regs, map_regions(region, regs), strict=True):
        terms[rows, r] = t
    return np.maximum(lower, logsumexp(terms, axis=1))


def target_prune(part, mu, log_norm, upper, lower, cand, geometry, budget, candidate_share, **out):
    """S >= 4: the pairs ``cand`` (N, R) whose rigorous upper bounds on their terms of eq. 5, smallest first, sum to at
    most ``budget`` times a lower bound of p(x) are skipped. Bounds: the smaller of the most violated facet's
    ``upper`` and :func:`pair_bounds`, the latter for the pairs whose ``upper`` is below ``candidate_share`` of the
    lower bound (the only ones that can be skipped) and for each point's ``PROBE * LOWER_PAIRS`` pairs of largest
    ``upper``. The lower bound: ``lower`` raised (:func:`raised_lower`) by the ``LOWER_PAIRS`` pairs of largest
    bound among those. Returns the pairs still needed, the (N,) log of the sum of the skipped bounds (``-inf``: none)
    and the raised lower bound (N,). ``bounds_out`` (N, R), optional: filled with the pairs' bounds (``+inf`` outside
    ``cand``), for the posterior moments' bar (``distributions``)."""
    bounds_out = out.get("bounds_out")
    if not 0.0 < budget < 1.0:
        raise DGNInputError("SKIP_BUDGET", f"is {budget!r}, not in (0, 1)", "set a share of p(x) such as 1e-9")
    if getattr(geometry, "chol", None) is None or not cand.any():
        if bounds_out is not None:
            bounds_out[...] = np.where(cand, upper, np.inf)
        return (*skip_lightest(cand, np.where(cand, upper, np.inf), lower, budget), lower)
    if hasattr(geometry, "drop_closest"):  # a block whose batch did not run (an error) left its points behind
        geometry.drop_closest()
    cand_upper = np.where(cand, upper, -np.inf)
    probe = _top(cand_upper, PROBE * LOWER_PAIRS)
    bound = np.where(cand, upper, np.inf)
    bound = np.where(probe, np.minimum(bound, pair_bounds(part, mu, log_norm, probe, geometry)), bound)
    lower = raised_lower(part, mu, log_norm, _top(np.where(probe, bound, -np.inf), LOWER_PAIRS), lower, geometry)
    with np.errstate(invalid="ignore"):
        maybe = cand & (upper < lower[:, None] + np.log(candidate_share))
    more = maybe & ~probe
    bound = np.where(more, np.minimum(bound, pair_bounds(part, mu, log_norm, more, geometry)), bound)
    if bounds_out is not None:
        bounds_out[...] = bound
    return (*skip_lightest(cand, bound, lower, budget, maybe), lower)


def skip_lightest(cand, bound, lower, budget, maybe=None):
    """The lightest pairs of ``maybe`` (default ``cand``) by ``bound`` while their sum stays within ``budget`` e^lower:
    ``(cand & ~skip, log sum of the skipped bounds)``."""
    maybe = cand if maybe is None else maybe
    order = np.argsort(np.where(maybe, bound, np.inf), axis=1, kind="stable")
    srt = np.take_along_axis(np.where(maybe, bound, -np.inf), order, axis=1)
    cum = np.logaddexp.accumulate(srt, axis=1)
    with np.errstate(invalid="ignore"):
        skip_sorted = (cum <= lower[:, None] + np.log(budget)) & np.isfinite(srt)
    skip = np.zeros(cand.shape, dtype=bool)
    np.put_along_axis(skip, order, skip_sorted, axis=1)
    return cand & ~skip, logsumexp(np.where(skip, bound, -np.inf), axis=1)


# ---------------------------------------------------------------------------------------------------
# the closest point and the certified distance, compiled (the numpy / scipy route cost ~0.1 ms a pair in Python)
# ---------------------------------------------------------------------------------------------------

_jit = numba.njit(cache=True, nogil=True, error_model="numpy")
_NNLS_ITER = 64  # outer iterations of Lawson-Hanson at most (the problems have 5 rows: <= 5 passive columns)


@_jit
def _least_squares(E, b, passive, k):
    """``argmin |E_P s - b|`` over the first ``k`` columns listed in ``passive``: Householder QR of the gathered
    (m, k) columns (m = S + 1 rows, k <= m here), then back substitution; a column with no new direction (a zero
    pivot) gets 0. Returns the (k,) solution."""
    m = E.shape[0]
    A = np.empty((m, k))
    for j in range(k):
        for i in range(m):
            A[i, j] = E[i, passive[j]]
    y = b.copy()
    diag = np.zeros(k)
    for j in range(min(k, m)):
        norm = 0.0
        for i in range(j, m):
            norm += A[i, j] * A[i, j]
        norm = np.sqrt(norm)
        if norm == 0.0:
            continue
        alpha = -norm if A[j, j] >= 0.0 else norm
        v = A[j:, j].copy()
        v[0] -= alpha
        vv = np.sum(v * v)
        diag[j] = alpha
        if vv == 0.0:
            continue
        for c in range(j + 1, k):
            t = 2.0 * np.sum(v * A[j:, c]) / vv
            A[j:, c] -= t * v
        t = 2.0 * np.sum(v * y[j:]) / vv
        y[j:] -= t * v
    s = np.zeros(k)
    scale = np.abs(diag).max() if k else 0.0
    for j in range(min(k, m) - 1, -1, -1):
        if abs(diag[j]) <= 1e-14 * scale:
            continue
        acc = y[j]
        for c in range(j + 1, k):
            acc -= A[j, c] * s[c]
        s[j] = acc / diag[j]
    return s


@_jit
def _residual(E, u, b, out):
    """``out = b - E u`` in plain loops (no BLAS call for a 5 x F product)."""
    m, n = E.shape
    for q in range(m):
        acc = b[q]
        for i in range(n):
            acc -= E[q, i] * u[i]
        out[q] = acc


@_jit
def _entering(E, u, b, inP, tol, res, w):
    """The column of largest gradient ``w = E^T (b - E u)`` outside the passive set, or -1 if none exceeds ``tol``."""
    m, n = E.shape
    _residual(E, u, b, res)
    j, best = -1, tol
    for i in range(n):
        if inP[i]:
            continue
        acc = 0.0
        for q in range(m):
            acc += E[q, i] * res[q]
        w[i] = acc
        if acc > best:
            j, best = i, acc
    return j


@_jit
def _step(u, s_p, passive, k, inP, tol):
    """Lawson-Hanson's inner step: move ``u`` toward the passive least-squares solution ``s_p`` as far as it stays
    >= 0, dropping the columns that reach 0 from the passive set."""
    alpha = 1.0
    for q in range(k):
        i = passive[q]
        if s_p[q] <= tol:
            den = u[i] - s_p[q]
            alpha = min(alpha, u[i] / den if den > 0.0 else 0.0)
    for q in range(k):
        i = passive[q]
        u[i] += alpha * (s_p[q] - u[i])
        if u[i] <= tol:
            u[i] = 0.0
            inP[i] = False


@_jit
def _nnls(E, b):
    """Lawson and Hanson's active-set NNLS, ``argmin_{u >= 0} |E u - b|`` (their ch. 23, as scipy's ``nnls``)."""
    m, n = E.shape
    u = np.zeros(n)
    inP = np.zeros(n, dtype=np.bool_)
    tol = 10.0 * max(m, n) * 2.220446049250313e-16 * max(np.abs(E).sum(axis=0).max(), 1.0)
    passive = np.empty(n, dtype=np.intp)
    res, w = np.empty(m), np.empty(n)
    for _ in range(_NNLS_ITER):
        j = _entering(E, u, b, inP, tol, res, w)
        if j < 0:
            break
        inP[j] = True
        for _inner in range(_NNLS_ITER):
            k = 0
            for i in range(n):
                if inP[i]:
                    passive[k] = i
                    k += 1
            s_p = _least_squares(E, b, passive, k)
            if k == 0 or np.all(s_p > tol):
                u[:] = 0.0
                for q in range(k):
                    u[passive[q]] = s_p[q]
                break
            _step(u, s_p, passive, k, inP, tol)
    return u


@_jit
def closest_and_distance(Nrm, D, Yv, Yr):
    """(M, S) closest points of ``{Nrm y <= D_m}`` to the origin (least-distance programming by NNLS, as
    ``qmc.closest_points``; the origin where it is inside) and (M,) :func:`certified_distance`, compiled."""
    M, F = D.shape
    S = Nrm.shape[1]
    out = np.zeros((M, S))
    dist = np.zeros(M)
    E = np.empty((S + 1, F))
    E[:S] = Nrm.T
    f = np.zeros(S + 1)
    f[S] = 1.0
    for m in range(M):
        if np.all(D[m] >= 0.0):
            continue
        E[S] = D[m]
        u = _nnls(E, -f)
        r = np.empty(S + 1)
        _residual(E, u, -f, r)
        r = -r
        if not r[S] > 1e-300:
            continue
        y = -r[:S] / r[S]
        out[m] = y
        dist[m] = _certify(y, Yv[m], Yr)
    return out, dist


@_jit
def _certify(y, yv, Yr):
    """:func:`certified_distance` of one pair."""
    r = np.sqrt(np.sum(y * y))
    if not r > 0.0:
        return 0.0
    nu = y / r
    for k in range(Yr.shape[0]):
        if np.sum(nu * Yr[k]) < -_RAY_TOL:
            return 0.0
    low = np.inf
    for v in range(yv.shape[0]):
        low = min(low, np.sum(nu * yv[v]))
    return max(min(r, low) * (1.0 - 1e-12) - 1e-12, 0.0)
