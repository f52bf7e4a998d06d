"""EM's E-step on a Dask cluster and the reuse paths of the guard (issue 15, item 4).

Oracles: a local fit with the same seed (the E-step's numbers do not depend on where the row blocks are
integrated, :mod:`engine.scaling`), and a fresh ``engine.evaluate`` of the fitted network (its own
partition, computed from scratch) for every reused partition and evaluation.
"""

from __future__ import annotations

import numpy as np
import pytest

import engine
from engine.em import EM
from engine.errors import DGNInputError


def test_dask_scheduler_fit_has_the_local_history():
    distributed = pytest.importorskip("distributed")
    X = engine.datasets.circle(40, rng=1)
    local = EM([1, 5, 4, 2], max_iter=3, tol=0.0, random_state=2).fit(X)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        remote = EM([1, 5, 4, 2], max_iter=3, tol=0.0, random_state=2, scheduler=client).fit(X)
        assert remote.get_params()["scheduler"] is client
    assert remote.log_likelihoods_ == local.log_likelihoods_
    assert remote.n_regions_ == local.n_regions_
    assert remote.history()["updates"] == local.history()["updates"]
    for a, b in zip(remote.network_.layers, local.network_.layers, strict=True):
        if hasattr(a, "weight"):
            np.testing.assert_array_equal(a.weight, b.weight)
            np.testing.assert_array_equal(a.bias, b.bias)


@pytest.mark.parametrize("kwargs, field", [({"n_workers": 0}, "workers"), ({"n_workers": 1.5}, "workers"),
                                           ({"n_workers": 2, "scheduler": "tcp://127.0.0.1:1"}, "workers")])
def test_bad_worker_options_are_one_line(kwargs, field):
    with pytest.raises(DGNInputError, match=field):
        EM([1, 3, 2], max_iter=1, **kwargs).fit(engine.datasets.circle(10, rng=0))
