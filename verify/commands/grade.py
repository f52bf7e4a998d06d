"""``python -m verify grade (--decoder D.pt --sigma S --activation A | --model M.json) --data X.npy --estimates E``.

Grades a foreign per-point log-likelihood estimate (e.g. IWAE with K = 5000, an ELBO) against the exact
log p(x) of Theorem 1. Estimates declared unbiased get the two-sided bias test; estimates declared a
lower bound (``"lower_bound": true`` or ``--lower-bound``) get the one-sided test (flag only values
above log p beyond chance) and their gap reported (mean / median / worst; KL(q || p) for an ELBO).
Formats and tests: :mod:`verify.grading`. Exit 0 pass, 1 flagged, 2 bad input (or ``--time-limit``
stopped the exact evaluation before every point was graded).
"""

from __future__ import annotations

import argparse
import sys

HELP = "grade a foreign decoder's log-likelihood estimates exactly"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--decoder", help="torch state_dict (.pt, weights only) or cpa-dgn .json (with --sigma)")
    src.add_argument("--model", help="cpa-dgn JSON model graded as it is (full Sigma_x, any prior)")
    parser.add_argument("--sigma", default=None, help="with --decoder: the isotropic output standard deviation")
    parser.add_argument("--data", required=True, help="data points, (N, D) .npy or .csv")
    parser.add_argument("--estimates", required=True,
                        help='.npy array, JSON list, or JSON {"log_likelihood": [...], "lower_bound": bool, '
                        '"deterministic": bool}')
    parser.add_argument("--lower-bound", action="store_true", help="the estimates are (stochastic) lower bounds")
    parser.add_argument("--deterministic", action="store_true", help="... deterministic ones (e.g. exact ELBO)")
    parser.add_argument("--cov-z", default="1.0", help="with --decoder: isotropic prior variance of z (default 1)")
    parser.add_argument("--activation", default=None,
                        help="relu | abs | leaky_relu:SLOPE: required for a state_dict (it does not record them)")
    parser.add_argument("--alpha", type=float, default=1e-3, help="false-flag probability of each test")
    parser.add_argument("--bias-tol", type=float, default=0.0, help="bias (nats) always tolerated")
    parser.add_argument("--out", default=None, help="write the JSON report here (default: stdout)")
    parser.add_argument("--time-limit", type=float, default=None, help="seconds for the exact evaluation")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


def main(args: argparse.Namespace) -> int:
    from engine import load_network
    from engine.errors import DGNInputError
    from engine.io import write_json
    from verify.data import check_writable, load_points
    from verify.grading import grade_estimates, load_decoder, load_estimates
    from verify.progress import check_time_limit, exact_values

    check_writable(args.out, "out")
    check_time_limit(args.time_limit)
    if not 0 < args.alpha < 1:
        raise DGNInputError("alpha", f"must be in (0, 1), got {args.alpha}")
    if args.model is not None:
        if args.sigma is not None:
            raise DGNInputError("sigma", "is read from --model's cov_x", "drop --sigma or use --decoder")
        net = load_network(args.model)
    else:
        if args.sigma is None:
            raise DGNInputError("sigma", "is required with --decoder", "give --sigma S, or pass --model M.json")
        net = load_decoder(args.decoder, args.sigma, args.cov_z, args.activation)
    X = load_points(args.data, net.data_dim)
    est = load_estimates(args.estimates, len(X))
    lower = est["lower_bound"] or args.lower_bound or args.deterministic
    deterministic = est["deterministic"] or args.deterministic
    exact = exact_values(net, X, progress=not args.no_progress, time_limit=args.time_limit, desc="grade")
    n = exact.n_done
    report = grade_estimates(exact.log_marginal, est["log_likelihood"][:n], lower_bound=lower,
                             deterministic=deterministic, alpha=args.alpha, bias_tol=args.bias_tol)
    report["name"] = est["name"]
    report["n_graded"] = n
    write_json(report, args.out)
    print(_summary(report, lower, n, len(X)), file=sys.stderr)
    return 1 if report["flagged"] else (0 if n == len(X) else 2)


def _summary(report: dict, lower: bool, n: int, N: int) -> str:
    status = "FLAGGED" if report["flagged"] else "pass"
    parts = [f"grade: {status}"]
    if report["nonfinite_points"]:
        parts.append("non-finite estimates at " + ", ".join(f"x[{p['index']}] = {p['estimate']}"
                                                            for p in report["nonfinite_points"][:5]))
    if "bias" in report and not lower:
        parts.append(f"bias {report['bias']:+.4g} nats (z = {report['z_bias']:.3g}, tolerance "
                     f"{report['bias_tolerance']:.3g}), spread {report['spread']:.4g}")
    if lower and "gap_mean" in report:
        parts.append(f"lower bound: {report['lower_bound_violations']} point(s) above log p beyond chance "
                     f"(false-flag probability {report['alpha']:g}); gap mean {report['gap_mean']:.4g}, median "
                     f"{report['gap_median']:.4g}, worst {report['gap_worst']:.4g} nats "
                     f"at x[{report['gap_worst_index']}]")
    if n < N:
        parts.append(f"time limit: only {n} of {N} points graded")
    return "; ".join(parts)
