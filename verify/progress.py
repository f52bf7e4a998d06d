"""Exact evaluation of many points with a progress bar on stderr and a time limit.

Used by ``crosscheck`` and ``grade``: the partition (Lemma 3) is computed once, then the points are
evaluated (Theorem 1 eq. 5, Prop. 2) in chunks; between chunks the bar advances and the time limit is
checked. A run stopped by the limit returns the points done so far and says how many.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

import numpy as np

from engine.errors import DGNInputError


@dataclass
class Exact:
    """Exact values on the first ``n_done`` points (``n_done < N`` only when the time limit stopped it)."""

    log_marginal: np.ndarray
    posterior_mean: np.ndarray
    posterior_cov: np.ndarray
    n_regions: int
    n_done: int
    n_total: int
    seconds: float

    @property
    def complete(self) -> bool:
        return self.n_done == self.n_total


def check_time_limit(value) -> float | None:
    if value is None:
        return None
    if not (isinstance(value, int | float) and np.isfinite(value) and value > 0):
        raise DGNInputError("time-limit", f"must be a positive number of seconds, got {value!r}")
    return float(value)


def exact_values(net, X: np.ndarray, *, progress: bool = False, time_limit: float | None = None,
                 max_regions: int | None = None, n_chunks: int = 20, desc: str = "exact") -> Exact:
    """Theorem 1 / Prop. 2 for every row of X, chunk by chunk (bar on stderr, stop at ``time_limit``)."""
    from engine import evaluate
    from engine.partition import partition

    time_limit = check_time_limit(time_limit)
    t0 = time.perf_counter()
    part = partition(net) if max_regions is None else partition(net, max_regions=max_regions)
    N = len(X)
    size = max(1, -(-N // n_chunks))
    done: list = []
    bar = _bar(N, progress, desc)
    for start in range(0, N, size):
        if time_limit is not None and time.perf_counter() - t0 > time_limit:
            break
        done.append(evaluate(net, X[start : start + size], part=part))
        bar.update(len(X[start : start + size]))
    bar.close()
    S = net.latent_dim
    cat = (lambda name, shape: np.concatenate([getattr(e, name) for e in done]) if done
           else np.empty((0, *shape)))
    return Exact(cat("log_marginal", ()), cat("posterior_mean", (S,)), cat("posterior_cov", (S, S)),
                 int(len(part)), int(sum(len(e.log_marginal) for e in done)), N,
                 round(time.perf_counter() - t0, 3))


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _bar(total: int, progress: bool, desc: str):
    if not progress:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="pt", file=sys.stderr, leave=False)
