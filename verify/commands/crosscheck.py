"""``python -m verify crosscheck --model M.json --data X.npy (--claims C.json | --impl mod:fn | --cmd CMD)``.

``--cmd 'CMD ... {model} {data} {out}'`` runs any program (any language) as a subprocess: ``{model}``
is the network as cpa-dgn JSON, ``{data}`` the points (``--data-format npy|csv``), and the program
writes its claims JSON to ``{out}`` (see :mod:`verify.command`). Its stdout/stderr are kept apart and
saved in the ``--json`` report. One verdict per claimed field (``--fields`` chooses which are judged).

Exit 0: every judged field agrees with the exact engine within tolerance; 1: a field disagrees (NaN/inf
claims included) or the foreign command failed (non-zero exit, timeout, no or invalid claims); 2: bad
input, or ``--time-limit`` stopped the exact evaluation before every point was judged.
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="network in cpa-dgn JSON")
    parser.add_argument("--data", required=True, help="data points, (N, D) .npy or .csv")
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--claims", help="JSON with any of log_marginal, posterior_mean, posterior_cov, n_regions"
    )
    src.add_argument(
        "--impl", help="foreign implementation module:function or file.py:function, fn(model, X)"
    )
    src.add_argument("--cmd", help="foreign command line with {model} {data} {out} (run as a subprocess)")
    parser.add_argument("--timeout", type=float, default=None, help="seconds the --cmd may run (default: no limit)")
    parser.add_argument("--data-format", choices=["npy", "csv"], default="npy",
                        help="format of the {data} file given to --cmd (default npy)")
    parser.add_argument("--fields", default=None,
                        help="comma-separated fields to judge (default: every claimed field)")
    parser.add_argument("--json", default=None, help="write the JSON result here ('-' for stdout)")
    parser.add_argument("--tol-logp", type=float, default=1e-8, help="nats (default 1e-8)")
    parser.add_argument(
        "--tol-moments",
        type=float,
        default=1e-7,
        help="posterior moments, times max(1, |exact|) (default 1e-7)",
    )
    parser.add_argument("--time-limit", type=float, default=None,
                        help="seconds for the exact evaluation; stops and reports the points done")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


def main(args: argparse.Namespace) -> int:
    from engine import load_network
    from engine.io import write_json

    from ..command import check_template, run_command
    from ..crosscheck import crosscheck, foreign_failure, parse_fields
    from ..data import check_writable, load_points
    from ..foreign import call_impl, load_claims, load_impl
    from ..progress import check_time_limit

    check_writable(args.json, "json")
    fields = parse_fields(args.fields)
    check_time_limit(args.time_limit)
    net = load_network(args.model)
    X = load_points(args.data, net.data_dim)
    run = None
    if args.cmd is not None:
        check_template(args.cmd)
        claims, run = run_command(args.cmd, net, X, timeout=args.timeout, data_format=args.data_format)
        if claims is None:
            res = foreign_failure(net, X, run, fields)
            return _report(res, args.json, write_json)
    elif args.claims:
        claims = load_claims(args.claims)
    else:
        claims = call_impl(load_impl(args.impl), net, X, require_finite=False)
    res = crosscheck(net, X, claims, tol_logp=args.tol_logp, tol_moments=args.tol_moments, fields=fields,
                     progress=not args.no_progress, time_limit=args.time_limit,
                     foreign=run)
    return _report(res, args.json, write_json)


def _report(res, path, write_json) -> int:
    out = sys.stderr if path == "-" else sys.stdout
    print(res.text(), file=out)
    if path:
        write_json(res.to_dict(), path)
    return res.exit_code
