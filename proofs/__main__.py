"""``python -m proofs [--json FILE] [--only KEY ...] [--perturb NAME]``: run the claims, print a table
(claim, method, status, seconds). Exit 0 if every claim is proved/checked, 1 if any failed, 2 on
bad arguments."""

from __future__ import annotations

import argparse
import json
import sys
import time

from . import CLAIMS, get_claim, run_claim


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m proofs", description=__doc__)
    ap.add_argument("--json", metavar="FILE", help="write the results as JSON to FILE")
    ap.add_argument("--only", nargs="+", metavar="KEY", help="run only these claims")
    ap.add_argument("--perturb", metavar="NAME", help="inject a wrong formula (the run must then fail)")
    ap.add_argument("--list", action="store_true", help="list the claims and their perturbations")
    args = ap.parse_args(argv)
    if args.list:
        for c in CLAIMS:
            print(f"{c.key:24s} {c.equation:40s} perturbations: {', '.join(c.perturbations)}")
        return 0
    try:
        claims = [get_claim(k) for k in args.only] if args.only else CLAIMS
    except KeyError as exc:
        print(f"error: {exc.args[0]}", file=sys.stderr)
        return 2
    if args.perturb and any(args.perturb not in c.perturbations for c in claims):
        print(f"error: --perturb {args.perturb!r} is not defined for every selected claim", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    results = []
    print(f"{'claim':24s} {'method':84s} {'status':8s} {'seconds':>8s}")
    for c in claims:
        r = run_claim(c, args.perturb)
        results.append(r)
        print(f"{r.key:24s} {r.method[:84]:84s} {r.status:8s} {r.seconds:8.2f}", flush=True)
        if not r.ok:
            print(f"    -> {r.detail}", flush=True)
    total = time.perf_counter() - t0
    ok = all(r.ok for r in results)
    print(f"{sum(r.ok for r in results)}/{len(results)} claims hold; total {total:.1f} s")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"ok": ok, "seconds": round(total, 3), "perturb": args.perturb,
                       "claims": [r.as_dict() for r in results]}, fh, indent=2)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
