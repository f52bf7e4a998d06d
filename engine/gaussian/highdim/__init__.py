"""S' >= 4 Gaussian integrals over polyhedra.

S' = 4: ``cones`` first (the cone (flag) decomposition, one 1-D integral per facet > ridge > edge flag), ``sliced``
for the pairs the cones leave (outer Gauss-Kronrod quadrature over exact S = 3 slices; ``sliver`` picks a slicing
direction with bounded slices for unbounded regions), ``budget`` (which pairs are integrated, the bound on the rest).
S' = 5 and 6: ``cones5`` / ``cones6`` (the S' = 4 cones of each facet / ridge, the outer Gaussian integral closed).
``qmc``: randomised QMC with exact planar inner integrals, for the pairs those leave and ``method="rqmc"``;
``nested``: nested log-space quadrature down to planar slices, the slow reference."""

import numpy as np


def factors_and_ok(polytopes, covs, chol, S: int):
    """The shared part of the batch geometries (``sliced.SlicedGeometry``, ``cones5.Cones5Geometry``,
    ``cones6.Cones6Geometry``): lower-triangular factors (R, S, S) of Sigma_omega (``chol`` when the caller has
    accurate ones; None if one is not positive definite) and ``ok`` (R,): regions of dimension S with facets,
    vertices and no lineality (the others take the per-region path)."""
    covs = np.asarray(covs, dtype=np.float64)
    if chol is None:
        try:
            chol = np.linalg.cholesky(covs)
        except np.linalg.LinAlgError:
            chol = None
    chol = None if chol is None else np.asarray(chol, dtype=np.float64)
    ok = np.array([p.H.shape[0] > 0 and p.H.shape[1] == S and not p.lineality.size and p.vertices.size > 0
                   for p in polytopes], dtype=bool)
    return chol, ok


def whitened(polytope, chol, means):
    """Region ``polytope`` under ``N(means_m, L L^T)`` (``chol`` = L, (S, S)) in whitened coordinates: unit normals
    (F, S), offsets (M, F), vertices (M, V, S) relative to each mean, unit rays (R, S)."""
    HL = polytope.H @ chol
    nrm = np.linalg.norm(HL, axis=1)
    Linv = np.linalg.inv(chol)
    D = (polytope.c[None, :] - means @ polytope.H.T) / nrm
    Yv = (polytope.vertices[None] - means[:, None, :]) @ Linv.T
    Yr = polytope.rays @ Linv.T if polytope.rays.size else np.zeros((0, chol.shape[0]))
    if Yr.size:
        Yr = Yr / np.linalg.norm(Yr, axis=1)[:, None]
    return HL / nrm[:, None], D, Yv, Yr


def map_regions(fn, jobs):
    """``[fn(job) for job in jobs]``, the jobs spread over ``threads.worker_threads()`` threads of a pool of this
    call's own (each job's compiled passes release the GIL; a job's nested ``run_split`` uses the shared pool, so
    the two cannot wait on each other). Each job is computed alone: the bits do not depend on the thread count.
    The S' = 4, 5, 6 batches (``sliced``, ``cones5``, ``cones6``) run their regions through it."""
    from concurrent.futures import ThreadPoolExecutor

    from ..threads import worker_threads

    n = min(worker_threads(), len(jobs))
    if n <= 1:
        return [fn(job) for job in jobs]
    with ThreadPoolExecutor(max_workers=n, thread_name_prefix="dgnexact-regions") as pool:
        return list(pool.map(fn, jobs))
