"""S' >= 4 Gaussian integrals over polyhedra (issue 14): ``qmc`` (randomised QMC with exact planar inner
integrals, the fallback), ``nested`` (nested log-space quadrature down to planar slices, the slow reference)."""
