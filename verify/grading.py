"""Grading foreign log-likelihood estimates against the exact log p(x) (Theorem 1).

Decoder input: a torch ``state_dict`` (``torch.save(model.state_dict(), path)`` of an ``nn.Sequential``
of Linear / ReLU / LeakyReLU) read with ``torch.load(weights_only=True)`` -- arbitrary pickled
objects are never executed -- or a ``cpa-dgn`` JSON network. The architecture of a state_dict is
inferred from its keys and shapes: ``<i>.weight`` (out, in) and ``<i>.bias`` (out,) of the Linear
layers in order, with one activation (``--activation relu | leaky_relu:SLOPE | abs``) between
consecutive Linear layers. A state_dict does not record its activations: ``--activation`` must name
them (no default). The output noise is ``sigma^2 I`` and the prior ``N(0, cov_z I)``. Any cpa-dgn model
(full Sigma_x, any prior) is graded as it is with ``--model M.json``.

Estimates: a ``.npy`` 1-D array, a JSON list, or a JSON object::

    {"log_likelihood": [l_1, ..., l_N],      # one estimate of log p(x_n) per data row (nats)
     "lower_bound": true | false,            # optional, default false: the estimates claim to be bounds
     "deterministic": true | false}          # optional, default false (see below)

(``--lower-bound`` / ``--deterministic`` declare the same for a bare array.) A NaN or +-inf estimate is
flagged, naming the points; the statistics below then use the finite ones.

Statistics, with ``d_n = l_n - log p(x_n)`` (exact oracle, Theorem 1, accurate to ~1e-12 nats):

* Estimates declared UNBIASED (``lower_bound`` false): bias = mean d, spread = std d (ddof 1),
  z = bias / (spread / sqrt N). Flag ``bias`` when
  ``|bias| > max(z_crit * spread / sqrt N, bias_tol)``, ``z_crit`` the two-sided normal quantile of
  ``alpha`` (default 1e-3): an estimator whose errors are unbiased and independent across points is
  flagged with probability ~alpha (central limit theorem; N >= 30 advised).
* Estimates declared a LOWER BOUND are tested one-sided: the bias test is not applied (a bound's gap
  is not an error), only estimates that EXCEED the exact log p beyond chance are flagged, and the gap
  ``log p(x_n) - l_n`` is reported (mean, median, worst; for an exact ELBO the mean gap is the exact
  KL(q(z|x) || p(z|x)) averaged over the points). A valid bound exits 0.
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
from engine.network import Activation, Linear, Network, load_network

from .data import clean_message

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
                            activation: str | None = "relu") -> Network:
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
    if activation is None and len(order) > 1:
        raise DGNInputError("activation", "is required for a state_dict (it does not record its activations)",
                            "pass --activation relu, abs or leaky_relu:SLOPE")
    act = parse_activation(activation or "relu")
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
        built.append(_linear_layer(name, w, b))
    cov_x = _positive("sigma", sigma) ** 2
    return Network(layers=built, latent_dim=built[0].in_features, cov_z_spec=_positive("cov_z", cov_z),
                   cov_x_spec=cov_x)


def _linear_layer(where: str, w: np.ndarray, b: np.ndarray) -> Linear:
    """A Linear layer from float64 arrays, refusing NaN / inf weights."""
    if b.shape != (w.shape[0],):
        raise DGNInputError(f"{where}.bias", f"has shape {b.shape} but the weight has {w.shape[0]} rows")
    for part, arr in (("weight", w), ("bias", b)):
        if not np.all(np.isfinite(arr)):
            raise DGNInputError(f"{where}.{part}", "contains NaN or infinite values")
    return Linear(np.array(w, dtype=np.float64), np.array(b, dtype=np.float64))


def _positive(name: str, value) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise DGNInputError(name, f"{value!r} is not a number") from None
    if not (math.isfinite(v) and v > 0):
        raise DGNInputError(name, f"must be a finite positive number, got {value!r}")
    return v


def load_decoder(path: str | Path, sigma: float, cov_z: float = 1.0, activation: str | None = None) -> Network:
    """A decoder file: ``.json`` (cpa-dgn; sigma overrides its cov_x) or a torch state_dict."""
    path = Path(path)
    if not path.exists():
        raise DGNInputError("decoder", f"file {str(path)!r} does not exist")
    if path.suffix == ".json":
        net = load_network(path)
        return net.replace(cov_x=_positive("sigma", sigma) ** 2, cov_z=_positive("cov_z", cov_z))
    return network_from_state_dict(_torch_load(path), sigma, cov_z, activation)


def _torch_load(path: Path) -> Any:
    """``torch.load(weights_only=True)``, its warnings silenced and its errors cut to one clean line."""
    import pickle
    import warnings

    import torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, AttributeError,
            TypeError) as exc:
        first = clean_message(exc, 120) or type(exc).__name__
        text = str(exc)
        if "WeightsUnpickler error:" in text:  # torch's multi-paragraph advice: keep only its reason
            detail = clean_message(text.split("WeightsUnpickler error:", 1)[1], 100)
            glob = re.search(r"GLOBAL (\S+)", detail)
            first = (f"it pickles a Python object ({glob[1]}), not only tensors" if glob else
                     f"not a torch tensor file: {detail}")
        raise DGNInputError("decoder", f"cannot be loaded as a weights-only torch state_dict ({first})",
                            "save it with torch.save(model.state_dict(), path); pickled modules are refused"
                            ) from None


def load_estimates(path: str | Path, n_points: int) -> dict[str, Any]:
    """Read and validate estimates: ``.npy`` 1-D array, JSON list or JSON object (module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise DGNInputError("estimates", f"file {str(path)!r} does not exist")
    obj: Any
    if path.suffix == ".npy":
        try:
            obj = {"log_likelihood": np.load(path, allow_pickle=False)}
        except (ValueError, OSError, EOFError) as exc:
            raise DGNInputError("estimates", f"cannot be read as .npy ({clean_message(exc)})") from None
    else:
        try:
            obj = json.loads(path.read_text(), parse_constant=lambda c: float("nan") if c == "NaN" else
                             float(c.replace("Infinity", "inf")))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DGNInputError("estimates", f"is not valid JSON ({clean_message(exc)})") from None
        if isinstance(obj, list):
            obj = {"log_likelihood": obj}
    if not isinstance(obj, dict) or "log_likelihood" not in obj:
        raise DGNInputError("estimates", "must be a .npy array, a JSON list or an object with 'log_likelihood'")
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
    estimate = np.asarray(estimate, dtype=np.float64)
    finite = np.isfinite(estimate)
    bad_idx = np.nonzero(~finite)[0]
    exact_f, est_f = exact[finite], estimate[finite]
    d = est_f - exact_f
    N = len(d)
    report: dict[str, Any] = {"n_points": int(len(exact)), "n_finite": N, "alpha": alpha,
                              "false_flag_probability": alpha,
                              "declared": "lower bound" if lower_bound else "unbiased estimate",
                              "nonfinite_points": [{"index": int(i), "estimate": str(estimate[i]),
                                                    "exact": float(exact[i])} for i in bad_idx[:50]]}
    if N == 0:
        report.update(flagged=bool(len(bad_idx)), bias_flagged=False, lower_bound_flagged=False, worst_points=[])
        return report
    report.update(_bias_stats(d, exact_f, est_f, alpha, bias_tol, test=not lower_bound))
    violations = np.zeros(N, dtype=bool)
    if lower_bound:
        violations = _bound_test(d, exact_f, alpha, deterministic, report)
        report.update(_gap_stats(-d, deterministic))
        report["gap_worst_index"] = int(np.nonzero(finite)[0][report["gap_worst_index"]])
    else:
        report["lower_bound_flagged"] = False
    idx_f = np.nonzero(finite)[0]
    worst = np.argsort(-(d if lower_bound else np.abs(d)), kind="stable")[:n_worst]
    report["worst_points"] = [{"index": int(idx_f[i]), "estimate": float(est_f[i]), "exact": float(exact_f[i]),
                               "error": float(d[i]), "violates_bound": bool(violations[i])} for i in worst]
    if lower_bound and violations.any():
        idx = np.nonzero(violations)[0]
        report["violating_points"] = idx_f[idx[np.argsort(-d[idx])][:50]].tolist()
    report["flagged"] = bool(report["bias_flagged"] or report["lower_bound_flagged"] or len(bad_idx))
    return report


def _bias_stats(d, exact, estimate, alpha, bias_tol, *, test: bool) -> dict[str, Any]:
    """Mean error (bias), spread and the two-sided z test (applied only to declared-unbiased estimates)."""
    N = len(d)
    bias = float(d.mean())
    spread = float(d.std(ddof=1)) if N > 1 else 0.0
    se = spread / math.sqrt(N) if N > 1 else 0.0
    tol = max(float(norm.isf(alpha / 2)) * se, float(bias_tol))
    z = bias / se if se > 0 else (0.0 if bias == 0 else math.copysign(math.inf, bias))
    return {"bias": bias, "spread": spread, "se_bias": se, "z_bias": z, "bias_tolerance": tol,
            "mean_exact": float(exact.mean()), "mean_estimate": float(estimate.mean()),
            "max_abs_error": float(np.abs(d).max()), "bias_flagged": bool(test and abs(bias) > tol),
            "bias_test": "two-sided z test" if test else "not applied (declared lower bound: one-sided test)"}


def _bound_test(d, exact, alpha, deterministic, report) -> np.ndarray:
    """One-sided: which estimates exceed log p beyond rounding (deterministic) or chance (Markov)."""
    N = len(d)
    if deterministic:
        point_tol = 1e-9 * (1.0 + np.abs(exact))
        total_violated = False
        report["lower_bound_test"] = "deterministic: d_n <= 1e-9 (1 + |log p|)"
    else:
        point_tol = np.full(N, math.log(2.0 * N / alpha))
        total_violated = bool(d.sum() > math.log(2.0 / alpha))
        report["lower_bound_test"] = (f"stochastic (Markov): d_n <= log(2N/alpha) = {point_tol[0]:.3g}, "
                                      f"sum d_n = {d.sum():.4g} <= log(2/alpha) = {math.log(2 / alpha):.3g}; "
                                      f"false-flag probability <= alpha = {alpha:g}")
        report["sum_excess"] = float(d.sum())
        report["total_violated"] = total_violated
    violations = d > point_tol
    report["lower_bound_violations"] = int(violations.sum())
    report["lower_bound_flagged"] = bool(violations.any() or total_violated)
    return violations


def _gap_stats(gap, deterministic: bool) -> dict[str, Any]:
    """The bound's gap log p(x_n) - l_n: for an exact ELBO, KL(q(z|x_n) || p(z|x_n)) (mean = average KL)."""
    out = {"gap_mean": float(gap.mean()), "gap_median": float(np.median(gap)), "gap_worst": float(gap.max()),
           "gap_worst_index": int(np.argmax(gap))}
    if deterministic:
        out["gap_meaning"] = "exact ELBO: the gap is KL(q(z|x) || p(z|x)); gap_mean is its average over points"
    return out
