"""S = 3: the Gaussian mass ``Phi_omega(mu_omega(x), Sigma_omega)`` of Theorem 1 (eq. 5) and the moments of Sec. 4.1
on a polyhedron, batched over (region, point) pairs.

The cone-from-the-origin decomposition (NOTES §6: "a polyhedron is the signed sum of pyramids with apex m
over its facets"), ``P = 1{0 in omega} - sum_i sign(d_i) B_i``, each facet cone ``B_i`` reduced to 1-D
log-space edge integrals; moments by the divergence theorem (NOTES §3).
"""

from .kernel import (
    EDGE_ULPS,
    SolidArrays,
    SolidGeometry,
    batch_solid_moments,
    cubature_moments,
    edge_integrals,
    loosen_factor,
    loosen_factors,
    solid_log_mass,
)

__all__ = ["EDGE_ULPS", "SolidArrays", "SolidGeometry", "batch_solid_moments", "cubature_moments", "edge_integrals",
           "loosen_factor", "loosen_factors", "solid_log_mass"]
