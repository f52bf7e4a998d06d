"""Where the S' = 4 cone kernel's time goes (issue 14, w16): capture the kernel's region calls of one ``evaluate`` on
``[4, 16, 16, 5]`` and replay them in one thread.

``--points A B``: evaluate points A..B-1 (partition outside), keeping every ``--every``-th ``cone_kernel.cone_pairs``
call. Then, on the captured rows (CPU ms a row, best of two, one thread): the region call itself; ``cones.cone_moments``
with moments 0 / 2 by the full and the light rule; and the kernel's stages (``cones.pair_moments``' steps replayed by
:func:`_pipeline`, each stage run twice more in turn; its cost is the difference over two): the preamble (facets,
ridges, lines, ridge terms, offset errors, vertex residuals), the edges' setup (ends, ``R``, flags), the pieces'
integrals (``piece_rule``), the integrals beyond the edges (``beyond_rule``: a ``log_j`` per flag), the flags'
errors and end bounds, the ridges' edge terms (``edge_log_B``) and the moments. One JSON line per figure. Usage:

    .venv/bin/python benchmarks/bench_cone_stages.py [--points 0 4] [--every 4] [--sub 3]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time

os.environ.setdefault("DGNEXACT_THREADS", "1")

import numba  # noqa: E402
import numpy as np  # noqa: E402

import engine  # noqa: E402
from engine.gaussian.highdim import cone_kernel  # noqa: E402
from engine.gaussian.highdim import cones as C  # noqa: E402
from engine.partition import partition  # noqa: E402

STAGES = ["preamble", "edge setup", "pieces (piece_rule)", "beyond (log_j)", "flag errors + end bounds",
          "ridge edges (edge_log_B)", "moments"]


def capture(a, b, every):
    """The ``cone_pairs`` calls of ``evaluate(X[a:b])``, every ``every``-th: ``(Nrm, D, Yv, shape, kw)``."""
    caps, n = [], [0]
    orig = cone_kernel.cone_pairs

    def wrap(Nrm, D, Yv, shape, **kw):
        n[0] += 1
        if n[0] % every == 0:
            caps.append((np.array(Nrm), np.array(D), np.array(Yv), shape, dict(kw)))
        return orig(Nrm, D, Yv, shape, **kw)

    cone_kernel.cone_pairs = wrap
    try:
        net = engine.random_network([4, 16, 16, 5], rng=0, cov_x=0.1)
        engine.evaluate(net, net.sample(100, rng=1)[a:b], part=partition(net))
    finally:
        cone_kernel.cone_pairs = orig
    return caps


@numba.njit(nogil=True, error_model="numpy")
def _edges(g, d, yv, wk, res, light, stage, extra):
    """The edge loop of ``cones.pair_moments`` (moments 2), stage ``stage`` of :data:`STAGES` run ``extra`` more
    times."""
    ee, be, r, re = res
    for k in range(g.eva.size):
        for _ in range(1 + (extra if stage == 1 else 0)):
            lo, hi, elo, ehi = C.edge_ends(g, k, d, yv, (r, re))
            R = C._edge_R(g, k, d)
            fl, d2, fac, se, sb = C._edge_flags(g, k, d, wk, (lo, hi))
        if not lo < hi:
            continue
        n = fl.shape[0]
        out = np.empty((2, n))
        C._flag_logs(R, d2, fl, out, light)
        rule = C.LIGHT_RULE if light else C.FULL_RULE
        cuts = C._edge_cuts(fl[0, 3], fl[0, 4])
        S = np.zeros((2, n))
        for _ in range(extra if stage == 2 else 0):
            for p in range(2):
                if cuts[p + 1] > cuts[p]:
                    C.piece_rule(cuts[p], cuts[p + 1], R, fl, fl[:, 1].min(), S, rule)
        for _ in range(extra if stage == 3 and math.isfinite(cuts[2]) else 0):
            C.beyond_rule(cuts[2], d2, fl, np.empty((2, n)), rule)
        for q in range(n):
            if d2[q] > 0.0:
                C._add(wk.acc, -C._sign(d[fac[q]]) * se[q] * sb[q], out[0, q] + 0.5 * math.log(d2[q]))
                C._add(wk.facc[fac[q]], se[q] * sb[q], out[1, q])
        sgn = np.empty(n)
        for q in range(n):
            sgn[q] = -C._sign(d[fac[q]]) * se[q] * sb[q]
        for _ in range(1 + (extra if stage == 4 else 0)):
            C._flag_errors(g, k, wk, (lo, hi), out, (ee, be, d2, fac, 2))
            C._end_bounds(k, g, wk, R, (fl, d2, fac, sgn), (lo, hi, elo, ehi), 2)
        for _ in range(1 + (extra if stage == 5 else 0)):
            C._ridge_edges(g, k, wk, (lo, hi), R)


@numba.njit(nogil=True, error_model="numpy")
def _pipeline(g, Nrm, D, Yv, light, stage, extra):
    """``cones.pair_moments`` (moments 2) of every row, stage ``stage`` run ``extra`` more times (-1: none)."""
    tot = 0.0
    for m in range(D.shape[0]):
        d, yv = D[m], Yv[m]
        G, L, F = g.ri.size, g.lr.size, d.size
        wk = C._Work(np.empty((G, 2)), np.empty(L), np.full(4, -C._INF), np.full((F, 4), -C._INF),
                     np.full((G, 4), -C._INF))
        for _ in range(1 + (extra if stage == 0 else 0)):
            flagged = C._facets_and_ridges(g, d, wk, 2)
            fl2, g_out = C._line_offsets(g, d, wk, 2)
            C._ridge_terms(g, d, g_out, wk, 2)
            ee, be = C._offset_errors(g, d, wk)
            C._ridge_errors(g, d, g_out, wk, ee)
            r, re = C._vertex_residuals(g, d, yv)
        if flagged or fl2:
            continue
        _edges(g, d, yv, wk, (ee, be, r, re), light, stage, extra)
        mean, cov = np.zeros(4), np.zeros((4, 4))
        for _ in range(1 + (extra if stage == 6 else 0)):
            e1, _ = C._moments(g, Nrm, d, wk, 0.0, mean, cov)
        tot += e1
    return tot


def _best(fn, reps=2):
    out = np.inf
    for _ in range(reps):
        c = time.process_time()
        fn()
        out = min(out, time.process_time() - c)
    return out


def replay(caps):
    rows = sum(c[1].shape[0] for c in caps)

    def ms(seconds):
        return round(1e3 * seconds / rows, 4)

    _emit(what="rows", rows=rows, light=int(sum((np.broadcast_to(c[4]["tol"], (c[1].shape[0],)) >= C.LIGHT_TOL).sum()
                                                for c in caps)))
    _emit(what="cone_pairs", ms_per_row=ms(_best(lambda: [cone_kernel.cone_pairs(*c[:4], **c[4]) for c in caps])))
    for moments in (2, 0):
        for light in (False, True):
            t = _best(lambda mo=moments, li=light: [
                C.cone_moments(c[0], c[1], c[2], np.zeros((0, 4)), moments=mo, shape=c[3],
                               light=np.full(c[1].shape[0], li)) for c in caps])
            _emit(what="cone_moments", moments=moments, light=light, ms_per_row=ms(t))
    args = [(c[3], np.ascontiguousarray(c[0]), np.ascontiguousarray(c[1]), np.ascontiguousarray(c[2])) for c in caps]
    for light in (False, True):
        base = _best(lambda li=light: [_pipeline(*a, li, -1, 0) for a in args])
        _emit(what="pipeline", light=light, ms_per_row=ms(base))
        for s, name in enumerate(STAGES):
            t = _best(lambda li=light, st=s: [_pipeline(*a, li, st, 2) for a in args])
            _emit(what="stage", light=light, stage=name, ms_per_row=ms((t - base) / 2))


def _emit(**kw):
    print(json.dumps(kw), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--points", nargs=2, type=int, default=[0, 4])
    ap.add_argument("--every", type=int, default=4)
    ap.add_argument("--sub", type=int, default=1, help="replay every SUB-th captured call")
    a = ap.parse_args()
    caps = capture(*a.points, a.every)
    replay(caps[::a.sub])


if __name__ == "__main__":
    main()
