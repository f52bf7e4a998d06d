"""Reading data arrays and writing JSON results for the command-line front ends."""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np

from .errors import DGNInputError, check_finite


def load_data(path: str | Path, field: str = "data") -> np.ndarray:
    """An (N, D) float64 array from ``.npy`` or ``.csv`` (comma-separated, no header)."""
    path = Path(path)
    if not path.exists():
        raise DGNInputError(field, f"file {str(path)!r} does not exist")
    if path.is_dir():
        raise DGNInputError(field, f"{str(path)!r} is a directory", "pass an .npy or .csv file")
    try:
        if path.suffix == ".npy":
            X = np.load(path, allow_pickle=False)
        elif path.suffix in {".csv", ".txt"}:
            with warnings.catch_warnings():  # numpy warns on an empty file; the empty check below says it
                warnings.simplefilter("ignore", UserWarning)
                X = np.loadtxt(path, delimiter=",", ndmin=2)
        else:
            raise DGNInputError(field, f"unknown file type {path.suffix!r}", "use .npy or .csv")
    except (ValueError, OSError, UnicodeDecodeError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "allow_pickle" in reason:
            reason = "it holds Python objects (a pickle), not numbers"
        raise DGNInputError(field, f"cannot be read ({reason})", "store a numeric (N, D) array") from None
    from .validation import as_float64

    X = as_float64(X, field)  # complex, bool, string dtypes refused in one line
    if X.size == 0:
        # one behaviour for .npy and .csv alike: no points is an error, not an empty result
        raise DGNInputError(field, f"{str(path)!r} holds no data points (shape {X.shape})",
                            "pass at least one point")
    if X.ndim == 1:
        X = X[:, None]
    if X.ndim != 2:
        raise DGNInputError(field, f"has {X.ndim} dimensions", "store an (N, D) array")
    check_finite(field, X)
    return X


def write_json(obj, path: str | Path | None, field: str = "--out") -> None:
    text = json.dumps(obj, indent=1)
    if path is None or str(path) == "-":
        print(text)
        return
    try:
        Path(path).write_text(text + "\n")
    except OSError as exc:
        raise DGNInputError(field, f"cannot write {str(path)!r} ({exc.strerror or type(exc).__name__})",
                            "pass a writable file path") from None


def _probe_directory(directory: Path, field: str, shown: str) -> None:
    """Create and remove a temporary file in ``directory``: the one test that also holds for root and
    read-only file systems (``os.access`` does not)."""
    try:
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".dgnexact-probe-"):
            pass
    except OSError as exc:
        raise DGNInputError(field, f"cannot write into {str(directory)!r} ({exc.strerror or type(exc).__name__})",
                            f"pass a path in a writable directory (got {shown!r})") from None


def check_output_file(path: str | Path | None, field: str) -> None:
    """Refuse, before any computation, an output file that could not be written (None or ``-``: stdout).

    One line each: a missing parent directory, a path that is a directory, an unwritable directory or
    file. The file itself is not created."""
    if path is None or str(path) == "-":
        return
    p = Path(path)
    if p.is_dir():
        raise DGNInputError(field, f"{str(p)!r} is a directory", "pass a file path, e.g. DIR/result.json")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise DGNInputError(field, f"directory {str(parent)!r} does not exist",
                            "create it first or pass a path in an existing directory")
    if (p.exists() and not os.access(p, os.W_OK)) or not os.access(parent, os.W_OK):
        raise DGNInputError(field, f"{str(p)!r} is not writable", "pass a writable file path")
    _probe_directory(parent, field, str(p))


def check_output_dir(path: str | Path, field: str) -> None:
    """An output directory that will be created if missing: it must not be a file, and its nearest existing
    ancestor must be a writable directory."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise DGNInputError(field, f"{str(p)!r} exists and is not a directory", "pass a directory path")
    probe = p
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise DGNInputError(field, f"{str(probe)!r} is not a directory", "pass a path under a directory")
    _probe_directory(probe, field, str(p))
