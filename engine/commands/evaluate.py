"""``python -m engine evaluate --model M.json --data X.npy [--out R.json] [--workers N | --scheduler ADDR]``."""

from __future__ import annotations

import argparse

HELP = "exact log p(x), posterior mean and covariance (Theorem 1, Prop. 2)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="network in cpa-dgn JSON")
    parser.add_argument("--data", required=True, help="data points, (N, D) .npy or .csv")
    parser.add_argument("--out", default=None, help="write the JSON result here (default: stdout)")
    parser.add_argument("--method", default="auto", help="Gaussian-integral method: auto or triangulation")
    parser.add_argument("--max-regions", type=int, default=100_000, help="region budget of the partition")
    parser.add_argument("--seed", type=int, default=0, help="seed for methods that sample (S >= 4)")
    parser.add_argument("--chunk-size", type=int, default=None,
                        help="rows per block (default: about 1e6 point-region pairs); memory follows the block")
    parser.add_argument("--workers", type=int, default=1, help="local worker processes (default 1)")
    parser.add_argument("--scheduler", default=None, help="Dask scheduler address, e.g. tcp://host:8786")


def main(args: argparse.Namespace) -> int:
    from engine import evaluate, load_network
    from engine.io import check_output_file, load_data, write_json

    check_output_file(args.out, "--out")  # before any computation
    net = load_network(args.model)
    X = load_data(args.data)
    ev = evaluate(net, X, method=args.method, max_regions=args.max_regions, rng=args.seed,
                  chunk_size=args.chunk_size, workers=args.workers, scheduler=args.scheduler)
    write_json(ev.to_dict(), args.out)
    return 0
