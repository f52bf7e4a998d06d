"""Gaussian mass and moments on polytopes in latent dimension S >= 2 (paper Sec. 3.2, Theorem 1).

``polytope_moments(polytope, mean (N, S), cov (S, S))`` whitens once per call
(``y = L^-1 (z - mu)``, ``cov = L L^T``): the region becomes ``{Nrm y <= D}`` with FIXED unit normals
``Nrm`` and per-point offsets ``D (N, F)``. Lineality directions are integrated out exactly (the
constraints only see the orthogonal complement), leaving a pointed problem of dimension S' = S - L.

Methods (``method=``):

* ``"auto"``: S' = 1 closed form (``interval``); S' = 2 Owen-T edge formula with tail-relative
  accuracy and slice-quadrature fallback (``planar``); S = 3 the cone decomposition over edges, all
  (region, point) pairs in one compiled pass, with a tetrahedral cubature for small regions, and per region
  for degenerate rows or flagged pairs: outer quadrature over exact planar slice masses (``solid``); moments for
  S' = 2, 3 by the divergence theorem (``facets``); S' >= 4 randomised QMC with exact planar inner
  integrals and an error bar (``qmc``).
* ``"triangulation"``: the paper's eq. 9 + Lemma 4 with exact cones for unbounded regions and full
  Tallis second moments (``triangulation``).
* ``"slices"`` (S' = 2): the mass by nested quadrature of 1-D slice masses instead of Owen's T.
* ``"rqmc"`` (S' >= 3): the randomised QMC estimator at any S' >= 3.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..errors import DGNInputError
from ..polytope import Polytope
from .facets import facet_moments
from .highdim import cones5, cones6
from .highdim.qmc import rqmc_moments
from .highdim.sliced import SlicedGeometry, sliced_batch, with_fallback
from .interval import standard_interval_moments
from .pairs import PairRequest, PairResult, TruncatedMoments, log_error
from .planar import cancels, planar_log_mass, planar_moments, planar_slice_log_mass, planar_slice_moments
from .planar.batch import RegionGeometry, batch_planar_pairs, gather_pairs, store_planar_pairs
from .planar.reference import SLICE_RULE_REL
from .solid import SolidGeometry, batch_solid_moments, loosen_factors, pair_cubature, solid_log_mass
from .triangulation import triangulation_moments

METHODS = ("auto", "triangulation", "slices", "rqmc")


def _whiten(polytope: Polytope, mean: np.ndarray, cov: np.ndarray, chol: np.ndarray | None = None):
    """``chol``: an accurate lower factor of ``cov`` when the caller has one (``RegionGaussians.chol_cov``,
    from the SVD: a Sigma_omega with condition near 1/eps has no float64 Cholesky factor but has that one)."""
    S = mean.shape[1]
    if chol is not None:
        if not np.all(np.abs(np.diagonal(chol)) > 0):
            raise DGNInputError("network", "a region's posterior covariance is singular in float64 (the decoder's "
                                "gain there exceeds what float64 resolves against the prior)",
                                "rescale the network's weights or raise cov_x")
        L = chol
    else:
        try:
            L = np.linalg.cholesky(cov)
        except np.linalg.LinAlgError:
            raise DGNInputError("cov", "covariance is not symmetric positive definite",
                                "pass a positive definite covariance") from None
    H, c = polytope.H, polytope.c
    HL = H @ L
    nrm = np.linalg.norm(HL, axis=1)
    Nrm = HL / nrm[:, None]
    D = (c[None, :] - mean @ H.T) / nrm
    Linv = np.linalg.inv(L)
    Yv = ((polytope.vertices[None, :, :] - mean[:, None, :]) @ Linv.T if polytope.vertices.size
          else np.zeros((mean.shape[0], 0, S)))
    Yr = polytope.rays @ Linv.T if polytope.rays.size else np.zeros((0, S))
    if Yr.size:
        Yr = Yr / np.linalg.norm(Yr, axis=1)[:, None]
    if polytope.lineality.size:
        W = Linv @ polytope.lineality.T
        Q, _ = np.linalg.qr(np.column_stack([W, np.eye(S)]))
        k = np.linalg.matrix_rank(W)
        Wq, Qc = Q[:, :k], Q[:, k:S]
    else:
        Wq, Qc = np.zeros((S, 0)), np.eye(S)
    return L, Nrm, D, Yv, Yr, Wq, Qc


def _interval_solve(Nrm1, D):
    n = Nrm1[:, 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        b = D / n
    hi = np.min(np.where(n > 0.5, b, np.inf), axis=1)
    lo = np.max(np.where(n < -0.5, b, -np.inf), axis=1)
    lz, m, v = standard_interval_moments(lo, hi)
    lz = np.where(lo < hi, lz, -np.inf)
    return lz, m[:, None], v[:, None, None], None


class Pointed(NamedTuple):
    """A region in whitened, pointed coordinates of dimension S' (lineality integrated out): ``{Nrm y <= D}``,
    vertices ``Yv`` (M, V, S') relative to each mean, unit rays ``Yr``."""

    Nrm: np.ndarray
    D: np.ndarray
    Yv: np.ndarray
    Yr: np.ndarray


def _solve_interval(pb: Pointed, req: PairRequest, cones: bool):
    """S' = 1: closed form (``interval``)."""
    return _interval_solve(pb.Nrm, pb.D)


def _solve_planar(pb: Pointed, req: PairRequest, cones: bool):
    """S' = 2: Owen-T edge formula with slice-quadrature fallback (``planar``), or the slices themselves."""
    if req.method != "slices":
        return planar_moments(pb.Nrm, pb.D, req.moments, relative=req.relative)
    lm, rel = planar_slice_log_mass(pb.Nrm, pb.D)
    if req.moments < 1:
        return lm, None, None, rel
    mean, cov = facet_moments(pb.Nrm, pb.D, lm, lambda i, Nf, Df: _edge_solver(Nf, Df), req.moments)
    if req.moments >= 2:
        # E[yy^T] - m m^T cancels: total variance (decided on the rule's error, not the slices' conditioning)
        redo = cancels(mean, cov, lm, np.full_like(rel, SLICE_RULE_REL), relative=req.relative)
        if np.any(redo):
            _, mean[redo], cov[redo] = planar_slice_moments(pb.Nrm, pb.D[redo])
    return lm, mean, cov, rel


def _solve_solid(pb: Pointed, req: PairRequest, cones: bool):
    """S' = 3: the batched cone decomposition, or (``cones`` False: its own fallback) nested quadrature of exact
    planar slice masses with divergence-theorem moments; ``rqmc`` on request."""
    if req.method == "auto" and cones and pb.Yv.shape[1]:
        return _solid_cones(pb, req)
    if req.method == "rqmc":
        return solve_high_dimensional(pb, req, cones)
    lm, rel = solid_log_mass(pb.Nrm, pb.D, pb.Yv, pb.Yr)
    if req.moments < 1:
        return lm, None, None, rel
    mean, cov = facet_moments(pb.Nrm, pb.D, lm, lambda i, Nf, Df: planar_moments(Nf, Df, 1)[:2], req.moments)
    return lm, mean, cov, rel


def solve_high_dimensional(pb: Pointed, req: PairRequest, cones: bool):
    """S' >= 4 (and ``method="rqmc"``): the dispatch entry point for the S >= 4 integrators (``SOLVERS`` sends every
    S' it has no entry for here). S' = 4 with ``method="auto"``: one level of outer Gauss-Kronrod quadrature over
    exact S = 3 slices (``highdim.sliced``), RQMC for rows its bar does not resolve; otherwise randomised QMC with
    exact planar inner integrals and an error bar (``highdim.qmc``). Returns ``(log_mass (M,), mean (M, S'),
    cov (M, S', S'), rel_err or error bar (M,))``."""
    if pb.Nrm.shape[1] == 4 and req.method == "auto" and pb.Yv.shape[1]:
        lm, my, cy, rel, _ = with_fallback(pb.Nrm, pb.D, pb.Yv, pb.Yr, moments=req.moments, tol=None,
                                           accuracy=req.accuracy, closest=None, rng=req.rng)
        return lm, (my if req.moments >= 1 else None), (cy if req.moments >= 2 else None), rel
    if pb.Nrm.shape[1] == 5 and req.method == "auto" and pb.Yv.shape[1] and cones5.USE_CONES5:
        return _cones5_first(pb, req)
    return rqmc_moments(pb.Nrm, pb.D, moments=req.moments, rng=req.rng, relative=req.relative)


def _cones5_first(pb: Pointed, req: PairRequest):
    """S' = 5: the rows by ``highdim.cones5`` (one 1-D integral per flag, the region's flags shared by its rows;
    moments by the divergence theorem) where it certifies a bar <= 1e-6, RQMC for the rows it flags."""
    lm, mean, cov, rel = cones5.region5_moments(pb.Nrm, pb.D, pb.Yv, pb.Yr, moments=req.moments, tol=1e-6,
                                                rng=req.rng, relative=req.relative)[:4]
    return lm, (mean if req.moments >= 1 else None), (cov if req.moments >= 2 else None), rel


SOLVERS = {1: _solve_interval, 2: _solve_planar, 3: _solve_solid}  # by pointed dimension S'


def _solve(pb: Pointed, req: PairRequest, cones: bool = True):
    """Problem in whitened, pointed coordinates: by dimension (``SOLVERS``), the paper's triangulation (eq. 9,
    Lemma 4) on request. ``cones``: S' = 3 goes through the cone decomposition (``_solid_cones``); False for
    the nested quadrature, the cone path's own fallback."""
    S = pb.Nrm.shape[1]
    if S == 1:
        return _solve_interval(pb, req, cones)
    if req.method == "triangulation":
        return triangulation_moments(pb.Yv, pb.Yr, req.moments, with_error=True)
    return SOLVERS.get(S, solve_high_dimensional)(pb, req, cones)


def _solid_cones(pb: Pointed, req: PairRequest):
    """S' = 3 in whitened coordinates (a region of S = 3 that the batch geometry left out, or of S >= 4 reduced
    by its lineality): the batched cone decomposition on ``{Nrm y' <= D_0}``, ``y' = y + delta_m ~ N(delta_m, I)``
    with ``delta_m = Yv[0, 0] - Yv[m, 0]`` (the means differ by translations, so ``D_m = D_0 - Nrm delta_m``).
    The nested quadrature ``solid_log_mass`` is what the batch falls back to, no longer the first choice: it
    was off by 1.7e-6 (claiming 1.5e-13) on a region of an S = 4 network with one-dimensional lineality."""
    delta = pb.Yv[0, 0][None, :] - pb.Yv[:, 0]
    region = Polytope(pb.Nrm, pb.D[0], pb.Yv[0], pb.Yr, np.zeros((0, 3)))
    sub = PairRequest.build([region], delta[None], np.eye(3)[None], moments=req.moments, method="auto", rng=req.rng,
                            accuracy=req.accuracy)
    out = integrate_pairs(sub, cones=False)
    lm = out.log_mass[0]
    mean = None if out.mean is None else out.mean[0] - delta
    cov = None if out.cov is None else out.cov[0]
    rel = None if out.log_mass_error is None else -np.expm1(-out.log_mass_error[0])
    return lm, mean, cov, rel


def _edge_solver(Nf, Df):
    lz, m, _, _ = _interval_solve(Nf[:, :1] if Nf.shape[1] == 1 else Nf, Df)
    return lz, m


def _check(mean, cov, method):
    if method not in METHODS:
        raise DGNInputError("method", f"unknown integration method {method!r}",
                            f"use one of {', '.join(METHODS)}")
    mean = np.atleast_2d(np.asarray(mean, dtype=np.float64))
    cov = np.asarray(cov, dtype=np.float64)
    S = mean.shape[1]
    if cov.shape != (S, S):
        raise DGNInputError("cov", f"shape {cov.shape} does not match latent dimension {S}",
                            "pass an (S, S) matrix")
    return mean, cov


def polytope_moments(polytope: Polytope, mean, cov, *, moments: int = 2, method: str = "auto",
                     rng=None) -> TruncatedMoments:
    """Mass (log), conditional mean and covariance of ``N(mean_n, cov)`` on ``polytope`` for each row n.

    ``log_mass_error`` is an absolute error bound on ``log_mass``: a rounding-level bound for the
    deterministic paths (from the measured cancellation of the planar edge sums), 4.53 standard errors
    for ``rqmc`` (Student-t over its replicates), the signed sums' rounding and term errors for ``triangulation``
    (infinite where they cancel). S = 2, 3 and 4 with ``method="auto"`` go through :func:`integrate_pairs` (one
    region), so single and batched results are identical.
    """
    mean, cov = _check(mean, cov, method)
    if mean.shape[1] in (2, 3, 4) and method == "auto":
        return polytope_moments_batch([polytope], mean[None], cov[None], moments=moments, method=method,
                                      rng=rng)[0]
    return _polytope_moments_single(polytope, mean, cov, moments=moments, method=method, rng=rng)


def _region_method(S_pointed: int, req: PairRequest, cones: bool) -> str:
    if req.method in ("triangulation", "rqmc", "slices"):
        return req.method
    names = {1: "interval", 2: "planar-owen" if req.method == "auto" else req.method,
             3: "solid-cones" if req.method == "auto" and cones else "solid-quadrature",
             4: "sliced" if req.method == "auto" else "rqmc"}
    return names.get(S_pointed, "rqmc")


def _unwhiten(mean, m_r, c_r, L, Wq, Qc, moments):
    """Conditional moments back in z: ``y = Qc y' + Wq w`` (w: the lineality, standard normal), ``z = mu + L y``."""
    mz = cz = None
    if moments >= 1 and m_r is not None:
        mz = mean + (m_r @ Qc.T) @ L.T
        if moments >= 2 and c_r is not None:
            cy = np.einsum("ij,mjk,lk->mil", Qc, c_r, Qc) + (Wq @ Wq.T)[None]
            cz = np.einsum("ij,mjk,lk->mil", L, cy, L)
    return mz, cz


def _polytope_moments_single(polytope: Polytope, mean, cov, *, moments: int = 2, method: str = "auto",
                             rng=None, cones: bool = True, accuracy: str = "relative",
                             chol: np.ndarray | None = None) -> TruncatedMoments:
    """The per-region path (whitening, lineality, every method); the batch's fallback. ``chol``: see
    :func:`_whiten`."""
    N, S = mean.shape
    if polytope.H.shape[0] == 0:
        full = np.broadcast_to(cov, (N, S, S)).copy()
        return TruncatedMoments(np.zeros(N), mean.copy(), full, "whole-space", np.zeros(N))
    req = PairRequest(None, None, None, moments=moments, method=method, rng=rng, accuracy=accuracy)
    L, Nrm, D, Yv, Yr, Wq, Qc = _whiten(polytope, mean, cov, chol)
    Yrr = Yr @ Qc if Yr.size else np.zeros((0, Qc.shape[1]))
    if Yrr.size:
        keep = np.linalg.norm(Yrr, axis=1) > 1e-12
        Yrr = Yrr[keep] / np.linalg.norm(Yrr[keep], axis=1)[:, None]
    with np.errstate(invalid="ignore"):
        lm, m_r, c_r, err = _solve(Pointed(Nrm @ Qc, D, Yv @ Qc, Yrr), req, cones)
    unresolved = np.isnan(lm)
    if unresolved.any():
        # Signed inclusion-exclusion sums (triangulation) that cancel to <= 0 carry no information: the
        # mass is reported as unknown (-inf with an infinite error bar), never as NaN.
        lm = np.where(unresolved, -np.inf, lm)
        err = np.where(unresolved, np.inf, 0.0 if err is None else err)
    if m_r is not None:
        m_r = np.where(np.isfinite(lm)[:, None], m_r, 0.0)
    if c_r is not None:
        c_r = np.where(np.isfinite(lm)[:, None, None], c_r, 0.0)
    mz, cz = _unwhiten(mean, m_r, c_r, L, Wq, Qc, moments)
    log_err = None
    if err is not None:
        with np.errstate(invalid="ignore", divide="ignore"):  # err >= 1: no lower bound on the mass
            log_err = np.where(err < 1.0, -np.log1p(-np.minimum(err, 1.0)), np.inf)
    return TruncatedMoments(lm, mz, cz, _region_method(Qc.shape[1], req, cones), log_err)


BOUND_ONLY_REL = 1e-6  # lower_bound_only: the batch's estimates are kept up to this relative error bound
_CHUNK_PAIRS = 16384  # pairs per vectorised block (bounds the (pairs, edges, 40 nodes) arrays)
_CHUNK_PAIRS_S3 = 8192  # S = 3: (pairs, facets, incident edges) arrays


MOMENT_BOUND_DIMS = (3, 4, 5)  # S whose batch routes carry moment bounds (``PairResult.moment_error``)


def _z_moment_bounds(req: PairRequest, chol, r, rows, my, cy, eb):
    """(P, 2) bounds on the errors of ``z = mu + L y`` and ``L C_y L^T`` (max-norm over entries) from the whitened
    bounds ``eb`` (P, 2) of ``my`` (P, S) and ``cy`` (P, S, S): ``|L dy|_inf <= |L|_inf |dy|_inf`` and
    ``|L dC L^T|_max <= |L|_inf^2 |dC|_max`` (``|L|_inf`` the largest absolute row sum), plus the rounding of the
    two products (``(S + 2) eps`` of ``|mu| + |L||y|`` and ``2 (S + 1) eps`` of ``|L||C_y||L^T|``, doubled)."""
    S = req.means.shape[2]
    eps = np.finfo(float).eps
    norm = np.abs(chol).sum(axis=-1).max(axis=-1)  # scalar, or (P,) with a factor per pair
    mu = np.abs(req.means[r, rows]).max(axis=1)
    with np.errstate(invalid="ignore", over="ignore"):
        ym = np.abs(my).max(axis=1)
        em = norm * eb[:, 0] + 2.0 * (S + 2) * eps * (mu + norm * ym)
        if cy is None:
            return np.column_stack([em, np.zeros_like(em)])
        yc = np.abs(cy).max(axis=(1, 2))
        ec = norm * norm * (eb[:, 1] + 4.0 * (S + 1) * eps * yc)
    return np.column_stack([em, ec])


def _store_bounds(res: PairResult, req: PairRequest, chol, r, rows, my, cy, eb):
    """Route bounds ``eb`` (P, 2) on the whitened moments into ``res.moment_error`` (original coordinates; ``inf``
    where ``eb`` is None, or where a pair's mass is 0 nothing to bound)."""
    if res.moment_error is None or req.moments < 1:
        return
    if eb is None or my is None:
        res.moment_error[r, rows] = np.inf
        return
    res.moment_error[r, rows] = _z_moment_bounds(req, chol, r, rows, my, cy, np.asarray(eb, dtype=np.float64))


SQRT3 = float(np.sqrt(3.0))


def solid_contract(my, cy, rel, loosen):
    """(P, 2) whitened bounds of the S' = 3 routes' moments by their stated contract (``solid.kernel.MOMENT_TOL``
    times ``loosen`` of the spread, ``sqrt(tr C) <= sqrt 3`` and ``tr C <= 3`` whitened: a Gaussian restricted to a
    convex set has ``C <= I``, Brascamp-Lieb), plus the mass's relative bar ``rel`` (``r = rel / (1 - rel)``) moving
    the mass by at most ``2 r`` times ``|m| + sqrt 3`` (its square for the second moment), and ``cov = E[yy^T] - m
    m^T``: ``e_cov <= e_second + (2 |m| + e_mean) e_mean`` (as ``highdim.cones.moment_bounds``). Validated against
    mpmath (tests/test_posterior_moment_bar.py), not proved: the kernel's own facet bounds enter its acceptance test
    (``tot <= MOMENT_TOL loosen``), not its output."""
    from .solid.kernel import MOMENT_TOL

    eps = np.finfo(float).eps
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        r = np.where(rel < 0.5, rel / (1.0 - np.minimum(rel, 0.5)), np.inf)
        mn = np.abs(my).max(axis=1)
        tol = MOMENT_TOL * loosen
        em = SQRT3 * tol + 2.0 * r * (mn + SQRT3) + 8.0 * eps * mn
        ec = 3.0 * tol + 2.0 * r * (mn + SQRT3) ** 2 + (2.0 * mn + em) * em
        if cy is not None:
            ec = ec + 16.0 * eps * (np.abs(cy).max(axis=(1, 2)) + mn * mn)
    return np.column_stack([em, ec])


def _store_whitened(res: PairResult, req: PairRequest, chol, r, rows, lm, my, cy, rel, **kw):
    """Whitened results of region r (scalar) or regions r (array, ``chol`` per pair) into ``res``; ``eb`` (P, 2) in
    ``kw``: the route's bounds on the whitened moments (:func:`_store_bounds`; None or absent: none)."""
    res.log_mass[r, rows] = lm
    res._errors[r, rows] = log_error(rel)
    if req.moments < 1:
        return
    _store_bounds(res, req, chol, r, rows, my, cy if req.moments >= 2 else None, kw.get("eb"))
    fin = np.isfinite(lm)
    if chol.ndim == 3:
        mz = req.means[r, rows] + np.matmul(chol, my[:, :, None])[..., 0]
    else:
        mz = req.means[r, rows] + my @ chol.T
    res.mean[r, rows] = np.where(fin[:, None], mz, 0.0)
    if req.moments >= 2:
        cz = np.matmul(np.matmul(chol, cy), np.swapaxes(chol, -1, -2))
        res.cov[r, rows] = np.where(fin[:, None, None], cz, 0.0)


def _solid_kernel_pass(req: PairRequest, geo, res: PairResult, pr_all, pn_all):
    """The compiled cone decomposition over all pairs (``solid.batch_solid_moments``), in blocks; stores what
    it resolved and returns ``(flagged, refine, loosen)`` per pair."""
    lws_all = req.weight_scale(pr_all, pn_all)
    flagged_all = np.zeros(pr_all.size, dtype=bool)
    refine_all = np.zeros(pr_all.size, dtype=bool)
    loosen_all = np.ones(pr_all.size)
    for s0 in range(0, pr_all.size, _CHUNK_PAIRS_S3):
        sl = slice(s0, s0 + _CHUNK_PAIRS_S3)
        pr, pn = pr_all[sl], pn_all[sl]
        out = batch_solid_moments(geo, pr, req.means[pr, pn], req.moments, None if lws_all is None else lws_all[sl],
                                  cov_relative=req.relative)
        flagged_all[sl] = out.flagged
        refine_all[sl] = out.refine & ~out.flagged
        if lws_all is not None:
            loosen_all[sl] = loosen_factors(lws_all[sl] + out.log_mass)
        ok = ~out.flagged
        my, cy = None if out.mean is None else out.mean[ok], None if out.cov is None else out.cov[ok]
        eb = None if my is None else solid_contract(my, cy, out.rel[ok], loosen_all[sl][ok])
        _store_whitened(res, req, geo.chol[pr[ok]], pr[ok], pn[ok], out.log_mass[ok], my, cy, out.rel[ok], eb=eb)
    return flagged_all, refine_all, loosen_all


def _solid_batch(req: PairRequest, geo, res: PairResult):
    """S = 3, ``method="auto"``: all (region, point) pairs of the regular regions through the compiled cone
    decomposition. Its flagged pairs (cancellation beyond the error budget, a boundary, degenerate geometry) are
    small regions as a rule: they take the compiled adaptive cubature (``solid.cubature.pair_cubature``), and what
    that cannot resolve (unbounded regions) the per-region nested quadrature ``_polytope_moments_single``. Pairs
    whose covariance may cancel beyond ``COV_TOL`` (relative to its smallest eigenvalue, or to Sigma_omega under
    ``accuracy="absolute"``) take the cubature where it resolves them and keep their values otherwise. Returns the
    regions left to the per-region path."""
    pr_all, pn_all = np.nonzero(req.need & geo.ok[:, None])
    flagged_all, refine_all, loosen_all = _solid_kernel_pass(req, geo, res, pr_all, pn_all)
    again = np.nonzero(flagged_all | refine_all)[0]
    pr_f, pn_f = pr_all[again], pn_all[again]
    lc, mc, cc, rc, good = pair_cubature(geo, pr_f, req.means[pr_f, pn_f], loosen_all[again], req.moments,
                                         req.polytopes)
    if np.any(good):
        eb = None if req.moments < 1 else solid_contract(mc[good], cc[good] if req.moments >= 2 else None,
                                                          rc[good], loosen_all[again][good])
        _store_whitened(res, req, geo.chol[pr_f[good]], pr_f[good], pn_f[good], lc[good], mc[good], cc[good],
                        rc[good], eb=eb)
    left = ~good & flagged_all[again]
    for r in np.unique(pr_f[left]):
        rows = pn_f[left & (pr_f == r)]
        tm = _polytope_moments_single(req.polytopes[r], req.means[r, rows], req.covs[r], moments=req.moments,
                                      method="auto", rng=req.rng, cones=False, accuracy=req.accuracy,
                                      chol=geo.chol[r])
        res.store(r, rows, tm)
        res._errors[r, rows] = np.inf if tm.log_mass_error is None else tm.log_mass_error
    res.has_error[geo.ok] = True
    for r in np.nonzero(geo.ok)[0]:
        res.methods[r] = "solid-cones"
    return ~geo.ok


def _planar_bound_only(out, flagged):
    """``lower_bound_only``: the kernel's own estimate where its bound is rigorous (finite, within
    ``BOUND_ONLY_REL``, origin off every edge line); other flagged pairs are reported as mass 0 (a valid lower
    bound)."""
    lm, rel = out.log_mass, out.rel
    good = np.isfinite(lm) & (rel <= BOUND_ONLY_REL) & ~np.any(out.D == 0.0, axis=1)
    return np.where(flagged & ~good, -np.inf, lm), np.where(flagged & ~good, 0.0, rel)


def _planar_flagged(req: PairRequest, geo, out, pr, flagged):
    """Pairs the S = 2 kernel flagged: the exact numpy path (``planar.planar_moments``), in place; one call per
    facet count with each pair's own normals (a Python pass per region cost ~10 ms of numpy overhead a region)."""
    lm, rel, my, cy = out.log_mass, out.rel, out.mean, out.cov
    idx = np.nonzero(flagged)[0]
    counts = geo.valid[pr[idx]].sum(axis=1)  # the facet count of each (regular) region
    for f in np.unique(counts):
        sel = idx[counts == f]
        with np.errstate(invalid="ignore"):
            l2, m2, c2, r2 = planar_moments(geo.Nrm[pr[sel], :f], out.D[sel, :f], req.moments, relative=req.relative)
        lm[sel], rel[sel] = l2, r2
        if req.moments >= 1:
            my[sel] = np.where(np.isfinite(l2)[:, None], m2, 0.0)
        if req.moments >= 2:
            cy[sel] = np.where(np.isfinite(l2)[:, None, None], c2, 0.0)


def _planar_block(req: PairRequest, geo, res: PairResult, pr, pn):
    """One block of S = 2 pairs: the compiled kernel, its flagged pairs by the exact path, stored in ``res``."""
    mu = gather_pairs(req.means, pr, pn)  # req.means[pr, pn] and req.weight_scale(pr, pn), compiled
    scale = None if req.log_weight_scale is None else gather_pairs(req.log_weight_scale, pr, pn)
    with np.errstate(invalid="ignore"):
        out, settled = batch_planar_pairs(geo, pr, mu, req.moments, scale, cov_relative=req.relative)
    flagged = out.flagged
    if req.lower_bound_only and np.any(flagged):
        lm, rel = _planar_bound_only(out, flagged)
        out = out._replace(log_mass=lm, rel=rel)
        flagged = np.zeros_like(flagged)
    if np.any(flagged):
        _planar_flagged(req, geo, out, pr, flagged)
    store_planar_pairs(res, geo, pr, pn, mu, out, settled, req.moments)


def _planar_batch(req: PairRequest, geo, res: PairResult):
    """S = 2, ``method="auto"``: every (region, point) pair of the regular regions through the compiled Owen-T
    kernel (``planar.batch``) in blocks of ``_CHUNK_PAIRS``. Returns the regions left to the per-region path."""
    pr_all, pn_all = np.nonzero(req.need & geo.ok[:, None])
    for s0 in range(0, pr_all.size, _CHUNK_PAIRS):
        _planar_block(req, geo, res, pr_all[s0:s0 + _CHUNK_PAIRS], pn_all[s0:s0 + _CHUNK_PAIRS])
    res.has_error[geo.ok] = True
    for r in np.nonzero(geo.ok)[0]:
        res.methods[r] = "planar-owen"
    return ~geo.ok


def _sliced_batch(req: PairRequest, geo, res: PairResult):
    """S = 4, ``method="auto"``: outer quadrature over exact S = 3 slices (``highdim.sliced.sliced_batch``)."""
    return sliced_batch(req, geo, res, _store_whitened)


def _cones5_batch(req: PairRequest, geo, res: PairResult):
    """S = 5, ``method="auto"``: one 1-D integral per flag (``highdim.cones5.cones5_batch``), RQMC for the rest."""
    return cones5.cones5_batch(req, geo, res, _store_whitened)


BATCH_INTEGRATORS = {2: _planar_batch, 3: _solid_batch, 4: _sliced_batch, 5: _cones5_batch}  # S -> batched integrator
GEOMETRIES = {2: RegionGeometry, 3: SolidGeometry, 4: SlicedGeometry, 5: cones5.Cones5Geometry}  # S -> its geometry


def batch_geometry(polytopes, covs, chol=None):
    """The per-region geometry of the batched paths (``method="auto"``): ``planar.batch.RegionGeometry`` for
    S = 2, ``solid.SolidGeometry`` for S = 3, None otherwise. It depends on the regions and Sigma_omega only,
    so a caller integrating the same regions for several sets of means builds it once and passes it to
    :func:`integrate_pairs`. ``chol`` (R, S, S): accurate lower-triangular factors of ``covs``."""
    S = np.shape(covs)[-1]
    if not len(polytopes) or S not in GEOMETRIES:
        return None
    return GEOMETRIES[S](polytopes, covs, chol)


def _per_region(req: PairRequest, res: PairResult, todo, cones: bool, chol=None) -> None:
    """The regions no batch took: the per-region path (whitening, lineality, every method); ``chol`` (R, S, S):
    the batch geometry's accurate factors of ``req.covs``, where it has them."""
    for r in np.nonzero(todo)[0]:
        rows = np.nonzero(req.need[r])[0]
        if rows.size == 0:
            continue
        mean_r, cov_r = _check(req.means[r, rows], req.covs[r], req.method)
        tm = _polytope_moments_single(req.polytopes[r], mean_r, cov_r, moments=req.moments, method=req.method,
                                      rng=req.rng, cones=cones, accuracy=req.accuracy,
                                      chol=None if chol is None else chol[r])
        res.methods[r] = tm.method
        res.store(r, rows, tm)
        if tm.log_mass_error is not None:
            res.has_error[r] = True
            res._errors[r, rows] = tm.log_mass_error


def integrate_pairs(req: PairRequest, *, cones: bool = True) -> PairResult:
    """Every needed (region, point) pair of ``req``: the batch integrator of its dimension (``BATCH_INTEGRATORS``,
    ``method="auto"``), then the per-region path for the regions it leaves (lineality, degenerate rows, other
    methods). ``cones`` False: S' = 3 regions take the nested quadrature (the cone path's own fallback)."""
    R, N, S = req.shape
    _check(np.zeros((1, S)), req.covs[0] if R else np.eye(S), req.method)
    res = PairResult.empty(R, N, S, req.moments)
    if S in MOMENT_BOUND_DIMS and req.moments >= 1 and req.method == "auto":
        res.moment_error = np.full((R, N, 2), np.inf)  # the batch routes fill what they bound
    todo = np.ones(R, dtype=bool)
    batch = BATCH_INTEGRATORS.get(S) if req.method == "auto" and R else None
    chol = None
    if batch is not None:
        geo = req.geometry if req.geometry is not None else batch_geometry(req.polytopes, req.covs)
        if geo.chol is None:
            raise DGNInputError("cov", "covariance is not symmetric positive definite",
                                "pass a positive definite covariance")
        todo = batch(req, geo, res)
        chol = geo.chol
    _per_region(req, res, todo, cones, chol)
    default = req.method if req.method != "auto" else ("planar-owen" if S == 2 else "solid-quadrature" if S == 3
                                                       else "sliced" if S == 4 else "rqmc")
    return res.finish(default)


def polytope_moments_batch(polytopes, means, covs, **kwargs) -> list[TruncatedMoments]:
    """:func:`polytope_moments_arrays` as a list of R :class:`TruncatedMoments`, one per region."""
    out = polytope_moments_arrays(polytopes, means, covs, **kwargs)
    return [out.region(r) for r in range(len(polytopes))]


def polytope_moments_arrays(polytopes, means, covs, **kwargs) -> PairResult:
    """Batched entry point: ``means`` (R, N, S), ``covs`` (R, S, S) -> :class:`PairResult` (region-major).

    The keywords are the fields of :class:`PairRequest` (``moments``, ``method``, ``rng``, ``need``,
    ``log_weight_scale``, ``geometry``, ``lower_bound_only``, ``accuracy``): pairs with ``need[r, n]`` False
    come back as ``log_mass = -inf``, zero moments, error 0; S = 2 and S = 3 with ``method="auto"`` are
    vectorised over all pairs; other cases loop over regions (vectorised over points).
    """
    return integrate_pairs(PairRequest.build(polytopes, means, covs, **kwargs))


def _cones6_batch(req: PairRequest, geo, res: PairResult):
    """S = 6, ``method="auto"``: the ridge integrals (``highdim.cones6``) where certified, RQMC for the rest."""
    return cones6.cones6_batch(req, geo, res, _store_whitened)


BATCH_INTEGRATORS[6] = _cones6_batch  # issue 14, S = 6 (kept apart from the S <= 5 entries above)
GEOMETRIES[6] = cones6.Cones6Geometry


__all__ = ["PairRequest", "PairResult", "integrate_pairs", "polytope_moments", "polytope_moments_arrays",
           "polytope_moments_batch", "planar_log_mass"]
