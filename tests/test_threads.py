"""The compiled kernels' worker threads (``engine.gaussian.threads``): every item done once, errors
re-raised, results independent of the thread count, safe from concurrent callers and after fork."""

from __future__ import annotations

import multiprocessing
import threading

import numpy as np
import pytest

import engine
from engine.gaussian import threads
from engine.gaussian.threads import run_split


@pytest.mark.parametrize("total", [0, 1, 7, 5000, 100_003])
@pytest.mark.parametrize("pieces", [1, 3, 8])
def test_run_split_covers_each_item_once(total, pieces, monkeypatch):
    monkeypatch.setenv("DGNEXACT_THREADS", "3")
    hits = np.zeros(total, dtype=np.int64)

    def work(start, stop):
        hits[start:stop] += 1

    run_split(work, total, min_per_thread=100, pieces_per_thread=pieces)
    assert np.all(hits == 1)


def test_run_split_runs_pieces_in_parallel(monkeypatch):
    """Three pieces that each wait for the other two: done only if three threads hold one at a time."""
    monkeypatch.setenv("DGNEXACT_THREADS", "3")
    barrier = threading.Barrier(3, timeout=30)
    callers = set()

    def work(start, stop):
        callers.add(threading.get_ident())
        barrier.wait()

    run_split(work, 3000, min_per_thread=1000)
    assert len(callers) == 3


def test_run_split_reraises_a_worker_error(monkeypatch):
    monkeypatch.setenv("DGNEXACT_THREADS", "2")

    def work(start, stop):
        if start > 0:
            raise ValueError("piece failed")

    with pytest.raises(ValueError, match="piece failed"):
        run_split(work, 10_000, min_per_thread=10, pieces_per_thread=4)


def _evaluate(widths, n):
    net = engine.random_network(widths, rng=0, cov_x=0.1)
    X = net.sample(n, rng=1)
    return engine.evaluate(net, X)


@pytest.mark.parametrize("widths, n", [([2, 8, 8, 3], 400), ([3, 6, 6, 3], 40)])
def test_results_do_not_depend_on_thread_count(widths, n, monkeypatch):
    monkeypatch.setenv("DGNEXACT_THREADS", "1")
    one = _evaluate(widths, n)
    monkeypatch.setenv("DGNEXACT_THREADS", "3")
    three = _evaluate(widths, n)
    np.testing.assert_array_equal(one.log_marginal, three.log_marginal)
    np.testing.assert_array_equal(one.posterior_cov, three.posterior_cov)


def test_concurrent_callers_get_their_own_results(monkeypatch):
    monkeypatch.setenv("DGNEXACT_THREADS", "2")
    expected = {w[0]: _evaluate(w, n).log_marginal for w, n in (([2, 8, 8, 3], 400), ([3, 6, 6, 3], 40))}
    got, errors = {}, []

    def call(widths, n):
        try:
            got[widths[0]] = _evaluate(widths, n).log_marginal
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    workers = [threading.Thread(target=call, args=a) for a in (([2, 8, 8, 3], 400), ([3, 6, 6, 3], 40))]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    assert not errors
    for key, value in expected.items():
        np.testing.assert_array_equal(got[key], value)


def _child(queue):
    queue.put(_evaluate([2, 8, 8, 3], 400).log_marginal)


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="no fork on this platform")
def test_forked_child_makes_its_own_pool(monkeypatch):
    monkeypatch.setenv("DGNEXACT_THREADS", "2")
    parent = _evaluate([2, 8, 8, 3], 400).log_marginal  # the parent's pool exists now
    assert threads._pool is not None
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(queue,))
    proc.start()
    child = queue.get(timeout=300)
    proc.join(timeout=60)
    assert proc.exitcode == 0
    np.testing.assert_array_equal(child, parent)


def test_bad_thread_count_is_a_one_line_input_error(monkeypatch):
    from engine.errors import DGNInputError

    monkeypatch.setenv("DGNEXACT_THREADS", "two")
    with pytest.raises(DGNInputError, match=r"^DGNEXACT_THREADS: is 'two', not a whole number; set it to"):
        threads.worker_threads()
