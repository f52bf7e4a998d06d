"""Numeric constants shared by the numpy reference paths and the compiled kernels of ``engine.gaussian``.

One definition each: the numpy path (``planar.reference``, ``interval``) and the numba kernels (``planar.kernel``,
``solid.kernel``) that must follow it branch for branch read the same names (numba freezes a module-level float or
array at compile time, so importing them here costs nothing in the kernels).

Three accuracy thresholds used to share the name ``FALLBACK_REL`` with different meanings; they are now:

* ``PLANAR_SLICE_FALLBACK_REL`` (1e-12): the numpy reference ``planar.planar_log_mass`` recomputes an item
  by slice quadrature above this relative error bound (its Owen-T edge sum cancelled);
* ``PLANAR_KERNEL_FALLBACK_REL`` (4e-12): the S = 2 batch kernel hands a (region, point) pair back to the
  per-region path above this bound;
* ``SOLID_FALLBACK_REL`` (1e-10): the S = 3 batch kernel hands a pair to the tetrahedral cubature / nested
  quadrature above this bound.

Both kernels loosen their threshold by ``LOOSEN_WEIGHT / w`` for pairs of posterior weight ``w`` below
``LOOSEN_WEIGHT``, never beyond ``MAX_LOOSEN_REL`` relative error (eq. 5: a pair's weighted error is what
the marginal sees).
"""

from __future__ import annotations

import math

import numpy as np

# --- arithmetic -----------------------------------------------------------------------------------------
EPS = float(np.finfo(np.float64).eps)
INF = math.inf
LOG_2PI = math.log(2.0 * math.pi)
LOG_SQRT_2PI = 0.5 * LOG_2PI
LOG_HALF = math.log(0.5)
SQRT2 = math.sqrt(2.0)
SQRT_HALF_PI = math.sqrt(math.pi / 2.0)

# --- edge integrals of the Owen-T formula (S = 2: planar.reference, planar.kernel) ---------------------
EDGE_WINDOW = 40.0  # nats kept below each edge integrand's maximum
OWEN_H = 8.0  # scipy's owens_t keeps ~1e-15 relative accuracy for h below this (checked vs mpmath)
OWEN_REL = 1e-14  # cancellation bound above which a same-side Owen-T difference is not used
NEAR_FOOT = 0.05  # one-sided edges closer than this to the origin: Owen's T first
# geometric panels of the graded rule for the one-sided edges within NEAR_FOOT that Owen's T leaves (cancellation):
# ceil(log2(w / rho + 1)) with rho the distance to the poles, down to rho = 5e-324 (log2(9 / 5e-324) < 1080)
NEAR_GRADES = 1100
GRADED_NODES = 20  # Gauss-Legendre nodes per panel
GAUSS_PANEL = 6.0  # longest graded panel: the Gaussian factor e^{-u^2/2} itself (a far edge, near end at its
# foot) takes 20-point Gauss-Legendre to 3e-19 over [0, 6], to 1.2e-13 over the 40-nat window [0, 8.94]
X20, W20 = np.polynomial.legendre.leggauss(GRADED_NODES)
EDGE_DROP_NATS = 45.0  # edges (S = 2) / edge integrals (S = 3) this far below the largest term bound are left
# out of the mass; their bounds go into the error (e^-45 = 2.9e-20 relative)

# --- truncated 1-D normal (interval, and the edge masses of the S = 2 kernel) ---------------------------
X12, W12 = np.polynomial.legendre.leggauss(12)
X24, W24 = np.polynomial.legendre.leggauss(24)
X64, W64 = np.polynomial.legendre.leggauss(64)
GL_SPAN_12 = 2.0  # exponent span up to which the 12-node rule is exact to rounding ...
GL_SPAN_24 = 12.0  # ... the 24-node rule; beyond, 64 nodes (spans up to NEGLIGIBLE_EXPONENT)
INTERVAL_NARROW = 0.5  # w (1 + |a|) below this: the interval is narrow
INTERVAL_DEEP = 4.0  # a above this: moments by continued fraction or quadrature
NEGLIGIBLE_EXPONENT = 40.0  # exp(-a w - w^2/2) below e^-40: the far end does not matter
MILLS_DEPTH = 80  # terms of Laplace's continued fraction of the Mills ratio

# --- fallback thresholds and weight-dependent loosening (see the module docstring) ------------------------
PLANAR_SLICE_FALLBACK_REL = 1e-12
PLANAR_KERNEL_FALLBACK_REL = 4e-12
SOLID_FALLBACK_REL = 1e-10
LOOSEN_WEIGHT = 1e-3  # pairs of posterior weight w below this: thresholds times LOOSEN_WEIGHT / w ...
MAX_LOOSEN_REL = 1e-6  # ... but no mass estimate is accepted beyond this relative error bound
NEGLIGIBLE_NATS = 50.0  # a pair whose weight is provably below e^-50 is skipped (engine.evaluate's pruning)
COV_TOL = 3e-9  # covariance cancellation bound (relative to its smallest eigenvalue, or to Sigma_omega under
# absolute accuracy) above which a pair's covariance is refined (S = 2 and S = 3)

ACCURACIES = ("relative", "absolute")  # covariance accuracy of a PairRequest (see ``pairs``)


def end_rounding(d_j, d_i, s, g):
    """Rounding bound of an edge end ``s = (d_j - d_i n_i.n_j) / g`` (``g = n_j . e_i``) but for ``g``'s own rounding
    (:func:`g_rounding`): ``4 eps (|d_j| + |d_i| + |s g|) / |g|``.

    Plain arithmetic, so the same source serves numpy arrays (``planar``) and, compiled, the scalar kernel
    (``planar.kernel``)."""
    return 4.0 * EPS * (abs(d_j) + abs(d_i) + abs(s * g)) / abs(g)


def g_rounding(s, g):
    """The rest of an edge end's rounding bound, from ``g = n_j . e_i``'s own: ``4 eps (|s| - |s g|) / |g|``, so that
    with :func:`end_rounding` the end is within ``4 eps (|d_j| + |d_i| + |s|) / |g|``.

    ``n_i.n_j`` and ``g`` are 2-term dot products of unit rows, each within ``2 eps``; the numerator's product and
    difference round by ``eps |d_i| + eps (|d_j| + |d_i|)``, the quotient by ``eps |s|``: ``|ds| <= (2 eps |d_i| +
    eps |d_i| + eps (|d_j| + |d_i|) + 2 eps |s|) / |g| + eps |s| <= eps (|d_j| + 4 |d_i| + 3 |s|) / |g|``. The
    ``|s| / |g|`` part was missing until 2026-12-08: an end of a wedge of angle 6e-3, 6 from the foot, was 1.97e-14 off
    against 1.07e-14 (tests/test_s2_shallow_vertex.py). It is input conditioning (the rows' angle is known to ``eps``;
    no float64 path given these rows does better), so the planar paths add it to the bar they report, never to the
    error that sends a pair to another path: their fallback decisions, and so the bits, stay as they were."""
    return 4.0 * EPS * (abs(s) - abs(s * g)) / abs(g)


def vertex_error_terms(h, s, ds):
    """``(exponent, factor)`` of the mass error ``factor * e^exponent`` that an error ``ds`` in the edge end
    ``s`` causes (``planar.reference.vertex_log_error``: ``dtheta = ds h / (h^2 + s^2)`` beyond the vertex)."""
    r2 = h * h + s * s
    return -LOG_2PI - 0.5 * r2, h * ds / r2
