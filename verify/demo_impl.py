"""A small independent S = 1 implementation of Theorem 1 / Prop. 2, with switchable bugs (for the demo).

Run as a foreign program: ``python demo_impl.py [--bug NAME] MODEL.json DATA.npy|.csv OUT.json``. It
reads the cpa-dgn JSON itself and uses only numpy and scipy (no dgnexact import): the regions of a
1-D latent space are intervals found by splitting at every unit's zero crossing layer by layer
(Lemma 3); each contributes ``N(x; b, Sx + sz^2 a a^T) * Phi_omega`` (eq. 5) and a truncated-normal
posterior piece (eq. 6-7, Prop. 2).

``--bug`` reproduces one bug class met in real implementations (see ``python -m verify demo``):

* ``tail_cancellation``: interval mass as ``sf(alpha) - sf(beta)`` in linear space,
* ``additive_floor``: ``log(p + 1e-25)`` instead of a log-sum-exp,
* ``box_clipping``: the latent line clipped to ``[-4, 4]``,
* ``rays_as_vertices``: an unbounded interval's ray direction (+-1) used as its far end point (the S = 1
  form of feeding a region's rays to a triangulation as if they were vertices),
* ``pi_for_log_pi``: ``log 2 + pi`` where ``log(2 pi) = log 2 + log pi`` belonged,
* ``unit_variance``: ``Sigma_x = I`` whatever the model says,
* ``std_for_variance``: the posterior standard deviation reported as the variance,
* ``no_between_cov``: the mixture covariance without its between-region term.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from scipy.special import log_ndtr, logsumexp
from scipy.stats import norm

BUGS = ("tail_cancellation", "additive_floor", "box_clipping", "rays_as_vertices", "pi_for_log_pi",
        "unit_variance", "std_for_variance", "no_between_cov")


def _cov(spec, dim: int) -> np.ndarray:
    arr = np.asarray(spec, dtype=np.float64)
    return arr * np.eye(dim) if arr.ndim == 0 else (np.diag(arr) if arr.ndim == 1 else arr)


def regions(layers: list[dict], bug: str = "") -> list[tuple[float, float, np.ndarray, np.ndarray]]:
    """Intervals (lo, hi) of z with g(z) = a z + b on each (a, b of length D)."""
    pieces = [(-np.inf, np.inf, np.ones(1), np.zeros(1))]
    for layer in layers:
        if layer["type"] == "linear":
            W, c = np.asarray(layer["weight"], float), np.asarray(layer["bias"], float)
            pieces = [(lo, hi, W @ a, W @ b + c) for lo, hi, a, b in pieces]
            continue
        eta = {"relu": 0.0, "abs": -1.0}.get(layer["type"], layer.get("negative_slope", 0.0))
        out = []
        for lo, hi, a, b in pieces:
            with np.errstate(divide="ignore", invalid="ignore"):
                roots = np.where(a != 0, -b / a, np.nan)
            cuts = [lo] + sorted(t for t in roots if lo < t < hi) + [hi]
            for l_, h_ in zip(cuts[:-1], cuts[1:], strict=True):
                mid = _inside(l_, h_)
                s = np.where(a * mid + b > 0, 1.0, eta)
                out.append((l_, h_, s * a, s * b))
        pieces = out
    return pieces


def _inside(lo: float, hi: float) -> float:
    """A point strictly inside the interval (lo, hi), either end possibly infinite."""
    if np.isfinite(lo) and np.isfinite(hi):
        return (lo + hi) / 2
    return hi - 1.0 if np.isfinite(hi) else (lo + 1.0 if np.isfinite(lo) else 0.0)


def _log_mass(al: float, be: float, bug: str) -> float:
    """log(Phi(be) - Phi(al)), relative accuracy in both tails."""
    if bug == "tail_cancellation":
        with np.errstate(divide="ignore"):
            return float(np.log(norm.sf(al) - norm.sf(be)))
    if al > 0:  # right tail: Phi(-al) - Phi(-be)
        al, be = -be, -al
    hi, lo = log_ndtr(be), log_ndtr(al)
    return float(hi + np.log1p(-np.exp(lo - hi))) if lo < hi else -np.inf


def _truncated(al: float, be: float, lm: float) -> tuple[float, float]:
    """Mean and variance of a standard normal truncated to [al, be] (log mass lm)."""
    lpa = -0.5 * al * al - 0.5 * np.log(2 * np.pi) if np.isfinite(al) else -np.inf
    lpb = -0.5 * be * be - 0.5 * np.log(2 * np.pi) if np.isfinite(be) else -np.inf
    ra, rb = np.exp(lpa - lm), np.exp(lpb - lm)
    m = ra - rb
    ta = al * ra if np.isfinite(al) else 0.0
    tb = be * rb if np.isfinite(be) else 0.0
    return m, max(1.0 + ta - tb - m * m, 0.0)


def point(x: np.ndarray, pieces, cz: float, cx: np.ndarray, bug: str) -> tuple[float, float, float]:
    """log p(x), E[z|x], Var[z|x] for one data point."""
    D = len(x)
    P = np.linalg.inv(cx)
    logs, means, varis = [], [], []
    two_pi = np.log(2) + (np.pi if bug == "pi_for_log_pi" else np.log(np.pi))
    for lo, hi, a, b in pieces:
        if bug == "box_clipping":
            lo, hi = max(lo, -4.0), min(hi, 4.0)
            if lo >= hi:
                continue
        if bug == "rays_as_vertices":
            lo, hi = (min(hi, -1.0), hi) if np.isinf(lo) else (lo, hi)
            lo, hi = (lo, max(lo, 1.0)) if np.isinf(hi) else (lo, hi)
        C = cx + cz * np.outer(a, a)
        r = x - b
        _, logdet = np.linalg.slogdet(C)
        lpref = -0.5 * (D * two_pi + logdet + r @ np.linalg.solve(C, r))
        v = 1.0 / (1.0 / cz + a @ P @ a)
        mu = v * (a @ P @ r)
        s = np.sqrt(v)
        al, be = (lo - mu) / s, (hi - mu) / s
        lm = _log_mass(al, be, bug)
        if not np.isfinite(lm):
            continue
        tm, tv = _truncated(al, be, lm)
        logs.append(lpref + lm)
        means.append(mu + s * tm)
        varis.append(v * tv)
    logs, means, varis = np.array(logs), np.array(means), np.array(varis)
    lp = float(logsumexp(logs))
    if bug == "additive_floor":
        lp = float(np.log(np.exp(logs).sum() + 1e-25))
    w = np.exp(logs - logsumexp(logs))
    mean = float(w @ means)
    var = float(w @ varis) if bug == "no_between_cov" else float(w @ (varis + (means - mean) ** 2))
    return lp, mean, (np.sqrt(var) if bug == "std_for_variance" else var)


def claims(model: dict, X: np.ndarray, bug: str = "") -> dict:
    if model["latent_dim"] != 1:
        raise SystemExit("demo_impl: only S = 1 models")
    pieces = regions(model["layers"])
    D = X.shape[1]
    cz = float(_cov(model.get("cov_z", 1.0), 1)[0, 0])
    cx = np.eye(D) if bug == "unit_variance" else _cov(model.get("cov_x", 1.0), D)
    rows = [point(x, pieces, cz, cx, bug) for x in X]
    return {"log_marginal": [r[0] for r in rows], "posterior_mean": [[r[1]] for r in rows],
            "posterior_cov": [[[r[2]]] for r in rows], "n_regions": len(pieces)}


def main(argv: list[str]) -> int:
    bug = ""
    if argv[:1] == ["--bug"]:
        bug, argv = argv[1], argv[2:]
        if bug not in BUGS:
            print(f"demo_impl: unknown bug {bug!r}", file=sys.stderr)
            return 2
    model_path, data_path, out_path = argv
    model = json.loads(Path(model_path).read_text())
    X = np.load(data_path) if data_path.endswith(".npy") else np.loadtxt(data_path, delimiter=",", ndmin=2)
    print(f"demo_impl{' --bug ' + bug if bug else ''}: {len(X)} points")  # foreign stdout, kept apart
    Path(out_path).write_text(json.dumps(claims(model, X, bug)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
