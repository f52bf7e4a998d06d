"""S = 3: the Gaussian mass ``Phi_omega(mu_omega(x), Sigma_omega)`` of Theorem 1 (eq. 5) and the moments of Sec. 4.1
on a polyhedron, batched over (region, point) pairs.

The cone-from-the-origin decomposition (NOTES §6: "a polyhedron is the signed sum of pyramids with apex m
over its facets"), ``P = 1{0 in omega} - sum_i sign(d_i) B_i``, each facet cone ``B_i`` reduced to 1-D
log-space edge integrals; moments by the divergence theorem (NOTES §3). One module per seam:

* :mod:`.geometry`  -- :class:`SolidGeometry` (whitened normals and edge structure of each region, built once per
  ``evaluate``) and :class:`SolidArrays`, the NamedTuple of arrays the kernel takes whole;
* :mod:`.edges`     -- the compiled 1-D edge integrals (cone, Owen-T and edge-mass terms), ``edge_integrals``;
* :mod:`.kernel`    -- the compiled per-pair cone decomposition and divergence-theorem moments,
  ``batch_solid_moments``, and the loosening of thresholds for pairs of small weight;
* :mod:`.cubature`  -- small bounded regions, where the signed sums cancel: a tetrahedral product rule;
* :mod:`.reference` -- the per-region reference path, nested quadrature of exact planar slices.
"""

from .cubature import cubature_moments, pair_cubature
from .edges import EDGE_ULPS, edge_integrals
from .geometry import SolidArrays, SolidGeometry
from .kernel import batch_solid_moments, loosen_factor, loosen_factors
from .reference import solid_log_mass

__all__ = ["EDGE_ULPS", "SolidArrays", "SolidGeometry", "batch_solid_moments", "cubature_moments", "edge_integrals",
           "loosen_factor", "loosen_factors", "pair_cubature", "solid_log_mass"]
