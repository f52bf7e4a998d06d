"""Row blocks, local worker processes and Dask against the single-call evaluation (engine.scaling).

Oracle: ``evaluate`` of the same rows on the same partition (each row's numbers come from that row alone,
eq. 5-6). Workers and Dask with the same block size must agree bit for bit (``np.array_equal``); different
block sizes to rounding (BLAS picks other kernels for other product heights): 1e-12 relative to the
field's scale, and log-weights of tiny regions to 1e-12 relative to their own size.
"""

from __future__ import annotations

import numpy as np
import pytest

import engine
from engine.errors import DGNInputError

FIELDS = ("log_marginal", "posterior_mean", "posterior_cov", "region_log_weights", "region_means", "region_covs")


def _case(widths, n, seed=0):
    net = engine.random_network(widths, rng=seed, cov_x=0.2)
    rng = np.random.default_rng(seed)
    X = net.sample(n, rng=rng)
    X[-1] *= 30.0  # one point far off the manifold
    return net, X, engine.partition(net)


def _same(a, b, fields=FIELDS):
    for name in fields:
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert a.method == b.method and a.n_regions == b.n_regions


def _close(a, b, fields=FIELDS):
    for name in fields:
        x, y = getattr(a, name), getattr(b, name)
        finite = np.isfinite(x)
        assert np.array_equal(finite, np.isfinite(y)) and np.array_equal(x[~finite], y[~finite]), name
        scale = np.maximum(1.0, np.abs(x[finite])) if name == "region_log_weights" else max(1.0, np.abs(x).max())
        assert np.all(np.abs(x[finite] - y[finite]) <= 1e-12 * scale), name
    assert a.method == b.method and a.n_regions == b.n_regions


@pytest.mark.parametrize("widths", [[1, 8, 8, 3], [2, 6, 6, 4], [3, 4, 4, 3]])
def test_blocks_equal_one_call(widths):
    net, X, part = _case(widths, 11)
    whole = engine.evaluate(net, X, part=part, chunk_size=len(X))
    blocks = engine.evaluate(net, X, part=part, chunk_size=3)
    _close(whole, blocks)
    _same(blocks, engine.evaluate(net, X, part=part, chunk_size=3))


def test_default_block_size_splits_large_batches():
    net, X, part = _case([1, 4, 2], 9)
    from engine.scaling import rows_per_block

    assert rows_per_block(len(part), 1, pairs=2 * len(part)) == 2
    whole = engine.evaluate(net, X, part=part, chunk_size=len(X))
    from engine.scaling import evaluate_many

    _close(whole, evaluate_many(net, X, part, chunk_size=2))


def test_region_terms_off_keeps_the_marginal_and_moments():
    net, X, part = _case([2, 5, 5, 3], 7)
    full = engine.evaluate(net, X, part=part)
    lean = engine.evaluate(net, X, part=part, chunk_size=2, region_terms=False)
    _close(full, lean, fields=("log_marginal", "posterior_mean", "posterior_cov"))
    assert lean.region_log_weights is None and lean.region_covs is None
    with pytest.raises(DGNInputError, match="region_terms"):
        lean.moments()
    assert lean.to_dict()["region_weights"] is None


def test_dask_cluster_equals_local():
    distributed = pytest.importorskip("distributed")
    net, X, part = _case([2, 5, 5, 3], 8)
    local = engine.evaluate(net, X, part=part, chunk_size=3)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cl:
        with distributed.Client(cl) as client:
            by_client = engine.evaluate(net, X, part=part, chunk_size=3, scheduler=client)
        by_address = engine.evaluate(net, X, part=part, chunk_size=3, scheduler=cl.scheduler_address)
    _same(local, by_client)
    _same(local, by_address)


@pytest.mark.slow
def test_local_processes_equal_local():
    net, X, part = _case([2, 5, 5, 3], 8)
    _same(engine.evaluate(net, X, part=part, chunk_size=3),
          engine.evaluate(net, X, part=part, chunk_size=3, workers=2))


@pytest.mark.parametrize("kwargs, field", [({"chunk_size": 0}, "chunk_size"), ({"chunk_size": 2.5}, "chunk_size"),
                                           ({"workers": 0}, "workers"), ({"workers": True}, "workers"),
                                           ({"workers": 2, "scheduler": "tcp://127.0.0.1:1"}, "workers"),
                                           ({"scheduler": 3}, "scheduler")])
def test_bad_block_options_are_one_line(kwargs, field):
    net, X, part = _case([1, 3, 2], 4)
    with pytest.raises(DGNInputError, match=field):
        engine.evaluate(net, X, part=part, **kwargs)


def test_cli_blocks_and_workers_options(tmp_path):
    import json

    from engine.cli import main

    net, X, part = _case([1, 5, 5, 3], 6)
    engine.save_network(net, tmp_path / "m.json")
    np.save(tmp_path / "x.npy", X)
    out = tmp_path / "r.json"
    assert main(["evaluate", "--model", str(tmp_path / "m.json"), "--data", str(tmp_path / "x.npy"),
                 "--out", str(out), "--chunk-size", "2"]) == 0
    got = np.array(json.loads(out.read_text())["log_marginal"])
    np.testing.assert_allclose(got, engine.evaluate(net, X).log_marginal, rtol=1e-14, atol=0)
    assert main(["evaluate", "--model", str(tmp_path / "m.json"), "--data", str(tmp_path / "x.npy"),
                 "--chunk-size", "0"]) == 2
