"""S >= 3 partition: the compiled double description (``engine.dd_kernel``) against the Python reference.

    python benchmarks/bench_partition_dd.py [--repeat 5] [--nets 3,16,16 4,8,8] [--python-limit 30]

For each net (random ReLU, ``engine.random_network(widths + [2], rng=0)``) it prints the region count, the
median CPU time of the compiled path and of the Python reference (``engine.partition.USE_COMPILED_DD =
False``) over ``--repeat`` runs, the two alternating, and whether both return the same sign patterns. CPU time
of the process, not wall time, so other jobs on a shared machine inflate neither side. The Python reference is
skipped (one run only, then "-") on a net where one run takes more than ``--python-limit`` seconds.
Targets (issue 15 item 1, issue 14 item 3): [3,16,16] <= 0.2 s, [3,32,32] <= 5 s, [4,8,8] <= 0.3 s,
[4,16,16] <= 10 s.
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import time

import numpy as np

import engine

NETS = [[3, 16, 16], [3, 32, 32], [4, 8, 8], [4, 16, 16], [5, 8, 8], [6, 6, 6]]
TARGETS = {(3, 16, 16): 0.2, (3, 32, 32): 5.0, (4, 8, 8): 0.3, (4, 16, 16): 10.0}
_part = importlib.import_module("engine.partition")


def _timed(net, compiled: bool):
    _part.USE_COMPILED_DD = compiled
    try:
        t = time.process_time()
        P = _part.partition(net, max_regions=10**7)
        return time.process_time() - t, P
    finally:
        _part.USE_COMPILED_DD = True


def bench(widths, repeat: int, python_limit: float) -> dict:
    net = engine.random_network(list(widths) + [2], rng=0)
    _timed(net, True)  # load the compiled kernel
    tc, tp, same, n = [], [], None, 0
    for _ in range(repeat):
        t, P = _timed(net, True)
        tc.append(t)
        n = len(P)
        if tp and tp[-1] > python_limit:
            continue
        t, Q = _timed(net, False)
        tp.append(t)
        same = same is not False and bool(np.array_equal(P.signs, Q.signs))
    return {"net": widths, "regions": n, "compiled": statistics.median(tc),
            "python": statistics.median(tp) if len(tp) > 1 or tp[0] <= python_limit else None, "same": same}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--python-limit", type=float, default=30.0)
    ap.add_argument("--nets", nargs="*", default=None, help="nets as comma-separated widths, e.g. 3,16,16")
    args = ap.parse_args(argv)
    nets = [[int(x) for x in s.split(",")] for s in args.nets] if args.nets else NETS
    print(f"{'net':<14}{'regions':>9}{'compiled s':>12}{'python s':>11}{'speed-up':>10}{'same':>6}{'target s':>10}")
    for widths in nets:
        row = bench(widths, args.repeat, args.python_limit)
        py, tc = row["python"], row["compiled"]
        target = TARGETS.get(tuple(widths))
        py_s = "-" if py is None else f"{py:.3f}"
        ratio = "-" if py is None else f"{py / max(tc, 1e-9):.1f}x"
        print(f"{str(widths):<14}{row['regions']:>9}{tc:>12.3f}{py_s:>11}{ratio:>10}{str(row['same']):>6}"
              f"{'-' if target is None else target:>10}", flush=True)


if __name__ == "__main__":
    main()
