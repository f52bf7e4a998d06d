"""S = 2 batched over (region, point) pairs: the Owen-T edge formula of ``planar``, one kernel call per batch.

Theorem 1 (eq. 5) needs ``Phi_omega(mu_omega(x), Sigma_omega)`` for every pair (x, omega). Whitening by
``Sigma_omega = L L^T`` maps region omega to the polygon ``{Nrm y <= D}`` with fixed unit normals
``Nrm = H L / |H L|`` and offsets ``D = (c - H mu) / |H L|`` that are affine in ``mu``. A translation
does not change a polygon's combinatorics, so for each edge ``i`` the neighbouring rows that cut it
(``j_hi(i)``, ``j_lo(i)``) are found once per region; per pair the edge interval is then O(1):
``s_hi = (d_j - d_i n_i.n_j) / (n_j . e_i)`` (``planar.planar_edges`` does the same with an O(F^2)
search). Regions are padded to a common edge count with inactive edges and all pairs are stacked.

The per-pair work is compiled (``planar.kernel``, the same branches as the numpy reference path
``planar.planar_moments``). Each edge's ``B_i`` (mass beyond edge i inside its angular sector) is
evaluated only on the edges that can matter: ``B_i <= exp(-rho_i^2 / 2) / 2`` (``rho_i`` the distance
from the origin to the edge), so edges more than 45 nats below the largest such bound (or below
1 when the origin is inside) are left out and their bounds are added to the error estimate. The same
cancellation analysis as ``planar.planar_log_mass`` gives a relative error bound per pair; pairs above
``planar.kernel.FALLBACK_REL``, and pairs whose origin lies on an edge line, are handed back to the caller for the
exact per-region path (slice quadrature). Moments by the divergence theorem as in ``planar_moments``.
"""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba.core import types
from numba.core.extending import intrinsic

from ..pairs import PlanarPairs, log_error
from .kernel import SPLIT_MAX, PlanarArrays, cancel_flags, pair_planar_moments, small_polygon_pairs, store_pairs
from .reference import _COV_TOL, _PARALLEL, planar_slice_moments

_CUBATURE_COV_UNIT_ERR = 1e-14  # covariance error of the small-polygon cubature per unit of L^2 / lambda_min


def whitening_factors(covs, chol=None):
    """Lower-triangular ``L`` with ``L L^T = covs[r]`` (R, S, S): the caller's accurate factor when given
    (e.g. ``RegionGaussians.chol_cov``), else the Cholesky factor of ``covs``; None if not positive definite."""
    if chol is not None:
        return np.asarray(chol, dtype=np.float64)
    try:
        return np.linalg.cholesky(covs)
    except np.linalg.LinAlgError:
        return None


class RegionGeometry:
    """Per-region whitened normals and edge adjacency, padded to ``F`` rows (inactive rows: ``valid`` False).

    ``ok[r]`` is False for regions the batch does not handle (no facets, lineality, degenerate
    combinatorics); the caller integrates those with the per-region path. ``chol`` (R, 2, 2), optional:
    lower-triangular factors of ``covs`` to whiten with instead of re-factoring them (an accurate factor of
    an ill-conditioned Sigma_omega, ``RegionGaussians.chol_cov``).
    """

    def __init__(self, polytopes, covs, chol=None):
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
        # the lower end of edge i is the upper end of edge jlo[i] (one vertex, two lines): the kernel then
        # computes that vertex once, so the two angular sectors meet exactly (``planar.kernel``)
        self.paired = np.zeros((R, F), dtype=bool)
        self.chol = chol = whitening_factors(covs, chol)
        if chol is None:
            return
        # regions stacked by facet count: one batched pass per count instead of a Python pass per region
        sizes = np.array([p.H.shape[0] if p.H.shape[0] and not p.lineality.size and p.H.shape[1] == 2 else 0
                          for p in polytopes], dtype=np.intp)
        for f in np.unique(sizes[sizes > 0]):
            rs = np.nonzero(sizes == f)[0]
            self._fill(rs, np.stack([polytopes[r].H for r in rs]).astype(np.float64, copy=False),
                       np.stack([polytopes[r].c for r in rs]).astype(np.float64, copy=False))

    def _fill(self, rs, H, c):
        """Regions ``rs`` of ``f`` facets each, ``H`` (n, f, 2), ``c`` (n, f): whitened normals and edge adjacency
        (the same arithmetic, element for element, as one region at a time)."""
        f = H.shape[1]
        idx = np.arange(f)
        HL = np.matmul(H, self.chol[rs])
        nrm = np.sqrt((HL * HL).sum(axis=2))
        with np.errstate(divide="ignore", invalid="ignore"):
            Nrm = HL / nrm[..., None]
            cn = c / nrm
            E = np.stack([-Nrm[..., 1], Nrm[..., 0]], axis=-1)
            G = np.matmul(E, Nrm.transpose(0, 2, 1))  # G[i, j] = n_j . e_i
            C = np.matmul(Nrm, Nrm.transpose(0, 2, 1))
            slack = cn[:, None, :] - cn[:, :, None] * C
            Q = slack / np.where(np.abs(G) > _PARALLEL, G, 1.0)
        upper = G > _PARALLEL
        lower = G < -_PARALLEL
        qh = np.where(upper, Q, np.inf)
        ql = np.where(lower, Q, -np.inf)
        jh = np.argmin(qh, axis=2)
        jl = np.argmax(ql, axis=2)

        def at(A, j):
            return np.take_along_axis(A, j[..., None], axis=2)[..., 0]

        sh = at(qh, jh)
        sl = at(ql, jl)
        # parallel rows: a violated one empties the edge (cannot happen for irredundant regions)
        par = ~(upper | lower) & (idx[:, None] != idx[None, :])
        with np.errstate(invalid="ignore"):
            blocked = np.any(par & (slack < -1e-12 * (1 + np.abs(cn)[:, None, :])), axis=2)
        # zero normals, redundant or degenerate rows: leave the region to the exact H-representation path
        good = ~np.any(nrm <= 0.0, axis=1) & np.all((sl < sh) & ~blocked, axis=1)
        g = np.nonzero(good)[0]
        r = rs[g]
        jh, jl, sh, sl = jh[g], jl[g], sh[g], sl[g]
        has_hi, has_lo = np.isfinite(sh), np.isfinite(sl)
        self.ok[r] = True
        self.Nrm[r, :f] = Nrm[g]
        self.Hn[r, :f] = H[g] / nrm[g][..., None]
        self.cn[r, :f] = cn[g]
        self.valid[r, :f] = True
        self.jhi[r, :f] = jh
        self.jlo[r, :f] = jl
        self.has_hi[r, :f] = has_hi
        self.has_lo[r, :f] = has_lo
        self.ghi[r, :f] = np.where(at(upper[g], jh), at(G[g], jh), 1.0)
        self.glo[r, :f] = np.where(at(lower[g], jl), at(G[g], jl), 1.0)
        self.chi[r, :f] = at(C[g], jh)
        self.clo[r, :f] = at(C[g], jl)
        self.paired[r, :f] = has_lo & np.take_along_axis(has_hi, jl, axis=1) & (np.take_along_axis(jh, jl, axis=1)
                                                                                   == idx[None, :])

    def subset(self, rows) -> RegionGeometry:
        """The geometry of regions ``rows`` only (the same arrays, row-sliced): a caller integrating a few regions
        again (``distributions._heavy_pass``) gets bit for bit the pairs a call on all regions gives."""
        sub = object.__new__(RegionGeometry)
        for name, value in vars(self).items():
            sub.__dict__[name] = value[rows] if isinstance(value, np.ndarray) else value
        sub.R = len(rows)
        return sub

    @property
    def arrays(self) -> PlanarArrays:
        """What the compiled kernel reads, as one NamedTuple."""
        return PlanarArrays(*(getattr(self, name) for name in PlanarArrays._fields))


def batch_planar_moments(geo: RegionGeometry, pr: np.ndarray, mu: np.ndarray, moments: int = 2,
                         log_weight_scale: np.ndarray | None = None, cov_relative: bool = True) -> PlanarPairs:
    """Whitened mass and moments for pairs (region ``pr[p]``, mean ``mu[p]``): :func:`batch_planar_pairs`
    without its ``settled`` mask (same arguments, same :class:`pairs.PlanarPairs`)."""
    return batch_planar_pairs(geo, pr, mu, moments, log_weight_scale, cov_relative)[0]


def batch_planar_pairs(geo: RegionGeometry, pr: np.ndarray, mu: np.ndarray, moments: int = 2,
                       log_weight_scale: np.ndarray | None = None, cov_relative: bool = True):
    """Whitened mass and moments for pairs (region ``pr[p]``, mean ``mu[p]``), P pairs.

    ``log_weight_scale`` (P,): the caller's bound ``w <= exp(log_weight_scale) * mass`` on each pair's
    posterior weight; pairs of weight below ``LOOSEN_WEIGHT`` get their accuracy thresholds (mass:
    ``FALLBACK_REL``, covariance: ``planar._COV_TOL``) multiplied by ``LOOSEN_WEIGHT / w`` (at most
    ``MAX_LOOSEN``): a pair's error times its weight stays below the strict threshold times 1e-3.

    Returns :class:`pairs.PlanarPairs` (``log_mass (P,), mean (P, 2), cov (P, 2, 2), rel (P,), flagged (P,),
    D (P, F)``) in whitened coordinates of each pair's region; ``flagged`` pairs must be recomputed by the caller.
    ``cov_relative``: covariances to their own smallest eigenvalue (else to the whitened unit, Sigma_omega).
    The per-pair work is the compiled kernel ``planar.kernel.pair_planar_moments``; covariances whose
    divergence formula cancels (``planar.cancels``) are redone here by the slice moments.

    Also returns ``settled`` (P,) bool: pairs whose moments are exactly (bit for bit) what a call with
    ``cov_relative=True`` and no ``log_weight_scale`` would return -- not flagged, thresholds not loosened, and
    the divergence-formula covariance (eq. 6's conditional moments) accurate relative to its own smallest
    eigenvalue, so kept as is under either accuracy. A caller that first integrates with
    ``cov_relative=False`` need not redo these pairs at relative accuracy (``distributions.evaluate``).
    """
    scale = np.full(pr.shape[0], np.inf) if log_weight_scale is None else log_weight_scale
    # D = geo.cn[pr] - mu @ geo.Hn[pr]^T, written by the kernel (the same operations)
    log_mass, rel_err, flagged, loosen, mean, cov, s_lo, s_hi, act, _, D = pair_planar_moments(geo, pr, None, moments,
                                                                                                 scale, mu=mu)
    if moments < 2:
        return PlanarPairs(log_mass, mean if moments >= 1 else None, None, rel_err, flagged, D), np.zeros_like(flagged)
    # flagged pairs are redone by the caller
    # planar.cancels, compiled: redo = cancels(.., loosen, relative=cov_relative) & ~flagged, strict = cancels(.., 1.0)
    redo, strict = cancel_flags(mean, cov, log_mass, rel_err, loosen, bool(cov_relative), flagged)
    settled = ~flagged & ~redo & (loosen == 1.0)
    if not cov_relative:
        settled &= ~strict
    if np.any(redo):
        # small polygons: cubature moments, about the polygon's centre, cancel nothing
        idx = np.nonzero(redo)[0]
        used, _, kappa, m_small, c_small = small_polygon_pairs(geo.Nrm, pr[idx], D[idx], s_lo[idx], s_hi[idx],
                                                               act[idx], moments, SPLIT_MAX)
        used &= _CUBATURE_COV_UNIT_ERR * kappa <= _COV_TOL * loosen[idx]
        mean[idx[used]], cov[idx[used]] = m_small[used], c_small[used]
        redo[idx[used]] = False
    if np.any(redo):
        # padded rows (Nrm 0, D 1) are the constraint 0 <= 1 for the slices
        _, mean[redo], cov[redo] = planar_slice_moments(geo.Nrm[pr[redo]], D[redo],
                                                        (s_lo[redo], s_hi[redo], act[redo]))
    return PlanarPairs(log_mass, mean, cov, rel_err, flagged, D), settled


def store_planar_pairs(res, geo: RegionGeometry, pr, pn, mu, out: PlanarPairs, settled, moments: int) -> None:
    """Pairs (region ``pr[p]``, point ``pn[p]``, mean ``mu[p]``) of :func:`batch_planar_pairs`' ``out`` (flagged
    pairs already redone) into the region-major ``res`` (a ``pairs.PairResult``), mapped back from the whitened
    coordinates: mean ``mu + L m``, covariance ``L C L^T``, zero where the mass is not finite
    (``planar.kernel.store_pairs``, one compiled pass instead of a dozen (P, 2, 2) numpy temporaries)."""
    pr = np.ascontiguousarray(pr, dtype=np.intp)
    Lm = mu[:0]
    if moments >= 1:  # numpy's matmul's rounding (fused multiply-adds), which the stored means have always had
        Lm = chol_times(geo.chol, pr, out.mean)
    err = log_error(out.rel)
    block = (np.ascontiguousarray(mu, dtype=np.float64), Lm, out.log_mass, err,
             out.cov if moments >= 2 else np.zeros((0, 2, 2)), np.ascontiguousarray(settled, dtype=np.bool_))
    store_pairs(pr, np.ascontiguousarray(pn, dtype=np.intp), geo.chol, moments,
                block, (res.log_mass, res._errors, res.mean if moments >= 1 else np.zeros((0, 0, 2)),
                        res.cov if moments >= 2 else np.zeros((0, 0, 2, 2)), res.settled))


def chol_times(chol, pr, m):
    """``L_p m_p`` (P, 2) for ``L_p = chol[pr[p]]`` (R, 2, 2): bit for bit numpy's
    ``np.matmul(chol[pr], m[:, :, None])[:, :, 0]``, which the stored means have always been.

    That stacked product is one OpenBLAS ``dgemv`` per pair, whose kernel follows the memory order of the 2 x 2
    matrices (numpy's gather ``chol[pr]`` keeps that of ``chol``): row-major ones go through ``dgemv_t``,
    ``y_i = 0 + fma(L_i0, m_0, L_i1 m_1)``, column-major ones (``RegionGaussians.chol_cov`` is one, a transposed QR
    factor) through ``dgemv_n``, ``y_i = 0 + fma(L_i1, m_1, L_i0 m_0)`` (their two-row tail loops, contracted by the
    compiler; the 0 + is the zeroed output, which turns -0 into +0). That is what the "rounding that varies with
    memory alignment" was: it varies with the factor's memory order. :func:`_chol_times` computes the same in one
    compiled pass, without the gathered (P, 2, 2) copy and the per-pair BLAS calls (~1 ms a block of 16384 pairs,
    3 % of an S = 2 evaluate). Whether this numpy and BLAS build computes exactly that is checked once per process
    and order (:func:`_fused_matches_numpy`); for other orders, or where it does not, numpy's matmul is used."""
    m = np.ascontiguousarray(m, dtype=np.float64)
    chol = np.asarray(chol, dtype=np.float64)
    order = _matrix_order(chol[pr[:1]]) if pr.size else None
    if order is not None and _fused_matches_numpy(order):
        return _chol_times(chol, pr, m, order == "F")
    return np.ascontiguousarray(np.matmul(chol[pr], m[:, :, None])[:, :, 0])


def _matrix_order(A) -> str | None:
    """``"C"`` or ``"F"``: how numpy's matmul sees the 2 x 2 matrices of the stack ``A`` (row- or column-major, as
    its ``is_blasable2d`` tests them), None for other strides."""
    row, col = A.strides[1:]
    if col == A.itemsize and row >= 2 * A.itemsize and row % A.itemsize == 0:
        return "C"
    if row == A.itemsize and col >= 2 * A.itemsize and col % A.itemsize == 0:
        return "F"
    return None


@intrinsic
def _fma(typingctx, a, b, c):
    """``a * b + c`` rounded once (LLVM's ``llvm.fma.f64``: the FMA instruction, or libm's fma without one)."""
    sig = types.float64(types.float64, types.float64, types.float64)

    def codegen(context, builder, signature, args):
        d = ir.DoubleType()
        return builder.call(builder.module.declare_intrinsic("llvm.fma", [d], ir.FunctionType(d, [d, d, d])), args)

    return sig, codegen


@numba.njit(cache=True, nogil=True)
def _chol_times(chol, pr, m, column_major):  # pragma: no cover (compiled)
    """:func:`chol_times`' product, pair by pair: ``0 + fma(L_i0, m_0, L_i1 m_1)`` (``dgemv_t``), or with
    ``column_major`` ``0 + fma(L_i1, m_1, L_i0 m_0)`` (``dgemv_n``)."""
    P = pr.size
    out = np.empty((P, 2))
    for p in range(P):
        r = pr[p]
        for i in range(2):
            if column_major:
                out[p, i] = 0.0 + _fma(chol[r, i, 1], m[p, 1], chol[r, i, 0] * m[p, 0])
            else:
                out[p, i] = 0.0 + _fma(chol[r, i, 0], m[p, 0], chol[r, i, 1] * m[p, 1])
    return out


_FUSED_OK: dict = {}  # matrix order -> whether :func:`_chol_times` is numpy's matmul here (checked once)


def _fused_matches_numpy(order: str) -> bool:
    """Whether :func:`_chol_times` is numpy's stacked matmul of a gathered stack bit for bit, for 2 x 2 factors in
    memory order ``order``, on 4,000 pairs of this process's numpy and BLAS: values over 20 decades, zeros and
    negative zeros, stacks of several lengths at several memory offsets (where FMA or not shows in ~10 % of the pairs,
    and the sign of zero in the zero ones). Checked once per order."""
    if order not in _FUSED_OK:
        rng = np.random.default_rng(20261207)
        ok = True
        for P, offset in ((1, 0), (3, 1), (17, 0), (979, 1), (3000, 3)):
            buf = np.empty(6 * P + 8)
            L = buf[offset:offset + 4 * P].reshape(P, 2, 2)
            if order == "F":
                L = L.transpose(0, 2, 1)
            L[:] = np.tril(rng.standard_normal((P, 2, 2)) * 10.0 ** rng.integers(-10, 10, (P, 1, 1)))
            L[rng.random(P) < 0.2, 0, 0] = 0.0
            m = buf[4 * P + offset:6 * P + offset].reshape(P, 2)
            m[:] = rng.standard_normal((P, 2))
            m[rng.random((P, 2)) < 0.2] = -0.0
            pr = rng.integers(0, P, P)
            want = np.matmul(L[pr], m[:, :, None])[:, :, 0]
            got = _chol_times(L, pr, np.ascontiguousarray(m), order == "F")
            ok &= bool(np.array_equal(want.view(np.int64), got.view(np.int64)))
        _FUSED_OK[order] = ok
    return _FUSED_OK[order]


def gather_pairs(A, pr, pn):
    """``A[pr, pn]`` for the region-major (R, N[, S]) arrays of a ``PairRequest`` (views of point-major arrays, whose
    fancy indexing costs ~0.3 ms a block of 16384 pairs): the same values, copied by one compiled pass."""
    return _gather3(A, pr, pn) if A.ndim == 3 else _gather2(A, pr, pn)


@numba.njit(cache=True, nogil=True)
def _gather3(A, pr, pn):  # pragma: no cover (compiled)
    """:func:`gather_pairs` of an (R, N, S) array."""
    out = np.empty((pr.size, A.shape[2]))
    for p in range(pr.size):
        for k in range(A.shape[2]):
            out[p, k] = A[pr[p], pn[p], k]
    return out


@numba.njit(cache=True, nogil=True)
def _gather2(A, pr, pn):  # pragma: no cover (compiled)
    """:func:`gather_pairs` of an (R, N) array."""
    out = np.empty(pr.size)
    for p in range(pr.size):
        out[p] = A[pr[p], pn[p]]
    return out
