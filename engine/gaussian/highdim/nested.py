"""S' >= 3 deterministic: nested log-space quadrature of exact planar slice masses.

The Gaussian mass of a region of eq. 5 (Theorem 1) in whitened, pointed coordinates, ``y ~ N(0, I_k)`` on
``{Nrm y <= D}``, is sliced along a generic direction ``u``: ``P = int phi(t) P_{k-1}(slice(t)) dt`` where
``slice(t) = {x in R^{k-1} : (Nrm V) x <= D - t Nrm u}`` (``V`` an orthonormal complement of ``u``). The
integrand is log-concave (a marginal of a 1-strongly log-concave density) and analytic between the
heights ``u . v`` of the vertices ``v`` (where the slice changes combinatorics), so ``quad1d``'s composite
Gauss-Legendre rule, split at those heights, resolves it in log space to ~1e-13 relative. The slices
recurse down to k = 2, which is exact (Owen's T, ``planar``). The vertices of every slice come from the
k-subsets of its constraints: the slice normals are the same for every t and every point, so the inverses
of those k x k systems are formed once per level.

Moments: the conditional mean and covariance follow from the same nodes, by the law of total expectation
and covariance: ``E[y] = E[t u + V E[x | t]]``, ``Cov[y] = E[Cov[. | t]] + Cov[E[. | t]]``.

The error bar ``rel`` (relative, on the mass) is the largest planar rounding bound met below plus the
difference between the estimates along two different directions ``u`` (:func:`nested_moments` with
``check=True``): two different sets of breakpoints and nodes, so the difference measures the quadrature
error rather than repeating it (validated against exact box masses and block-factorised networks,
``tests/test_highdim_nested.py``); it is not a proof.
"""

from __future__ import annotations

import itertools

import numpy as np
from scipy.optimize import linprog

from ..planar import cancels, edge_divergence_moments, planar_log_mass, planar_slice_log_mass, planar_slice_moments
from ..planar.reference import SLICE_RULE_REL
from ..quad1d import integrate_logconcave

_ZERO = 1e-10
_REDO_REL = 1e-3  # planar rows with a larger bound take the slow fallback (weight-propagated otherwise)
_LOG_SQRT_2PI = 0.5 * np.log(2.0 * np.pi)
_DIRS = (np.array([0.5377, 1.8339, -2.2588, 0.8622, 0.3188, -1.3077]),
         np.array([-0.4336, 0.3426, 3.5784, 2.7694, -1.3499, 3.0349]))


def _frame(k: int, which: int):
    """A fixed generic unit direction ``u`` in R^k and an orthonormal basis ``V`` (k, k-1) of its complement."""
    u = _DIRS[which][:k] + 1e-3 * np.arange(1, k + 1)
    u = u / np.linalg.norm(u)
    Q, _ = np.linalg.qr(np.column_stack([u, np.eye(k)]))
    return u, Q[:, 1:k]


class _Level:
    """The per-normal-matrix data of one level: the k-subsets with invertible systems and the extent flags."""

    def __init__(self, Nrm: np.ndarray, which: int):
        F, k = Nrm.shape
        self.u, self.V = _frame(k, which)
        live = np.nonzero((Nrm * Nrm).sum(axis=1) > _ZERO)[0]
        subs = np.array(list(itertools.combinations(live, k)), dtype=np.intp).reshape(-1, k)
        A = Nrm[subs] if subs.size else np.zeros((0, k, k))
        good = np.abs(np.linalg.det(A)) > 1e-12 if subs.size else np.zeros(0, dtype=bool)
        self.subs = subs[good]
        self.inv = np.linalg.inv(A[good]) if good.any() else np.zeros((0, k, k))
        self.unbounded_lo = _unbounded(Nrm, -self.u)
        self.unbounded_hi = _unbounded(Nrm, self.u)
        self.a = Nrm @ self.u
        Nb = Nrm @ self.V
        nb = np.linalg.norm(Nb, axis=1)
        zero = nb < _ZERO
        self.scale = np.where(zero, 1.0, nb)
        self.Nn = np.where(zero[:, None], 0.0, Nb / self.scale[:, None])


def _unbounded(Nrm, d) -> bool:
    """Whether ``{Nrm y <= D}`` (non-empty) is unbounded along ``d``: a recession direction r with d.r > 0."""
    k = Nrm.shape[1]
    res = linprog(-d, A_ub=Nrm, b_ub=np.zeros(Nrm.shape[0]), bounds=[(-1.0, 1.0)] * k, method="highs")
    return bool(res.status == 0 and -res.fun > 1e-9)


_CACHE: dict = {}


def _level(Nrm, which) -> _Level:
    key = (Nrm.tobytes(), Nrm.shape, which)
    lev = _CACHE.get(key)
    if lev is None:
        if len(_CACHE) > 4096:
            _CACHE.clear()
        lev = _CACHE[key] = _Level(Nrm, which)
    return lev


def _heights(lev: _Level, Nrm, D):
    """(M, C) heights ``u . v`` of the vertices of each row's polyhedron (NaN: not a vertex)."""
    if lev.subs.shape[0] == 0:
        return np.full((D.shape[0], 1), np.nan)
    X = np.einsum("cij,mcj->mci", lev.inv, D[:, lev.subs])  # (M, C, k)
    slack = D[:, None, :] - np.einsum("mci,fi->mcf", X, Nrm)
    feas = np.all(slack >= -1e-9 * (1.0 + np.abs(D[:, None, :])), axis=2)
    return np.where(feas, X @ lev.u, np.nan)


def _planar(Nrm, D, moments, redo_cov=True):
    """k = 2: Owen's T edge sums (``planar``) without the slow per-row fallback, which only rows of negligible
    weight need; rows whose bound exceeds ``_REDO_REL`` still take it, and so do covariances that cancel
    (``planar.cancels``) unless ``redo_cov`` is False. Returns (lm, mean, cov, rel); rel is inf where the mass is
    unknown."""
    lm, rel, edges, rel_decide = planar_log_mass(Nrm, D, fallback=False, return_edges=True)
    bad = ~(rel_decide <= _REDO_REL)  # includes unknown rows (inf, NaN)
    if np.any(bad):
        lm[bad], rel[bad] = planar_slice_log_mass(Nrm, D[bad], tuple(e[bad] for e in edges))
        rel_decide[bad] = SLICE_RULE_REL
    rel = np.where(np.isfinite(lm) | (rel == 0.0), rel, np.where(np.isnan(lm), np.inf, 0.0))
    rel_decide = np.where(np.isfinite(lm) | (rel_decide == 0.0), rel_decide, np.where(np.isnan(lm), np.inf, 0.0))
    lm = np.where(np.isnan(lm), -np.inf, lm)
    if moments < 1:
        return lm, None, None, rel
    mean, cov = edge_divergence_moments(np.broadcast_to(Nrm, D.shape + (2,)), D, *edges, lm, moments)
    if moments >= 2 and redo_cov:
        redo = cancels(mean, cov, lm, rel_decide)
        if np.any(redo):
            _, mean[redo], cov[redo] = planar_slice_moments(Nrm, D[redo], tuple(e[redo] for e in edges))
    return lm, mean, cov, rel


def _weighted_rel(lw, total, rel):
    """Relative error of ``sum_i exp(lw_i)`` when each term has relative error ``rel_i`` (inf: unknown term)."""
    with np.errstate(invalid="ignore", over="ignore"):
        w = np.exp(lw - total[:, None])
        terms = np.where(w > 0.0, w * rel, 0.0)
    return np.sum(terms, axis=1)


def nested_moments(Nrm, D, moments: int = 2, which: int = 0):
    """log mass, conditional mean (M, k), covariance (M, k, k) and relative error of N(0, I_k) on each
    ``{Nrm y <= D_m}`` (k = Nrm.shape[1] >= 2; unit or zero rows). ``which`` picks the slicing direction.

    The relative error propagates the planar bounds through the quadrature weights; the quadrature's own
    error is not in it (see :func:`nested_checked`)."""
    D = np.atleast_2d(np.asarray(D, dtype=np.float64))
    M, F = D.shape
    k = Nrm.shape[1]
    if k == 2:
        return _planar(Nrm, D, moments)
    lev = _level(np.ascontiguousarray(Nrm), which)
    zero_rows = (Nrm * Nrm).sum(axis=1) <= _ZERO
    empty = np.any(zero_rows[None] & (D < 0.0), axis=1)
    h = _heights(lev, Nrm, D)
    has_v = np.any(np.isfinite(h), axis=1)
    with np.errstate(invalid="ignore"):
        lo = np.where(lev.unbounded_lo, -np.inf, np.nanmin(np.where(has_v[:, None], h, 0.0), axis=1))
        hi = np.where(lev.unbounded_hi, np.inf, np.nanmax(np.where(has_v[:, None], h, 0.0), axis=1))
    empty |= ~has_v
    state = {}

    def logf(T):
        off = (D[:, None, :] - T[:, :, None] * lev.a) / lev.scale
        lm, ms, cs, rel = nested_moments(lev.Nn, off.reshape(-1, F), moments, which)
        state.update(T=T, ms=ms, cs=cs, rel=rel.reshape(T.shape))
        return -0.5 * T * T - _LOG_SQRT_2PI + lm.reshape(T.shape)

    total, nodes, lw = integrate_logconcave(logf, np.where(empty, 0.0, lo), np.where(empty, 0.0, hi), h)
    total = np.where(empty, -np.inf, total)
    if state["T"] is not nodes and not np.array_equal(state["T"], nodes):
        logf(nodes)
    rel = np.where(empty, 0.0, _weighted_rel(lw, total, state["rel"]))
    if moments < 1:
        return total, None, None, rel
    Q = nodes.shape[1]
    with np.errstate(invalid="ignore", over="ignore"):
        w = np.exp(lw - total[:, None])
    w = np.where(np.isfinite(w), w, 0.0)
    ms = np.where(np.isfinite(state["ms"]), state["ms"], 0.0).reshape(M, Q, k - 1)
    Y = nodes[:, :, None] * lev.u + ms @ lev.V.T  # (M, Q, k) conditional means per node: y = t u + V x
    mean = np.einsum("mq,mqk->mk", w, Y)
    if moments < 2:
        return total, mean, None, rel
    Yc = Y - mean[:, None, :]
    cs = np.where(np.isfinite(state["cs"]), state["cs"], 0.0).reshape(M, Q, k - 1, k - 1)
    within = np.einsum("mq,mqab->mab", w, cs)
    cov = np.einsum("mq,mqi,mqj->mij", w, Yc, Yc) + lev.V @ within @ lev.V.T
    return total, mean, 0.5 * (cov + np.swapaxes(cov, 1, 2)), rel


def nested_checked(Nrm, D, moments: int = 2):
    """:func:`nested_moments` along two slicing directions; the relative error bar adds their difference
    (mass, relative) to the propagated planar bounds. Returns the first direction's values."""
    lm, mean, cov, rel = nested_moments(Nrm, D, moments, 0)
    lm2, _, _, rel2 = nested_moments(Nrm, D, 0, 1)
    with np.errstate(invalid="ignore"):
        diff = np.where(np.isfinite(lm) & np.isfinite(lm2), np.abs(np.expm1(lm2 - lm)),
                        np.where(lm == lm2, 0.0, np.inf))
    return lm, mean, cov, rel + np.maximum(rel2, 0.0) + diff + 1e-14
