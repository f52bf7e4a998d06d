"""S' >= 4 Gaussian integrals over polyhedra: ``sliced`` (S' = 4, the default: outer Gauss-Kronrod
quadrature over exact S = 3 slices, ``BATCH_INTEGRATORS[4]``), ``qmc`` (randomised QMC with exact planar inner
integrals: S' >= 5, ``method="rqmc"``, and the fallback of ``sliced``), ``nested`` (nested log-space quadrature
down to planar slices, the slow reference)."""
