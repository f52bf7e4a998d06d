"""``python -m verify replay CASE.json [--impl module:function]``: re-run one saved fuzzing case.

Runs the case's property on its network and data, deterministically (the case's ``aux_seed`` drives
any extra randomness), against the case's implementation or ``--impl``. Exit 0: the property now
holds; 1: it still fails (the message says how); 2: bad input or a property that cannot judge the case.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("case", help="case file written by python -m verify fuzz")
    parser.add_argument("--impl", default=None, help="override the case's implementation (module:function)")
    parser.add_argument(
        "--engine", action="store_true", help="run on dgnexact even if the case names an impl"
    )


def main(args: argparse.Namespace) -> int:
    from ..fuzzing.campaign import load_case
    from ..properties import NotApplicable, PropertyFailure, run_property
    from ..strategies import Case

    record = load_case(args.case)
    case = Case.from_dict(record)
    impl = None if args.engine else (args.impl or record.get("impl"))
    who = impl or "dgnexact"
    try:
        ratio = run_property(record["property"], case, impl)
    except NotApplicable as exc:
        print(f"replay {record['property']} on {who}: not applicable ({exc})")
        return 2
    except PropertyFailure as exc:
        print(f"replay {record['property']} on {who}: FAILS: {exc}")
        return 1
    except Exception as exc:  # noqa: BLE001 - a crash of the subject is a failure of the property
        from engine.errors import DGNInputError

        if isinstance(exc, DGNInputError) and exc.field.startswith("case"):
            raise
        print(f"replay {record['property']} on {who}: FAILS: {type(exc).__name__}: {exc}")
        return 1
    print(f"replay {record['property']} on {who}: passes (worst error/tolerance {ratio:.3g})")
    return 0
