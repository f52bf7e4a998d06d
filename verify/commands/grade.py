"""``python -m verify grade --decoder D.pt --sigma S --data X.npy --estimates E.json``.

Grades a foreign per-point log-likelihood estimate (e.g. IWAE with K = 5000) against the exact
log p(x) of Theorem 1: bias, spread, z-score, whether a claimed lower bound holds, worst points.
Formats and tests: :mod:`verify.grading`. Exit 0 pass, 1 flagged, 2 bad input.
"""

from __future__ import annotations

import argparse

HELP = "grade a foreign decoder's log-likelihood estimates exactly"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--decoder", required=True,
                        help="torch state_dict (.pt, weights only) or cpa-dgn .json")
    parser.add_argument("--sigma", required=True, help="the decoder's isotropic output standard deviation")
    parser.add_argument("--data", required=True, help="data points, (N, D) .npy or .csv")
    parser.add_argument("--estimates", required=True,
                        help='JSON {"log_likelihood": [...], "lower_bound": bool, "deterministic": bool}')
    parser.add_argument("--cov-z", default="1.0", help="isotropic prior variance of z (default 1)")
    parser.add_argument("--activation", default="relu",
                        help="relu | abs | leaky_relu:SLOPE (state_dict input)")
    parser.add_argument("--alpha", type=float, default=1e-3, help="false-flag probability of each test")
    parser.add_argument("--bias-tol", type=float, default=0.0, help="bias (nats) always tolerated")
    parser.add_argument("--out", default=None, help="write the JSON report here (default: stdout)")


def main(args: argparse.Namespace) -> int:
    from engine import evaluate
    from engine.errors import DGNInputError
    from engine.io import load_data, write_json
    from verify.grading import grade_estimates, load_decoder, load_estimates

    if not 0 < args.alpha < 1:
        raise DGNInputError("alpha", f"must be in (0, 1), got {args.alpha}")
    net = load_decoder(args.decoder, args.sigma, args.cov_z, args.activation)
    X = load_data(args.data)
    if X.shape[1] != net.data_dim:
        raise DGNInputError("data", f"has {X.shape[1]} columns but the decoder outputs {net.data_dim}")
    est = load_estimates(args.estimates, len(X))
    exact = evaluate(net, X).log_marginal
    report = grade_estimates(exact, est["log_likelihood"], lower_bound=est["lower_bound"],
                             deterministic=est["deterministic"], alpha=args.alpha, bias_tol=args.bias_tol)
    report["name"] = est["name"]
    write_json(report, args.out)
    status = "FLAGGED" if report["flagged"] else "pass"
    import sys

    print(f"grade: {status}: bias {report['bias']:+.4g} nats (z = {report['z_bias']:.3g}, tolerance "
          f"{report['bias_tolerance']:.3g}), spread {report['spread']:.4g}"
          + (f", lower-bound violations {report['lower_bound_violations']}" if est["lower_bound"] else ""),
          file=sys.stderr)
    return 1 if report["flagged"] else 0
