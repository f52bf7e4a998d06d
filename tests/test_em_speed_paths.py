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
                                           ({"n_workers": 2, "scheduler": "tcp://127.0.0.1:1"}, "workers"),
                                           ({"backoff": -1}, "backoff"), ({"backoff": 1.0}, "backoff")])
def test_bad_worker_options_are_one_line(kwargs, field):
    with pytest.raises(DGNInputError, match=field):
        EM([1, 3, 2], max_iter=1, **kwargs).fit(engine.datasets.circle(10, rng=0))


def _fit(seed: int, **kwargs) -> tuple[EM, np.ndarray]:
    X = engine.datasets.circle(60, rng=3)
    return EM([1, 6, 5, 2], max_iter=8, tol=0.0, random_state=seed, **kwargs).fit(X), X


def test_backoff_skips_rejected_layers_and_stays_monotone_and_true():
    em, X = _fit(2)
    fates = [v for h in em.history()["updates"] for v in h.values()]
    assert "skipped" in fates and "rejected" in fates  # this seed exercises the back-off
    ll = np.array(em.log_likelihoods_)
    assert np.all(np.diff(ll) >= -1e-12 * np.abs(ll[:-1]))
    # the recorded value is the exact log-likelihood of the fitted network (fresh partition)
    fresh = engine.evaluate(em.network_, X)
    assert fresh.n_regions == em.n_regions_[-1]
    np.testing.assert_allclose(fresh.log_marginal.mean(), ll[-1], rtol=1e-13, atol=0)
    # a rejected try costs max_backtracks + 1 = 2 evaluations, a skipped one none, each accepted try one
    for h in em.history_:
        u = h["updates"]
        tries = sum(2 if u[k] == "rejected" else u[k].startswith("accepted (step") + 1
                    for k in ("layer0", "layer1") if u[k] != "skipped")
        all_out = all(u[k] in ("skipped", "rejected") for k in ("layer0", "layer1"))
        assert h["evaluations"] == tries + all_out, h  # + the exact step alone when no inner layer moved


def test_backoff_zero_tries_every_layer():
    em, _ = _fit(2, backoff=0)
    fates = [v for h in em.history()["updates"] for v in h.values()]
    assert "skipped" not in fates
    assert all(h["evaluations"] >= 2 for h in em.history_)


def test_backoff_schedule_doubles_to_the_cap_and_resets():
    em = EM(backoff=4)
    em._rejections, em._pause = {}, {}
    pauses = []
    for _ in range(5):
        em._record_try(0, accepted=False)
        pauses.append(em._pause[0])
        while em._paused(0):
            pass
    assert pauses == [1, 2, 4, 4, 4]
    em._record_try(0, accepted=True)
    em._record_try(0, accepted=False)
    assert em._pause[0] == 1


class _FirstLayerPaused(EM):
    """EM whose first inner-layer try is left out, as if that layer had just been rejected."""

    def _paused(self, k: int) -> bool:
        if not getattr(self, "_paused_once", False):
            self._paused_once = True
            return True
        return super()._paused(k)


def test_a_stall_with_a_skipped_layer_is_not_convergence():
    X = engine.datasets.circle(40, rng=0)
    plain = EM([1, 4, 3, 2], max_iter=5, tol=1e9, random_state=0).fit(X)
    assert plain.converged_ and plain.n_iter_ == 1  # every gain is below tol
    em = _FirstLayerPaused([1, 4, 3, 2], max_iter=5, tol=1e9, random_state=0).fit(X)
    assert "skipped" in em.history_[0]["updates"].values()
    assert "skipped" not in em.history_[1]["updates"].values()
    assert em.converged_ and em.n_iter_ == 2  # the stall with a layer left out retried every layer first


@pytest.mark.parametrize("S", [1, 2])
def test_statistics_and_residuals_equal_direct_sums(S):
    """The vectorised E-step sums against plain sums of ``Evaluation.moments()`` over points and regions."""
    from engine.em import _residual_moments, frozen_maps, init_random, statistics

    X = engine.datasets.circle(25, rng=4)
    net = init_random([S, 4, 3, 2], X, rng=1)
    ev = engine.evaluate(net, X)
    e0, e1, E2 = ev.moments()
    e1, E2 = np.nan_to_num(e1), np.nan_to_num(E2)
    st = statistics(ev, X)
    np.testing.assert_allclose(st.M[:, :S, :S], E2.sum(axis=0), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(st.M[:, :S, S], e1.sum(axis=0), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(st.M[:, S, S], e0.sum(axis=0), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(st.X[:, :, :S], np.einsum("nd,nrs->rds", X, e1), rtol=1e-12, atol=1e-14)
    fm = frozen_maps(net, ev.partition)
    want = np.zeros((2, 2))
    for n in range(X.shape[0]):
        for r in range(ev.n_regions):
            if e0[n, r] > 0:
                A, b = ev.partition.A[r], ev.partition.b[r]  # the partition's own affine maps (eq. 2)
                m = e1[n, r] / e0[n, r]
                C = E2[n, r] / e0[n, r] - np.outer(m, m)
                d = X[n] - A @ m - b
                want += e0[n, r] * (np.outer(d, d) + A @ C @ A.T)
    np.testing.assert_allclose(_residual_moments(fm, ev, X, full=True), want, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(_residual_moments(fm, ev, X, full=False), np.diag(want), rtol=1e-10, atol=1e-13)


def test_fit_cli_passes_backoff_and_worker_options(tmp_path):
    import json

    from engine.cli import main

    net = engine.random_network([1, 4, 2], rng=0)
    engine.save_network(net, tmp_path / "m.json")
    np.save(tmp_path / "x.npy", net.sample(40, rng=1))
    args = ["fit", "--model", str(tmp_path / "m.json"), "--data", str(tmp_path / "x.npy"), "--max-iter", "2",
            "--out", str(tmp_path / "f.json"), "--history", str(tmp_path / "h.json")]
    assert main(args + ["--backoff", "0"]) == 0
    assert "evaluations" in json.loads((tmp_path / "h.json").read_text())
    assert main(args + ["--backoff", "-1"]) == 2
    assert main(args + ["--workers", "2", "--scheduler", "tcp://127.0.0.1:1"]) == 2


def test_statistics_are_computed_once_per_e_step(monkeypatch):
    """An accepted guard evaluation feeds the next inner layer's update and, when that layer is not accepted, the
    next iteration's exact step as well; its E-step sums (``statistics``) are computed once: no evaluation is passed
    to ``statistics`` twice, and the fit is bit for bit the one that recomputes them every time. The first layer's
    updates overshoot (x6) so that it is often rejected after the second was accepted."""
    import engine.em as em_module
    from engine.network import Linear

    real_update = em_module.layer_update

    def update(net, stats, fm, index):
        new = real_update(net, stats, fm, index)
        if index != 0:
            return new
        old = net.layers[0]
        return Linear(old.weight + 6 * (new.weight - old.weight), old.bias + 6 * (new.bias - old.bias))

    monkeypatch.setattr(em_module, "layer_update", update)

    class _Recomputing(EM):
        def _statistics(self, ev, X):
            masked = em_module._masked_moments(ev)
            return masked, em_module.statistics(ev, X, masked)

    X = engine.datasets.circle(60, rng=3)
    kw = dict(max_iter=4, tol=0.0, random_state=0, backoff=0, screen=False)
    plain = _Recomputing([2, 6, 5, 2], **kw).fit(X)
    seen = []
    real = em_module.statistics
    monkeypatch.setattr(em_module, "statistics", lambda ev, *a, **k: seen.append(ev) or real(ev, *a, **k))
    cached = EM([2, 6, 5, 2], **kw).fit(X)
    assert cached.log_likelihoods_ == plain.log_likelihoods_
    assert cached.history()["updates"] == plain.history()["updates"]
    assert len({id(ev) for ev in seen}) == len(seen)  # ``seen`` holds them all: no id is reused
    reuse = [h for h in cached.history_ if h["updates"]["layer1"].startswith("accepted")
             and not h["updates"]["layer0"].startswith("accepted")]
    assert reuse  # the case the reuse is for is exercised
