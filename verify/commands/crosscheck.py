"""``python -m verify crosscheck --model M.json --data X.npy (--claims C.json | --impl mod:fn) [--json out]``.

Exit 0: every claimed value agrees with the exact engine within tolerance; 1: a disagreement; 2: bad input.
"""

from __future__ import annotations

import argparse


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
    parser.add_argument("--json", default=None, help="write the JSON result here ('-' for stdout)")
    parser.add_argument("--tol-logp", type=float, default=1e-8, help="nats (default 1e-8)")
    parser.add_argument(
        "--tol-moments",
        type=float,
        default=1e-7,
        help="posterior moments, times max(1, |exact|) (default 1e-7)",
    )


def main(args: argparse.Namespace) -> int:
    from engine import load_network
    from engine.io import load_data, write_json

    from ..crosscheck import crosscheck
    from ..foreign import call_impl, load_claims, load_impl

    net = load_network(args.model)
    X = load_data(args.data)
    if X.shape[1] != net.data_dim:
        from engine.errors import DGNInputError

        raise DGNInputError(
            "data",
            f"has {X.shape[1]} columns but the model's D is {net.data_dim}",
            f"give an (N, {net.data_dim}) array",
        )
    claims = load_claims(args.claims) if args.claims else call_impl(load_impl(args.impl), net, X)
    res = crosscheck(net, X, claims, tol_logp=args.tol_logp, tol_moments=args.tol_moments)
    print(res.text())
    if args.json:
        write_json(res.to_dict(), args.json)
    return res.exit_code
