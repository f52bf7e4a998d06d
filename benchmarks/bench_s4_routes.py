"""S = 4 per-pair routes (issue 14): the cone (flag) decomposition (``highdim.cones``) against the sliced route.

On ``random_network([4, 8, 8, 5], rng=0, cov_x=0.1)``, point 0 of ``net.sample(100, rng=1)``, the pairs are picked
as in ``bench_s4.py --pair-cost``: regions of largest closest-point bound with the mean inside or near them (``|y*|
<= 1/2``) and with it outside, ``--pairs`` of each. For each pair, alternated, median of 3: CPU ms of
``sliced.sliced_moments`` (mass only and with moments to second order) and of ``cones.cone_log_mass`` and
``cones.cone_moments`` (mass only and with moments; the region's flags built once, timed apart: per region, not per
pair), ``|log mass difference|`` against the sliced value and
whether it lies within the two bars; then, over the ``--certify`` heaviest pairs, the fraction the cones certify
(not flagged, bar <= the pair's tolerance ``1e-10``). One JSON line per figure. Usage:

    .venv/bin/python benchmarks/bench_s4_routes.py [--pairs 8] [--certify 200] [--evaluate N]

``--evaluate N`` runs ``evaluate`` on the first N points one at a time with the cones first (the default of
``sliced.sliced_batch``) and with slices only, alternated: times, ``|log p|`` differences and the largest bars.
``--routes N`` runs one ``evaluate`` of the first N points and says where its CPU time went: the cones (flags
included), the fallback (``sliced.with_fallback``) split into bounded and unbounded regions, with pair counts, the
fallback's costliest regions, and the rest of ``evaluate``.
``--region-call N --widths 4 16 16 5 --repeat 2`` evaluates points ``0..N-1`` of ``random_network(widths)`` with the
cones' compiled region call (``cones.COMPILED_REGION``, ``cone_kernel.cone_pairs``) and with the numpy steps it
replaced, alternated ``--repeat`` times (the partition built once, outside): wall and CPU seconds of each run and of
``cones_first`` within it, the medians, whether ``log p`` and its bar are the same bits, and the largest bar.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from bench_s4 import point0_pairs  # this folder is sys.path[0] when the script runs

import engine
from engine.gaussian.highdim import cones
from engine.gaussian.highdim import sliced as sl
from engine.partition import partition


def _emit(**kw):
    print(json.dumps(kw), flush=True)


def _cpu(f, *args, **kw):
    t = time.process_time()
    res = f(*args, **kw)
    return time.process_time() - t, res


def _one(data):
    """Medians of 3 alternated runs: (sliced mass-only, sliced moments, flags, cones mass-only, cones moments) CPU
    seconds, values."""
    Nrm, D, Yv, Yr = data
    reps = {k: [] for k in ("sliced0", "sliced2", "shape", "cones", "cones2")}
    vals = {}
    for _ in range(3):
        t, (lm, _, _, rel) = _cpu(sl.sliced_moments, Nrm, D, Yv, Yr, moments=0)
        reps["sliced0"].append(t)
        vals["sliced"] = (float(lm[0]), float(rel[0]))
        t, _ = _cpu(sl.sliced_moments, Nrm, D, Yv, Yr, moments=2)
        reps["sliced2"].append(t)
        t, shape = _cpu(cones.cone_shape, Nrm, D[0], Yv[0], Yr)
        reps["shape"].append(t)
        t, (lm, rel, fl) = _cpu(cones.cone_log_mass, Nrm, D, Yv, Yr, shape=shape)
        reps["cones"].append(t)
        vals["cones"] = (float(lm[0]), float(rel[0]), bool(fl[0]))
        t, _ = _cpu(cones.cone_moments, Nrm, D, Yv, Yr, moments=2, shape=shape)
        reps["cones2"].append(t)
    return {k: float(np.median(v)) for k, v in reps.items()}, vals, shape


def _cost(cand, n):
    for group, far in (("mean inside", False), ("mean outside", True)):
        rows = [c for c in cand if c[3] == far][:n]
        res = [_one(c[2]) for c in rows]
        diffs = [abs(v["cones"][0] - v["sliced"][0]) for _, v, _ in res if not v["cones"][2]]
        within = [abs(np.expm1(v["cones"][0] - v["sliced"][0])) <= v["cones"][1] + v["sliced"][1]
                  for _, v, _ in res if not v["cones"][2]]
        _emit(what=f"heavy pairs, {group}: cost", pairs=len(res),
              sliced_mass_cpu_ms=1e3 * float(np.median([t["sliced0"] for t, _, _ in res])),
              sliced_moments_cpu_ms=1e3 * float(np.median([t["sliced2"] for t, _, _ in res])),
              cones_mass_cpu_ms=1e3 * float(np.median([t["cones"] for t, _, _ in res])),
              cones_mass_cpu_ms_max=1e3 * float(np.max([t["cones"] for t, _, _ in res])),
              cones_moments_cpu_ms=1e3 * float(np.median([t["cones2"] for t, _, _ in res])),
              cones_flags_per_region_cpu_ms=1e3 * float(np.median([t["shape"] for t, _, _ in res])),
              flags_median=int(np.median([2 * s.lr.size for _, _, s in res])),
              flagged=int(sum(v["cones"][2] for _, v, _ in res)),
              max_abs_log_mass_diff=float(max(diffs)) if diffs else None,
              max_cones_bar=float(max(v["cones"][1] for _, v, _ in res if not v["cones"][2])) if diffs else None,
              all_within_bars=bool(all(within)))


def _certify(cand, n, tol=1e-10):
    rows = cand[:n]
    ok, t_all, worst = 0, 0.0, 0.0
    for _, _, (Nrm, D, Yv, Yr), _ in rows:
        t, (lm, rel, fl) = _cpu(cones.cone_log_mass, Nrm, D, Yv, Yr)
        t_all += t
        good = (not fl[0]) and rel[0] <= tol
        ok += int(good)
        if good:
            worst = max(worst, float(rel[0]))
    _emit(what="certified by the cones", pairs=len(rows), tol=tol, certified=ok, fraction=ok / max(len(rows), 1),
          worst_certified_bar=worst, cpu_ms_per_pair_incl_flags=1e3 * t_all / max(len(rows), 1))


def _evaluate(net, X, part, n):
    """``evaluate`` of the first ``n`` points one at a time, cones first (the default) and slices only
    (``cones.USE_CONES = False``), alternated: wall and CPU seconds, ``max |log p difference|`` and the largest
    ``log_marginal_error`` of each route."""
    from engine.distributions import evaluate

    rows = {True: [], False: []}
    for i in range(n):
        for use in (True, False):
            cones.USE_CONES = use
            t, c = time.perf_counter(), time.process_time()
            ev = evaluate(net, X[i:i + 1], part=part)
            rows[use].append((time.perf_counter() - t, time.process_time() - c, float(ev.log_marginal[0]),
                              float(np.max(ev.log_marginal_error))))
    cones.USE_CONES = True
    a, b = np.array(rows[True]), np.array(rows[False])
    _emit(what="evaluate one point at a time", points=n, cones_wall_s=a[:, 0].tolist(), sliced_wall_s=b[:, 0].tolist(),
          cones_cpu_s_total=float(a[:, 1].sum()), sliced_cpu_s_total=float(b[:, 1].sum()),
          max_abs_log_p_diff=float(np.max(np.abs(a[:, 2] - b[:, 2]))), cones_max_error_bar=float(a[:, 3].max()),
          sliced_max_error_bar=float(b[:, 3].max()))


def _routes(net, X, part, n):
    """CPU seconds per route in one ``evaluate`` of ``X[:n]`` (``cones.cone_moments`` and ``with_fallback`` wrapped
    with timers inside ``cones_first``; the rest is everything else ``evaluate`` does)."""
    from engine.distributions import evaluate

    t_cones, fb = [0.0], []
    cone_moments = cones.cone_moments

    def timed_cones(*a, **k):
        t = time.process_time()
        out = cone_moments(*a, **k)
        t_cones[0] += time.process_time() - t
        return out

    first = cones.cones_first

    def timed_first(fallback, Nrm, D, Yv, Yr, **kw):
        def timed_fallback(*a, **k):
            t = time.process_time()
            out = fallback(*a, **k)
            fb.append((time.process_time() - t, a[1].shape[0], Yr.shape[0], Nrm.shape[0], a[2].shape[1]))
            return out
        return first(timed_fallback, Nrm, D, Yv, Yr, **kw)

    cones.cone_moments, sl.cones_first = timed_cones, timed_first
    try:
        t, c = time.perf_counter(), time.process_time()
        ev = evaluate(net, X[:n], part=part)
        wall, cpu = time.perf_counter() - t, time.process_time() - c
    finally:
        cones.cone_moments, sl.cones_first = cone_moments, first
    f = np.array(fb, dtype=float).reshape(-1, 5)
    unb = f[:, 2] > 0
    top = f[np.argsort(-f[:, 0])[:5]]
    _emit(what="routes of one evaluate", points=n, wall_s=wall, cpu_s=cpu, cones_cpu_s=t_cones[0],
          fallback_bounded_cpu_s=float(f[~unb, 0].sum()), fallback_bounded_pairs=int(f[~unb, 1].sum()),
          fallback_unbounded_cpu_s=float(f[unb, 0].sum()), fallback_unbounded_pairs=int(f[unb, 1].sum()),
          rest_cpu_s=cpu - t_cones[0] - float(f[:, 0].sum()),
          costliest_fallback_regions=[dict(cpu_s=float(r[0]), pairs=int(r[1]), rays=int(r[2]), facets=int(r[3]),
                                           vertices=int(r[4])) for r in top],
          max_log_marginal_error=float(np.max(ev.log_marginal_error)))


def _region_call(widths, n, repeat):
    """``evaluate`` of the first ``n`` points, ``cones.COMPILED_REGION`` True / False alternated ``repeat`` times."""
    from engine.distributions import evaluate

    net = engine.random_network(widths, rng=0, cov_x=0.1)
    X = net.sample(100, rng=1)
    part = partition(net)
    evaluate(net, X[:1], part=part)  # compile and load the caches before timing
    runs = {True: [], False: []}
    first, spent = sl.cones_first, [0.0]

    def timed(*a, **k):  # cones_first's CPU (the cones and their bookkeeping; the fallback only marks rows here)
        t0 = time.process_time()
        out = first(*a, **k)
        spent[0] += time.process_time() - t0
        return out

    sl.cones_first = timed
    try:
        for _ in range(repeat):
            for compiled in (True, False):
                cones.COMPILED_REGION, spent[0] = compiled, 0.0
                t, c = time.perf_counter(), time.process_time()
                ev = evaluate(net, X[:n], part=part)
                runs[compiled].append((time.perf_counter() - t, time.process_time() - c, ev, spent[0]))
    finally:
        cones.COMPILED_REGION, sl.cones_first = True, first
    evs = [r[2] for v in runs.values() for r in v]
    same = all(np.array_equal(e.log_marginal, evs[0].log_marginal)
               and np.array_equal(e.log_marginal_error, evs[0].log_marginal_error) for e in evs)
    _emit(what="cones' compiled region call vs numpy steps", widths=widths, points=n, regions=len(part),
          compiled_wall_s=[r[0] for r in runs[True]], compiled_cpu_s=[r[1] for r in runs[True]],
          numpy_wall_s=[r[0] for r in runs[False]], numpy_cpu_s=[r[1] for r in runs[False]],
          compiled_cpu_median=float(np.median([r[1] for r in runs[True]])),
          numpy_cpu_median=float(np.median([r[1] for r in runs[False]])), same_bits=bool(same),
          compiled_cones_first_cpu_s=[r[3] for r in runs[True]], numpy_cones_first_cpu_s=[r[3] for r in runs[False]],
          max_log_marginal_error=float(np.max(evs[0].log_marginal_error)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=8)
    ap.add_argument("--certify", type=int, default=200)
    ap.add_argument("--evaluate", type=int, default=0, help="evaluate this many points with and without the cones")
    ap.add_argument("--routes", type=int, default=0, help="CPU time per route in one evaluate of this many points")
    ap.add_argument("--region-call", type=int, default=0, help="points for the compiled region call vs numpy steps")
    ap.add_argument("--widths", type=int, nargs="+", default=[4, 8, 8, 5])
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    if args.region_call:
        _region_call(args.widths, args.region_call, args.repeat)
        return
    net = engine.random_network([4, 8, 8, 5], rng=0, cov_x=0.1)
    X = net.sample(100, rng=1)
    part = partition(net)
    cand = point0_pairs(net, X, part)
    _emit(what="setup", regions=len(part), pointed=len(cand))
    # compile both routes before timing
    cones.cone_log_mass(*cand[0][2])
    sl.sliced_moments(*cand[0][2], moments=0)
    if args.pairs:
        _cost(cand, args.pairs)
    if args.certify:
        _certify(cand, args.certify)
    if args.evaluate:
        _evaluate(net, X, part, args.evaluate)
    if args.routes:
        _routes(net, X, part, args.routes)


if __name__ == "__main__":
    main()
