"""Convex polyhedra of latent space in both representations.

A region of the partition (Corollary 1) is ``{z : H z <= c}`` (H-representation, irredundant, rows of
H of unit Euclidean norm) and equally ``conv(vertices) + cone(rays) + span(lineality)``
(V-representation). Regions may be unbounded (rays) and, for networks whose first layer has rank
below S, contain whole lines (lineality). Both forms are exact descriptions; neither clips to a box.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Polytope:
    H: np.ndarray  # (F, S) unit-norm facet normals
    c: np.ndarray  # (F,) offsets: z in the polytope iff H z <= c
    vertices: np.ndarray  # (V, S)
    rays: np.ndarray  # (R, S) unit-norm extreme rays
    lineality: np.ndarray  # (L, S) orthonormal basis of the lineality space

    @property
    def dim(self) -> int:
        return self.H.shape[1] if self.H.size else self.vertices.shape[1]

    @property
    def bounded(self) -> bool:
        return self.rays.shape[0] == 0 and self.lineality.shape[0] == 0

    @property
    def n_facets(self) -> int:
        return self.H.shape[0]

    def contains(self, Z: np.ndarray, tol: float = 1e-9) -> np.ndarray:
        """Boolean (N,): rows of Z with ``H z <= c + tol``."""
        Z = np.atleast_2d(Z)
        if self.H.shape[0] == 0:
            return np.ones(len(Z), dtype=bool)
        return np.all(Z @ self.H.T <= self.c + tol, axis=1)

    def interior_point(self) -> np.ndarray:
        """A point of the interior: mean of the vertices plus the mean ray direction, scaled with the
        vertices' size (1 + max |v|) so that a region far from the origin gets a point as far inside it,
        relative to |z|, as one near the origin: a unit step from a vertex at |z| ~ 1e13 lies within
        rounding of the vertex's own lines, where sign patterns are decided by rounding."""
        p = self.vertices.mean(axis=0)
        if self.rays.shape[0]:
            scale = 1.0 + (np.abs(self.vertices).max() if self.vertices.size else 0.0)
            p = p + scale * self.rays.mean(axis=0)
        return p

    def interval(self) -> tuple[float, float]:
        """S = 1 only: the region as ``[lo, hi]`` (infinite ends for rays / the whole line)."""
        if self.dim != 1:
            raise ValueError("interval() is defined for one-dimensional polytopes only")
        lo, hi = -np.inf, np.inf
        for h, c in zip(self.H[:, 0], self.c):
            if h > 0:
                hi = min(hi, c / h)
            elif h < 0:
                lo = max(lo, c / h)
        return lo, hi

    def to_dict(self) -> dict:
        return {k: getattr(self, k).tolist() for k in ("H", "c", "vertices", "rays", "lineality")}


def trusted_polytope(H: np.ndarray, c: np.ndarray, vertices: np.ndarray, rays: np.ndarray,
                     lineality: np.ndarray) -> Polytope:
    """``Polytope(H, c, vertices, rays, lineality)`` for arrays an enumerator produced (Corollary 1's regions),
    without the frozen dataclass's five guarded ``__setattr__`` calls: the same object (fields, equality, repr,
    pickling), at 60% of the cost, for partitions that build tens of thousands of regions."""
    poly = object.__new__(Polytope)
    object.__setattr__(poly, "__dict__", {"H": H, "c": c, "vertices": vertices, "rays": rays, "lineality": lineality})
    return poly
