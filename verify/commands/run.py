"""``python -m verify [run] [--profile quick|full] [--seed N] [--json report.json]``: the suite."""

from __future__ import annotations

import argparse
import sys
import time


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--profile",
        choices=["quick", "full"],
        default="quick",
        help="quick (default, < 2 min on 2 cores) or full (more points, S = 2 quadrature, S = 3-4)",
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


def main(args: argparse.Namespace) -> int:
    from engine.errors import DGNInputError
    from engine.io import write_json

    from ..report import exit_code, json_report, text_table
    from ..suite import run_suite

    if not 0 < args.budget < 1:
        raise DGNInputError("--budget", f"must be in (0, 1), got {args.budget}")
    t0 = time.perf_counter()
    records, meta, timings = run_suite(args.profile, args.seed, args.budget, progress=not args.no_progress)
    timings["total"] = round(time.perf_counter() - t0, 3)
    out = sys.stderr if args.json == "-" else sys.stdout
    print(text_table(records, meta), file=out)
    print(f"total time {timings['total']:.1f} s", file=out)
    if args.json:
        write_json(json_report(records, meta, timings), args.json)
    return exit_code(records)
