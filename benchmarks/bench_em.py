"""Per-iteration time of exact EM (engine.em.EM) in the three settings of the EM issue.

Run from the repository root:
``.venv/bin/python benchmarks/bench_em.py [--iters K] [--iters-s2 K] [--skip-s1] [--skip-s2] [--screen on|off]``.
An iteration includes its E-step(s) (``engine.evaluate``: partition and Gaussian integrals), the
closed-form M-step and the exact log-likelihood evaluation that guards it. BLAS is single-threaded
(``fit`` limits it; set here too so the start-up evaluation matches). A 2-iteration fit on 60 points
first lets numba compile every path, so the first timed iteration is not a compile. Reported: median and range
of the per-iteration wall times over K iterations after the starting evaluation, the region
count, the exact evaluations (``engine.evaluate`` calls) and new partitions per iteration, the time of
one evaluate of the fitted network and the iteration's cost in evaluates; the CPU time of this process per iteration
(``history_[i]["cpu_seconds"]``, steadier than wall time on a shared machine) and of that evaluate.
``--double-description``: S = 2 partitions by the compiled double description instead of the planar arrangement (the
S = 2 default), for comparison. ``--screen off``: EM without the guard's importance-sampling screen
(``EM(screen=False)``, the path before it; ``on``: also at S = 1); default the estimator's (``"auto"``: S >= 2).
Targets (issue 15, item 4):
circle [1,16,16,2] N=500 <= 30 ms; digits4 [1,8,8,64] <= 0.5 s (issue 5); circle [2,16,16,2] N=500
<= 1 s and <= ~2 evaluates' worth per iteration.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse  # noqa: E402
import importlib  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

import engine  # noqa: E402
from engine import datasets  # noqa: E402
from engine.em import EM  # noqa: E402


def bench(name: str, widths: list[int], X: np.ndarray, iters: int, target: float, seed: int = 0,
          screen="auto") -> dict:
    EM(widths, max_iter=2, tol=0.0, random_state=seed).fit(X[:60])  # numba compiles every path first
    em = EM(widths, max_iter=iters, tol=0.0, random_state=seed, screen=screen)
    t0, c0 = time.perf_counter(), time.process_time()
    em.fit(X)
    total, cpu = time.perf_counter() - t0, time.process_time() - c0
    secs = np.array([h["seconds"] for h in em.history_])
    cpus = np.array([h.get("cpu_seconds", np.nan) for h in em.history_])
    t_eval, c_eval = time.perf_counter(), time.process_time()
    engine.evaluate(em.network_, X)
    t_eval, c_eval = time.perf_counter() - t_eval, time.process_time() - c_eval
    evals = np.array([h["evaluations"] for h in em.history_])
    parts = np.array([h["partitions"] for h in em.history_])
    screened = np.array([h.get("screened", 0) for h in em.history_])
    ok = "OK" if np.median(secs) <= target else "OVER"
    print(f"{name:<20} N={len(X):<4} regions={em.n_regions_[-1]:<5} "
          f"iter median {1e3 * np.median(secs):9.1f} ms "
          f"(min {1e3 * secs.min():.1f}, max {1e3 * secs.max():.1f}) target {1e3 * target:.0f} ms {ok}; "
          f"CPU per iteration median {1e3 * np.median(cpus):.1f} ms (min {1e3 * cpus.min():.1f}); "
          f"one evaluate CPU {1e3 * c_eval:.1f} ms; "
          f"one evaluate {1e3 * t_eval:.1f} ms (iteration = {np.median(secs) / t_eval:.2f} evaluates); "
          f"evaluations/iter {evals.mean():.2f} (new partitions {parts.mean():.2f}, steps screened out "
          f"{screened.mean():.2f}, screen {screen}); fit total {total:.2f} s "
          f"(CPU {cpu:.2f} s, {cpu / max(len(secs), 1):.2f} s per iteration incl. the start); "
          f"loglik {em.log_likelihoods_[0]:.4f} -> {em.log_likelihoods_[-1]:.4f}")
    print(f"{'':<20} CPU per iteration (s): {' '.join(f'{c:.3f}' for c in cpus)}; evaluations: "
          f"{' '.join(str(int(e)) for e in evals)}")
    return {"name": name, "median_s": float(np.median(secs)), "median_cpu_s": float(np.median(cpus)),
            "target_s": target, "evaluations_per_iter": float(evals.mean()),
            "log_likelihood": float(em.log_likelihoods_[-1])}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=10, help="EM iterations per setting (S = 1)")
    parser.add_argument("--iters-s2", type=int, default=4, help="EM iterations for the S = 2 setting")
    parser.add_argument("--skip-s2", action="store_true", help="skip the S = 2 setting")
    parser.add_argument("--skip-s1", action="store_true", help="skip the two S = 1 settings")
    parser.add_argument("--double-description", action="store_true",
                        help="S = 2 partitions by the double description (USE_PLANAR_ARRANGEMENT = False)")
    parser.add_argument("--screen", choices=["auto", "on", "off"], default="auto",
                        help="the guard's importance-sampling screen (EM(screen=...)); default: the estimator's")
    args = parser.parse_args(argv)
    screen = {"auto": "auto", "on": True, "off": False}[args.screen]
    if args.double_description:  # the module (the package's attribute engine.partition is the function)
        importlib.import_module("engine.partition").USE_PLANAR_ARRANGEMENT = False
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    if not args.skip_s1:
        bench("circle [1,16,16,2]", [1, 16, 16, 2], datasets.circle(500, rng=0), args.iters, 0.03, screen=screen)
        bench("digits4 [1,8,8,64]", [1, 8, 8, 64], datasets.digits4(), args.iters, 0.5, screen=screen)
    if not args.skip_s2:
        bench("circle [2,16,16,2]", [2, 16, 16, 2], datasets.circle(500, rng=0), args.iters_s2, 1.0, screen=screen)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
