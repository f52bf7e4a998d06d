"""The verifier's own input checks: data points, output paths, model files (no engine privates).

Every problem is a one-line :class:`engine.errors.DGNInputError` (exit 2 on the command line), raised
BEFORE any computation starts, so a typo in an output path never costs a long run.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from engine.errors import DGNInputError

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def clean_message(text: str, limit: int = 200) -> str:
    """First non-empty line of a foreign error message, ANSI colour codes removed, cut at ``limit``."""
    lines = [ln.strip() for ln in _ANSI.sub("", str(text)).splitlines() if ln.strip()]
    first = lines[0] if lines else ""
    return first if len(first) <= limit else first[: limit - 3] + "..."


def check_points(X, data_dim: int, field: str = "data") -> np.ndarray:
    """An (N, D) finite float64 array with D = ``data_dim``; a 1-D array only when D = 1."""
    from engine.validation import as_float64

    if hasattr(X, "toarray") or hasattr(X, "tocsr"):
        raise DGNInputError(field, "is a sparse matrix", "pass a dense array (X.toarray())")
    try:
        X = np.asarray(X)
    except (TypeError, ValueError):
        raise DGNInputError(field, "is not a numeric array", "store an (N, D) array of numbers") from None
    X = as_float64(X, field)  # complex, bool, string, ragged and object data refused, never converted silently
    if X.ndim == 1:
        if data_dim != 1:
            raise DGNInputError(field, f"is a 1-D array of {X.shape[0]} values but the model's D is {data_dim}",
                                f"store an (N, {data_dim}) array, e.g. X.reshape(-1, {data_dim})")
        X = X[:, None]
    if X.ndim != 2 or X.shape[1] != data_dim:
        raise DGNInputError(field, f"has shape {X.shape} but the model's D is {data_dim}",
                            f"store an (N, {data_dim}) array")
    if X.shape[0] == 0:
        raise DGNInputError(field, "has no rows", "give at least one data point")
    if not np.all(np.isfinite(X)):
        bad = int(np.size(X) - np.count_nonzero(np.isfinite(X)))
        raise DGNInputError(field, f"{bad} value(s) are NaN or infinite", "remove or impute them")
    return X


def load_points(path, data_dim: int, field: str = "data") -> np.ndarray:
    """Data points from ``.npy`` or ``.csv`` (comma-separated, no header), checked by :func:`check_points`."""
    path = Path(path)
    if not path.is_file():
        raise DGNInputError(field, f"file {str(path)!r} does not exist")
    try:
        if path.suffix == ".npy":
            X = np.load(path, allow_pickle=False)
        elif path.suffix in {".csv", ".txt"}:
            X = np.loadtxt(path, delimiter=",", ndmin=2)  # one line = one point
        else:
            raise DGNInputError(field, f"unknown file type {path.suffix!r}", "use .npy or .csv")
    except (ValueError, OSError, EOFError) as exc:
        raise DGNInputError(field, f"cannot be read ({clean_message(exc)})") from None
    return check_points(X, data_dim, field)  # every non-numeric dtype refused there, by engine.validation


def check_writable(path, field: str) -> None:
    """Refuse an output path that cannot be written (``-`` and ``None`` mean stdout and pass): the engine's
    own check, so every command line answers an unwritable path the same way."""
    from engine.io import check_output_file

    check_output_file(path, field)
