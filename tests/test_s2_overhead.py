"""The non-kernel parts of the S = 2 evaluate made cheaper (issue 15 items 3-4), against the forms they replace, bit
for bit.

* ``planar.batch.chol_times`` (the stored means' ``L m``, compiled) is numpy's stacked matmul ``chol[pr] @ m`` for
  row-major and column-major 2 x 2 factors (OpenBLAS's ``dgemv_t`` and ``dgemv_n`` round differently: the test
  shows that each form fails on the other order), zeros and negative zeros included.
* ``conditioning._bar_pairs`` (tiled, reading point- and region-major arrays without copies) is the per-point
  loop it replaced, written out in Python floats (the same operations in the same order, libm's exp, expm1, log1p).
* ``distributions.one_blas_thread``: BLAS single-threaded during an evaluation leaves every ``Evaluation`` field
  as with OpenBLAS's threads, and restores the thread count it found, nested or not.
* The heavy pass written in place (``evaluate`` without ``defer``) gives what ``defer=True`` + ``complete`` gives,
  and a deferred evaluation is left unchanged by ``complete``.
"""

import math

import numpy as np
import pytest

import engine
from engine import conditioning as Cond
from engine import distributions as Dist
from engine.gaussian.planar import batch as Batch
from engine.network import random_network

FIELDS = ("log_marginal", "posterior_mean", "posterior_cov", "region_log_weights", "region_means", "region_covs",
          "log_marginal_error")


def _bits(a):
    return np.ascontiguousarray(a).view(np.uint8)


def _same(a, b) -> bool:
    return a.shape == b.shape and np.array_equal(_bits(a), _bits(b))


def _stack(order: str, P: int, rng):
    """P lower-triangular 2 x 2 factors over 16 decades in memory order ``order``, some zero diagonals, and means with
    negative zeros."""
    L = np.tril(rng.standard_normal((P, 2, 2)) * 10.0 ** rng.integers(-8, 8, (P, 1, 1)))
    L[rng.random(P) < 0.1, 0, 0] = 0.0
    if order == "F":
        L = np.ascontiguousarray(L.transpose(0, 2, 1)).transpose(0, 2, 1)
    m = rng.standard_normal((P, 2))
    m[rng.random((P, 2)) < 0.1] = -0.0
    return L, m


@pytest.mark.parametrize("order", ["C", "F"])
def test_chol_times_is_numpys_matmul(order):
    rng = np.random.default_rng(11)
    L, m = _stack(order, 500, rng)
    assert Batch._matrix_order(L[[0]]) == order
    pr = rng.integers(0, 500, 5000)
    want = np.matmul(L[pr], m[pr % 500][:, :, None])[:, :, 0]
    got = Batch.chol_times(L, pr, m[pr % 500])
    assert _same(want, got)
    # the two FMA forms are not interchangeable: the other order's form misses numpy on some pairs
    other = Batch._chol_times(L, pr, m[pr % 500], order == "C")
    assert not np.array_equal(want, other)
    assert np.signbit(want[want == 0]).sum() == 0 and (want == 0).any()  # dgemv's zeroed output: no -0


def test_chol_times_unusual_strides_and_fallback(monkeypatch):
    """Sliced factors (numpy's gather makes them compact again: the probe sees what matmul sees), and the numpy
    fallback where the build's BLAS is not the fused form."""
    rng = np.random.default_rng(12)
    L, m = _stack("F", 64, rng)
    pr = rng.integers(0, 64, 300)
    for L2 in (L[:, ::-1, ::-1], np.repeat(L, 2, axis=1)[:, ::2]):
        assert Batch._matrix_order(L2[[0]]) in ("C", "F")
        assert _same(np.matmul(L2[pr], m[pr % 64][:, :, None])[:, :, 0], Batch.chol_times(L2, pr, m[pr % 64]))
    monkeypatch.setattr(Batch, "_FUSED_OK", {"C": False, "F": False})
    assert _same(np.matmul(L[pr], m[pr % 64][:, :, None])[:, :, 0], Batch.chol_times(L, pr, m[pr % 64]))


def _bar_reference(log_norm, log_mass, mu, means, covs, chol, const, nx, nb, nA, dA, db0, c):
    """The per-point loop ``_bar_pairs`` was before its tiling (regions inner), in Python floats."""
    eps, N, R, S = np.finfo(float).eps, *mu.shape
    out = np.zeros(N)
    for n in range(N):
        v = [float(log_norm[n, r] + log_mass[n, r]) for r in range(R)]
        top = -math.inf
        for x in v:
            if x > top:
                top = x
        top = top if math.isfinite(top) else 0.0
        ws = [math.exp(x - top) for x in v]
        total = 0.0
        for x in ws:
            if x == x:
                total += x
        small, big = 0.0, -math.inf
        for r in range(R):
            w = ws[r] / total
            if not w > Cond._W_MIN:
                continue
            e = nx[n] + nb[r]
            db = db0[r] + c * eps * e
            y, m2, tr, nmu = [0.0] * S, 0.0, 0.0, 0.0
            for i in range(S):
                acc = means[n, r, i] - mu[n, r, i]
                for j in range(i):
                    acc -= chol[r, i, j] * y[j]
                y[i] = acc / chol[r, i, i]
                m2 += means[n, r, i] * means[n, r, i]
                tr += covs[n, r, i, i]
                nmu += mu[n, r, i] * mu[n, r, i]
            d2 = 0.0
            for i in range(S):
                d2 += y[i] * y[i]
            d = math.sqrt(d2) if d2 == d2 else math.inf
            q = max(-2.0 * (log_norm[n, r] - const[r]), 0.0)
            t = math.sqrt(q) + d
            er2 = t * t + S  # numba's x ** 2 is x * x (Python's calls pow, which may round differently)
            ez2 = m2 + max(tr, 0.0)
            beta = (math.sqrt(er2) * (db + dA[r] * math.sqrt(ez2)) + d * c * eps * (e + nA[r] * math.sqrt(nmu))
                    + 8.0 * eps * (1.0 + abs(log_norm[n, r])))
            beta = math.inf if beta != beta else beta
            if beta < 600.0:
                small += w * math.expm1(beta)
            else:
                t = math.log(w) + beta
                big = t if big == -math.inf else max(big, t) + math.log1p(math.exp(-abs(big - t)))
        out[n] = math.log1p(small)
        if big > -math.inf:
            out[n] = max(out[n], big) + math.log1p(math.exp(-abs(out[n] - big)))
    return out


@pytest.mark.parametrize("scale", [1.0, 1e13])
def test_tiled_bar_is_the_per_point_loop(scale, monkeypatch):
    """70 points (two tiles, the second partial), region-major moments as ``evaluate`` passes them, and the same
    arrays C-ordered; data scaled by 1e13 reaches the log-space branch (beta of thousands of nats)."""
    net = random_network([2, 6, 6, 3], rng=2, cov_x=0.1)
    X = net.sample(70, rng=3) * scale
    got = {}
    real = Cond._bar_pairs

    def spy(*args):
        got["args"] = args
        return real(*args)

    monkeypatch.setattr(Cond, "_bar_pairs", spy)
    engine.evaluate(net, X)
    args = got["args"]
    assert not args[3].flags.c_contiguous and not args[4].flags.c_contiguous  # no copies were made
    want = _bar_reference(*args)
    assert np.all(np.isfinite(want)) and (scale == 1.0 or want.max() > 600.0)
    assert _same(want, real(*args))
    assert _same(want, real(*(np.ascontiguousarray(a) if isinstance(a, np.ndarray) else a for a in args)))


def _blas_threads():
    from threadpoolctl import threadpool_info

    return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]


def test_one_blas_thread_keeps_bits_and_restores(monkeypatch):
    pytest.importorskip("threadpoolctl")
    from threadpoolctl import threadpool_limits

    net = random_network([2, 10, 10, 4], rng=5, cov_x=0.1)
    X = net.sample(120, rng=6)
    part = engine.partition(net)
    with threadpool_limits(limits=2, user_api="blas"):  # OpenBLAS threaded, as a plain process has it here
        before = _blas_threads()
        if not before or max(before) < 2:
            pytest.skip("this BLAS runs one thread at most")
        seen = []
        real = Dist._evaluate_block

        def spy(*args):
            seen.append(_blas_threads())
            return real(*args)

        monkeypatch.setattr(Dist, "_evaluate_block", spy)
        one = Dist.evaluate(net, X, part=part)
        assert seen == [[1] * len(before)] and _blas_threads() == before
        with Dist.one_blas_thread():  # nested: the inner exit does not restore, the outer does
            with Dist.one_blas_thread():
                pass
            assert _blas_threads() == [1] * len(before)
        assert _blas_threads() == before
        monkeypatch.setattr(Dist, "one_blas_thread", __import__("contextlib").nullcontext)
        threaded = Dist.evaluate(net, X, part=part)
    for name in FIELDS:
        assert _same(getattr(one, name), getattr(threaded, name)), name


def test_heavy_pass_in_place_equals_deferred():
    net = random_network([2, 12, 12, 3], rng=7, cov_x=0.05)
    X = net.sample(80, rng=8)
    part = engine.partition(net)
    direct = Dist.evaluate(net, X, part=part)
    deferred = Dist.evaluate(net, X, part=part, defer=True)
    first = {name: np.copy(getattr(deferred, name)) for name in FIELDS}
    done = Dist.complete(deferred)
    for name in FIELDS:
        assert _same(getattr(direct, name), getattr(done, name)), name
        assert _same(first[name], getattr(deferred, name)), name  # complete() wrote into copies
    assert not _same(first["region_covs"], done.region_covs)  # the heavy pass changed something


def _old_masked(ev):
    """``em._masked_moments`` before the compiled pass: masked moments as (N, R, ...) arrays."""
    w = np.exp(ev.region_log_weights)
    m = np.where(w[..., None] > 0, ev.region_means, 0.0)
    C = np.where(w[..., None, None] > 0, ev.region_covs, 0.0)
    return w, m, C


def _old_statistics(ev, X):
    """``em.statistics`` before the compiled pass (the numpy sums)."""
    from engine.em import Statistics, _region_sum

    w, m, C = _old_masked(ev)
    N, R, S = m.shape
    e1 = w[..., None] * m
    M = np.empty((R, S + 1, S + 1))
    M[:, :S, :S] = _region_sum(w, C + m[..., :, None] * m[..., None, :])
    M[:, :S, S] = e1.sum(axis=0)
    M[:, S, :S] = M[:, :S, S]
    M[:, S, S] = w.sum(axis=0)
    Xs = np.empty((R, X.shape[1], S + 1))
    Xs[:, :, :S] = (X.T @ e1.reshape(N, R * S)).reshape(X.shape[1], R, S).transpose(1, 0, 2)
    Xs[:, :, S] = w.T @ X
    Ezz = M[:, :S, :S].sum(axis=0)
    return Statistics(N, M, Xs, 0.5 * (Ezz + Ezz.T))


def _old_residual(fm, ev, X, full):
    """``em._residual_moments`` before the compiled pass."""
    from engine import em as EMmod
    from engine.em import _region_sum

    w, mean, C = _old_masked(ev)
    N, R, S = mean.shape
    D = X.shape[1]
    Cw = _region_sum(w, C)
    out = np.zeros((D, D) if full else D)
    chunk = max(1, EMmod._CHUNK_FLOATS // max(1, R * D))
    for s in range(0, N, chunk):
        ms = mean[s:s + chunk]
        e = X[s:s + chunk, None, :] - fm.b[None]
        for k in range(S):
            e -= fm.A[None, :, :, k] * ms[:, :, None, k]
        we = (w[s:s + chunk, :, None] * e).reshape(-1, D)
        if full:
            out += we.T @ e.reshape(-1, D)
        else:
            out += (we * e.reshape(-1, D)).sum(axis=0)
    AC = np.matmul(fm.A, Cw)
    if full:
        out += AC.transpose(1, 0, 2).reshape(D, -1) @ fm.A.transpose(1, 0, 2).reshape(D, -1).T
        return 0.5 * (out + out.T)
    return out + (AC * fm.A).sum(axis=(0, 2))


@pytest.mark.parametrize("S, chunk", [(1, None), (2, None), (2, 3000)])
def test_em_statistics_are_the_numpy_sums(S, chunk, monkeypatch):
    """The compiled E-step sums (``em._masked_sums``) against the numpy forms they replaced, bit for bit: S = 1 and
    S = 2 (pruned pairs of weight 0, the heavy pass's in-place moments), and ``_region_sum``'s row chunks (a small
    ``_CHUNK_FLOATS``: several chunks, whose sums add in turn)."""
    from engine import em as EMmod

    if chunk:
        monkeypatch.setattr(EMmod, "_CHUNK_FLOATS", chunk)
    X = engine.datasets.circle(150, rng=4)
    X[:5] *= 4.0  # far points: pairs pruned to weight 0
    net = EMmod.init_random([S, 8, 8, 2], X, rng=1)
    ev = engine.evaluate(net, X)
    assert (np.exp(ev.region_log_weights) == 0).any()
    want, got = _old_statistics(ev, X), EMmod.statistics(ev, X)
    for name in ("M", "X", "Ezz"):
        assert _same(getattr(want, name), getattr(got, name)), name
    fm = EMmod.frozen_maps(net, ev.partition)
    for full in (True, False):
        assert _same(_old_residual(fm, ev, X, full), EMmod._residual_moments(fm, ev, X, full=full)), full


def test_gather_pairs_is_fancy_indexing():
    """``planar.batch.gather_pairs`` (``_planar_block``'s means and weight scales) is ``A[pr, pn]``, on the
    region-major views ``PairRequest`` holds and on C-ordered arrays."""
    rng = np.random.default_rng(13)
    mu = rng.standard_normal((40, 30, 2))
    lws = rng.standard_normal((40, 30))
    pr, pn = np.nonzero(rng.random((30, 40)) < 0.5)  # strided index arrays, as np.nonzero gives them
    for A in (mu.transpose(1, 0, 2), lws.T, np.ascontiguousarray(lws.T)):
        assert _same(A[pr, pn], Batch.gather_pairs(A, pr, pn))


@pytest.mark.parametrize("widths", [[2, 8, 8, 5], [2, 6, 6, 2], [2, 6, 6, 1], [1, 8, 8, 3]])
def test_params_rect_is_params_pairs(widths):
    """``distributions._params_rect`` (a block of rows by all regions, no index arrays) writes exactly what
    ``_params_pairs`` writes for the same pairs given as ``np.repeat`` / ``np.tile`` index arrays (D > k, D = k,
    D < S, S = 1)."""
    net = random_network(widths, rng=11, cov_x=0.2)
    part = engine.partition(net)
    rg = Dist.region_gaussians(net, part)
    X = net.sample(37, rng=12) * 3.0
    X_w = np.ascontiguousarray(Dist._solve_lower(rg.chol_x, X.T).T)
    N, R, S = X.shape[0], len(part), net.latent_dim
    want = (np.full((N, R, S), np.nan), np.full((N, R), np.nan))
    got = (np.full((N, R, S), np.nan), np.full((N, R), np.nan))
    regs = np.arange(R)[::2].copy()
    args = (X_w, rg.b_w, rg.U, rg.shrink, rg.gain, rg.const)
    Dist._params_pairs(*args, np.repeat(regs, 30), np.tile(np.arange(5, 35), regs.size), *want)
    Dist._params_rect(*args, regs, 5, 30, *got)
    assert np.isfinite(want[1][5:35, regs]).all()
    for a, b in zip(want, got, strict=True):
        assert _same(np.nan_to_num(a, nan=7.0), np.nan_to_num(b, nan=7.0))
