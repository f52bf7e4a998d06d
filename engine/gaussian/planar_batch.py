"""S = 2 batched over (region, point) pairs: the Owen-T edge formula of ``planar`` without per-pair loops.

Theorem 1 (eq. 5) needs ``Phi_omega(mu_omega(x), Sigma_omega)`` for every pair (x, omega). Whitening by
``Sigma_omega = L L^T`` maps region omega to the polygon ``{Nrm y <= D}`` with fixed unit normals
``Nrm = H L / |H L|`` and offsets ``D = (c - H mu) / |H L|`` that are affine in ``mu``. A translation
does not change a polygon's combinatorics, so for each edge ``i`` the neighbouring rows that cut it
(``j_hi(i)``, ``j_lo(i)``) are found once per region; per pair the edge interval is then O(1):
``s_hi = (d_j - d_i n_i.n_j) / (n_j . e_i)`` (``planar.planar_edges`` does the same with an O(F^2)
search). Regions are padded to a common edge count with inactive edges and all pairs are stacked.

Each edge's ``B_i`` (mass beyond edge i inside its angular sector) comes from ``planar._edge_log_B``,
evaluated only on the edges that can matter: ``B_i <= exp(-rho_i^2 / 2) / 2`` (``rho_i`` the distance
from the origin to the edge), so edges more than ``_DROP`` nats below the largest such bound (or below
1 when the origin is inside) are left out and their bounds are added to the error estimate. The same
cancellation analysis as ``planar.planar_log_mass`` gives a relative error bound per pair; pairs above
``_FALLBACK_REL``, and pairs whose origin lies on an edge line, are handed back to the caller for the
exact per-region path (slice quadrature). Moments by the divergence theorem as in ``planar_moments``.
"""

from __future__ import annotations

import numpy as np

from .planar import _PARALLEL, _edge_log_B, cancels, edge_divergence_moments, planar_slice_moments

_EPS = np.finfo(np.float64).eps
_DROP = 45.0  # nats: e^-45 = 2.9e-20 relative, far below float64 resolution
_FALLBACK_REL = 4e-12  # relative mass error bound above which a pair goes to the exact slow path
_LOG_HALF = np.log(0.5)


def _lse(a, axis):
    """log-sum-exp with plain numpy (scipy's wrapper overhead dominates small arrays)."""
    m = np.max(a, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore"):
        return np.log(np.sum(np.exp(a - m), axis=axis)) + np.squeeze(m, axis=axis)


class RegionGeometry:
    """Per-region whitened normals and edge adjacency, padded to ``F`` rows (inactive rows: ``valid`` False).

    ``ok[r]`` is False for regions the batch does not handle (no facets, lineality, degenerate
    combinatorics); the caller integrates those with the per-region path.
    """

    def __init__(self, polytopes, covs):
        R = len(polytopes)
        self.R = R
        covs = np.asarray(covs, dtype=np.float64)
        F = max([p.H.shape[0] for p in polytopes] + [1])
        self.F = F
        self.ok = np.zeros(R, dtype=bool)
        self.Nrm = np.zeros((R, F, 2))
        self.Hn = np.zeros((R, F, 2))  # D = cn - mu @ Hn^T
        self.cn = np.ones((R, F))
        self.valid = np.zeros((R, F), dtype=bool)
        self.jhi = np.zeros((R, F), dtype=np.intp)
        self.jlo = np.zeros((R, F), dtype=np.intp)
        self.ghi = np.ones((R, F))
        self.glo = np.ones((R, F))
        self.chi = np.zeros((R, F))
        self.clo = np.zeros((R, F))
        self.has_hi = np.zeros((R, F), dtype=bool)
        self.has_lo = np.zeros((R, F), dtype=bool)
        try:
            chol = np.linalg.cholesky(covs)
        except np.linalg.LinAlgError:
            chol = None
        self.chol = chol
        if chol is None:
            return
        idx = np.arange(F)
        for r, p in enumerate(polytopes):
            H, c = p.H, p.c
            f = H.shape[0]
            if f == 0 or p.lineality.size or H.shape[1] != 2:
                continue
            HL = H @ chol[r]
            nrm = np.sqrt((HL * HL).sum(axis=1))
            if np.any(nrm <= 0.0):
                continue
            Nrm = HL / nrm[:, None]
            cn = c / nrm
            E = np.stack([-Nrm[:, 1], Nrm[:, 0]], axis=1)
            G = E @ Nrm.T  # G[i, j] = n_j . e_i
            C = Nrm @ Nrm.T
            Q = (cn[None, :] - cn[:, None] * C) / np.where(np.abs(G) > _PARALLEL, G, 1.0)
            upper = G > _PARALLEL
            lower = G < -_PARALLEL
            qh = np.where(upper, Q, np.inf)
            ql = np.where(lower, Q, -np.inf)
            jh = np.argmin(qh, axis=1)
            jl = np.argmax(ql, axis=1)
            sh = qh[idx[:f], jh]
            sl = ql[idx[:f], jl]
            # parallel rows: a violated one empties the edge (cannot happen for irredundant regions)
            par = ~(upper | lower) & (idx[:f, None] != idx[None, :f])
            slack = cn[None, :] - cn[:, None] * C
            blocked = np.any(par & (slack < -1e-12 * (1 + np.abs(cn)[None, :])), axis=1)
            good = (sl < sh) & ~blocked
            if not np.all(good):
                continue  # redundant or degenerate rows: leave the region to the exact H-representation path
            self.ok[r] = True
            self.Nrm[r, :f] = Nrm
            self.Hn[r, :f] = H / nrm[:, None]
            self.cn[r, :f] = cn
            self.valid[r, :f] = True
            self.jhi[r, :f] = jh
            self.jlo[r, :f] = jl
            self.has_hi[r, :f] = np.isfinite(sh)
            self.has_lo[r, :f] = np.isfinite(sl)
            self.ghi[r, :f] = np.where(upper[idx[:f], jh], G[idx[:f], jh], 1.0)
            self.glo[r, :f] = np.where(lower[idx[:f], jl], G[idx[:f], jl], 1.0)
            self.chi[r, :f] = C[idx[:f], jh]
            self.clo[r, :f] = C[idx[:f], jl]


def batch_planar_moments(geo: RegionGeometry, pr: np.ndarray, mu: np.ndarray, moments: int = 2):
    """Whitened mass and moments for pairs (region ``pr[p]``, mean ``mu[p]``), P pairs.

    Returns ``(log_mass (P,), mean_y (P, 2), cov_y (P, 2, 2), rel_err (P,), flagged (P,), D (P, F))``
    in whitened coordinates of each pair's region; ``flagged`` pairs must be recomputed by the caller.
    """
    P = pr.shape[0]
    valid = geo.valid[pr]
    D = geo.cn[pr] - np.einsum("pk,pfk->pf", mu, geo.Hn[pr])
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        s_hi = np.where(geo.has_hi[pr],
                        (np.take_along_axis(D, geo.jhi[pr], axis=1) - D * geo.chi[pr]) / geo.ghi[pr], np.inf)
        s_lo = np.where(geo.has_lo[pr],
                        (np.take_along_axis(D, geo.jlo[pr], axis=1) - D * geo.clo[pr]) / geo.glo[pr], -np.inf)
    act = valid & (s_lo < s_hi)
    h = np.abs(D)
    s_star = np.clip(0.0, s_lo, s_hi)
    bound = np.where(act, _LOG_HALF - 0.5 * (h * h + s_star * s_star), -np.inf)  # log B_i <= this
    Dv = np.where(valid, D, 1.0)
    inside = np.all(Dv > 0.0, axis=1)
    outside = np.any(Dv < 0.0, axis=1)
    boundary = ~inside & ~outside
    ref = np.where(inside, 0.0, np.max(bound, axis=1))
    keep = act & (bound > ref[:, None] - _DROP)
    log_B = np.full((P, geo.F), -np.inf)
    rel_B = np.zeros((P, geo.F))
    if np.any(keep):
        lb, rb = _edge_log_B(h[keep], s_lo[keep], s_hi[keep])
        log_B[keep] = lb
        rel_B[keep] = rb
    log_pos = _lse(np.where(D < 0.0, log_B, -np.inf), axis=1)
    log_pos = np.where(inside, 0.0, log_pos)  # inside: the indicator 1; no edge has d < 0
    log_neg = _lse(np.where(D > 0.0, log_B, -np.inf), axis=1)
    dropped = act & ~keep
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        ratio = np.exp(log_neg - log_pos)
        log_mass = log_pos + np.log1p(-np.minimum(ratio, 1.0))
        terms = np.concatenate([log_B + np.log(rel_B + _EPS), np.where(dropped, bound, -np.inf)], axis=1)
        abs_terms = _lse(terms, axis=1)
        rel_err = np.exp(abs_terms - log_mass) + 4.0 * _EPS * (1.0 + ratio) / np.maximum(1.0 - ratio, 1e-300)
    flagged = boundary | ~np.isfinite(log_mass) | ~(rel_err <= _FALLBACK_REL)
    if moments < 1:
        return log_mass, None, None, rel_err, flagged, D
    Nrm = geo.Nrm[pr]
    mean, cov = edge_divergence_moments(Nrm, D, s_lo, s_hi, keep & ~flagged[:, None], log_mass, moments)
    if moments < 2:
        return log_mass, mean, None, rel_err, flagged, D
    redo = cancels(mean, cov, log_mass, rel_err) & ~flagged  # flagged pairs are redone by the caller
    if np.any(redo):
        # padded rows (Nrm 0, D 1) are the constraint 0 <= 1 for the slices
        _, mean[redo], cov[redo] = planar_slice_moments(Nrm[redo], D[redo],
                                                        (s_lo[redo], s_hi[redo], act[redo]))
    return log_mass, mean, cov, rel_err, flagged, D
