"""``python -m engine impute --model M.json --data X.npy|.csv --out Y.npy [--json R.json]``.

NaN entries of the data are missing. Writes the data with every missing entry replaced by its exact
conditional mean E[x_miss | x_obs] (``engine.impute``); ``--json`` adds the exact log p(x_obs) of each
row and the conditional covariance of its missing entries.
"""

from __future__ import annotations

import argparse

HELP = "exact imputation of missing (NaN) entries: E[x_miss | x_obs], log p(x_obs), Cov[x_miss | x_obs]"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="network in cpa-dgn JSON")
    parser.add_argument("--data", required=True, help="data with NaN for missing entries, (N, D) .npy or .csv")
    parser.add_argument("--out", required=True, help="write the imputed (N, D) array here (.npy or .csv)")
    parser.add_argument("--json", default=None, help="write log p(x_obs) and the conditional covariances here")
    parser.add_argument("--method", default="auto", help="Gaussian-integral method: auto or triangulation")
    parser.add_argument("--max-regions", type=int, default=100_000, help="region budget of the partition")
    parser.add_argument("--seed", type=int, default=0, help="seed for methods that sample (S >= 4)")


def _load(path: str):
    from pathlib import Path

    import numpy as np

    from engine.errors import DGNInputError
    from engine.validation import check_data

    p = Path(path)
    if not p.exists():
        raise DGNInputError("--data", f"file {path!r} does not exist")
    try:
        if p.suffix == ".npy":
            X = np.load(p, allow_pickle=False)
        elif p.suffix in {".csv", ".txt"}:
            X = np.genfromtxt(p, delimiter=",", ndmin=2, missing_values=("", "nan", "NaN"), filling_values=np.nan)
        else:
            raise DGNInputError("--data", f"unknown file type {p.suffix!r}", "use .npy or .csv")
    except (ValueError, OSError) as exc:
        raise DGNInputError("--data", f"cannot be read ({str(exc).splitlines()[0]})") from None
    return check_data(X, field="--data", one_dim="column", allow_nan=True)


def main(args: argparse.Namespace) -> int:
    from pathlib import Path

    import numpy as np

    from engine import load_network
    from engine.errors import DGNInputError
    from engine.impute import impute
    from engine.io import write_json

    net = load_network(args.model)
    X = _load(args.data)
    if X.shape[1] != net.data_dim:
        raise DGNInputError("--data", f"has {X.shape[1]} columns but the network's output dimension D is "
                            f"{net.data_dim}", f"give an (N, {net.data_dim}) array")
    out = Path(args.out)
    if out.suffix not in {".npy", ".csv"}:
        raise DGNInputError("--out", f"unknown file type {out.suffix!r}", "use .npy or .csv")
    res = impute(net, X, method=args.method, max_regions=args.max_regions, rng=args.seed)
    if out.suffix == ".npy":
        np.save(out, res.X)
    else:
        np.savetxt(out, res.X, delimiter=",", fmt="%.17g")
    if args.json:
        missing = [np.flatnonzero(row).tolist() for row in res.missing]
        write_json({"log_marginal": res.log_marginal.tolist(), "missing": missing,
                    "cov_missing": [res.cov[i][np.ix_(m, m)].tolist() for i, m in enumerate(missing)]},
                   args.json)
    return 0
