"""``python -m verify fuzz --budget 10m [--impl module:function] [--workers N] [--scheduler ADDRESS]``.

Runs the hypothesis properties of :mod:`verify.properties` (on dgnexact, or with ``--impl`` on a
foreign implementation) in seeded chunks until the budget is spent, shrinks every failure to a minimal
network and writes each distinct one as a JSON case (re-run with ``python -m verify replay``).
``--scheduler`` spreads the chunks over an existing Dask cluster; otherwise over ``--workers`` local
processes. Exit 0: no failure; 1: failures found; 2: bad input.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--budget", default="10m", help="time to spend: 90s, 10m, 2h (default 10m)")
    parser.add_argument(
        "--impl", default=None, help="foreign implementation module:function or file.py:function"
    )
    parser.add_argument("--workers", type=int, default=1, help="local worker processes (default 1)")
    parser.add_argument("--scheduler", default=None, help="Dask scheduler address, e.g. tcp://host:8786")
    parser.add_argument("--seed", type=int, default=0, help="campaign seed (default 0)")
    parser.add_argument("--properties", default=None, help="comma-separated property names (default: all)")
    parser.add_argument("--chunk", type=int, default=20, help="hypothesis examples per chunk (default 20)")
    parser.add_argument("--rounds", type=int, default=None, help="stop after this many rounds of chunks")
    parser.add_argument("--out", default=None, help="directory for case files (default ./fuzz-cases)")
    parser.add_argument("--stop-on-failure", action="store_true", help="stop at the first finding")
    parser.add_argument("--list", action="store_true", help="list the properties and exit")


def main(args: argparse.Namespace) -> int:
    from engine.errors import DGNInputError

    from ..fuzzing.campaign import default_out_dir, parse_budget, run_campaign
    from ..properties import PROPERTIES

    if args.list:
        for p in PROPERTIES.values():
            who = "dgnexact + foreign" if p.foreign and p.engine else ("foreign" if p.foreign else "dgnexact")
            print(f"{p.name:<18} [{who}] {p.doc}")
        return 0
    budget = parse_budget(args.budget)
    if args.out is not None:
        _check_out_dir(args.out)
    if args.chunk < 1:
        raise DGNInputError("chunk", f"must be >= 1, got {args.chunk}")
    if args.rounds is not None and args.rounds < 1:
        raise DGNInputError("rounds", f"must be >= 1, got {args.rounds}")
    names = [n.strip() for n in args.properties.split(",") if n.strip()] if args.properties else None
    res = run_campaign(
        budget,
        impl=args.impl,
        workers=args.workers,
        scheduler=args.scheduler,
        seed=args.seed,
        properties=names,
        chunk_examples=args.chunk,
        max_rounds=args.rounds,
        stop_on_failure=args.stop_on_failure,
        log=print,
    )
    paths = res.write_cases(args.out or default_out_dir()) if res.failed_chunks else []
    print(res.summary(paths))
    return 1 if res.failed_chunks else 0


def _check_out_dir(path: str) -> None:
    """The case folder must be a folder we can create or write to (checked before the campaign runs)."""
    import os
    from pathlib import Path

    from engine.errors import DGNInputError

    p = Path(path)
    if p.exists() and not p.is_dir():
        raise DGNInputError("out", f"{path!r} is a file, not a folder", "give a folder for the case files")
    base = p.absolute()
    while not base.exists():  # created with its parents: the nearest existing folder must be writable
        base = base.parent
    if not base.is_dir() or not os.access(base, os.W_OK):
        raise DGNInputError("out", f"{path!r} cannot be created or written", "give a writable folder")
