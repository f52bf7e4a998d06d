"""Foreign implementations and their claims: the contract shared by crosscheck, fuzz and grade.

A foreign implementation is either a Python callable ``fn(model, X) -> dict`` (``--impl``, named
``package.module:function`` or ``path/to/file.py:function``; ``model`` is the network as a ``cpa-dgn``
JSON dict and ``X`` an (N, D) float64 array) or any program run as a subprocess (``--cmd``, see
:func:`run_command`). It returns any subset of the claim fields below, as nested lists or arrays.

For ``crosscheck`` a claim with NaN or +-inf values is well formed: it is judged (and fails on those
points); only a malformed claim (not an object, unknown field, wrong shape, not numbers) is bad input.
The fuzzing properties call :func:`call_impl` with its default ``require_finite=True``.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import DGNInputError
from engine.network import Network

CLAIM_FIELDS = ("log_marginal", "posterior_mean", "posterior_cov", "n_regions")


def load_impl(spec: str) -> Callable[[dict, np.ndarray], dict]:
    """Resolve ``module:function`` or ``file.py:function`` to the callable."""
    if not isinstance(spec, str) or ":" not in spec:
        raise DGNInputError("impl", f"{spec!r} is not of the form module:function or file.py:function")
    target, func = spec.rsplit(":", 1)
    try:
        if target.endswith(".py"):
            path = Path(target)
            if not path.exists():
                raise DGNInputError("impl", f"file {target!r} does not exist")
            mod_spec = importlib.util.spec_from_file_location(path.stem, path)
            module = importlib.util.module_from_spec(mod_spec)
            mod_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
    except DGNInputError:
        raise
    except Exception as exc:  # the foreign module itself failed to import
        raise DGNInputError("impl", f"cannot import {target!r} ({type(exc).__name__}: {exc})") from None
    fn = getattr(module, func, None)
    if not callable(fn):
        raise DGNInputError("impl", f"{target!r} has no callable {func!r}")
    return fn


def validate_claims(claims: Any, net: Network, n_points: int,
                    require_finite: bool = False) -> dict[str, np.ndarray | int]:
    """Check field names and shapes of claimed values; return them as float64 arrays (NaN/inf kept)."""
    if not isinstance(claims, dict):
        raise DGNInputError("claims", f"must be a JSON object / dict, got {type(claims).__name__}")
    unknown = sorted(set(claims) - set(CLAIM_FIELDS))
    if unknown:
        raise DGNInputError(f"claims.{unknown[0]}", "is not a claim field", f"use any of {', '.join(CLAIM_FIELDS)}")
    if not claims:
        raise DGNInputError("claims", "is empty", f"claim at least one of {', '.join(CLAIM_FIELDS)}")
    S = net.latent_dim
    shapes = {"log_marginal": (n_points,), "posterior_mean": (n_points, S), "posterior_cov": (n_points, S, S)}
    out: dict[str, np.ndarray | int] = {}
    for name, value in claims.items():
        if name == "n_regions":
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
                raise DGNInputError("claims.n_regions", f"must be a positive integer, got {value!r}")
            out[name] = int(value)
            continue
        try:
            arr = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            raise DGNInputError(f"claims.{name}", "is not a numeric array") from None
        if name == "posterior_mean" and S == 1 and arr.shape == (n_points,):
            arr = arr[:, None]
        if name == "posterior_cov" and S == 1 and arr.shape in {(n_points,), (n_points, 1)}:
            arr = arr.reshape(n_points, 1, 1)
        if arr.shape != shapes[name]:
            raise DGNInputError(f"claims.{name}", f"has shape {arr.shape}, expected {shapes[name]}",
                                "give one value per data point")
        if require_finite and not np.all(np.isfinite(arr)):
            raise DGNInputError(f"claims.{name}", "contains NaN or infinite values")
        out[name] = arr
    return out


def load_claims(path: str | Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise DGNInputError("claims", f"file {str(path)!r} does not exist")
    try:
        return json.loads(path.read_text(), parse_constant=_json_constant)
    except json.JSONDecodeError as exc:
        raise DGNInputError("claims", f"is not valid JSON ({exc.msg} at line {exc.lineno})") from None


def _json_constant(name: str) -> float:
    """JSON has no NaN/Infinity; Python's json writes them anyway: read them as the floats they mean."""
    return {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}[name]


def call_impl(fn: Callable, net: Network, X: np.ndarray,
              require_finite: bool = True) -> dict[str, np.ndarray | int]:
    """Call a foreign implementation on (model dict, X) and validate what it claims (the properties of
    ``fuzz`` need finite claims; ``crosscheck --impl`` passes ``require_finite=False`` and judges NaN)."""
    try:
        claims = fn(net.to_dict(), np.array(X, dtype=np.float64, copy=True))
    except Exception as exc:
        raise DGNInputError("impl", f"raised {type(exc).__name__}: {exc}") from None
    return validate_claims(claims, net, len(X), require_finite)
