"""Timing of the polytope integrals (issue 3): fast path vs the paper's triangulation, scaling with S.

Prints time per (point, region) pair (best of 3 wall-clock runs, and CPU time) for the regions of
random networks [S, 8, 8, 3], N points drawn around the origin, one covariance per region (the shape of
Theorem 1), through ``polytope_moments_batch`` (what ``engine.evaluate`` calls). Usage:

    .venv/bin/python benchmarks/bench_integrals.py [--points 100] [--regions 20]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from engine.gaussian.polytopes import polytope_moments_batch
from engine.network import random_network
from engine.partition import partition


def _time(part, S, N, n_regions, method):
    rng = np.random.default_rng(0)
    A = rng.normal(size=(S, S))
    cov = A @ A.T + 0.5 * np.eye(S)
    mu = rng.normal(size=(N, S))
    polys = [r.polytope for r in list(part)[:n_regions]]
    R = len(polys)
    means = np.broadcast_to(mu, (R, N, S))
    covs = np.broadcast_to(cov, (R, S, S))
    best, cpu = np.inf, np.inf
    for _ in range(3 if S == 2 else 1):
        t0, c0 = time.perf_counter(), time.process_time()
        polytope_moments_batch(polys, means, covs, method=method, rng=0)
        best = min(best, time.perf_counter() - t0)
        cpu = min(cpu, time.process_time() - c0)
    return best / (N * R), cpu / (N * R)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--points", type=int, default=100)
    ap.add_argument("--regions", type=int, default=20)
    args = ap.parse_args(argv)
    print(f"{'S':>2} {'method':>14} {'regions':>8} {'points':>7} {'us/pair':>10} {'cpu us/pair':>12}")
    for S, methods, N in [(2, ["auto", "slices"], args.points),
                          (3, ["auto", "triangulation"], max(args.points // 10, 2)),
                          (4, ["auto"], max(args.points // 10, 2))]:
        part = partition(random_network([S, 8, 8, 3], rng=0))
        nreg = min(args.regions, len(part)) if S == 2 else min(max(args.regions // 4, 2), len(part))
        for m in methods:
            wall, cpu = _time(part, S, N, nreg, m)
            print(f"{S:>2} {m:>14} {nreg:>8} {N:>7} {1e6 * wall:>10.1f} {1e6 * cpu:>12.1f}")


if __name__ == "__main__":
    main()
