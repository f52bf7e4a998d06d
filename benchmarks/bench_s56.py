"""S = 5 and S = 6 figures (issue 14): ``evaluate`` of ``[5, 8, 8, 6]`` / ``[6, 6, 6, 6]`` point by point, incl.
the partition, and the per-pair cost of the S-specific batch integrator (``polytopes.BATCH_INTEGRATORS[S]``).

Workloads: ``net = random_network(widths, rng=0, cov_x=0.1)``, ``X = net.sample(100, rng=1)``; ``--s 5`` is
``[5, 8, 8, 6]``, ``--s 6`` is ``[6, 6, 6, 6]``. One JSON line per figure: the partition (seconds, regions), then per
point (``--points N``: the first N, one ``evaluate`` call each, the partition built once outside) the wall and CPU
seconds, log p, ``log_marginal_error``, the pairs the batch integrator received, the seconds spent in it, and
(S = 6) how many pairs took the ridge integrals (``cones6``) and how many RQMC; a final line sums them, with the
partition, against the issue's target (20 points <= 5 min, error <= 1e-6). Usage:

    .venv/bin/python benchmarks/bench_s56.py --s 6 --points 20
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

import engine
from engine.distributions import evaluate
from engine.partition import partition

WORKLOADS = {5: [5, 8, 8, 6], 6: [6, 6, 6, 6]}


def _emit(**kw):
    print(json.dumps(kw), flush=True)


def _instrument(S):
    """Counters around the S-specific batch integrator (pairs, seconds) and, at S = 6, the routes of ``cones6``."""
    import engine.gaussian.polytopes as P

    st = {"pairs": 0, "batch_seconds": 0.0, "cones6_pairs": 0, "cones6_seconds": 0.0, "rqmc_pairs": 0}
    batch = P.BATCH_INTEGRATORS.get(S)
    if batch is not None:
        def timed(req, geo, res):
            st["pairs"] += int(req.need.sum())
            t = time.perf_counter()
            out = batch(req, geo, res)
            st["batch_seconds"] += time.perf_counter() - t
            return out

        P.BATCH_INTEGRATORS[S] = timed
    if S == 6:
        import engine.gaussian.highdim.cones6 as c6

        cone, rows = c6.cone6_moments, c6.region_rows

        def cone_timed(*a, **k):
            t = time.perf_counter()
            out = cone(*a, **k)
            st["cones6_seconds"] += time.perf_counter() - t
            st["cones6_pairs"] += 1
            return out

        def rows_counted(Nrm, D, Yv, Yr, use, tol, moments, fallback):
            def fb(Dm):
                st["rqmc_pairs"] += Dm.shape[0]
                return fallback(Dm)
            return rows(Nrm, D, Yv, Yr, use, tol, moments, fb)

        c6.cone6_moments, c6.region_rows = cone_timed, rows_counted
    return st


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--s", type=int, choices=sorted(WORKLOADS), default=6)
    ap.add_argument("--points", type=int, default=20)
    ap.add_argument("--first", type=int, default=0, help="index of the first point")
    args = ap.parse_args(argv)
    S = args.s
    net = engine.random_network(WORKLOADS[S], rng=0, cov_x=0.1)
    X = net.sample(100, rng=1)
    t = time.perf_counter()
    part = partition(net)
    t_part = time.perf_counter() - t
    _emit(s=S, widths=WORKLOADS[S], what="partition", seconds=t_part, regions=len(part))
    st = _instrument(S)
    total, errs = t_part, []
    for i in range(args.first, args.first + args.points):
        for k in st:
            st[k] = 0
        t, c = time.perf_counter(), time.process_time()
        ev = evaluate(net, X[i:i + 1], part=part)
        dt = time.perf_counter() - t
        total += dt
        err = np.inf if ev.log_marginal_error is None else float(ev.log_marginal_error[0])
        errs.append(err)
        per_pair = st["cones6_seconds"] / st["cones6_pairs"] if st["cones6_pairs"] else None
        _emit(s=S, what="evaluate one point", point=i, seconds=dt, cpu_seconds=time.process_time() - c,
              log_marginal=float(ev.log_marginal[0]), log_marginal_error=err, method=ev.method,
              seconds_per_cones6_pair=per_pair, **st)
    _emit(s=S, what="total", points=args.points, seconds_incl_partition=total, max_log_marginal_error=max(errs),
          target="20 points <= 300 s, error <= 1e-6")


if __name__ == "__main__":
    main()
