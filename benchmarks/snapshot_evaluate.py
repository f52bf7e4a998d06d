"""Bit-for-bit behaviour snapshot of ``engine.evaluate`` for a refactor: save, then compare.

Saves to one ``.npz`` every array of ``evaluate`` (log p(x), posterior mean and covariance, the per-region
log weights, means and covariances, the error bar) and the prior region log-masses (Prop. 1) for
S = 1, 2, 3 (and a small S = 4) x ReLU / leaky-ReLU / abs x isotropic and full Sigma_x, on points drawn
from the model plus two far-off points (+25, -60 in every coordinate), each S >= 2 method called
directly. Run it with the old tree on ``PYTHONPATH`` and then the new one, and compare:

    PYTHONPATH=/old/tree .venv/bin/python benchmarks/snapshot_evaluate.py save old.npz
    .venv/bin/python benchmarks/snapshot_evaluate.py save new.npz
    .venv/bin/python benchmarks/snapshot_evaluate.py compare old.npz new.npz   # exit 1 unless all bit-identical
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

import engine
from engine.distributions import prior_region_log_masses
from engine.partition import partition

_WIDTHS = {1: [1, 8, 8, 3], 2: [2, 6, 6, 3], 3: [3, 5, 5, 3], 4: [4, 3, 3, 5]}
_METHODS = {1: ("auto",), 2: ("auto", "triangulation", "slices"), 3: ("auto", "triangulation"), 4: ("auto",)}
_ACTIVATIONS = ("relu", "leaky_relu", "abs")
_FIELDS = ("log_marginal", "posterior_mean", "posterior_cov", "region_log_weights", "region_means", "region_covs",
           "log_marginal_error")


def _full_cov(D: int, rng: np.random.Generator) -> np.ndarray:
    A = rng.normal(size=(D, D)) * 0.3
    return 0.05 * np.eye(D) + A @ A.T * 0.1


def _cases():
    """(name, net, X, methods) for every case of the snapshot."""
    for S, widths in _WIDTHS.items():
        for act in _ACTIVATIONS if S < 4 else ("relu",):
            for cov_kind in ("iso", "full"):
                rng = np.random.default_rng(100 * S + 7 * len(act) + len(cov_kind))
                cov_x = 0.1 if cov_kind == "iso" else _full_cov(widths[-1], rng)
                net = engine.random_network(widths, activation=act, cov_x=cov_x, rng=S)
                n = 4 if S < 4 else 2
                X = np.vstack([net.sample(n, rng=1), np.full((1, widths[-1]), 25.0), np.full((1, widths[-1]), -60.0)])
                yield f"S{S}-{act}-{cov_kind}", net, X, _METHODS[S]


def save(path: str) -> None:
    out: dict[str, np.ndarray] = {}
    for name, net, X, methods in _cases():
        part = partition(net)
        out[f"{name}/prior"] = prior_region_log_masses(net, part)
        for method in methods:
            ev = engine.evaluate(net, X, part=part, method=method, rng=0)
            for f in _FIELDS:
                v = getattr(ev, f)
                if v is not None:
                    out[f"{name}/{method}/{f}"] = np.asarray(v)
        print(name, len(part), "regions", flush=True)
    np.savez(path, **out)
    print(f"{len(out)} arrays -> {path}")


def compare(old: str, new: str) -> int:
    a, b = np.load(old), np.load(new)
    bad = sorted(set(a.files) ^ set(b.files))
    for k in sorted(set(a.files) & set(b.files)):
        x, y = a[k], b[k]
        if x.shape != y.shape or x.dtype != y.dtype or x.tobytes() != y.tobytes():
            with np.errstate(invalid="ignore"):
                d = np.nanmax(np.abs(x - y)) if x.shape == y.shape else np.nan
            print(f"DIFFERS {k}: max |diff| {d:.3g}")
            bad.append(k)
    print(f"{len(a.files)} vs {len(b.files)} arrays, {len(bad)} differ or missing" + ("" if bad else ": bit-identical"))
    return 1 if bad else 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("save").add_argument("path")
    c = sub.add_parser("compare")
    c.add_argument("old")
    c.add_argument("new")
    args = p.parse_args(argv)
    if args.cmd == "save":
        save(args.path)
        return 0
    return compare(args.old, args.new)


if __name__ == "__main__":
    sys.exit(main())
