"""S = 2: the Gaussian mass ``Phi_omega(mu_omega(x), Sigma_omega)`` of Theorem 1 (eq. 5) and the moments of Sec. 4.1
on a polygon, with relative accuracy in the tails.

In coordinates whitened by ``Sigma_omega = L L^T`` the region is ``{Nrm y <= D}``, ``y ~ N(0, I_2)``, and
(NOTES §3, "in 2-D a polygon's Gaussian mass has a closed form through Owen's T function")

    P = 1{0 in omega} - sum_i sign(d_i) B_i,   B_i = T(|d_i|, s_hi/|d_i|) - T(|d_i|, s_lo/|d_i|),

with moments by the divergence theorem (NOTES §3: ``E[(z - mu) 1_omega] = -sum_i h_i f_i(c_i) P(omega | u_i = c_i)``).

* :mod:`.reference` -- the numpy reference path per region (``planar_moments``), its exact slice quadrature
  fallback (``planar_slice_moments``) and the covariance cancellation test (``cancels``);
* :mod:`.kernel` -- the same formula compiled with numba, one pass per (region, point) pair;
* :mod:`.batch` -- the per-region geometry (:class:`RegionGeometry`, built once per ``evaluate``) and the
  batch driver over all pairs (``batch_planar_pairs``).
"""

from .batch import RegionGeometry, batch_planar_moments, batch_planar_pairs, whitening_factors
from .reference import (
    cancels,
    edge_divergence_moments,
    planar_edges,
    planar_log_mass,
    planar_moments,
    planar_slice_log_mass,
    planar_slice_moments,
)

__all__ = ["RegionGeometry", "batch_planar_moments", "batch_planar_pairs", "cancels", "edge_divergence_moments",
           "planar_edges", "planar_log_mass", "planar_moments", "planar_slice_log_mass", "planar_slice_moments",
           "whitening_factors"]
