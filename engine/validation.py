"""Input hygiene shared by every entry point of the engine (``evaluate``, ``impute``, ``EM.fit``, the CLIs).

Public names: :func:`check_data` (an (N, D) float64 array or one line saying what is wrong and how to fix
it), :func:`check_random_state` and :class:`DGNInputTypeError`. The rule is that no input is ever
silently turned into a different number: complex values (numpy would keep the real part with only a
``ComplexWarning``), booleans used as numbers, strings, sparse matrices (``np.asarray`` of one gives a 0-d
object array), ragged nested lists, integers beyond 2**53 and extended-precision floats are refused with a
:class:`engine.errors.DGNInputError` naming the field and the fix (command-line front ends print it and
exit 2). Object arrays whose every element is a real number are converted exactly and accepted.
"""

from __future__ import annotations

import numbers

import numpy as np

from .errors import DGNInputError

_EXACT_INT = 2 ** 53  # every integer of magnitude <= 2**53 is a float64


class DGNInputTypeError(DGNInputError, TypeError):
    """Bad input of the wrong Python type (an element that is not a number); also a ``TypeError``."""


def _bad_element(arr: np.ndarray):
    """(index, element) of the first element of an object array that is not a real number, else None."""
    flat = arr.reshape(-1)
    is_real = np.frompyfunc(lambda v: isinstance(v, numbers.Real) and not isinstance(v, bool | np.bool_), 1, 1)
    ok = is_real(flat).astype(bool) if flat.size else np.zeros(0, dtype=bool)
    if ok.all():
        return None
    k = int(np.argmin(ok))
    return tuple(int(i) for i in np.unravel_index(k, arr.shape)), flat[k]


def _as_array(X, field: str) -> np.ndarray:
    """``np.asarray(X)`` with sparse and ragged inputs refused, without any dtype conversion yet."""
    try:
        from scipy import sparse

        is_sparse = sparse.issparse(X)
    except ImportError:  # pragma: no cover
        is_sparse = False
    if is_sparse or (not isinstance(X, np.ndarray) and hasattr(X, "toarray") and hasattr(X, "nnz")):
        raise DGNInputError(field, f"is a sparse matrix ({type(X).__name__}); the engine works on dense arrays",
                            "pass X.toarray()")
    try:
        arr = np.asarray(X)
    except ValueError as exc:
        if "inhomogeneous" in str(exc) or "sequence" in str(exc):
            raise DGNInputError(field, "has rows of different lengths (a ragged nested list)",
                                "give an (N, D) array whose rows all have D entries") from None
        raise DGNInputError(field, f"cannot be read as an array ({str(exc).splitlines()[0]})") from None
    return arr


def as_float64(arr: np.ndarray, field: str) -> np.ndarray:
    """float64 copy (or view) of a numeric array; every other dtype refused with its fix."""
    kind = arr.dtype.kind
    if kind == "f":
        if arr.dtype.itemsize > 8:
            raise DGNInputError(field, f"has dtype {arr.dtype}, which float64 would round",
                                "convert it yourself with X.astype(np.float64) if that rounding is intended")
        return np.asarray(arr, dtype=np.float64)
    if kind in "iu":
        if arr.size and np.abs(arr.astype(np.float64)).max() > _EXACT_INT:
            raise DGNInputError(field, "has integers beyond 2**53, which float64 cannot hold exactly",
                                "rescale the data or convert it yourself with X.astype(np.float64)")
        return np.asarray(arr, dtype=np.float64)
    if kind == "b":
        raise DGNInputError(field, "has boolean dtype (True/False would be read silently as 1/0)",
                            "convert explicitly with X.astype(float) if 0/1 is meant")
    if kind == "c":
        raise DGNInputError(field, f"Complex data not supported (dtype {arr.dtype}); the model is real-valued",
                            "pass X.real if the imaginary parts are zero by construction")
    if kind in "US":
        raise DGNInputError(field, f"has string dtype {arr.dtype}", "parse the numbers first (np.loadtxt, float())")
    if kind == "O":
        bad = _bad_element(arr)
        if bad is not None:
            index, value = bad
            if isinstance(value, list | tuple | np.ndarray):
                raise DGNInputError(field, "has rows of different lengths (a ragged nested list)",
                                    "give an (N, D) array whose rows all have D entries")
            raise DGNInputTypeError(field, f"element {list(index)} is a {type(value).__name__}, not a real number "
                                    "(float() argument must be a string or a real number; here only real numbers "
                                    "are accepted)", "give numeric data")
        flat = arr.reshape(-1)
        if any(isinstance(v, numbers.Integral) and abs(int(v)) > _EXACT_INT for v in flat):
            raise DGNInputError(field, "has integers beyond 2**53, which float64 cannot hold exactly",
                                "rescale the data or convert it yourself")
        return np.array([float(v) for v in flat], dtype=np.float64).reshape(arr.shape)
    raise DGNInputError(field, f"has dtype {arr.dtype}, not a real number type", "give a float or integer array")


def check_data(X, n_features: int | None = None, *, field: str = "data", one_dim: str = "auto",
               allow_nan: bool = False, min_samples: int = 1) -> np.ndarray:
    """``X`` as a C-contiguous (N, D) float64 array, or a one-line :class:`DGNInputError` naming ``field``.

    ``n_features``: the required D (the network's output dimension), or None for any D >= 1.
    ``one_dim``: how a 1-D input is read — ``"auto"`` (one row if its length is ``n_features`` and
    ``n_features > 1``, else one column), ``"column"`` (only when ``n_features == 1``), ``"error"``.
    ``allow_nan``: NaN marks a missing entry (imputation); infinities are refused either way.
    ``min_samples``: the fewest rows accepted.
    """
    arr = as_float64(_as_array(X, field), field)
    if arr.ndim == 1 and one_dim != "error":
        if one_dim == "auto" and n_features is not None and n_features > 1 and arr.shape[0] == n_features:
            arr = arr[None, :]
        elif one_dim == "auto" or n_features == 1:
            arr = arr[:, None]
    if arr.ndim != 2:
        want = f"(N, {n_features})" if n_features is not None else "(N, D)"
        raise DGNInputError(field, f"has shape {arr.shape}", f"give a 2-D {want} array (reshape(-1, 1) for one "
                            "feature, reshape(1, -1) for one point)")
    if n_features is not None and arr.shape[1] != n_features:
        raise DGNInputError(field, f"has shape {arr.shape} but the network's output dimension D is {n_features}",
                            f"give an (N, {n_features}) array")
    if arr.shape[1] == 0:
        raise DGNInputError(field, f"has 0 feature(s) (shape={arr.shape}) while a minimum of 1 is required",
                            "give at least one column")
    finite = np.isfinite(arr)
    if not finite.all():
        bad = ~finite & ~np.isnan(arr) if allow_nan else ~finite
        if bad.any():
            what = "infinite" if allow_nan else "NaN or infinite"
            fix = "replace infinities by NaN (missing) or finite values" if allow_nan else \
                "remove or impute NaN/inf values (engine.impute fills NaN entries exactly)"
            raise DGNInputError(field, f"{int(bad.sum())} value(s) are {what}", fix)
    if arr.shape[0] < min_samples:
        raise DGNInputError(field, f"has {arr.shape[0]} sample(s) (shape={arr.shape}) while a minimum of "
                            f"{min_samples} is required", "give more data points")
    return np.ascontiguousarray(arr)


def check_random_state(seed, field: str = "random_state") -> np.random.Generator:
    """A ``numpy.random.Generator`` from None, an int, a Generator or a RandomState; anything else refused."""
    if seed is None or isinstance(seed, np.random.Generator):
        return np.random.default_rng(seed)
    if isinstance(seed, np.random.RandomState):
        return np.random.default_rng(seed.randint(0, 2 ** 31 - 1))
    if isinstance(seed, numbers.Integral) and not isinstance(seed, bool | np.bool_) and int(seed) >= 0:
        return np.random.default_rng(int(seed))
    raise DGNInputError(field, f"is {seed!r}", "give None, a non-negative integer seed or a numpy Generator")


__all__ = ["DGNInputTypeError", "as_float64", "check_data", "check_random_state"]
