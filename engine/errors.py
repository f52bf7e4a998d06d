"""Errors the engine raises on bad input.

Every message is one line of the form ``<field>: <what is wrong>; <how to fix it>`` so that a
command-line front end can print it verbatim and exit with status 2.
"""

from __future__ import annotations


class DGNInputError(ValueError):
    """Bad input: wrong shapes, non-CPA layers, non-PD covariances, NaN data, unknown fields."""

    def __init__(self, field: str, problem: str, fix: str | None = None):
        self.field = field
        self.problem = problem
        self.fix = fix
        message = f"{field}: {problem}" + (f"; {fix}" if fix else "")
        super().__init__(message.replace("\n", " "))


class RegionBudgetError(DGNInputError):
    """The partition of latent space has more regions than the configured budget."""


def check_finite(field: str, array, fix: str = "remove or impute NaN/inf values") -> None:
    import numpy as np

    arr = np.asarray(array)
    if not np.all(np.isfinite(arr)):
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise DGNInputError(field, f"{bad} value(s) are NaN or infinite", fix)


FLOAT64_DATA_LIMIT = 1e150  # |x| above this: squared distances (log p ~ -|x|^2 / 2 sigma^2) leave float64


def check_float64_range(field: str, array, limit: float = FLOAT64_DATA_LIMIT) -> None:
    """Refuse values so large that ``log p(x)`` (a squared distance) would overflow float64 (about 1e308)."""
    import numpy as np

    arr = np.asarray(array)
    if arr.size and float(np.max(np.abs(arr))) > limit:
        raise DGNInputError(field, f"has values up to {float(np.max(np.abs(arr))):.3g}: log p(x) ~ -|x|^2 is beyond "
                            f"float64's range for |x| above ~{limit:.0e}", "rescale the data (and the model)")
