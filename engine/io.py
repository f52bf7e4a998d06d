"""Reading data arrays and writing JSON results for the command-line front ends."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .errors import DGNInputError, check_finite


def load_data(path: str | Path, field: str = "data") -> np.ndarray:
    """An (N, D) float64 array from ``.npy`` or ``.csv`` (comma-separated, no header)."""
    path = Path(path)
    if not path.exists():
        raise DGNInputError(field, f"file {str(path)!r} does not exist")
    try:
        if path.suffix == ".npy":
            X = np.load(path, allow_pickle=False)
        elif path.suffix in {".csv", ".txt"}:
            X = np.loadtxt(path, delimiter=",", ndmin=2)
        else:
            raise DGNInputError(field, f"unknown file type {path.suffix!r}", "use .npy or .csv")
    except (ValueError, OSError) as exc:
        raise DGNInputError(field, f"cannot be read ({str(exc).splitlines()[0]})") from None
    from .validation import as_float64

    X = as_float64(X, field)  # complex, bool, string dtypes refused in one line
    if X.ndim == 1:
        X = X[:, None]
    if X.ndim != 2:
        raise DGNInputError(field, f"has {X.ndim} dimensions", "store an (N, D) array")
    check_finite(field, X)
    return X


def write_json(obj, path: str | Path | None) -> None:
    text = json.dumps(obj, indent=1)
    if path is None or str(path) == "-":
        print(text)
    else:
        Path(path).write_text(text + "\n")
