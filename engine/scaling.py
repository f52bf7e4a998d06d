"""Evaluating many points: row blocks, local worker processes, or an existing Dask cluster.

Theorem 1 (eq. 5) and the posterior moments of Prop. 2 are computed point by point: the terms of
one data point never involve another, so the rows of X can be split into blocks without changing any
number. :func:`evaluate_many` uses that to

* bound memory: the (N, R) work arrays of one call become (block, R), so the peak follows the block,
  not N x R (``region_terms=False`` also drops the (N, R, S, S) per-region terms from the result);
* spread the blocks over ``workers`` local processes or over a Dask cluster (``scheduler``: an address
  such as ``tcp://host:8786`` or a ``distributed.Client``). The partition is computed once, here, and
  shipped to each worker once; the workers only integrate.

Every block is evaluated by the same :func:`engine.distributions.evaluate` as a single call, on the same
partition, and the results are concatenated in row order. For a given block size the result is the same
bit for bit here, on worker processes and on Dask (and for any thread count). Across block sizes it agrees
to rounding only: BLAS picks different kernels for products of different heights (a one-row product is a
gemv), which moves the last bits of the per-region means (measured: <= 4e-15 absolute on log-weights of
order 1, 2e-16 on posterior moments).
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from .errors import DGNInputError

PAIRS_PER_BLOCK = 1_000_000  # (point, region) pairs per block when the caller gives no block size
HIGHDIM_PAIRS_PER_BLOCK = 4_000_000  # ... at S = 4 (16 / S^2 of it at S > 4): see rows_per_block


def rows_per_block(n_regions: int, latent_dim: int, pairs: int | None = None) -> int:
    """Rows per block so that one block holds about ``pairs`` (point, region) pairs (scaled down by the
    S x S per-region covariances for S >= 3). Without ``pairs``: ``PAIRS_PER_BLOCK`` so scaled, and at S >= 4
    ``HIGHDIM_PAIRS_PER_BLOCK`` times 16 / S^2 (the same bytes of per-region covariances as at S = 4). A pair costs
    ~0.3 ms of quadrature there (S = 2: ~1 us), and each block pays a per-region preamble (whitening, closest points,
    bounds, one kernel call per region with pairs): ``[4, 16, 16, 5]`` (33,153 regions) got 7-point blocks, 15 for
    100 points; now one block of up to 120 points. 100 points there (``bench_s4.py --memory 100``, shared machine):
    everything but the cone kernel 144.7 s CPU in one block against 249.3 s in 15, peak RSS 1,773 MiB against 1,938
    MiB (547 before ``evaluate``; the 15 blocks' per-region terms are concatenated at the end)."""
    if pairs is None:
        if latent_dim >= 4:
            return max(1, HIGHDIM_PAIRS_PER_BLOCK * 16 // (latent_dim * latent_dim) // max(1, n_regions))
        pairs = PAIRS_PER_BLOCK
    weight = max(1, latent_dim * latent_dim // 4)
    return max(1, pairs // max(1, n_regions * weight))


def check_block_options(chunk_size, workers, scheduler) -> None:
    """One-line errors for the block / worker options (``DGNInputError``)."""
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int | np.integer)
                                   or chunk_size < 1):
        raise DGNInputError("chunk_size", f"must be a positive integer, got {chunk_size!r}",
                            "pass the number of rows per block, or None to pick it from the partition size")
    if isinstance(workers, bool) or not isinstance(workers, int | np.integer) or workers < 1:
        raise DGNInputError("workers", f"must be a positive integer, got {workers!r}",
                            "pass the number of local worker processes (1 = this process)")
    if scheduler is not None and workers != 1:
        raise DGNInputError("workers", "is set together with a Dask scheduler",
                            "pass either --scheduler (the cluster's workers are used) or --workers")


def evaluate_many(net, X, part, *, chunk_size: int | None = None, workers: int = 1, scheduler=None,
                  region_terms: bool = True, **evaluate_kwargs):
    """:func:`engine.evaluate` of ``X`` in row blocks, here, on ``workers`` processes or on a Dask cluster.

    ``part`` is the partition of ``net`` (computed once by the caller). ``evaluate_kwargs`` go to every
    block's ``evaluate`` (``method``, ``rng``, ``prune``). Returns one :class:`Evaluation` in row order;
    with ``region_terms=False`` its ``region_log_weights``, ``region_means`` and ``region_covs`` are None.
    """
    check_block_options(chunk_size, workers, scheduler)
    rows = int(chunk_size) if chunk_size is not None else rows_per_block(len(part), net.latent_dim)
    blocks = [X[s:s + rows] for s in range(0, X.shape[0], rows)] or [X]
    task = dict(evaluate_kwargs, chunk_size=rows, region_terms=region_terms)
    if scheduler is not None:
        results = _on_dask(scheduler, net, part, blocks, task)
    elif workers > 1 and len(blocks) > 1:
        results = _on_processes(workers, net, part, blocks, task)
    else:
        results = [_evaluate_block(net, part, block, task) for block in blocks]
    return concatenate(results, part)


def _evaluate_block(net, part, X, task):
    from .distributions import evaluate

    ev = evaluate(net, X, part=part, **task)
    ev.partition = None  # shipped once by the caller, not back with every block
    return ev


def concatenate(results, part):
    """One :class:`Evaluation` from block results in row order."""
    from .distributions import Evaluation

    def cat(name):
        values = [getattr(r, name) for r in results]
        return None if any(v is None for v in values) else np.concatenate(values, axis=0)

    methods = sorted({m for r in results for m in r.method.split("+")})
    return Evaluation(log_marginal=cat("log_marginal"), posterior_mean=cat("posterior_mean"),
                      posterior_cov=cat("posterior_cov"), region_log_weights=cat("region_log_weights"),
                      region_means=cat("region_means"), region_covs=cat("region_covs"),
                      n_regions=results[0].n_regions, method="+".join(methods),
                      log_marginal_error=cat("log_marginal_error"), partition=part,
                      posterior_mean_error=cat("posterior_mean_error"), posterior_cov_error=cat("posterior_cov_error"))


# -- local processes: the partition travels once per worker, through the pool's initializer ----------

_WORKER_STATE: dict = {}


def _set_worker_state(net, part, task):
    _WORKER_STATE.update(net=net, part=part, task=task)


def _worker_block(X):
    return _evaluate_block(_WORKER_STATE["net"], _WORKER_STATE["part"], X, _WORKER_STATE["task"])


def _on_processes(workers, net, part, blocks, task):
    threads = os.environ.get("DGNEXACT_THREADS")
    # each process integrates with one thread unless the user chose otherwise: workers x threads <= cores
    os.environ.setdefault("DGNEXACT_THREADS", "1")
    try:
        with ProcessPoolExecutor(max_workers=min(workers, len(blocks)), initializer=_set_worker_state,
                                 initargs=(net, part, task), mp_context=multiprocessing.get_context("spawn")) as pool:
            return list(pool.map(_worker_block, blocks))
    finally:
        if threads is None:
            os.environ.pop("DGNEXACT_THREADS", None)


# -- Dask ---------------------------------------------------------------------------------------------

def _on_dask(scheduler, net, part, blocks, task):
    try:
        from distributed import Client
    except ImportError:  # pragma: no cover - dask[distributed] is a core dependency
        raise DGNInputError("scheduler", "needs the 'distributed' package", "pip install 'dask[distributed]'") from None
    own = isinstance(scheduler, str)
    if not own and not isinstance(scheduler, Client):
        raise DGNInputError("scheduler", f"must be an address like tcp://host:8786 or a distributed.Client, "
                            f"got {type(scheduler).__name__}", "pass the scheduler's address")
    try:
        client = Client(scheduler, timeout="10s") if own else scheduler
    except OSError as exc:
        raise DGNInputError("scheduler", f"cannot reach {scheduler}: {exc}",
                            "start the cluster first or check the address") from None
    try:
        shared = client.scatter([net, part], broadcast=True)
        futures = client.map(_evaluate_block, [shared[0]] * len(blocks), [shared[1]] * len(blocks), blocks,
                             [task] * len(blocks), pure=False)
        return client.gather(futures)
    finally:
        if own:
            client.close()
