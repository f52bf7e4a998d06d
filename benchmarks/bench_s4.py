"""S = 4, 5, 6 figures (issue 14): ``evaluate`` on the issue's workloads, per-pair cost, reproducibility.

Workloads (``net = random_network(widths, rng=0, cov_x=0.1)``, ``X = net.sample(100, rng=1)``):
``s4`` = [4, 8, 8, 5], ``s4w`` = [4, 16, 16, 5], ``s5`` = [5, 8, 8, 6], ``s6`` = [6, 6, 6, 6]. For each
workload given it reports the partition time and, for each N in ``--points``, the wall time of
``evaluate(net, X[:N])`` (partition built outside), the largest ``log_marginal_error``, the number of
regions, the pairs per point before and after the pruning to the target (S >= 4) and the process's peak RSS before
and after (MiB, ``getrusage``).
``--pair-cost N`` times ``sliced_moments`` alone on the N heaviest pairs of point 0 with the mean inside and N with
it outside (CPU ms per pair, the compiled route vs the same with the slices the strict S = 3 kernel pass leaves
built as polytopes (``COMPILED_RESOLVE = False``, before the compiled cubature), vs the same without the inner
window and the slice screen and vs the previous numpy route along y*, heavy and light tolerances) and says whether
they agree within their bars.
``--pairs`` times the region integrals alone: ``polytope_moments_arrays`` of the first
``--regions`` regions at every point by the default method (S = 4: ``highdim.sliced``, outer quadrature over
exact S = 3 slices) and by RQMC, in seconds per (point, region) pair, with their bars and their difference,
and, with ``--nested``, the deterministic nested quadrature (``engine.gaussian.highdim.nested``) of one pair.
``--memory N`` evaluates the first N points with the S' = 4 cone kernel replaced by a constant (every array of the
call at its real size; flags, volumes, closest points, bounds and skips real): the CPU time of everything but the
kernel and the peak RSS, for block sizes (``--chunk-size``) compared without hours of quadrature.
``--blocks N`` evaluates the first N points in ``evaluate``'s own row blocks, a line per block (cumulative CPU and
wall seconds, largest bar so far). ``--repro`` runs ``evaluate`` twice (and in a forked child) and
says whether the bits agree. One JSON line per figure. Usage:

    .venv/bin/python benchmarks/bench_s4.py [--workloads s4 s5 s6] [--points 1 5] [--pairs] [--nested] [--repro]
        [--each N] [--blocks N] [--chunk-size K] [--memory N]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import time

import numpy as np

import engine
from engine.distributions import evaluate, posterior_region_params, region_gaussians
from engine.partition import partition

WORKLOADS = {"s4": [4, 8, 8, 5], "s4w": [4, 16, 16, 5], "s5": [5, 8, 8, 6], "s6": [6, 6, 6, 6]}


def _emit(**kw):
    print(json.dumps(kw), flush=True)


def _peak_rss_mb():
    """This process's peak resident set so far (``getrusage``; Linux reports kB), MiB: a high-water mark, so an
    ``evaluate`` line's value includes the partition and everything before it (``rss_before_mb``)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _setup(name):
    net = engine.random_network(WORKLOADS[name], rng=0, cov_x=0.1)
    X = net.sample(100, rng=1)
    t = time.perf_counter()
    part = partition(net)
    _emit(workload=name, widths=WORKLOADS[name], what="partition", seconds=time.perf_counter() - t, regions=len(part))
    return net, X, part


def _evaluate(name, net, X, part, n, chunk_size=None):
    counts = _count_pairs()
    before = _peak_rss_mb()
    t, c = time.perf_counter(), time.process_time()
    ev = evaluate(net, X[:n], part=part, chunk_size=chunk_size)
    dt, cpu = time.perf_counter() - t, time.process_time() - c
    err = np.inf if ev.log_marginal_error is None else float(np.max(ev.log_marginal_error))
    _emit(workload=name, what="evaluate", points=n, seconds=dt, cpu_seconds=cpu, max_log_marginal_error=err,
          method=ev.method, chunk_size=chunk_size, rss_before_mb=before, peak_rss_mb=_peak_rss_mb(),
          pairs_per_point_before_target_pruning=counts["before"] / n, pairs_per_point=counts["after"] / n)


def _evaluate_each(name, net, X, part, n):
    """The first n points one at a time (a figure per point as it comes; the same numbers as one call)."""
    for i in range(n):
        counts = _count_pairs()
        t, c = time.perf_counter(), time.process_time()
        ev = evaluate(net, X[i:i + 1], part=part)
        _emit(workload=name, what="evaluate one point", point=i, seconds=time.perf_counter() - t,
              cpu_seconds=time.process_time() - c,
              log_marginal=float(ev.log_marginal[0]), log_marginal_error=float(ev.log_marginal_error[0]),
              pairs_before_target_pruning=counts["before"], pairs=counts["after"])


def _evaluate_blocks(name, net, X, part, n):
    """The first n points in the row blocks ``evaluate`` itself uses (``scaling.rows_per_block``: 120 points a block on
    ``[4, 16, 16, 5]``), one call per block in this process (the geometry, flags and volumes kept across blocks as in
    one call), a line per block with the cumulative CPU and wall seconds: a partial run can be extrapolated."""
    from engine.scaling import rows_per_block

    k = rows_per_block(len(part), net.latent_dim)
    t, c = time.perf_counter(), time.process_time()
    worst = 0.0
    for i in range(0, n, k):
        ev = evaluate(net, X[i:min(i + k, n)], part=part)
        worst = max(worst, float(np.max(ev.log_marginal_error)))
        _emit(workload=name, what="evaluate in blocks", points=min(i + k, n), cum_seconds=time.perf_counter() - t,
              cum_cpu_seconds=time.process_time() - c, max_log_marginal_error=worst, peak_rss_mb=_peak_rss_mb())


def _memory(name, net, X, part, n, chunk_size=None):
    """``--memory``: :func:`_evaluate`'s figures with ``sliced.cones_first`` answering every pair with a constant."""
    import engine.gaussian.highdim.sliced as sl

    def constant(fallback, Nrm, D, Yv, Yr, **kw):
        M = D.shape[0]
        return (np.full(M, -1.0), np.zeros((M, 4)), np.repeat(np.eye(4)[None], M, axis=0), np.zeros(M),
                np.zeros(M, dtype=bool))

    real, sl.cones_first = sl.cones_first, constant
    try:
        before = _peak_rss_mb()
        t, c = time.perf_counter(), time.process_time()
        evaluate(net, X[:n], part=part, chunk_size=chunk_size)
        _emit(workload=name, what="evaluate without the cone kernel", points=n, chunk_size=chunk_size,
              seconds=time.perf_counter() - t, cpu_seconds=time.process_time() - c, rss_before_mb=before,
              peak_rss_mb=_peak_rss_mb())
    finally:
        sl.cones_first = real


def _count_pairs():
    """Counts of the (point, region) pairs around ``distributions._target_prune`` (S >= 4): ``before`` survive the
    e^-50 half-space pruning, ``after`` are integrated (the lightest pairs' bounds, up to ``SKIP_BUDGET`` of p(x),
    go into the bar instead)."""
    import engine.distributions as dist

    counts = {"before": 0, "after": 0}
    real = getattr(dist._target_prune, "real", dist._target_prune)

    def counting(part, mu, log_norm, upper, lower, cand, geometry):
        out = real(part, mu, log_norm, upper, lower, cand, geometry)
        counts["before"] += int(cand.sum()) + 3 * cand.shape[0]  # + the 3 pairs of the lower bound per point
        counts["after"] += int(out[0].sum()) + 3 * cand.shape[0]
        return out

    counting.real = real
    dist._target_prune = counting
    return counts


def _pairs(name, net, X, part, n_regions, nested):
    from engine.gaussian.polytopes import _whiten, polytope_moments_arrays

    rg = region_gaussians(net, part)
    mu, _ = posterior_region_params(net, part, X, rg)  # (N, R, S)
    idx = [r for r in range(len(part)) if part[r].polytope.lineality.size == 0][:n_regions]
    polys = [part[r].polytope for r in idx]
    means = np.stack([mu[:, r] for r in idx])
    outs = {}
    for method in ("auto", "rqmc"):  # auto: the sliced outer quadrature at S = 4, RQMC above
        t = time.perf_counter()
        out = outs[method] = polytope_moments_arrays(polys, means, rg.cov[idx], method=method)
        dt = time.perf_counter() - t
        fin = np.isfinite(out.log_mass_error) & np.isfinite(out.log_mass)
        _emit(workload=name, what=f"{method} per pair", method=out.method, seconds_per_pair=dt / means[:, :, 0].size,
              pairs=means[:, :, 0].size,
              median_log_mass_error=float(np.median(out.log_mass_error[fin])) if fin.any() else None,
              max_log_mass_error=float(np.max(out.log_mass_error[fin])) if fin.any() else None)
    a, b = outs["auto"], outs["rqmc"]
    fin = np.isfinite(a.log_mass) & np.isfinite(b.log_mass)
    if fin.any():  # the two methods agree within the RQMC bars (the sliced bars are far smaller)
        ratio = np.abs(a.log_mass - b.log_mass)[fin] / (a.log_mass_error + b.log_mass_error)[fin]
        _emit(workload=name, what="auto vs rqmc", max_abs_diff=float(np.max(np.abs(a.log_mass - b.log_mass)[fin])),
              max_diff_over_bars=float(np.max(ratio)))
    out = outs["rqmc"]
    if nested:
        from engine.gaussian.highdim.nested import nested_moments

        _, Nrm, D, *_ = _whiten(polys[0], means[0, :1], rg.cov[idx[0]])
        t = time.perf_counter()
        lm, _, _, rel = nested_moments(Nrm, D, 2)
        _emit(workload=name, what="nested quadrature one pair", seconds=time.perf_counter() - t,
              log_mass=float(lm[0]), rel_bound=float(rel[0]), rqmc_log_mass=float(out.log_mass[0, 0]),
              rqmc_log_mass_error=float(out.log_mass_error[0, 0]))


ROUTES = {  # settings of engine.gaussian.highdim.sliced per route
    "compiled": {},
    "compiled, slices the strict kernel leaves as polytopes (before the compiled cubature)": {
        "COMPILED_RESOLVE": False},
    "compiled, full window, no screen (before the inner window and the slice screen)": {
        "INNER_MARGIN": 1e9, "SKIP_SHARE": 0.0},
    "numpy reference, along y*": {"USE_COMPILED_SLICES": False, "TOWARD_CLOSEST": True, "INNER_MARGIN": 1e9,
                                  "SKIP_SHARE": 0.0},
}


def point0_pairs(net, X, part):
    """``(-log upper bound, region, whitened data, far)`` for every pointed region at point 0, heaviest bound first
    (``far``: the mean more than 1/2 from the region); ``bench_s4_routes`` picks its pairs from the same list."""
    import engine.gaussian.highdim.sliced as sl

    rg = region_gaussians(net, part)
    mu, _ = posterior_region_params(net, part, X[:1], rg)
    out = []
    for r in range(len(part)):
        p = part[r].polytope
        if p.lineality.size or not p.vertices.size:
            continue
        data = sl.whitened(p, np.linalg.cholesky(rg.cov[r]), mu[:1, r])
        y, log_upper = sl.closest_distance(data[0], data[1])
        out.append((-float(log_upper[0]), r, data, bool(np.linalg.norm(y[0]) > 0.5)))
    out.sort(key=lambda q: q[:2])
    return out


def _pair_cost(name, net, X, part, n_pairs):
    """CPU seconds per S = 4 pair of ``sliced_moments`` alone (one pair a call, moments to second order) at the
    heavy tolerance (``DEFAULT_TOL``, 15-point rule) and the lightest (``MAX_TOL``, 7-point rule), on the
    ``n_pairs`` regions of largest closest-point bound at point 0 with the mean inside or near them (``|y*| <=
    1/2``) and as many with the mean outside: the compiled route (generic direction) and the previous one (numpy
    slices, direction to y* for means outside), alternated, median over 3 repeats of each pair."""
    import engine.gaussian.highdim.sliced as sl

    groups = {"mean inside": [], "mean outside": []}
    for key, r, data, far in point0_pairs(net, X, part):
        groups["mean outside" if far else "mean inside"].append((key, r, data))
    flags = {k: getattr(sl, k) for k in ("USE_COMPILED_SLICES", "TOWARD_CLOSEST", "INNER_MARGIN", "SKIP_SHARE",
                                         "COMPILED_RESOLVE")}
    for group, cand in groups.items():
        pairs = [d for _, _, d in sorted(cand, key=lambda q: q[:2])[:n_pairs]]
        for tol, what in ((sl.DEFAULT_TOL, "heavy"), (sl.MAX_TOL, "light")):
            _pair_cost_rows(name, f"{what} pairs, {group}", pairs, tol, sl, flags)
    _set(sl, flags, {})


def _set(sl, defaults, settings):
    for k, v in {**defaults, **settings}.items():
        setattr(sl, k, v)


def _pair_cost_rows(name, what, pairs, tol, sl, defaults):
    times = {route: [] for route in ROUTES}
    out = {route: [] for route in ROUTES}
    for data in pairs:
        rep = {route: [] for route in ROUTES}
        for _ in range(3):
            for route, settings in ROUTES.items():
                _set(sl, defaults, settings)
                t = time.process_time()
                lm, _, _, rel = sl.sliced_moments(*data, moments=2, tol=tol)
                rep[route].append(time.process_time() - t)
                if len(rep[route]) == 1:
                    out[route].append((lm[0], rel[0]))
        for route in ROUTES:
            times[route].append(np.median(rep[route]))
    for route in ROUTES:
        _emit(workload=name, what=f"{what}: cost", route=route, tol=tol, pairs=len(pairs),
              cpu_ms_median=1e3 * float(np.median(times[route])), cpu_ms_max=1e3 * float(np.max(times[route])),
              max_rel_bar=float(max(r for _, r in out[route])))
    a = np.array(out["compiled"])
    for route in list(ROUTES)[1:]:
        b = np.array(out[route])
        _emit(workload=name, what=f"{what}: compiled and {route} agree",
              max_abs_log_mass_diff=float(np.max(np.abs(a[:, 0] - b[:, 0]))),
              max_diff_over_bars=float(np.max(np.abs(np.expm1(a[:, 0] - b[:, 0])) / (a[:, 1] + b[:, 1]))))


def _child(q, net, X, part):
    q.put(evaluate(net, X, part=part).log_marginal.tobytes())


def _repro(name, net, X, part):
    a = evaluate(net, X[:1], part=part).log_marginal.tobytes()
    b = evaluate(net, X[:1], part=part).log_marginal.tobytes()
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=_child, args=(q, net, X[:1], part))
    p.start()
    c = q.get()
    p.join()
    _emit(workload=name, what="reproducible", same_bits_twice=a == b, same_bits_forked=a == c)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workloads", nargs="+", default=["s4"], choices=sorted(WORKLOADS))
    ap.add_argument("--points", nargs="*", type=int, default=[1])
    ap.add_argument("--pairs", action="store_true")
    ap.add_argument("--pair-cost", type=int, default=0, help="CPU time per S = 4 pair on this many heavy regions")
    ap.add_argument("--regions", type=int, default=5)
    ap.add_argument("--nested", action="store_true")
    ap.add_argument("--repro", action="store_true")
    ap.add_argument("--each", type=int, default=0, help="evaluate the first EACH points one at a time")
    ap.add_argument("--blocks", type=int, default=0, help="evaluate the first BLOCKS points block by block")
    ap.add_argument("--memory", type=int, default=0, help="CPU and peak RSS of the first MEMORY points without the "
                    "S' = 4 cone kernel (a constant in its place)")
    ap.add_argument("--chunk-size", type=int, default=None, help="rows per block of the --points evaluations "
                    "(default: evaluate's own, scaling.rows_per_block; 7 was [4,16,16,5]'s before issue 14's s4w)")
    args = ap.parse_args()
    for name in args.workloads:
        net, X, part = _setup(name)
        if args.pair_cost:
            _pair_cost(name, net, X, part, args.pair_cost)
        if args.pairs:
            _pairs(name, net, X[:10], part, args.regions, args.nested)
        if args.repro:
            _repro(name, net, X, part)
        for n in args.points:
            _evaluate(name, net, X, part, n, args.chunk_size)
        if args.each:
            _evaluate_each(name, net, X, part, args.each)
        if args.blocks:
            _evaluate_blocks(name, net, X, part, args.blocks)
        if args.memory:
            _memory(name, net, X, part, args.memory, args.chunk_size)


if __name__ == "__main__":
    main()
