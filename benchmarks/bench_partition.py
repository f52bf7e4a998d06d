"""S = 2 (and S = 3, 4) partition times: dgnexact against regioncam on the same nets, in one run.

    python benchmarks/bench_partition.py [--repeat 5] [--quick]

regioncam (PyPI ``regioncam``, Rust, float32, clipped to a square) is an OPTIONAL benchmark dependency:
``pip install regioncam`` (``make bench`` installs it); without it the script prints dgnexact's figures
only. Its square is sized to hold every vertex of dgnexact's partition (side 2 max|v| + 2), so every
region, bounded or not, meets it and the counts are comparable. Times are the median CPU time of the
process over ``--repeat`` runs, the two enumerators alternating (CPU time, not wall time, so that other
jobs on a shared machine inflate neither side).

Differences are explained region by region (not only where the counts differ): each regioncam face is
labelled by the float64 forward pass at its centroid; regions regioncam cuts in two or misses are counted,
and each missed region is checked in exact rational arithmetic at its interior point, with its width (the
smallest distance across a region, between a facet and the farthest vertex).
"""

from __future__ import annotations

import argparse
import statistics
import time
from fractions import Fraction

import numpy as np

import engine

try:
    import regioncam
except ImportError:  # optional benchmark dependency
    regioncam = None

S2_NETS = [[2, 16, 16], [2, 32, 32], [2, 32, 32, 32], [2, 64, 64]]
S3_NETS = [[3, 16, 16], [3, 32, 32], [4, 8, 8], [4, 16, 16]]


def _net(widths, seed=0):
    return engine.random_network(list(widths) + [2], rng=seed)


def _hidden(net):
    return [(layer.weight, layer.bias) for layer in net.layers[:-1] if isinstance(layer, engine.network.Linear)]


def _regioncam(net, size):
    rc = regioncam.Regioncam(size=size)
    for W, b in _hidden(net):
        rc.linear(W.T.astype(np.float32), b.astype(np.float32))
        rc.relu()
    return rc


def _median_time(fn, repeat):
    """Median CPU time of the process (``time.process_time``: robust to other jobs on a shared machine;
    both enumerators are single-threaded) and the last result."""
    times = []
    for _ in range(repeat):
        t = time.process_time()
        out = fn()
        times.append(time.process_time() - t)
    return statistics.median(times), out


def _width(region):
    """Smallest distance across a bounded region (inf for an unbounded one)."""
    if not region.bounded:
        return np.inf
    return float(np.min(np.max(region.c[:, None] - region.H @ region.vertices.T, axis=1)))


def _exact_signs(net, z) -> np.ndarray:
    """Every hidden unit's sign at the point z, in exact rational arithmetic (the float64 weights read exactly)."""
    h = [Fraction(float(x)) for x in z]
    out = []
    for layer in net.layers:
        if isinstance(layer, engine.network.Linear):
            h = [sum((Fraction(float(w)) * x for w, x in zip(row, h)), Fraction(0)) + Fraction(float(v))
                 for row, v in zip(layer.weight, layer.bias)]
        else:
            pos, neg = (Fraction(float(x)) for x in layer.slopes(np.array([True, False])))
            out += [x > 0 for x in h]
            h = [x * (pos if x > 0 else neg) for x in h]
    return np.array(out)


def _explain(net, P, rc):
    """Where the two partitions differ, region by region: each regioncam face is labelled by the float64 forward
    pass at its vertices' centroid (the region it lies in); regions holding two faces' centroids are cut in two
    by regioncam, regions holding none are missed by it. For the latter: whether the region's interior point has
    the region's pattern in exact rational arithmetic (it then exists), its width, and how far regioncam's
    nearest vertex is from its vertices."""
    V = np.asarray(rc.vertex_inputs, dtype=float)
    faces = [np.asarray(f.vertex_ids) for f in rc.faces]
    centres = np.array([V[f].mean(axis=0) for f in faces])
    keys = [np.packbits(s).tobytes() for s in net.sign_patterns(centres)]
    ours = {np.packbits(s).tobytes(): i for i, s in enumerate(P.signs)}
    Z = np.array([r.polytope.interior_point() for r in P])
    realised = int((net.sign_patterns(Z) == P.signs).all(axis=1).sum())
    missed = [ours[k] for k in set(ours) - set(keys)]
    exact = sum(bool((_exact_signs(net, Z[i]) == P.signs[i]).all()) for i in missed)
    widths = [_width(P[i]) for i in missed]
    dist = [np.abs(P[i].vertices[:, None] - V[None]).max(axis=2).min(axis=1).max() for i in missed]
    lines = [f"    dgnexact regions realised by their interior point in float64: {realised} / {len(P)}",
             f"    regioncam faces whose centroid lies in no dgnexact region: {sum(k not in ours for k in keys)}",
             f"    regioncam faces whose centroid lies in a region another face's centroid lies in: "
             f"{len(keys) - len(set(keys))}",
             f"    dgnexact regions holding no regioncam centroid: {len(missed)}"]
    # the same in a small square (side 20): regioncam's float32 corners then carry a far smaller rounding
    small = _regioncam(net, 20.0)
    V2 = np.asarray(small.vertex_inputs, dtype=float)
    keys2 = [np.packbits(s).tobytes() for s in net.sign_patterns(
        np.array([V2[np.asarray(f.vertex_ids)].mean(axis=0) for f in small.faces]))]
    inside = [k for k, r in ours.items() if (np.abs(P[r].vertices).max(axis=1) < 10.0 - 1e-9).any()]
    lines.append(f"    in a square of side 20: faces sharing a region {len(keys2) - len(set(keys2))}, "
                 f"regions with a vertex inside holding no centroid {len(set(inside) - set(keys2))} of {len(inside)}")
    if missed:
        lines.append(f"      of which exactly realised at their interior point (rational arithmetic): {exact}; widths "
                     f"{min(widths):.1e} .. {max(widths):.1e}; regioncam's nearest vertex up to {max(dist):.1e} away "
                     f"(median {np.median(dist):.1e})")
    return lines


def bench_s2(repeat, explain):
    print(f"S = 2 partition, median CPU time of {repeat} (dgnexact float64 complete; regioncam float32 in a square)")
    print(f"{'net':<16}{'regions dgnexact/regioncam':>28}{'dgnexact ms':>13}{'regioncam ms':>14}{'ratio':>8}")
    for widths in S2_NETS:
        net = _net(widths)
        P = engine.partition(net)  # warm-up (numba compiles on first use)
        size = 2.0 * max(np.abs(r.vertices).max() for r in P) + 2.0
        t_ours, t_rc, rc = [], [], None
        for _ in range(repeat):
            t_ours.append(_median_time(lambda net=net: engine.partition(net), 1)[0])
            if regioncam is not None:
                t, rc = _median_time(lambda net=net, size=size: _regioncam(net, size), 1)
                t_rc.append(t)
        ours = statistics.median(t_ours) * 1e3
        if rc is None:
            print(f"{str(widths):<16}{len(P):>28}{ours:>13.1f}{'-':>14}{'-':>8}")
            continue
        theirs = statistics.median(t_rc) * 1e3
        print(f"{str(widths):<16}{f'{len(P)} / {rc.num_faces}':>28}{ours:>13.1f}{theirs:>14.1f}"
              f"{ours / theirs:>7.1f}x")
        if explain:
            print("\n".join(_explain(net, P, rc)))
    if regioncam is None:
        print("regioncam not installed (optional: pip install regioncam): dgnexact figures only")


def bench_s3(repeat):
    print(f"\nS >= 3 partition (double description), median CPU time of {repeat}")
    for widths in S3_NETS:
        net = _net(widths)
        t, P = _median_time(lambda net=net: engine.partition(net), repeat)
        print(f"{str(widths):<16}{len(P):>8} regions {t:>9.3f} s")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="S = 2 only, no count explanation")
    args = ap.parse_args(argv)
    bench_s2(args.repeat, explain=not args.quick)
    if not args.quick:
        bench_s3(max(1, args.repeat // 5))


if __name__ == "__main__":
    main()
