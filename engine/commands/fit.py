"""``python -m engine fit``: exact EM from a starting network.

Usage: ``python -m engine fit --model INIT.json --data X.npy --max-iter K [--tol T] --out FITTED.json
--history H.json``.

Runs exact, monotone EM (engine.em.EM) from the network in INIT.json and writes the fitted network
(cpa-dgn JSON) and the history (``log_likelihoods`` per iteration, mean per point, entry 0 = start;
``n_regions``; ``converged``; ``n_iter``; ``updates``: the fate of every update per iteration).
"""

from __future__ import annotations

import argparse
import sys

HELP = "exact EM: fit a network to data (monotone; Sec. 4.1-4.2)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="starting network in cpa-dgn JSON")
    parser.add_argument("--data", required=True, help="training data, (N, D) .npy or .csv")
    parser.add_argument("--max-iter", type=int, required=True, help="maximum number of EM iterations")
    parser.add_argument("--tol", type=float, default=1e-4,
                        help="stop when the mean log-likelihood gains less than this (nats per point)")
    parser.add_argument("--out", required=True, help="write the fitted network (cpa-dgn JSON) here")
    parser.add_argument("--history", default=None, help="write the EM history (JSON) here")
    parser.add_argument("--cov-x-type", default="isotropic", choices=["isotropic", "diagonal", "full"],
                        help="family of the observation-noise covariance")
    parser.add_argument("--learn-cov-z", action="store_true", help="also learn the latent covariance")
    parser.add_argument("--sweep", default="chain", choices=["chain", "layerwise", "joint", "none"],
                        help="inner-layer updates: chain (default), layerwise, joint, none (exact only)")
    parser.add_argument("--max-backtracks", type=int, default=1,
                        help="halvings of a rejected inner-layer update before giving it up")
    parser.add_argument("--max-regions", type=int, default=100_000, help="region budget of the partition")
    parser.add_argument("--seed", type=int, default=0, help="seed for Gaussian-integral methods that sample")
    parser.add_argument("--backoff", type=int, default=8,
                        help="an inner layer whose update was rejected sits out up to this many iterations (0: never)")
    parser.add_argument("--workers", type=int, default=1, help="local worker processes for the E-step (default 1)")
    parser.add_argument("--scheduler", default=None, help="Dask scheduler address for the E-step, e.g. tcp://host:8786")
    parser.add_argument("--verbose", action="store_true", help="show a progress bar")


def main(args: argparse.Namespace) -> int:
    from engine import load_network, save_network
    from engine.em import EM
    from engine.errors import DGNInputError
    from engine.io import check_output_file, load_data, write_json

    if args.max_iter < 0:
        raise DGNInputError("--max-iter", f"must be >= 0, got {args.max_iter}")
    if not args.tol >= 0:
        raise DGNInputError("--tol", f"must be >= 0, got {args.tol}")
    check_output_file(args.out, "--out")  # before the fit, which may take hours
    check_output_file(args.history, "--history")
    net = load_network(args.model)
    X = load_data(args.data)
    em = EM(net, max_iter=args.max_iter, tol=args.tol, cov_x_type=args.cov_x_type,
            learn_cov_z=args.learn_cov_z, random_state=args.seed, verbose=args.verbose, sweep=args.sweep,
            max_backtracks=args.max_backtracks, max_regions=args.max_regions, backoff=args.backoff,
            n_workers=args.workers, scheduler=args.scheduler)
    em.fit(X)
    try:
        save_network(em.network_, args.out)
    except OSError as exc:
        raise DGNInputError("--out", f"cannot write {args.out!r} ({exc.strerror})", "pass a writable path") from None
    history = em.history()
    if args.history:
        write_json(history, args.history, "--history")
    lls = history.get("log_likelihoods", [])
    last = f"{lls[-1]:.6g}" if lls else "n/a"
    print(f"fit: {history.get('n_iter', 0)} EM iteration(s) on {len(X)} point(s), mean log-likelihood {last}, "
          f"converged: {history.get('converged')}; wrote {args.out}", file=sys.stderr)
    return 0
