"""S = 5 (and 6) figures of issue 14: ``[5, 8, 8, 6]`` x 20 points <= 5 min, every ``log_marginal_error`` <= 1e-6.

Workload ``--s 5``: ``net = random_network([5, 8, 8, 6], rng=0, cov_x=0.1)``, ``X = net.sample(100, rng=1)[:N]``
(``--points N``, default 20). Reports, one JSON line each:

* the partition (seconds, regions);
* ``evaluate(net, X, part=part)``: wall and CPU seconds, partition included in ``total_seconds``, the largest
  ``log_marginal_error``, the pairs per point before and after the pruning to the target (``bench_s4._count_pairs``),
  how many pairs the S = 5 cones (``highdim.cones5``) certified and how many went to RQMC, and the wall time per pair;
* with ``--pair-cost K``: CPU ms per pair of the cones alone (mass, and mass with moments; the region's flags built
  once, as in ``evaluate``) on the K regions of largest closest-point bound at point 0, and of the first construction
  (the graded outer rule over S' = 4 evaluations, ``cones5.mixture_log_mass``, mass only) on the first
  ``min(K, 3)`` of them, with the two masses' difference against their bars.

``--s 6`` (``[6, 6, 6, 6]``) counts the pairs of the ridge integrals (``highdim.cones6``) and RQMC; ``--each`` evaluates
the points one call at a time from ``--first`` (a line per point). ``--s6-route rules`` takes the S = 6 cones by the
outer rules over S' = 4 rows (``cones6.CLOSED6 = False``, the route before ``cone6_kernel``) for a comparison on the
same machine.

Usage: ``.venv/bin/python benchmarks/bench_s56.py --s 5 [--points 20] [--pair-cost 20]``,
``.venv/bin/python benchmarks/bench_s56.py --s 6 --each --first 0 --points 20 [--s6-route rules]``
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
from bench_s4 import _count_pairs  # this folder is sys.path[0] when the script runs

import engine
from engine.distributions import evaluate, posterior_region_params, region_gaussians
from engine.partition import partition

WORKLOADS = {5: [5, 8, 8, 6], 6: [6, 6, 6, 6]}


def _emit(**kw):
    print(json.dumps(kw), flush=True)


def _count_routes(S=5):
    """Counts of the S = 5 pairs the cones certified and of those RQMC took (``cones5.region5_moments``); at S = 6
    the same for ``cones6.region_rows`` (the ridge integrals)."""
    if S == 6:
        return _count_routes6()
    import engine.gaussian.highdim.cones5 as c5

    counts = {"cones": 0, "rqmc": 0}
    real = getattr(c5.region5_moments, "real", c5.region5_moments)

    def counting(Nrm, D, *args, **kw):
        out = real(Nrm, D, *args, **kw)
        counts["rqmc"] += int(out[4].sum())
        counts["cones"] += int(D.shape[0] - out[4].sum())
        return out

    counting.real = real
    c5.region5_moments = counting
    return counts


def _count_routes6():
    """S = 6: pairs the ridge integrals settled (``cones6.region_rows``' ``by_cones``) and pairs RQMC took."""
    import engine.gaussian.highdim.cones6 as c6

    counts = {"cones": 0, "rqmc": 0}
    real = getattr(c6.region_rows, "real", c6.region_rows)

    def counting(*args, **kw):
        out = real(*args, **kw)
        counts["cones"] += int(out[4].sum())
        counts["rqmc"] += int(out[4].size - out[4].sum())
        return out

    counting.real = real
    c6.region_rows = counting
    return counts


def _evaluate_each(S, net, X, part, first):
    """``--each``: the points one ``evaluate`` call at a time (a figure per point as it comes; S = 6 points take
    seconds to minutes each), with the pairs and routes of each."""
    for i in range(X.shape[0]):
        pairs, routes = _count_pairs(), _count_routes(S)
        t, c = time.perf_counter(), time.process_time()
        ev = evaluate(net, X[i:i + 1], part=part)
        dt = time.perf_counter() - t
        _emit(workload=f"s{S}", what="evaluate one point", point=first + i, seconds=dt,
              cpu_seconds=time.process_time() - c, log_marginal=float(ev.log_marginal[0]),
              log_marginal_error=float(ev.log_marginal_error[0]), pairs=pairs["after"],
              pairs_by_cones=routes["cones"], pairs_by_rqmc=routes["rqmc"])


def _evaluate(S, net, X, part, t_part):
    pairs, routes = _count_pairs(), _count_routes(S)
    t, c = time.perf_counter(), time.process_time()
    ev = evaluate(net, X, part=part)
    dt, cpu = time.perf_counter() - t, time.process_time() - c
    n = X.shape[0]
    err = float(np.max(ev.log_marginal_error))
    _emit(workload=f"s{S}", widths=WORKLOADS[S], what="evaluate", points=n, seconds=dt, cpu_seconds=cpu,
          total_seconds=dt + t_part, max_log_marginal_error=err, meets_target=bool(err <= 1e-6), method=ev.method,
          pairs_per_point_before_target_pruning=pairs["before"] / n, pairs_per_point=pairs["after"] / n,
          pairs_by_cones=routes["cones"], pairs_by_rqmc=routes["rqmc"],
          wall_ms_per_pair=1e3 * dt / max(routes["cones"] + routes["rqmc"], 1))


def _heaviest_regions(net, X, part, k):
    """Whitened data of the k pointed regions of largest closest-point bound at point 0."""
    from engine.gaussian.highdim.cones5 import whitened5
    from engine.gaussian.highdim.sliced import closest_distance

    rg = region_gaussians(net, part)
    mu, log_norm = posterior_region_params(net, part, X[:1], rg)
    cand = []
    for r in range(len(part)):
        p = part[r].polytope
        if p.lineality.size or not p.vertices.size:
            continue
        data = whitened5(p, np.linalg.cholesky(rg.cov[r]), mu[:1, r])
        cand.append((-(float(log_norm[0, r]) + float(closest_distance(data[0], data[1])[1][0])), r, data))
    cand.sort(key=lambda q: q[:2])
    return [d for _, _, d in cand[:k]]


def _pair_cost(S, net, X, part, k):
    import engine.gaussian.highdim.cones5 as c5

    regions = _heaviest_regions(net, X, part, k)
    t_mass = t_mom = 0.0
    for Nrm, D, Yv, Yr in regions:
        c = time.process_time()
        sh = c5.shape5(Nrm, D[0], Yv[0], Yr)
        c5.cone5_log_mass_batch(Nrm, D, Yv, Yr, sh, threaded=False)
        t_mass += time.process_time() - c
        c = time.process_time()
        c5.cone5_moments_batch(Nrm, D, Yv, Yr, moments=2, threaded=False)
        t_mom += time.process_time() - c
    _emit(workload=f"s{S}", what="cones5 per pair (CPU, one thread, flags included)", pairs=len(regions),
          mass_ms=1e3 * t_mass / len(regions), mass_and_moments_ms=1e3 * t_mom / len(regions))
    worst, t_old = 0.0, 0.0
    for Nrm, D, Yv, Yr in regions[:min(k, 3)]:
        c = time.process_time()
        lm2, rel2, _ = c5.mixture_log_mass(Nrm, D[0], Yv[0], Yr)
        t_old += time.process_time() - c
        lm, rel, _ = c5.cone5_log_mass(Nrm, D[0], Yv[0], Yr)
        worst = max(worst, abs(math.expm1(lm - lm2)) / (rel + rel2))
    _emit(workload=f"s{S}", what="first construction (outer rule over S' = 4) per pair, mass only (CPU)",
          pairs=min(k, 3), ms=1e3 * t_old / min(k, 3), max_diff_over_bars=worst)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--s", type=int, choices=sorted(WORKLOADS), default=5)
    ap.add_argument("--points", type=int, default=20)
    ap.add_argument("--pair-cost", type=int, default=0)
    ap.add_argument("--each", action="store_true", help="one evaluate call per point, a line each")
    ap.add_argument("--first", type=int, default=0, help="index of the first point")
    ap.add_argument("--s6-route", choices=("closed", "rules"), default="closed",
                    help="S = 6 cones: the closed outer integral (default) or the outer rules (the route before)")
    args = ap.parse_args()
    if args.s6_route == "rules":
        import engine.gaussian.highdim.cones6 as c6

        c6.CLOSED6 = False
    net = engine.random_network(WORKLOADS[args.s], rng=0, cov_x=0.1)
    X_all = net.sample(100, rng=1)
    X = X_all[args.first:args.first + args.points]
    t = time.perf_counter()
    part = partition(net)
    t_part = time.perf_counter() - t
    _emit(workload=f"s{args.s}", widths=WORKLOADS[args.s], what="partition", seconds=t_part, regions=len(part))
    if args.pair_cost:
        _pair_cost(args.s, net, X_all[:1], part, args.pair_cost)
    if args.points and args.each:
        _evaluate_each(args.s, net, X, part, args.first)
    elif args.points:
        _evaluate(args.s, net, X, part, t_part)


if __name__ == "__main__":
    main()
