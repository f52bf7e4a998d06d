"""``python -m verify demo [--bugs a,b] [--json out.json]``: buggy implementations shown caught.

Each of :data:`verify.demo_impl.BUGS` runs as a separate process through the ``crosscheck --cmd`` path
(see :mod:`verify.demo`). Exit 0: the correct implementation passes and every bug is caught; 1 otherwise.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bugs", default=None, help="comma-separated subset of the bug classes (default all)")
    parser.add_argument("--json", default=None, help="write every crosscheck result here ('-' for stdout)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per implementation run")


def main(args: argparse.Namespace) -> int:
    from engine.errors import DGNInputError
    from engine.io import write_json

    from ..data import check_writable
    from ..demo import gallery, run_demo
    from ..demo_impl import BUGS

    check_writable(args.json, "json")
    bugs = BUGS if args.bugs is None else tuple(b.strip() for b in args.bugs.split(",") if b.strip())
    unknown = [b for b in bugs if b not in BUGS]
    if unknown or not bugs:
        raise DGNInputError("bugs", f"{unknown[0]!r} is not a demo bug" if unknown else "is empty",
                            f"choose from {', '.join(BUGS)}")
    exhibits = run_demo(bugs, timeout=args.timeout)
    import sys

    print(gallery(exhibits), file=sys.stderr if args.json == "-" else sys.stdout)
    if args.json:
        write_json({e.bug or "correct": {**e.result.to_dict(), "caught": e.caught} for e in exhibits}, args.json)
    return 0 if all(e.caught for e in exhibits) else 1
