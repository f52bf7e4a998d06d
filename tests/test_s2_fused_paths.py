"""The fused S = 2 first-pass paths of issue 15 item 3 against the numpy forms they replace, bit for bit.

* ``planar.kernel.pair_planar_moments(..., mu=...)`` writes the whitened offsets ``D`` itself: the numpy form
  ``cn[pr] - mu[:, :1] Hn[..., 0] - mu[:, 1:] Hn[..., 1]`` element for element, and every kernel output equals the
  call given that ``D``.
* ``planar.batch.store_planar_pairs`` (one compiled scatter) leaves a ``PairResult`` exactly as the numpy store of
  ``polytopes._planar_block`` did (kept here as the reference), non-finite masses and large error bounds included.
* ``distributions._posterior_moments`` (compiled for S >= 2) is numpy's einsum of the mixture moments (eq. 6).
* End to end: ``evaluate`` with all the new paths equals ``evaluate`` with the numpy ones patched back, every field.
* ``planar.kernel._graded`` takes one panel without its ``log2`` when ``wb <= rho``: the formula gives 1 there.
"""

import math

import numpy as np
import pytest

import engine
from engine import distributions as Dist
from engine.gaussian import polytopes as Pol
from engine.gaussian.pairs import PairResult, log_error
from engine.gaussian.planar import batch as Batch
from engine.gaussian.planar import kernel as K
from engine.gaussian.planar.batch import RegionGeometry, batch_planar_pairs, store_planar_pairs
from engine.network import random_network
from engine.partition import partition


@pytest.fixture(scope="module")
def block():
    """Regions of a random net, their geometry under random covariances, and pairs with means over 9 decades."""
    net = random_network([2, 8, 8, 3], rng=4)
    polys = [r.polytope for r in partition(net)]
    rng = np.random.default_rng(6)
    R = len(polys)
    A = rng.normal(size=(R, 2, 2)) * 0.4
    geo = RegionGeometry(polys, A @ A.transpose(0, 2, 1) + 0.05 * np.eye(2))
    pr = np.repeat(np.nonzero(geo.ok)[0], 12)
    mu = rng.normal(size=(pr.size, 2)) * 10.0 ** rng.uniform(-4, 5, size=(pr.size, 1))
    mu[:5] = 0.0
    return geo, pr, mu


def test_kernel_offsets_are_the_numpy_form(block):
    geo, pr, mu = block
    Hn = geo.Hn[pr]
    D = geo.cn[pr] - mu[:, :1] * Hn[:, :, 0] - mu[:, 1:] * Hn[:, :, 1]
    lws = np.random.default_rng(7).uniform(-80.0, 5.0, size=pr.size)
    given = K.pair_planar_moments(geo, pr, D, 2, lws)
    fused = K.pair_planar_moments(geo, pr, None, 2, lws, mu=mu)
    assert np.array_equal(fused[-1].view(np.int64), D.view(np.int64))
    assert len(fused) == len(given) + 1
    for a, b in zip(given, fused[:-1], strict=True):
        assert a.dtype == b.dtype and np.array_equal(a.view(np.uint8), b.view(np.uint8))
    assert np.isfinite(given[0]).sum() > 100 and np.isneginf(given[0]).sum() > 100  # both kinds of pairs occur


def _congruence_2x2(L, C):
    """``L C L^T`` for stacks of lower-triangular L and symmetric C (2 x 2), written out: the numpy store's."""
    l00, l10, l11 = L[:, 0, 0], L[:, 1, 0], L[:, 1, 1]
    c00, c01, c11 = C[:, 0, 0], C[:, 0, 1], C[:, 1, 1]
    out = np.empty_like(C)
    out[:, 0, 0] = l00 * l00 * c00
    out[:, 0, 1] = out[:, 1, 0] = l00 * (l10 * c00 + l11 * c01)
    out[:, 1, 1] = l10 * l10 * c00 + 2.0 * l10 * l11 * c01 + l11 * l11 * c11
    return out


def _numpy_store(res, geo, pr, pn, mu, out, settled, moments):
    """What ``polytopes._planar_block`` stored before the compiled scatter (the reference)."""
    res.settled[pr, pn] = settled
    lm = out.log_mass
    res.log_mass[pr, pn] = lm
    res._errors[pr, pn] = log_error(out.rel)
    if moments >= 1:
        fin = np.isfinite(lm)
        res.mean[pr, pn] = np.where(fin[:, None], mu + np.matmul(geo.chol[pr], out.mean[:, :, None])[:, :, 0], 0.0)
        if moments >= 2:
            res.cov[pr, pn] = np.where(fin[:, None, None], _congruence_2x2(geo.chol[pr], out.cov), 0.0)


@pytest.mark.parametrize("moments", [0, 1, 2])
def test_store_is_the_numpy_store(block, moments):
    geo, pr, mu = block
    rng = np.random.default_rng(8)
    R, N = geo.R, pr.size
    pn = rng.permutation(N)
    out, settled = batch_planar_pairs(geo, pr, mu, moments, rng.uniform(-80.0, 5.0, size=N), cov_relative=False)
    rel = out.rel.copy()
    rel[:40] = 10.0 ** rng.uniform(-12, 0, size=40)  # error bounds where numpy's SIMD log1p and libm's differ
    rel[40] = np.nan
    out = out._replace(rel=rel)
    want, got = PairResult.empty(R, N, 2, moments), PairResult.empty(R, N, 2, moments)
    _numpy_store(want, geo, pr, pn, mu, out, settled, moments)
    store_planar_pairs(got, geo, pr, pn, mu, out, settled, moments)
    for name in ("log_mass", "_errors", "settled", "mean", "cov"):
        a, b = getattr(want, name), getattr(got, name)
        assert (a is None) == (b is None), name
        if a is not None:
            assert np.array_equal(a.view(np.uint8), b.view(np.uint8)), name
    assert np.isneginf(out.log_mass).any() and np.isfinite(out.log_mass).any()


def _einsum_moments(w, means, covs):
    post_mean = np.einsum("nr,nrs->ns", w, means)
    dev = means - post_mean[:, None, :]
    return post_mean, np.einsum("nr,nrst->nst", w, covs) + np.einsum("nr,nrs,nrt->nst", w, dev, dev)


@pytest.mark.parametrize("N, R, S", [(300, 450, 2), (3, 30000, 2), (40, 70, 3), (6, 17, 4), (5, 1, 2), (0, 4, 2),
                                     (50, 30, 1)])
def test_mixture_moments_are_einsum(N, R, S):
    """Region-major views (what ``evaluate`` passes) and C-ordered copies; S = 1 keeps einsum itself."""
    rng = np.random.default_rng(N + R + S)
    w = rng.dirichlet(np.ones(R), size=N) if N else np.zeros((0, R))
    means = (rng.normal(size=(R, N, S)) * 10.0 ** rng.uniform(-3, 3, size=(R, N, 1))).transpose(1, 0, 2)
    covs = rng.normal(size=(R, N, S, S))
    covs = (covs + covs.transpose(0, 1, 3, 2)).transpose(1, 0, 2, 3)
    for m, c in ((means, covs), (means.copy(), covs.copy())):
        want = _einsum_moments(w, m, c)
        got = Dist._posterior_moments(w, m, c)
        for a, b in zip(want, got, strict=True):
            assert a.shape == b.shape and np.array_equal(a.view(np.uint8), np.ascontiguousarray(b).view(np.uint8))


def _numpy_offsets(geo, pr, D, moments, log_weight_scale, mu=None):
    """``planar.kernel.pair_planar_moments`` given ``D`` from numpy, as ``planar.batch`` computed it before."""
    if mu is None:
        return K.pair_planar_moments(geo, pr, D, moments, log_weight_scale)
    Hn = geo.Hn[pr]
    D = geo.cn[pr] - mu[:, :1] * Hn[:, :, 0] - mu[:, 1:] * Hn[:, :, 1]
    return K.pair_planar_moments(geo, pr, D, moments, log_weight_scale) + (D,)


def _old_planar_block(req, geo, res, pr, pn):
    """``polytopes._planar_block`` before the fused paths (numpy store; the offsets by :func:`_numpy_offsets`)."""
    mu = req.means[pr, pn]
    with np.errstate(invalid="ignore"):
        out, settled = Pol.batch_planar_pairs(geo, pr, mu, req.moments, req.weight_scale(pr, pn),
                                              cov_relative=req.relative)
    flagged = out.flagged
    if req.lower_bound_only and np.any(flagged):
        lm, rel = Pol._planar_bound_only(out, flagged)
        out = out._replace(log_mass=lm, rel=rel)
        flagged = np.zeros_like(flagged)
    if np.any(flagged):
        Pol._planar_flagged(req, geo, out, pr, flagged)
    _numpy_store(res, geo, pr, pn, mu, out, settled, req.moments)


@pytest.mark.parametrize("widths, cov_x, kwargs", [([2, 12, 12, 4], 0.1, {}), ([2, 8, 8, 3], 0.03, {"defer": True}),
                                                   ([2, 6, 6, 2], 0.1, {"prune": False})])
def test_evaluate_equals_the_numpy_paths(widths, cov_x, kwargs, monkeypatch):
    net = random_network(widths, rng=3, cov_x=cov_x)
    X = net.sample(60, rng=4)
    X[:6] *= 3.0  # far points: light and pruned pairs
    part = engine.partition(net)
    new = Dist.evaluate(net, X, part=part, **kwargs)
    monkeypatch.setattr(Pol, "_planar_block", _old_planar_block)
    monkeypatch.setattr(Batch, "pair_planar_moments", _numpy_offsets)
    monkeypatch.setattr(Dist, "_posterior_moments", _einsum_moments)
    old = Dist.evaluate(net, X, part=part, **kwargs)
    if kwargs.get("defer"):
        new, old = Dist.complete(new), Dist.complete(old)
    for name in ("log_marginal", "posterior_mean", "posterior_cov", "region_log_weights", "region_means",
                 "region_covs", "log_marginal_error"):
        a, b = np.ascontiguousarray(getattr(old, name)), np.ascontiguousarray(getattr(new, name))
        assert np.array_equal(a.view(np.uint8), b.view(np.uint8)), name


def test_one_panel_without_log2():
    """``wb <= rho`` gives ``ceil(log2(wb / rho + 1) - 1e-12) <= 1`` (libm's log2, numba's too), so one panel."""
    rng = np.random.default_rng(9)
    rho = 10.0 ** rng.uniform(-1.4, 1.5, size=2000)
    q = np.concatenate([rng.uniform(0, 1, size=2000), 1.0 - np.arange(2000) * 2.0 ** -53])
    for r, t in zip(np.tile(rho, 2), q, strict=True):
        wb = min(r * t, r)
        assert wb <= r and max(math.ceil(math.log2(wb / r + 1.0) - 1e-12), 1.0) == 1.0
    for h, a, wb in ((0.7, 0.3, 0.76), (2.0, 1.0, math.sqrt(5.0)), (0.01, 0.04, 0.05)):  # wb <= rho, at the edge
        rho_ = K._pole_distance(math.hypot(a, h))
        b = a + min(wb, rho_)
        lb = K.edge_graded(h, a, b)
        # the same edge split in two halves and summed: one more panel of the same rule cannot differ by more
        # than the rule's error (1e-15 relative, tests/test_s2_speed_paths.py)
        m = 0.5 * (a + b)
        parts = np.logaddexp(K.edge_graded(h, a, m), K.edge_graded(h, m, b))
        assert abs(lb - parts) < 1e-13


def test_top_rows_is_argpartition():
    """``distributions._top_rows`` marks what ``argpartition(-upper, k - 1)[:, :k]`` picks wherever that set is unique,
    and says which rows it leaves to argpartition (ties at the k-th place, NaN); rows with few finite values."""
    rng = np.random.default_rng(10)
    for R in (1, 2, 3, 4, 9, 450):
        U = rng.normal(size=(400, R))
        U[:50] = np.round(U[:50])  # many ties
        U[50:100, : R // 2] = -np.inf
        U[100:110, 0] = np.nan
        U[110:120, -1] = np.inf
        U[120:130] = -np.inf
        k = min(3, R)
        want = np.zeros(U.shape, dtype=bool)
        np.put_along_axis(want, np.argpartition(-U, k - 1, axis=1)[:, :k], True, axis=1)
        got, unsure = Dist._top_rows(U, k)
        assert np.array_equal(got[~unsure], want[~unsure])
        assert not got[unsure].any()
        assert not unsure.any() if R <= k else unsure[100:110].all()
        if R > k:  # exactly the rows whose top k is not unique (with R <= k every row takes all)
            srt = -np.sort(-U, axis=1)
            assert np.array_equal(unsure, np.isnan(U).any(axis=1) | ~(srt[:, k - 1] > srt[:, k]))
            assert 0 < unsure.sum() < 300


def test_logsumexp_of_the_marked_pairs_is_the_full_rows():
    """``distributions._first_lower`` sums only each row's three marked pairs: scipy's ``logsumexp`` of the (N, 3)
    gather equals, bit for bit, that of the full (N, R) rows with -inf elsewhere (rows all -inf, ties at the
    maximum, NaN, +inf included)."""
    from scipy.special import logsumexp

    rng = np.random.default_rng(11)
    N, R, k = 3000, 450, 3
    cols = np.argsort(rng.random((N, R)), axis=1)[:, :k]
    vals = rng.normal(size=(N, k)) * 10.0 ** rng.uniform(-2, 3, size=(N, 1))
    vals[:300, 0] = -np.inf
    vals[300:400] = -np.inf
    vals[400:500, 1] = vals[400:500, 0]
    vals[500:520, 2] = np.nan
    vals[520:540, 0] = np.inf
    vals[540:600] = np.round(vals[540:600])
    full = np.full((N, R), -np.inf)
    np.put_along_axis(full, cols, vals, axis=1)
    a, b = logsumexp(full, axis=1), logsumexp(vals, axis=1)
    assert np.array_equal(a.view(np.int64), b.view(np.int64))
