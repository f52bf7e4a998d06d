"""Grading foreign log-likelihood estimates against the exact log p(x) (Theorem 1).

Decoder input: a torch ``state_dict`` (``torch.save(model.state_dict(), path)`` of an ``nn.Sequential``
of Linear / ReLU / LeakyReLU) read with ``torch.load(weights_only=True)`` -- arbitrary pickled
objects are never executed -- or a ``cpa-dgn`` JSON network. The architecture of a state_dict is
inferred from its keys and shapes: ``<i>.weight`` (out, in) and ``<i>.bias`` (out,) of the Linear
layers in order, with one activation (``--activation relu | leaky_relu:SLOPE | abs``) between
consecutive Linear layers. The output noise is ``sigma^2 I`` and the prior ``N(0, cov_z I)``.

Estimates file (JSON)::

    {"log_likelihood": [l_1, ..., l_N],      # one estimate of log p(x_n) per data row (nats)
     "lower_bound": true | false,            # optional, default false: the estimates claim to be bounds
     "deterministic": true | false}          # optional, default false (see below)

Statistics, with ``d_n = l_n - log p(x_n)`` (exact oracle, Theorem 1, accurate to ~1e-12 nats):

* bias = mean d, spread = std d (ddof 1), z = bias / (spread / sqrt N). Flag ``bias`` when
  ``|bias| > max(z_crit * spread / sqrt N, bias_tol)``, ``z_crit`` the two-sided normal quantile of
  ``alpha`` (default 1e-3): an estimator whose errors are unbiased and independent across points is
  flagged with probability ~alpha (central limit theorem; N >= 30 advised).
* A claimed stochastic lower bound (``deterministic`` false: the log of a non-negative unbiased
  estimate of p(x), as IWAE or AIS) satisfies ``P(l_n > log p(x_n) + t) <= e^-t`` per point and
  ``P(sum_n d_n > t) <= e^-t`` for independent points (Markov). Violations are points with
  ``d_n > log(2 N / alpha)`` or a total ``sum d_n > log(2 / alpha)``: false-flag probability <= alpha.
* A claimed deterministic bound (e.g. an exact ELBO) is violated where
  ``d_n > 1e-9 * (1 + |log p(x_n)|)`` (rounding).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import norm

from engine.errors import DGNInputError
from engine.network import Activation, Linear, Network, _linear, load_network

_KEY = re.compile(r"^(?P<prefix>.*?)(?P<index>\d+)\.(?P<kind>weight|bias)$")


def parse_activation(spec: str) -> Activation:
    """``relu``, ``abs`` or ``leaky_relu:SLOPE`` (``leaky_relu`` alone: torch's default 0.01)."""
    spec = str(spec).strip()
    if spec == "relu":
        return Activation("relu", 0.0)
    if spec == "abs":
        return Activation("abs", -1.0)
    if spec.startswith("leaky_relu"):
        rest = spec[len("leaky_relu"):]
        try:
            slope = 0.01 if rest == "" else float(rest.lstrip(":"))
        except ValueError:
            slope = float("nan")
        if rest not in ("",) and not rest.startswith(":") or not math.isfinite(slope):
            raise DGNInputError("activation", f"{spec!r} has no valid slope", "write leaky_relu:0.1")
        return Activation("leaky_relu", slope)
    raise DGNInputError("activation", f"{spec!r} is not a CPA activation",
                        "use relu, abs or leaky_relu:SLOPE")


def network_from_state_dict(state: Any, sigma: float, cov_z: float = 1.0,
                            activation: str = "relu") -> Network:
    """Build the Network of a ``Sequential`` state_dict (Linear layers in key order)."""
    if not isinstance(state, dict) or not state:
        raise DGNInputError("decoder", f"is not a state_dict (got {type(state).__name__})",
                            "save it with torch.save(model.state_dict(), path)")
    import torch

    layers: dict[tuple[str, int], dict[str, Any]] = {}
    order: list[tuple[str, int]] = []
    for key, value in state.items():
        match = _KEY.match(str(key))
        if match is None:
            raise DGNInputError(f"decoder[{key!r}]", "is not a Linear layer's weight or bias (non-CPA layer)",
                                "the decoder must be an nn.Sequential of Linear / ReLU / LeakyReLU")
        if not isinstance(value, torch.Tensor):
            raise DGNInputError(f"decoder[{key!r}]", f"is a {type(value).__name__}, not a tensor")
        ident = (match["prefix"], int(match["index"]))
        if ident not in layers:
            layers[ident] = {}
            order.append(ident)
        layers[ident][match["kind"]] = value.detach().to("cpu", dtype=torch.float64).numpy()
    if len({p for p, _ in order}) == 1:
        order.sort(key=lambda t: t[1])
    act = parse_activation(activation)
    built: list[Linear | Activation] = []
    for n, ident in enumerate(order):
        name = f"decoder[{ident[0]}{ident[1]}]"
        entry = layers[ident]
        if "weight" not in entry:
            raise DGNInputError(name, "has a bias but no weight")
        w = entry["weight"]
        if w.ndim != 2:
            raise DGNInputError(f"{name}.weight", f"has {w.ndim} dimensions (not a Linear layer; "
                                "convolutions and normalisation layers are not supported)",
                                "use Linear layers")
        b = entry.get("bias", np.zeros(w.shape[0]))
        if built and w.shape[1] != built[-1].out_features:
            raise DGNInputError(f"{name}.weight", f"has {w.shape[1]} input columns but the previous Linear "
                                f"layer has {built[-1].out_features} outputs", "check the layer shapes")
        if n:
            built.append(act)
        built.append(_linear(name, w, b))
    cov_x = _positive("sigma", sigma) ** 2
    return Network(layers=built, latent_dim=built[0].in_features, cov_z_spec=_positive("cov_z", cov_z),
                   cov_x_spec=cov_x)


def _positive(name: str, value) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise DGNInputError(name, f"{value!r} is not a number") from None
    if not (math.isfinite(v) and v > 0):
        raise DGNInputError(name, f"must be a finite positive number, got {value!r}")
    return v


def load_decoder(path: str | Path, sigma: float, cov_z: float = 1.0, activation: str = "relu") -> Network:
    """A decoder file: ``.json`` (cpa-dgn; sigma overrides its cov_x) or a torch state_dict."""
    path = Path(path)
    if not path.exists():
        raise DGNInputError("decoder", f"file {str(path)!r} does not exist")
    if path.suffix == ".json":
        net = load_network(path)
        return net.replace(cov_x=_positive("sigma", sigma) ** 2, cov_z=_positive("cov_z", cov_z))
    import pickle

    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, AttributeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DGNInputError("decoder", f"cannot be loaded as a weights-only torch state_dict ({first[:160]})",
                            "save it with torch.save(model.state_dict(), path); pickled modules are refused"
                            ) from None
    return network_from_state_dict(state, sigma, cov_z, activation)


def load_estimates(path: str | Path, n_points: int) -> dict[str, Any]:
    """Read and validate the estimates JSON (format in the module docstring)."""
    path = Path(path)
    if not path.exists():
        raise DGNInputError("estimates", f"file {str(path)!r} does not exist")
    try:
        obj = json.loads(path.read_text(), parse_constant=lambda c: float("nan"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DGNInputError("estimates", f"is not valid JSON ({exc})") from None
    if not isinstance(obj, dict) or "log_likelihood" not in obj:
        raise DGNInputError("estimates", "must be a JSON object with a 'log_likelihood' list")
    unknown = sorted(set(obj) - {"log_likelihood", "lower_bound", "deterministic", "name"})
    if unknown:
        raise DGNInputError(f"estimates.{unknown[0]}", "is not a field",
                            "allowed: log_likelihood, lower_bound, deterministic, name")
    try:
        ll = np.asarray(obj["log_likelihood"], dtype=np.float64)
    except (TypeError, ValueError):
        raise DGNInputError("estimates.log_likelihood", "is not a list of numbers") from None
    if ll.shape != (n_points,):
        raise DGNInputError("estimates.log_likelihood", f"has shape {ll.shape} but the data has "
                            f"{n_points} rows",
                            "give one estimate per data row")
    if not np.all(np.isfinite(ll)):
        bad = int(np.sum(~np.isfinite(ll)))
        raise DGNInputError("estimates.log_likelihood", f"{bad} value(s) are NaN or infinite")
    for flag in ("lower_bound", "deterministic"):
        if not isinstance(obj.get(flag, False), bool):
            raise DGNInputError(f"estimates.{flag}", "must be true or false")
    return {"log_likelihood": ll, "lower_bound": obj.get("lower_bound", False),
            "deterministic": obj.get("deterministic", False), "name": str(obj.get("name", ""))}


def grade_estimates(exact: np.ndarray, estimate: np.ndarray, *, lower_bound: bool = False,
                    deterministic: bool = False, alpha: float = 1e-3, bias_tol: float = 0.0,
                    n_worst: int = 5) -> dict[str, Any]:
    """Compare per-point estimates with the exact log-likelihood (tests in the module docstring)."""
    exact = np.asarray(exact, dtype=np.float64)
    d = np.asarray(estimate, dtype=np.float64) - exact
    N = len(d)
    bias = float(d.mean())
    spread = float(d.std(ddof=1)) if N > 1 else 0.0
    se = spread / math.sqrt(N) if N > 1 else 0.0
    z_crit = float(norm.isf(alpha / 2))
    tol = max(z_crit * se, float(bias_tol))
    z = bias / se if se > 0 else (0.0 if bias == 0 else math.copysign(math.inf, bias))
    bias_flag = abs(bias) > tol
    report: dict[str, Any] = {
        "n_points": N, "bias": bias, "spread": spread, "se_bias": se, "z_bias": z, "bias_tolerance": tol,
        "alpha": alpha, "mean_exact": float(exact.mean()), "mean_estimate": float(np.mean(estimate)),
        "max_abs_error": float(np.abs(d).max()), "bias_flagged": bool(bias_flag),
    }
    violations = np.zeros(N, dtype=bool)
    if lower_bound:
        if deterministic:
            point_tol = 1e-9 * (1.0 + np.abs(exact))
            total_violated = False
            report["lower_bound_test"] = "deterministic: d_n <= 1e-9 (1 + |log p|)"
        else:
            point_tol = np.full(N, math.log(2.0 * N / alpha))
            total_violated = bool(d.sum() > math.log(2.0 / alpha))
            report["lower_bound_test"] = (f"stochastic (Markov): d_n <= log(2N/alpha) = {point_tol[0]:.3g}, "
                                          f"sum d_n = {d.sum():.4g} <= log(2/alpha) = "
                                          f"{math.log(2 / alpha):.3g}")
            report["sum_excess"] = float(d.sum())
            report["total_violated"] = total_violated
        violations = d > point_tol
        report["lower_bound_violations"] = int(violations.sum())
        report["lower_bound_flagged"] = bool(violations.any() or total_violated)
    else:
        report["lower_bound_flagged"] = False
    worst = np.argsort(-np.abs(d))[:n_worst]
    report["worst_points"] = [{"index": int(i), "estimate": float(estimate[i]), "exact": float(exact[i]),
                               "error": float(d[i]), "violates_bound": bool(violations[i])} for i in worst]
    if lower_bound and violations.any():
        idx = np.nonzero(violations)[0]
        report["violating_points"] = idx[np.argsort(-d[idx])][:50].tolist()
    report["flagged"] = bool(bias_flag or report["lower_bound_flagged"])
    return report
