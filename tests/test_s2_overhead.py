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
    assert max(before) > 1 or len(before) == 0
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
