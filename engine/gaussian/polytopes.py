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
from . import TruncatedMoments
from .facets import facet_moments
from .interval import standard_interval_moments
from .planar import cancels, planar_log_mass, planar_moments, planar_slice_log_mass, planar_slice_moments
from .planar_batch import RegionGeometry, batch_planar_moments
from .qmc import rqmc_moments
from .solid import SolidGeometry, batch_solid_moments, cubature_moments, loosen_factors, solid_log_mass
from .triangulation import triangulation_moments

METHODS = ("auto", "triangulation", "slices", "rqmc")


def _whiten(polytope: Polytope, mean: np.ndarray, cov: np.ndarray):
    S = mean.shape[1]
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


def _interval_solve(Nrm1, D, moments):
    n = Nrm1[:, 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        b = D / n
    hi = np.min(np.where(n > 0.5, b, np.inf), axis=1)
    lo = np.max(np.where(n < -0.5, b, -np.inf), axis=1)
    lz, m, v = standard_interval_moments(lo, hi)
    lz = np.where(lo < hi, lz, -np.inf)
    return lz, m[:, None], v[:, None, None], None




def _solve(Nrm, D, Yv, Yr, moments, method, rng, cones=True):
    """Problem in whitened, pointed coordinates of dimension S'. ``cones``: S' = 3 goes through the cone
    decomposition (``_solid_cones``); False for the nested quadrature, the cone path's own fallback."""
    S = Nrm.shape[1]
    if S == 1:
        return _interval_solve(Nrm, D, moments)
    if method == "triangulation":
        return triangulation_moments(Yv, Yr, moments, with_error=True)
    if S == 2:
        if method == "slices":
            lm, rel = planar_slice_log_mass(Nrm, D)
            if moments < 1:
                return lm, None, None, rel
            mean, cov = facet_moments(Nrm, D, lm, lambda i, Nf, Df: _edge_solver(Nf, Df), moments)
            if moments >= 2:
                redo = cancels(mean, cov, lm, rel)  # E[yy^T] - m m^T cancels: law of total variance instead
                if np.any(redo):
                    _, mean[redo], cov[redo] = planar_slice_moments(Nrm, D[redo])
            return lm, mean, cov, rel
        lm, mean, cov, rel = planar_moments(Nrm, D, moments)
        return lm, mean, cov, rel
    if S == 3 and method == "auto" and cones and Yv.shape[1]:
        return _solid_cones(Nrm, D, Yv, Yr, moments, rng)
    if S == 3 and method != "rqmc":
        lm, rel = solid_log_mass(Nrm, D, Yv, Yr)
        if moments < 1:
            return lm, None, None, rel
        mean, cov = facet_moments(Nrm, D, lm, lambda i, Nf, Df: planar_moments(Nf, Df, 1)[:2], moments)
        return lm, mean, cov, rel
    lm, mean, cov, err = rqmc_moments(Nrm, D, Yv, moments=moments, rng=rng)
    return lm, mean, cov, err


def _solid_cones(Nrm, D, Yv, Yr, moments, rng):
    """S' = 3 in whitened coordinates (a region of S = 3 that the batch geometry left out, or of S >= 4 reduced
    by its lineality): the batched cone decomposition on ``{Nrm y' <= D_0}``, ``y' = y + delta_m ~ N(delta_m, I)``
    with ``delta_m = Yv[0, 0] - Yv[m, 0]`` (the means differ by translations, so ``D_m = D_0 - Nrm delta_m``).
    The nested quadrature ``solid_log_mass`` is what the batch falls back to, no longer the first choice: it
    was off by 1.7e-6 (claiming 1.5e-13) on a region of an S = 4 network with one-dimensional lineality."""
    delta = Yv[0, 0][None, :] - Yv[:, 0]
    region = Polytope(Nrm, D[0], Yv[0], Yr, np.zeros((0, 3)))
    out = polytope_moments_arrays([region], delta[None], np.eye(3)[None], moments=moments, method="auto", rng=rng,
                                  _cones=False)
    lm = out.log_mass[0]
    mean = None if out.mean is None else out.mean[0] - delta
    cov = None if out.cov is None else out.cov[0]
    rel = None if out.log_mass_error is None else -np.expm1(-out.log_mass_error[0])
    return lm, mean, cov, rel


def _edge_solver(Nf, Df):
    lz, m, _, _ = _interval_solve(Nf[:, :1] if Nf.shape[1] == 1 else Nf, Df, 1)
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
    deterministic paths (from the measured cancellation of the planar edge sums), 3 standard errors
    for ``rqmc``, the signed sums' rounding and term errors for ``triangulation`` (infinite where they
    cancel). S = 2 with ``method="auto"`` goes
    through :func:`polytope_moments_batch` (one region), so single and batched results are identical;
    so does S = 3 (``solid.batch_solid_moments``).
    """
    mean, cov = _check(mean, cov, method)
    if mean.shape[1] in (2, 3) and method == "auto":
        return polytope_moments_batch([polytope], mean[None], cov[None], moments=moments, method=method,
                                      rng=rng)[0]
    return _polytope_moments_single(polytope, mean, cov, moments=moments, method=method, rng=rng)


def _polytope_moments_single(polytope: Polytope, mean, cov, *, moments: int = 2, method: str = "auto",
                             rng=None, cones: bool = True) -> TruncatedMoments:
    """The per-region path (whitening, lineality, every method); the batch's fallback."""
    N, S = mean.shape
    if polytope.H.shape[0] == 0:
        full = np.broadcast_to(cov, (N, S, S)).copy()
        return TruncatedMoments(np.zeros(N), mean.copy(), full, "whole-space", np.zeros(N))
    L, Nrm, D, Yv, Yr, Wq, Qc = _whiten(polytope, mean, cov)
    Sp = Qc.shape[1]
    Nr = Nrm @ Qc
    Yvr = Yv @ Qc
    Yrr = Yr @ Qc if Yr.size else np.zeros((0, Sp))
    if Yrr.size:
        keep = np.linalg.norm(Yrr, axis=1) > 1e-12
        Yrr = Yrr[keep] / np.linalg.norm(Yrr[keep], axis=1)[:, None]
    with np.errstate(invalid="ignore"):
        lm, m_r, c_r, err = _solve(Nr, D, Yvr, Yrr, moments, method, rng, cones)
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
    names = {1: "interval", 2: "planar-owen" if method == "auto" else method,
             3: "solid-cones" if method == "auto" and cones else "solid-quadrature"}
    name = method if method in ("triangulation", "rqmc", "slices") else names.get(Sp, "rqmc")
    mz = cz = None
    if moments >= 1 and m_r is not None:
        my = m_r @ Qc.T
        mz = mean + my @ L.T
        if moments >= 2 and c_r is not None:
            cy = np.einsum("ij,mjk,lk->mil", Qc, c_r, Qc) + (Wq @ Wq.T)[None]
            cz = np.einsum("ij,mjk,lk->mil", L, cy, L)
    log_err = None
    if err is not None:
        with np.errstate(invalid="ignore", divide="ignore"):  # err >= 1: no lower bound on the mass
            log_err = np.where(err < 1.0, -np.log1p(-np.minimum(err, 1.0)), np.inf)
    return TruncatedMoments(lm, mz, cz, name, log_err)


def _congruence_2x2(L, C):
    """``L C L^T`` for stacks of lower-triangular L and symmetric C (2 x 2), written out."""
    l00, l10, l11 = L[:, 0, 0], L[:, 1, 0], L[:, 1, 1]
    c00, c01, c11 = C[:, 0, 0], C[:, 0, 1], C[:, 1, 1]
    out = np.empty_like(C)
    out[:, 0, 0] = l00 * l00 * c00
    out[:, 0, 1] = out[:, 1, 0] = l00 * (l10 * c00 + l11 * c01)
    out[:, 1, 1] = l10 * l10 * c00 + 2.0 * l10 * l11 * c01 + l11 * l11 * c11
    return out


def _log_err(rel):
    with np.errstate(invalid="ignore"):
        return np.where(rel < 0.5, -np.log1p(-np.minimum(rel, 0.49)), np.inf)


BOUND_ONLY_REL = 1e-6  # lower_bound_only: the batch's estimates are kept up to this relative error bound
_CHUNK_PAIRS = 16384  # pairs per vectorised block (bounds the (pairs, edges, 40 nodes) arrays)
_CHUNK_PAIRS_S3 = 8192  # S = 3: (pairs, facets, incident edges) arrays


def _solid_batch(polytopes, means, covs, need, moments, log_mass, mean_out, cov_out, err_out, has_err, names, rng,
                 log_weight_scale, geo):
    """S = 3, ``method="auto"``: all (region, point) pairs of the regular regions through
    ``solid.batch_solid_moments`` (cone decomposition). Its flagged pairs (cancellation beyond the error budget,
    a boundary, degenerate geometry) are small regions as a rule: they take ``solid.cubature_moments``, and what
    that cannot resolve the per-region nested quadrature ``_polytope_moments_single``. Pairs whose covariance
    may cancel beyond ``solid.COV_TOL`` (relative to its smallest eigenvalue, or to Sigma_omega under
    ``planar.covariance_accuracy("absolute")``) take the cubature where it applies and keep their values otherwise.
    Returns the regions left to the per-region path (no facets, lineality, degenerate rows)."""
    if geo.chol is None:
        raise DGNInputError("cov", "covariance is not symmetric positive definite",
                            "pass a positive definite covariance")
    pr_all, pn_all = np.nonzero(need & geo.ok[:, None])
    lws_all = None if log_weight_scale is None else log_weight_scale[pr_all, pn_all]
    flagged_all = np.zeros(pr_all.size, dtype=bool)
    refine_all = np.zeros(pr_all.size, dtype=bool)
    loosen_all = np.ones(pr_all.size)

    def store(r, rows, lm, my, cy, rel):
        """Whitened results of region r (scalar) or regions r (array) into the outputs."""
        log_mass[r, rows] = lm
        err_out[r, rows] = _log_err(rel)
        if moments >= 1:
            Lp = geo.chol[r]
            fin = np.isfinite(lm)
            mz = means[r, rows] + np.matmul(Lp, my[:, :, None])[..., 0] if Lp.ndim == 3 else means[r, rows] + my @ Lp.T
            mean_out[r, rows] = np.where(fin[:, None], mz, 0.0)
            if moments >= 2:
                Lt = np.swapaxes(Lp, -1, -2)
                cz = np.matmul(np.matmul(Lp, cy), Lt)
                cov_out[r, rows] = np.where(fin[:, None, None], cz, 0.0)

    for s0 in range(0, pr_all.size, _CHUNK_PAIRS_S3):
        sl = slice(s0, s0 + _CHUNK_PAIRS_S3)
        pr, pn = pr_all[sl], pn_all[sl]
        lm, my, cy, rel, flagged, refine = batch_solid_moments(geo, pr, means[pr, pn], moments,
                                                               None if lws_all is None else lws_all[sl])
        flagged_all[sl] = flagged
        refine_all[sl] = refine & ~flagged
        if lws_all is not None:
            loosen_all[sl] = loosen_factors(lws_all[sl] + lm)
        ok = ~flagged
        store(pr[ok], pn[ok], lm[ok], None if my is None else my[ok], None if cy is None else cy[ok], rel[ok])
    again = flagged_all | refine_all
    pr_f, pn_f, loosen_f, must = pr_all[again], pn_all[again], loosen_all[again], flagged_all[again]
    for r in np.unique(pr_f):
        sel = pr_f == r
        rows, need_r = pn_f[sel], must[sel]
        # small bounded regions (where the cone decomposition cancels): cubature on tetrahedra
        lc, mc, cc, rc, good = cubature_moments(polytopes[r], geo.chol[r], means[r, rows], loosen_f[sel])
        if np.any(good):
            store(r, rows[good], lc[good], mc[good], cc[good], rc[good])
        rows = rows[~good & need_r]
        if rows.size == 0:
            continue
        tm = _polytope_moments_single(polytopes[r], means[r, rows], covs[r], moments=moments, method="auto",
                                      rng=rng, cones=False)
        log_mass[r, rows] = tm.log_mass
        if moments >= 1 and tm.mean is not None:
            mean_out[r, rows] = tm.mean
        if moments >= 2 and tm.cov is not None:
            cov_out[r, rows] = tm.cov
        err_out[r, rows] = np.inf if tm.log_mass_error is None else tm.log_mass_error
    has_err[geo.ok] = True
    for r in np.nonzero(geo.ok)[0]:
        names[r] = "solid-cones"
    return ~geo.ok


def batch_geometry(polytopes, covs, chol=None):
    """The per-region geometry of the batched paths (``method="auto"``): ``planar_batch.RegionGeometry`` for
    S = 2, ``solid.SolidGeometry`` for S = 3, None otherwise. It depends on the regions and Sigma_omega only,
    so a caller integrating the same regions for several sets of means builds it once and passes it to
    :func:`polytope_moments_batch`. ``chol`` (R, S, S): accurate lower-triangular factors of ``covs``."""
    S = np.shape(covs)[-1]
    if not len(polytopes) or S not in (2, 3):
        return None
    return (RegionGeometry if S == 2 else SolidGeometry)(polytopes, covs, chol)


class BatchMoments(NamedTuple):
    """What :func:`polytope_moments_arrays` returns: region-major arrays, R regions by N means."""

    log_mass: np.ndarray  # (R, N)
    mean: np.ndarray | None  # (R, N, S), zero where the mass is -inf
    cov: np.ndarray | None  # (R, N, S, S)
    methods: list[str]  # (R,) the method each region took
    log_mass_error: np.ndarray | None  # (R, N) absolute bounds on log_mass (0 where a method gives none)
    has_error: np.ndarray  # (R,) whether region r's method gave error bounds


def polytope_moments_batch(polytopes, means, covs, **kwargs) -> list[TruncatedMoments]:
    """:func:`polytope_moments_arrays` as a list of R :class:`TruncatedMoments`, one per region."""
    out = polytope_moments_arrays(polytopes, means, covs, **kwargs)
    return [TruncatedMoments(out.log_mass[r], None if out.mean is None else out.mean[r],
                             None if out.cov is None else out.cov[r], out.methods[r],
                             out.log_mass_error[r] if out.has_error[r] else None) for r in range(len(polytopes))]


def polytope_moments_arrays(polytopes, means, covs, *, moments: int = 2, method: str = "auto", rng=None,
                            need=None, log_weight_scale=None, geometry=None, lower_bound_only: bool = False,
                            _cones: bool = True):
    """Batched entry point: ``means`` (R, N, S), ``covs`` (R, S, S) -> :class:`BatchMoments`.

    ``need`` (optional (R, N) bool): pairs with ``need[r, n]`` False are skipped and returned as
    ``log_mass = -inf``, zero mean and covariance, ``log_mass_error = 0`` (for pairs whose term of
    eq. 5 the caller has shown to be negligible). ``log_weight_scale`` (optional (R, N)): the caller's
    bound ``w <= exp(log_weight_scale) * mass`` on each pair's posterior weight; the S = 2 batch then
    relaxes the accuracy thresholds of pairs of weight below 1e-3 in proportion (``planar_kernel``); the
    error bounds returned stay the measured ones. S = 2 with ``method="auto"`` is vectorised over all
    (region, point) pairs (``planar_batch``); pairs whose edge sum cancels beyond the error budget,
    and regions with lineality or degenerate rows, take the exact per-region path. Other cases loop
    over regions (vectorised over points). ``geometry``: :func:`batch_geometry` of these regions and
    ``covs``, when the caller has it. ``lower_bound_only`` (S = 2 batch, ``moments=0``): the caller needs
    only rigorous lower bounds ``log_mass - log_mass_error``; pairs the batch cannot resolve to its strict
    threshold keep its estimate when its error bound is within ``BOUND_ONLY_REL`` and are otherwise
    reported as mass 0, instead of taking the slow exact path.
    """
    R = len(polytopes)
    means = np.asarray(means, dtype=np.float64)
    covs = np.asarray(covs, dtype=np.float64)
    if means.ndim != 3 or means.shape[0] != R:
        raise DGNInputError("means", f"shape {means.shape} is not (R={R}, N, S)", "pass an (R, N, S) array")
    _, N, S = means.shape
    if covs.shape != (R, S, S):
        raise DGNInputError("covs", f"shape {covs.shape} is not (R={R}, S={S}, S={S})",
                            "pass one (S, S) covariance per region")
    if need is None:
        need = np.ones((R, N), dtype=bool)
    else:
        need = np.asarray(need, dtype=bool)
        if need.shape != (R, N):
            raise DGNInputError("need", f"shape {need.shape} is not (R={R}, N={N})",
                                "pass an (R, N) boolean mask")
    if log_weight_scale is not None:
        log_weight_scale = np.asarray(log_weight_scale, dtype=np.float64)
        if log_weight_scale.shape != (R, N):
            raise DGNInputError("log_weight_scale", f"shape {log_weight_scale.shape} is not (R={R}, N={N})",
                                "pass an (R, N) array")
    _check(np.zeros((1, S)), covs[0] if R else np.eye(S), method)
    log_mass = np.full((R, N), -np.inf)
    mean_out = np.zeros((R, N, S)) if moments >= 1 else None
    cov_out = np.zeros((R, N, S, S)) if moments >= 2 else None
    err_out = np.zeros((R, N))
    has_err = np.zeros(R, dtype=bool)
    names = [None] * R
    todo = np.ones(R, dtype=bool)
    if method == "auto" and R and S in (2, 3) and geometry is None:
        geometry = batch_geometry(polytopes, covs)
    if S == 2 and method == "auto" and R:
        geo = geometry
        if geo.chol is None:
            raise DGNInputError("cov", "covariance is not symmetric positive definite",
                                "pass a positive definite covariance")
        todo = ~geo.ok
        pr_all, pn_all = np.nonzero(need & geo.ok[:, None])
        for s0 in range(0, pr_all.size, _CHUNK_PAIRS):
            pr, pn = pr_all[s0:s0 + _CHUNK_PAIRS], pn_all[s0:s0 + _CHUNK_PAIRS]
            mu = means[pr, pn]
            with np.errstate(invalid="ignore"):
                lm, my, cy, rel, flagged, D = batch_planar_moments(
                    geo, pr, mu, moments, None if log_weight_scale is None else log_weight_scale[pr, pn])
            if lower_bound_only and np.any(flagged):
                # the kernel's own estimate where its bound is rigorous: finite, within BOUND_ONLY_REL, origin
                # off every edge line; other flagged pairs are reported as mass 0 (a valid lower bound)
                good = np.isfinite(lm) & (rel <= BOUND_ONLY_REL) & ~np.any(D == 0.0, axis=1)
                lm = np.where(flagged & ~good, -np.inf, lm)
                rel = np.where(flagged & ~good, 0.0, rel)
                flagged = np.zeros_like(flagged)
            if np.any(flagged):
                for r in np.unique(pr[flagged]):
                    sel = np.nonzero(flagged & (pr == r))[0]
                    f = polytopes[r].H.shape[0]
                    with np.errstate(invalid="ignore"):
                        l2, m2, c2, r2 = planar_moments(geo.Nrm[r, :f], D[sel, :f], moments)
                    lm[sel], rel[sel] = l2, r2
                    if moments >= 1:
                        my[sel] = np.where(np.isfinite(l2)[:, None], m2, 0.0)
                    if moments >= 2:
                        cy[sel] = np.where(np.isfinite(l2)[:, None, None], c2, 0.0)
            log_mass[pr, pn] = lm
            err_out[pr, pn] = _log_err(rel)
            if moments >= 1:
                fin = np.isfinite(lm)
                mean_out[pr, pn] = np.where(fin[:, None], mu + np.matmul(geo.chol[pr], my[:, :, None])[:, :, 0], 0.0)
                if moments >= 2:
                    cov_out[pr, pn] = np.where(fin[:, None, None], _congruence_2x2(geo.chol[pr], cy), 0.0)
        has_err[geo.ok] = True
        for r in np.nonzero(geo.ok)[0]:
            names[r] = "planar-owen"
    if S == 3 and method == "auto" and R:
        todo = _solid_batch(polytopes, means, covs, need, moments, log_mass, mean_out, cov_out, err_out, has_err,
                            names, rng, log_weight_scale, geometry)
    for r in np.nonzero(todo)[0]:
        rows = np.nonzero(need[r])[0]
        if rows.size == 0:
            continue
        mean_r, cov_r = _check(means[r, rows], covs[r], method)
        tm = _polytope_moments_single(polytopes[r], mean_r, cov_r, moments=moments, method=method, rng=rng,
                                      cones=_cones)
        names[r] = tm.method
        log_mass[r, rows] = tm.log_mass
        if moments >= 1 and tm.mean is not None:
            mean_out[r, rows] = tm.mean
        if moments >= 2 and tm.cov is not None:
            cov_out[r, rows] = tm.cov
        if tm.log_mass_error is not None:
            has_err[r] = True
            err_out[r, rows] = tm.log_mass_error
    default = method if method != "auto" else ("planar-owen" if S == 2 else "solid-quadrature" if S == 3
                                               else "rqmc")
    return BatchMoments(log_mass, mean_out, cov_out, [name or default for name in names],
                        np.where(has_err[:, None], err_out, 0.0) if has_err.any() else None, has_err)


__all__ = ["BatchMoments", "polytope_moments", "polytope_moments_arrays", "polytope_moments_batch", "planar_log_mass"]
