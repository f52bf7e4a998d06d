"""``python -m verify [run] [--profile quick|full] [--seed N] [--json report.json] [--model M.json [--data X]]``.

The verification suite, on the built-in cases or (``--model``) on the user's own model: Theorem 1 vs
quadrature / Monte Carlo, Prop. 1-2, Bayes' rule, Lemma 2, EM, on ``--data`` or on points drawn from the
model near and far from its manifold; checks that do not apply to that model are SKIPPED with the reason.
"""

from __future__ import annotations

import argparse
import sys
import time


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--profile",
        choices=["quick", "full"],
        default="quick",
        help="quick (default, < 2 min on 2 cores; S = 2 quadrature on one point) or full (more points, S = 2 "
        "quadrature on every point, Monte-Carlo posterior moments, S = 3-6)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the Monte-Carlo draws and random z")
    parser.add_argument("--json", default=None, help="write the JSON report here ('-' for stdout)")
    parser.add_argument(
        "--budget",
        type=float,
        default=1e-6,
        help="family-wise false-fail probability shared by the Monte-Carlo checks",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    parser.add_argument("--model", default=None, help="run the suite on this cpa-dgn JSON model instead")
    parser.add_argument("--data", default=None,
                        help="with --model: (N, D) .npy/.csv points (default: drawn near and far)")


def main(args: argparse.Namespace) -> int:
    from engine.errors import DGNInputError
    from engine.io import write_json

    from ..data import check_writable, load_points
    from ..report import exit_code, json_report, text_table
    from ..suite import run_suite

    if not 0 < args.budget < 1:
        raise DGNInputError("--budget", f"must be in (0, 1), got {args.budget}")
    if not 0 <= args.seed < 2**63:
        raise DGNInputError("--seed", f"must be a non-negative integer, got {args.seed}", "use e.g. --seed 0")
    check_writable(args.json, "--json")
    model = X = None
    if args.data is not None and args.model is None:
        raise DGNInputError("--data", "needs --model", "pass the model the data belong to")
    if args.model is not None:
        from engine import load_network

        model = load_network(args.model)
        X = None if args.data is None else load_points(args.data, model.data_dim, "--data")
    t0 = time.perf_counter()
    records, meta, timings = run_suite(args.profile, args.seed, args.budget, progress=not args.no_progress,
                                       model=model, data=X)
    timings["total"] = round(time.perf_counter() - t0, 3)
    out = sys.stderr if args.json == "-" else sys.stdout
    print(text_table(records, meta), file=out)
    print(f"total time {timings['total']:.1f} s", file=out)
    if args.json:
        write_json(json_report(records, meta, timings), args.json)
    return exit_code(records)
