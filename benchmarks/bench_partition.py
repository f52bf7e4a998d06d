"""S = 2 (and S = 3, 4) partition times: dgnexact against regioncam on the same nets, in one run.

    python benchmarks/bench_partition.py [--repeat 5] [--quick]

regioncam (PyPI ``regioncam``, Rust, float32, clipped to a square) is an OPTIONAL benchmark dependency:
``pip install regioncam`` (``make bench`` installs it); without it the script prints dgnexact's figures
only. Its square is sized to hold every vertex of dgnexact's partition (side 2 max|v| + 2), so every
region, bounded or not, meets it and the counts are comparable. Times are the median CPU time of the
process over ``--repeat`` runs, the two enumerators alternating (CPU time, not wall time, so that other
jobs on a shared machine inflate neither side).

Count differences are explained by sign pattern: each regioncam face's pattern is read from regioncam's
own pre-activation maps at the face's centroid, and the regions found by one side only are summarised
with their widths (the smallest distance across a region, between a facet and the farthest vertex).
"""

from __future__ import annotations

import argparse
import statistics
import time

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


def _explain(net, P, rc):
    """Where the counts differ, by sign pattern: regions one side has and the other has not, regioncam faces
    that share a pattern (one region cut in two), and whether each dgnexact region has an interior point whose
    float64 forward pass gives its pattern (the region exists, up to the rounding of that pass)."""
    V = np.asarray(rc.vertex_inputs, dtype=float)
    centres = np.array([V[np.asarray(f.vertex_ids)].mean(axis=0) for f in rc.faces])
    # regioncam's own pre-activations on each face (its float32 affine maps), read at the face's centroid
    homog = np.hstack([centres, np.ones((len(centres), 1))])
    pre = [np.einsum("fk,fkw->fw", homog, np.asarray(rc.face_activations(li), dtype=float)) > 0
           for li in range(1, rc.num_layers, 2)]
    keys = [np.packbits(s).tobytes() for s in np.concatenate(pre, axis=1)]
    theirs = set(keys)
    ours = {np.packbits(s).tobytes(): r for s, r in zip(P.signs, P)}
    Z = np.array([r.polytope.interior_point() for r in P])
    realised = int((net.sign_patterns(Z) == P.signs).all(axis=1).sum())
    only_ours = sorted(_width(ours[k]) for k in set(ours) - theirs)
    shared = len(keys) - len(theirs)
    lines = [f"    dgnexact regions realised by their interior point in float64: {realised} / {len(P)}",
             f"    regioncam faces whose centroid repeats another face's pattern: {shared}",
             f"    patterns only regioncam has: {len(theirs - set(ours))}",
             f"    patterns only dgnexact has: {len(only_ours)}"
             + (f" (widths {only_ours[0]:.1e} .. {only_ours[-1]:.1e}, median {np.median(only_ours):.1e})"
                if only_ours else "")]
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
        if explain and len(P) != rc.num_faces:
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
