"""S = 3 speed target (issue 3): ``engine.evaluate`` on a random [3, 16, 16, 5] network.

Times ``evaluate(net, X[:N])`` (net = ``random_network([3, 16, 16, 5], rng=0, cov_x=0.1)``, X =
``net.sample(100, rng=1)``, 4297 regions) for each N given, the partition built once outside the timing,
and reports seconds per (point, region) pair. ``--pairs`` also reports, for the pairs that evaluate
integrates (after its pruning bound), the share that the batched cone-decomposition path
(``solid.batch_solid_moments``) hands back to the per-region nested quadrature. ``--prior`` reports the
error of the sum of the prior masses of the [3, 16, 16] partition (they sum to 1, Prop. 1). ``--workload``
times issue 14's "S <= 3 no slower" pair: ``evaluate`` of the 100 points on ``[3, 16, 16, 5]`` and on
``random_network([2, 16, 16, 5], rng=0, cov_x=0.1)`` (``net.sample(100, rng=1)``), partitions built outside the
timing, ``--repeat`` times each, and reports wall and CPU seconds (``time.process_time``: all threads), the largest
``log_marginal_error`` and a hash of the ``log_marginal`` bits. Usage:

    .venv/bin/python benchmarks/bench_s3.py [--points 2 10 100] [--pairs] [--prior] [--workload [--repeat 3]]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import engine
from engine.partition import partition


def _setup():
    net = engine.random_network([3, 16, 16, 5], rng=0, cov_x=0.1)
    X = net.sample(100, rng=1)
    part = partition(net)
    return net, X, part


def _pairs(net, X, part):
    from engine.distributions import (
        PRUNE_NATS,
        log_mass_upper_bound,
        posterior_region_params,
        region_gaussians,
    )
    from engine.gaussian.solid import SolidGeometry, batch_solid_moments

    rg = region_gaussians(net, part)
    mu, log_norm = posterior_region_params(net, part, X, rg)
    upper = log_norm + log_mass_upper_bound(part, mu, rg.cov)
    need = upper >= upper.max(axis=1, keepdims=True) - PRUNE_NATS - 60.0  # a superset of evaluate's pairs
    t0 = time.perf_counter()
    geo = SolidGeometry([r.polytope for r in part], rg.cov)
    t_geo = time.perf_counter() - t0
    pn, pr = np.nonzero(need & geo.ok[None])
    t0 = time.perf_counter()
    flagged = np.zeros(pr.size, dtype=bool)
    for s0 in range(0, pr.size, 8192):
        sl = slice(s0, s0 + 8192)
        flagged[sl] = batch_solid_moments(geo, pr[sl], mu[pn[sl], pr[sl]], 2)[4]
    t_batch = time.perf_counter() - t0
    print(f"pairs {pr.size} of {need.size} (regions not batched: {int((~geo.ok).sum())}); geometry {t_geo:.2f} s; "
          f"batched pass {t_batch:.2f} s = {1e6 * t_batch / max(pr.size, 1):.1f} us/pair; "
          f"flagged {flagged.mean():.2e} ({int(flagged.sum())} pairs in {np.unique(pr[flagged]).size} regions)")


def _workload(repeat):
    """``evaluate`` of 100 points on the S = 3 and S = 2 networks, partitions outside the timing."""
    import hashlib

    for S in (3, 2):
        net = engine.random_network([S, 16, 16, 5], rng=0, cov_x=0.1)
        X = net.sample(100, rng=1)
        t0 = time.perf_counter()
        part = partition(net)
        t_part = time.perf_counter() - t0
        for k in range(repeat):
            c0, t0 = time.process_time(), time.perf_counter()
            ev = engine.evaluate(net, X, part=part)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            h = hashlib.sha256(np.ascontiguousarray(ev.log_marginal).tobytes()).hexdigest()[:8]
            print(f"[{S}, 16, 16, 5] x 100 ({len(part)} regions, partition {t_part:.2f} s) run {k + 1}: "
                  f"{wall:.2f} s wall, {cpu:.2f} s CPU; max log_marginal_error {np.max(ev.log_marginal_error):.2e}; "
                  f"log p hash {h}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--points", type=int, nargs="*", default=[2, 10])
    ap.add_argument("--pairs", action="store_true")
    ap.add_argument("--prior", action="store_true")
    ap.add_argument("--workload", action="store_true")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    if args.workload:
        _workload(args.repeat)
        return
    net, X, part = _setup()
    R = len(part)
    print(f"[3, 16, 16, 5]: {R} regions")
    if args.prior:
        from engine.distributions import prior_region_log_masses

        net3 = engine.random_network([3, 16, 16], rng=0)
        part3 = partition(net3)
        t0 = time.perf_counter()
        lm = prior_region_log_masses(net3, part3)
        dt = time.perf_counter() - t0
        print(f"[3, 16, 16] prior masses: {len(part3)} regions, sum - 1 = {np.exp(lm).sum() - 1.0:.2e} ({dt:.1f} s)")
    if args.pairs:
        _pairs(net, X, part)
    for N in args.points:
        t0 = time.perf_counter()
        ev = engine.evaluate(net, X[:N], part=part)
        dt = time.perf_counter() - t0
        print(f"N = {N:4d}: {dt:8.2f} s, {1e6 * dt / (N * R):8.2f} us per (point, region) pair; "
              f"method {ev.method}; log p(x)[:2] = {ev.log_marginal[:2]}")


if __name__ == "__main__":
    main()
