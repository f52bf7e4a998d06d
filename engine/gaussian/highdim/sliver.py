"""S' = 4: the slicing direction for unbounded regions, so that every slice is bounded (issue 14).

``sliced.sliced_moments`` integrates ``phi(t) P_3(slice(t))`` along a fixed generic direction ``e``. For an
unbounded region P (pointed, rays ``r_i``), the slice ``{y in P : e . y = t}`` is unbounded exactly when a nonnegative
combination of the rays is perpendicular to ``e``, i.e. when ``e . r_i`` takes both signs (or is zero). Such slices
cannot go to the compiled adaptive cubature (tetrahedra) and end in the nested S = 3 quadrature (pure Python,
~2 s a slice): on ``random_network([4, 8, 8, 5], rng=0, cov_x=0.1)`` one narrow unbounded region (5 facets, 2
vertices, 6 rays within ~0.1 of each other) cost 30 of the 100-point evaluate's 87 s CPU that way.

Since P is pointed, its recession cone lies in an open half-space: there is a unit ``e`` with ``e . r_i > 0`` for
every ray, and then every slice is bounded (a polytope: its recession cone ``{r in rec(P) : e . r = 0} = {0}``). The
direction with the largest margin ``min_i e . r_i`` is the unit vector along the point of the rays' convex hull
closest to the origin; a small linear program (``max s`` subject to ``r_i . e >= s``, ``|e_k| <= 1``) finds a
direction with positive margin, and the rays' mean direction (exact for one ray) often has a larger one; the
larger is taken. A positive but tiny margin is not enough in practice: a ray nearly perpendicular to ``e`` makes
the slices bounded but long needles (their extent grows like ``1 / min_i e . r_i``); on one region of the same
workload (six rays, generic margin 0.0015) the slices with relative-accuracy moments (``moments=2,
accuracy="relative"``) took 3.4 s and missed the cones' value by 3.7e-3 under a bar of 5.6e-5 (with absolute
accuracy or mass only they agreed), while four random directions of margin >= 0.27 agreed with the cones to 1e-13
in 6 ms. So the default direction is replaced whenever its margin is below ``GOOD_MARGIN`` and the program's is larger.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linprog

MARGIN = 1e-6  # the smallest |e . r_i| (unit rays, unit e) taken as a definite sign (``sliced`` uses 1e-12)
GOOD_MARGIN = 0.1  # default directions with a margin at least this are kept (slices at most ~10x longer than P)


def bounded_direction(Yr, e_default):
    """A unit direction (4,) along which every slice of a pointed region with unit rays ``Yr`` (R, 4) is bounded and
    not much longer than the region: None when P has no rays or ``e_default`` (4,) has a margin (:func:`margin`) of
    at least ``GOOD_MARGIN``, else the linear program's direction if its margin is larger (and above ``MARGIN``),
    else None (the caller keeps its default)."""
    Yr = np.asarray(Yr, dtype=np.float64).reshape(-1, 4)
    if not Yr.shape[0]:
        return None
    m0 = margin(Yr, e_default)
    if m0 >= GOOD_MARGIN:
        return None
    R, k = Yr.shape
    # variables (e_1..e_k, s): maximise s subject to s - r_i . e <= 0, -1 <= e <= 1, s <= 1
    c = np.zeros(k + 1)
    c[-1] = -1.0
    A = np.hstack([-Yr, np.ones((R, 1))])
    res = linprog(c, A_ub=A, b_ub=np.zeros(R), bounds=[(-1.0, 1.0)] * k + [(None, 1.0)], method="highs")
    cands = [Yr.sum(axis=0)] + ([np.asarray(res.x[:k], dtype=np.float64)] if res.status == 0 else [])
    best, m1 = None, max(m0, MARGIN)
    for e in cands:  # the rays' mean direction (exact for one ray) or the program's, whichever has the larger margin
        n = np.linalg.norm(e)
        if n > 0.0 and margin(Yr, e / n) > m1:
            best, m1 = e / n, margin(Yr, e / n)
    return best


def margin(Yr, e):
    """``min_i |e . r_i|`` when every ``e . r_i`` has one sign (the slices along ``e`` are bounded), else 0."""
    h = Yr @ e
    if np.all(h > 0.0) or np.all(h < 0.0):
        return float(np.min(np.abs(h)))
    return 0.0
