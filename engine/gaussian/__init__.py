"""Gaussian integrals over the regions of a partition: mass, first and second moments.

The single entry point is :func:`truncated_moments`. For ``z ~ N(mean, cov)`` and a polytope
``omega`` it returns, vectorised over many means (one covariance per region, which is exactly the
shape of Theorem 1: mu_omega(x) varies with x, Sigma_omega does not):

* ``log_mass``   log P(z in omega)                      (Phi_omega(mu, Sigma) in eq. 5)
* ``mean``       E[z | z in omega]                       (e1 / e0 of Sec. 4.1)
* ``cov``        Cov[z | z in omega]                     (E2 / e0 - mean mean^T)

Conditional (normalised) moments are returned rather than raw ones so that nothing underflows:
the raw moments are ``exp(log_mass) * mean`` etc. and are formed in log space by the callers.

One place per dimension: ``interval`` (S' = 1, a module), the packages ``planar`` (S = 2) and ``solid``
(S = 3), each split into a reference path, a compiled kernel and its geometry / batch driver; ``polytopes``
dispatches by dimension (``BATCH_INTEGRATORS``, ``GEOMETRIES``, ``SOLVERS``) with one fallback chain.
"""

from __future__ import annotations

import numpy as np

from ..polytope import Polytope
from .interval import interval_moments
from .pairs import PairRequest, PairResult, TruncatedMoments

__all__ = ["PairRequest", "PairResult", "TruncatedMoments", "truncated_moments"]


def truncated_moments(polytope: Polytope, mean: np.ndarray, cov: np.ndarray, *, moments: int = 2,
                      method: str = "auto", rng=None) -> TruncatedMoments:
    """Mass and conditional moments of ``N(mean, cov)`` on ``polytope``, for each row of ``mean``."""
    mean = np.atleast_2d(np.asarray(mean, dtype=np.float64))
    S = mean.shape[1]
    if S == 1:
        lo, hi = polytope.interval()
        sd = np.sqrt(cov[0, 0])
        log_mass, m, v = interval_moments(mean[:, 0], sd, lo, hi, moments=moments)
        return TruncatedMoments(log_mass, None if m is None else m[:, None],
                                None if v is None else v[:, None, None], method="interval-closed-form")
    from .polytopes import polytope_moments  # S >= 2

    return polytope_moments(polytope, mean, cov, moments=moments, method=method, rng=rng)
