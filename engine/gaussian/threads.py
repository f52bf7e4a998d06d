"""Worker threads for the compiled per-pair kernels (``planar.kernel``, ``solid.edges``, ``solid.kernel``).

The kernels are numba functions compiled with ``nogil=True`` that fill disjoint slices of their output
arrays, so plain Python threads run them in parallel. Plain threads rather than numba's ``prange``
keep the engine safe to call from several threads of one process and after ``fork`` (Dask workers,
multiprocessing pools): numba's default workqueue layer is neither. One pool serves the process; it is
created on first use and dropped in a forked child, which makes its own.
"""

from __future__ import annotations

import itertools
import os
import threading
from concurrent.futures import ThreadPoolExecutor, wait

from ..errors import DGNInputError

_pool: ThreadPoolExecutor | None = None
_pool_size = 0
_lock = threading.Lock()


def worker_threads() -> int:
    """Threads for the compiled kernels: ``$DGNEXACT_THREADS`` or the CPUs this process may use."""
    env = os.environ.get("DGNEXACT_THREADS")
    if env:
        try:
            n = int(env)
        except ValueError:
            raise DGNInputError("DGNEXACT_THREADS", f"is {env!r}, not a whole number",
                                "set it to a thread count such as 2, or unset it to use every CPU") from None
        if n < 1:
            raise DGNInputError("DGNEXACT_THREADS", f"is {env!r}, not a positive thread count",
                                "set it to 1 or more, or unset it to use every CPU")
        return n
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def _get_pool(n: int) -> ThreadPoolExecutor:
    global _pool, _pool_size
    with _lock:
        if _pool is None or _pool_size < n:
            if _pool is not None:
                _pool.shutdown(wait=False)
            _pool, _pool_size = ThreadPoolExecutor(max_workers=n, thread_name_prefix="dgnexact"), n
        return _pool


def _forget_pool_in_child() -> None:
    global _pool, _pool_size, _lock
    _pool, _pool_size, _lock = None, 0, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool_in_child)


def run_split(work, total: int, *, min_per_thread: int, pieces_per_thread: int = 1) -> None:
    """Call ``work(start, stop)`` over ``[0, total)`` cut into contiguous pieces, in parallel.

    At most :func:`worker_threads` threads, each given at least ``min_per_thread`` items (below that the
    start-up costs more than it saves); ``pieces_per_thread > 1`` cuts finer pieces that idle threads
    pick up, for work whose cost per item varies. The calling thread works too, and exceptions from any
    piece are re-raised here.
    """
    threads = min(worker_threads(), max(1, total // max(1, min_per_thread)))
    if threads == 1:
        if total:
            work(0, total)
        return
    pieces = threads * max(1, pieces_per_thread)
    cuts = [total * k // pieces for k in range(pieces + 1)]
    ticket = itertools.count()  # next() on a count is atomic under the GIL: each piece is taken once

    def worker() -> None:
        k = next(ticket)
        while k < pieces:
            work(cuts[k], cuts[k + 1])
            k = next(ticket)

    pool = _get_pool(threads - 1)
    jobs = [pool.submit(worker) for _ in range(threads - 1)]
    try:
        worker()
    finally:
        wait(jobs)
    for job in jobs:
        job.result()
