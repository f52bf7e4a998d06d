"""Peak memory and time of large evaluations, each in a fresh process (issue: scale).

    python benchmarks/bench_scale.py [--quick] [--only wide]

Workloads: S = 1 ``[1, 32, 32, 10]`` with N = 100,000 and S = 2 ``[2, 16, 16, 5]`` with N = 20,000 (rows in
blocks of about 1e6 (point, region) pairs, per-region terms dropped), the wide decoder
``[2, 128, 128, 64]`` with N = 1,000 (per-region terms dropped too), and the cold start: the first S = 2
and S = 3 ``evaluate`` of a
process (numba kernels loaded from the on-disk cache that ``make setup`` fills). Peak memory is the
child's own maximum resident set size (``resource.getrusage``); CPU time (``process_time``, all threads) is printed
beside the evaluate's wall time for machines shared with other jobs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

WORKLOADS = {
    "S1 [1,32,32,10] N=100000": ([1, 32, 32, 10], 100_000, False),
    "S2 [2,16,16,5] N=20000": ([2, 16, 16, 5], 20_000, False),
    "S2 wide [2,128,128,64] N=1000": ([2, 128, 128, 64], 1_000, False),
}

CHILD = """
import json, sys, time
import numpy as np
t0 = time.perf_counter()
import engine
widths, n, terms = json.loads(sys.argv[1])
net = engine.random_network(widths, rng=0, cov_x=0.1)
X = net.sample(n, rng=1)
t1 = time.perf_counter()
part = engine.partition(net)
t2 = time.perf_counter()
c2 = time.process_time()
ev = engine.evaluate(net, X, part=part, region_terms=terms)
t3 = time.perf_counter()
c3 = time.process_time()
assert np.isfinite(ev.log_marginal).all()
import resource
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
print(json.dumps({"regions": len(part), "partition_s": t2 - t1, "evaluate_s": t3 - t2, "evaluate_cpu_s": c3 - c2,
                  "peak_mb": peak}))
"""

COLD = """
import time
import numpy as np
t0 = time.perf_counter()
import engine
t1 = time.perf_counter()
engine.evaluate(engine.random_network([2, 16, 16, 5], rng=0), np.zeros((4, 5)))
t2 = time.perf_counter()
engine.evaluate(engine.random_network([3, 6, 6, 3], rng=0), np.zeros((2, 3)))
t3 = time.perf_counter()
print(f"import {t1 - t0:.2f} s, first S = 2 evaluate {t2 - t1:.2f} s, first S = 3 evaluate {t3 - t2:.2f} s")
"""


def run_child(code: str, *args: str) -> tuple[str, float]:
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True).stdout
    return out.strip(), time.perf_counter() - t


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="divide every N by 10")
    parser.add_argument("--only", default="", help="run only the workloads whose name contains this (no cold start)")
    args = parser.parse_args()
    if not args.only:
        print("cold start (fresh process):", run_child(COLD)[0])
    for name, (widths, n, terms) in WORKLOADS.items():
        if args.only not in name:
            continue
        n = n // 10 if args.quick else n
        out, wall = run_child(CHILD, json.dumps([widths, n, terms]))
        r = json.loads(out)
        print(f"{name:34s} N={n:>7d} regions={r['regions']:>6d} partition {r['partition_s']:6.2f} s "
              f"evaluate {r['evaluate_s']:7.2f} s (CPU {r['evaluate_cpu_s']:7.2f} s)  peak RSS {r['peak_mb']:7.0f} MB "
              f"(process {wall:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
