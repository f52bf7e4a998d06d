"""Statistical bounds for Monte-Carlo checks, each with an explicit false-fail probability.

Modelled on TensorFlow Probability's ``internal/statistical_testing.py``: a Monte-Carlo check never
says "close enough". It builds a confidence interval that contains the true value with probability at
least ``1 - delta`` (``delta`` = the check's false-fail rate), FAILs when the value under test lies
outside it (plus the floating tolerance), and PASSes only when the interval is narrow enough to have
detected a discrepancy of the size the check is meant to catch; otherwise it is INCONCLUSIVE.

Bounds (all distribution-free, for i.i.d. samples):

* Hoeffding (1963): ``X in [a, b]``: ``|mean - E X| <= (b - a) sqrt(log(2/delta) / (2n))``.
* Empirical Bernstein (Maurer & Pontil 2009, Thm 4), two-sided by a union bound:
  ``|mean - E X| <= sqrt(2 V_n log(4/delta) / n) + 7 (b - a) log(4/delta) / (3 (n - 1))``,
  ``V_n`` the unbiased sample variance. Much tighter than Hoeffding when the variance is small.
* DKW (Massart 1990): ``sup_t |F_n(t) - F(t)| <= sqrt(log(2/delta) / (2n))``.

The family-wise budget (e.g. 1e-6 for the whole suite) is split over the checks by Bonferroni:
each of ``k`` checks gets ``budget / k``, and a check made of ``m`` bounds gives each ``1/m`` of it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

PASS, FAIL, INCONCLUSIVE, SKIPPED = "PASS", "FAIL", "INCONCLUSIVE", "SKIPPED"


def hoeffding_half_width(n: int, delta: float, value_range: float = 1.0) -> float:
    """Two-sided Hoeffding half-width for the mean of ``n`` samples in an interval of length ``value_range``."""  # noqa: E501
    if n < 1:
        return math.inf
    return float(value_range) * math.sqrt(math.log(2.0 / delta) / (2.0 * n))


def empirical_bernstein_half_width(samples: np.ndarray, delta: float, value_range: float = 1.0) -> float:
    """Two-sided empirical-Bernstein half-width (Maurer & Pontil 2009, Theorem 4, union over both sides)."""
    samples = np.asarray(samples, dtype=np.float64)
    n = samples.shape[0]
    if n < 2:
        return math.inf
    log_term = math.log(4.0 / delta)
    var = float(np.var(samples, ddof=1))
    return math.sqrt(2.0 * var * log_term / n) + 7.0 * float(value_range) * log_term / (3.0 * (n - 1))


def mean_confidence_interval(
    samples: np.ndarray, delta: float, lo: float, hi: float
) -> tuple[float, float, float]:
    """(estimate, lower, upper) for the mean of samples known to lie in ``[lo, hi]``.

    Uses the tighter of Hoeffding and empirical Bernstein, each at ``delta / 2`` so the union holds at
    ``delta``; the interval is intersected with ``[lo, hi]``.
    """
    samples = np.asarray(samples, dtype=np.float64)
    if samples.size and (samples.min() < lo or samples.max() > hi):
        raise ValueError("samples outside their declared range")
    est = float(samples.mean()) if samples.size else 0.5 * (lo + hi)
    width = min(
        hoeffding_half_width(samples.size, delta / 2, hi - lo),
        empirical_bernstein_half_width(samples, delta / 2, hi - lo),
    )
    return est, max(lo, est - width), min(hi, est + width)


def dkw_epsilon(n: int, delta: float) -> float:
    """Dvoretzky-Kiefer-Wolfowitz-Massart band half-width for an empirical CDF of ``n`` samples."""
    return math.sqrt(math.log(2.0 / delta) / (2.0 * n)) if n > 0 else math.inf


def split_budget(budget: float, n: int) -> float:
    """Bonferroni share of a family-wise false-fail budget for each of ``n`` checks."""
    return budget / max(1, n)


@dataclass(frozen=True)
class Verdict:
    status: str
    detectable: float  # smallest discrepancy from the truth that FAILs with probability >= 1 - delta
    reason: str


def interval_verdict(observed: float, lower: float, upper: float, *, tol: float, target: float) -> Verdict:
    """Decide a Monte-Carlo check.

    ``[lower, upper]`` contains the true value with probability >= 1 - delta. FAIL if the observed value
    lies more than ``tol`` outside it (false-fail probability <= delta when the observed value is right to
    within ``tol``). Otherwise PASS only if the check could have caught an error of size ``target``: any
    value farther than ``(upper - lower) + tol`` from the truth lies outside the widened interval, so that
    is the detectable discrepancy; if it exceeds ``target`` the result is INCONCLUSIVE.
    """
    detectable = (upper - lower) + tol
    if not np.isfinite(observed) or observed < lower - tol or observed > upper + tol:
        return Verdict(FAIL, detectable, "observed value outside the confidence interval")
    if not detectable <= target:
        return Verdict(
            INCONCLUSIVE,
            detectable,
            f"sample too small: detectable discrepancy {detectable:.3g} > target {target:.3g}",
        )
    return Verdict(PASS, detectable, "inside the confidence interval, which is narrower than the target")
