"""The partition of latent space into the regions of a CPA network (paper Sec. 3.2, Lemma 3, Cor. 1).

Every region is the set of z sharing one sign pattern of all hidden pre-activations; on it the
network is affine, ``g(z) = A z + b`` (eq. 2), and each pre-activation layer is affine,
``h^l(z) = A^{1->l} z + b^{1->l}`` (eq. 8).

For S = 1 each layer's units split the current intervals at their exact breakpoints ``-b_j / a_j``, every cell
of a layer at once (:func:`_partition_s1`, ``USE_FAST_S1``; the per-cell loop below is its bit-for-bit reference).
S = 2 runs the compiled planar arrangement (``engine.arrangement``, ``USE_PLANAR_ARRANGEMENT``), S >= 3 the
double description below compiled (``engine.dd_kernel``, ``USE_COMPILED_DD``); this module's Python double
description is their reference: the same side tests by rounding, the same regions (tests/test_partition_planar.py,
tests/test_partition_compiled.py, and the exact-rational oracle of tests/test_partition_exact.py).

Algorithm (S >= 2): layer-by-layer cell subdivision with the double-description method. Each cell carries
both representations of its polyhedron: constraints ``H z <= c`` and generators
``conv(V) + cone(R) + span(L)``. Walking through the layers, every unit's hyperplane
``a.z + beta = 0`` (affine inside the cell) is tested on the generators: if all generators lie on
one side the unit's sign is constant on the cell; otherwise the cell is split in two.

* A split of a cell that contains lines not parallel to the hyperplane projects the generators
  onto the hyperplane along a line direction ``l`` and adds the ray ``-l`` or ``+l``.
* A split of the pointed part creates a new generator on every *edge* that crosses the hyperplane.
  Edges are found by the combinatorial adjacency test of Fukuda and Prodon (two generators are
  adjacent iff no third generator is tight on every constraint they share), applied to the
  homogenised cone in which rays are generators with t = 0.

Unbounded regions are therefore described exactly, by their rays, and nothing is clipped to a box.
Degenerate arrangements (duplicate or parallel hyperplanes, dead units, zero rows, hyperplanes
through a vertex) need no special case: a hyperplane that only touches a cell does not split it.

"Touches" is decided by rounding, not by a fixed tolerance: a generator is on a unit's plane when the
plane's value there is within the rounding of the plane's coefficients (eq. 8 composed in float64, bounded
by the same products of magnitudes, ``Mabs`` and ``mabs``) plus the generator's own rounding bound (carried
from its parents through every combination; where that carried bound alone decides, it is replaced by the
smaller a-posteriori bound of :func:`_residual_err`, from the generator's residuals on its tight constraints
projected on the plane's normal, which does not depend on the unit order). A split therefore needs
generators beyond their bounds on both sides, so both children are full-dimensional. Regions narrower than
these bounds (a few dozen ulps of the magnitudes involved) are below float64's resolution and are merged;
every wider one is found, whatever the unit order (fuzz campaigns: slivers of 1.4e-13 |z|, parallel planes
7e-13 apart, a strip 2.5e-12 wide, against an exact-rational enumeration in ``tests/test_partition_exact.py``).
Constraints that stop being facets are dropped after each layer, so the final H-representation is
irredundant; its rows have unit norm.
"""

from __future__ import annotations

import dataclasses
import operator
from dataclasses import dataclass, field

import numpy as np

from .arrangement import Incidence, planar_partition
from .errors import RegionBudgetError
from .network import Activation, Linear, Network
from .polytope import Polytope, trusted_polytope

DEFAULT_MAX_REGIONS = 100_000
# S = 2: the compiled planar arrangement (engine.arrangement), 40-60x faster than the double description, with
# the same side test by rounding (the same regions on every pinned fuzz case and degenerate test net; both equal
# the exact-rational oracle where float64 resolves the regions). False: the double description at every S.
USE_PLANAR_ARRANGEMENT = True
# S >= 2 runs the double description compiled (engine.dd_kernel: the same regions, in the same order, ~10x
# faster); False selects the Python reference below.
USE_COMPILED_DD = True
# S = 1 runs :func:`_partition_s1`, every cell of a layer at once (the same regions, in the same order, with the
# same bits, as the per-cell loop of :func:`partition`, its reference: tests/test_partition_s1_fast.py); False
# selects the loop.
USE_FAST_S1 = True
_EPS = np.finfo(np.float64).eps
# Side-of-hyperplane test (S >= 2): a generator g is on the plane a.z + beta = 0 when |a.g + beta| is within
# the rounding of the plane's coefficients plus g's own error bound (see _plane_tol and _split).
_PLANE_ULPS = 32.0  # eq. 8 composed in float64: |delta(M, m)| <= (sum of layer widths) eps (|M|, |m|) terms
_VERTEX_ULPS = 8.0  # one rounded combination of two generators (a few flops per coordinate)
_ZERO_ROW = 1e-12  # a pre-activation row this small relative to its terms is identically zero


@dataclass
class Region:
    """One region of the partition with its affine map (eq. 2) and per-layer maps (eq. 8)."""

    index: int
    signs: np.ndarray  # (n_units,) bool: pre-activation > 0, all activation layers concatenated
    polytope: Polytope
    A: np.ndarray  # (D, S)
    b: np.ndarray  # (D,)
    layer_maps: list[tuple[np.ndarray, np.ndarray]]  # pre-activation (A^{1->l}, b^{1->l}) per activation
    _partition: Partition | None = field(default=None, repr=False, compare=False)

    @property
    def neighbours(self) -> tuple[int, ...]:
        """Indices of the regions that share a facet with this one."""
        return self._partition.neighbours(self.index)

    @property
    def H(self) -> np.ndarray:
        return self.polytope.H

    @property
    def c(self) -> np.ndarray:
        return self.polytope.c

    @property
    def vertices(self) -> np.ndarray:
        return self.polytope.vertices

    @property
    def rays(self) -> np.ndarray:
        return self.polytope.rays

    @property
    def bounded(self) -> bool:
        return self.polytope.bounded

    def layer_signs(self, net: Network) -> list[np.ndarray]:
        """The sign pattern split per activation layer (the diagonals of D^l are slopes of these)."""
        out, start = [], 0
        for width in (m.shape[0] for m, _ in self.layer_maps):
            out.append(self.signs[start:start + width])
            start += width
        return out


@dataclass
class _Cell:
    """A cell in double description: generators in homogeneous form and constraints.

    ``G[k] = (z, t)``: a vertex z when t = 1, a unit ray z when t = 0. Column 0 of ``inc`` is the
    homogenising constraint t >= 0 (tight exactly at rays); column j + 1 says whether generator k is
    tight on constraint j of ``H z <= c``.
    """

    G: np.ndarray  # (ng, S + 1)
    L: np.ndarray  # (nl, S) orthonormal lineality basis
    H: np.ndarray  # (F, S) unit-norm constraint normals
    c: np.ndarray  # (F,)
    inc: np.ndarray  # (ng, F + 1) bool
    err: np.ndarray  # (ng,) bound on each generator's distance from its exact position (rays: unit direction)
    M: np.ndarray = field(default=None)  # current affine map of z: (k, S)
    m: np.ndarray = field(default=None)  # (k,)
    Mabs: np.ndarray = field(default=None)  # magnitude bookkeeping |W^l| ... |W^1| of M: its rounding scale
    mabs: np.ndarray = field(default=None)  # the same for m: |W^l| (... (|W^1| 0 + |v^1|)) + |v^l|
    signs: list = field(default_factory=list)
    maps: list = field(default_factory=list)

    @property
    def V(self) -> np.ndarray:
        return self.G[self.G[:, -1] > 0, :-1]

    @property
    def R(self) -> np.ndarray:
        return self.G[self.G[:, -1] == 0, :-1]


def _plane_tol(G: np.ndarray, Ahat: np.ndarray, bhat: np.ndarray) -> np.ndarray:
    """(ng, p) rounding bound of the unit-normal planes' values ``a.g + beta t`` at exact generators.

    A pre-activation row (eq. 8) is composed in float64 as ``M = W^l ... W^1`` and ``m``; each entry is off by
    at most ~(sum of widths) eps times the same products of magnitudes (``Mabs``, ``mabs``). Scaled by the
    row norm (``Ahat = Mabs / |M|``, ``bhat = mabs / |M|``), the error of ``a.z + beta`` is at most
    ``eps (|z|.Ahat + bhat)`` per ulp; a cancelled row (``|M| << Mabs``) gets a wide tolerance.
    """
    return _PLANE_ULPS * _EPS * (np.abs(G[:, :-1]) @ Ahat.T + G[:, -1:] * bhat)


def _residual_err(cell: _Cell, gi: np.ndarray, A: np.ndarray) -> np.ndarray:
    """A posteriori bound on ``|a.(g - g*)|`` for generators ``gi`` and unit normals ``A`` (rows, same length).

    ``g*`` is the exact generator of the stored (float) constraints ``g`` is tight on: with ``H_T`` those rows,
    ``g - g* = H_T^+ r`` to first order, ``r = H_T g - c_T t`` the tight residuals (exact for vertices; for
    rays, normalisation is second order). So ``a.(g - g*) = y.r`` with ``y = (H_T^T)^+ a``, bounded by
    ``|y|.(|r| + rounding of r)``, doubled for the rounding of ``y``. Unlike :func:`_combine`'s bound, carried
    through the generator's history (and so dependent on the unit order), this depends only on where ``g``
    is; and it is small along the normal of a plane parallel to one ``g`` lies on, however ill-conditioned
    ``g``'s other tight rows make its position (fuzz case ``permutation-0-2a94``: a strip 1e-11 wide between
    two parallel walls, eq. 8 rows of one unit through weights 1e4, missed in one unit order). Infinite where
    the tight rows do not determine ``g`` (rank below S for a vertex, S - 1 for a ray) or the cell has lines.
    """
    out = np.full(len(gi), np.inf)
    S = cell.H.shape[1]
    if cell.L.shape[0]:
        return out
    for k, (i, a) in enumerate(zip(gi, A)):
        T = cell.inc[i, 1:]
        g, t = cell.G[i, :-1], cell.G[i, -1]
        HT, cT = cell.H[T], cell.c[T]
        if HT.shape[0] < S - (t == 0) or np.linalg.matrix_rank(HT) < S - (t == 0):
            continue
        r = np.abs(HT @ g - cT * t) + _VERTEX_ULPS * _EPS * (np.abs(HT) @ np.abs(g) + np.abs(cT) * t)
        y = np.linalg.lstsq(HT.T, a, rcond=None)[0]
        out[k] = 2.0 * np.abs(y) @ r + _VERTEX_ULPS * _EPS * np.abs(g).max()
    return out


def _adjacent_pairs(inc: np.ndarray, pos: np.ndarray, neg: np.ndarray, d: int) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (i in pos, j in neg) of adjacent generators of a pointed cone of dimension d."""
    common = inc[pos][:, None, :] & inc[neg][None, :, :]  # (p, q, F + 1)
    ok = common.sum(axis=2) >= d - 2
    pi, qi = np.nonzero(ok)
    if pi.size == 0:
        return pi, qi
    cm = common[pi, qi]  # (k, F + 1)
    # contained[k, g]: generator g is tight on every constraint the pair shares
    contained = ~np.any(cm[:, None, :] & ~inc[None, :, :], axis=2)
    rows = np.arange(len(pi))
    contained[rows, pos[pi]] = False
    contained[rows, neg[qi]] = False
    adjacent = ~contained.any(axis=1)
    return pos[pi[adjacent]], neg[qi[adjacent]]


def _split(cell: _Cell, a: np.ndarray, beta: float, f: np.ndarray, tol: np.ndarray, fL: np.ndarray,
           crosses: bool) -> tuple[_Cell, _Cell]:
    """Split a cell by ``a.z + beta = 0`` into its parts ``<= 0`` (first) and ``>= 0`` (second).

    ``f`` holds the homogeneous values ``a.z + beta t`` of the generators and ``tol`` their error bounds
    (plane rounding plus the generator's own error), ``fL`` the values of the lines; ``crosses``: a line
    crosses the plane. Each new generator gets an error bound from its parents' (first-order propagation
    through the combination, plus its own rounding).
    """
    S = a.shape[0]
    H_lo, c_lo = np.vstack([cell.H, a]), np.append(cell.c, -beta)
    H_hi, c_hi = np.vstack([cell.H, -a]), np.append(cell.c, beta)
    if crosses:
        # The cell contains lines crossing the hyperplane: project along l, add the ray -l / +l.
        l = fL @ cell.L
        al = np.linalg.norm(l)  # a.l
        l /= al
        P = cell.L - np.outer(cell.L @ l, l)
        L_new = np.linalg.svd(P)[2][: cell.L.shape[0] - 1] if cell.L.shape[0] > 1 else np.zeros((0, S))
        G = cell.G.copy()
        shift = f / (a @ l)
        G[:, :-1] -= np.outer(shift, l)
        err = np.maximum(cell.err, _VERTEX_ULPS * _EPS * (np.abs(shift) + np.linalg.norm(cell.G[:, :-1], axis=1)))
        rays = G[:, -1] == 0
        if rays.any():
            nr = np.linalg.norm(G[rays, :-1], axis=1)
            G[rays, :-1] /= nr[:, None]
            err[rays] /= nr
        inc = np.hstack([cell.inc, np.ones((len(G), 1), bool)])
        ray_inc = np.ones((1, inc.shape[1]), bool)
        ray_inc[0, -1] = False
        inc = np.vstack([inc, ray_inc])
        err = np.append(err, _VERTEX_ULPS * _EPS)
        lower = _Cell(np.vstack([G, np.append(-l, 0.0)]), L_new, H_lo, c_lo, inc, err)
        upper = _Cell(np.vstack([G, np.append(l, 0.0)]), L_new, H_hi, c_hi, inc, err.copy())
        return lower, upper

    above, below = f > tol, f < -tol
    pos, neg = np.nonzero(above)[0], np.nonzero(below)[0]
    d = S - cell.L.shape[0] + 1
    pi, nj = _adjacent_pairs(cell.inc, pos, neg, d)
    g_new, err_new = _combine(cell.G[pi], cell.G[nj], f[pi], f[nj], cell.err[pi], cell.err[nj])
    vertex = g_new[:, -1] > 0
    inc_new = np.hstack([cell.inc[pi] & cell.inc[nj], np.ones((len(pi), 1), bool)])
    # a new vertex carries its parents' rounding (~eps max|parent|): polish those made from a far parent
    size = np.abs(cell.G[:, :-1]).max(axis=1) * (cell.G[:, -1] > 0)
    far = vertex & (np.maximum(size[pi], size[nj]) > 16.0 * (1.0 + np.abs(g_new[:, :-1]).max(axis=1)))
    if far.any():
        Ht, ct = np.vstack([cell.H, a]), np.append(cell.c, -beta)
        g_new[far, :-1], err_new[far] = _polish(g_new[far, :-1], err_new[far], Ht, ct, inc_new[far, 1:], cell.L)
    on_plane = ~above & ~below
    out = []
    for keep, H, c in ((~above, H_lo, c_lo), (~below, H_hi, c_hi)):
        G = np.vstack([cell.G[keep], g_new])
        inc = np.vstack([np.hstack([cell.inc[keep], on_plane[keep, None]]), inc_new])
        out.append(_Cell(G, cell.L, H, c, inc, np.concatenate([cell.err[keep], err_new])))
    return out[0], out[1]


def _combine(Gp, Gn, fp, fn, ep, en):
    """New generators ``fp Gn - fn Gp`` on the edges (p above, n below the plane) and their rounding bounds.

    ``v = (fp Zn - fn Zp) / t`` (homogeneous ``(Z, T)``, ``t = fp Tn - fn Tp``) sums terms of the parents'
    magnitudes with weights ``fp / t`` and ``|fn| / t``; its rounding is eps times that weighted magnitude,
    and it inherits the parents' errors with the same weights (the larger of the two counts, rounding errors
    of successive combinations being independent, not aligned). A new ray (two parent rays, t = 0) is
    normalised, and so is its bound. Magnitudes are max-norms (the sqrt(S) to the 2-norm is in the constant).
    """
    wp, wn = fp, -fn
    g = wp[:, None] * Gn + wn[:, None] * Gp
    scale = g[:, -1].copy()
    ray = scale <= 0
    if ray.any():
        scale[ray] = np.sqrt(np.einsum("ij,ij->i", g[ray, :-1], g[ray, :-1]))
        g[ray, -1] = 0.0
    scale = np.maximum(scale, 1e-300)
    unit = _VERTEX_ULPS * _EPS
    mp = np.maximum(en, unit * np.abs(Gn[:, :-1]).max(axis=1))
    mn = np.maximum(ep, unit * np.abs(Gp[:, :-1]).max(axis=1))
    g[:, :-1] /= scale[:, None]
    g[~ray, -1] = 1.0
    err = np.maximum((wp * mp + wn * mn) / scale, unit * np.abs(g[:, :-1]).max(axis=1))
    return g, err


def _polish(V: np.ndarray, err: np.ndarray, H: np.ndarray, c: np.ndarray, tight: np.ndarray,
            L: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Move new vertices onto the hyperplanes that define them (Gauss-Newton on their tight rows).

    A vertex made on an edge as the combination ``f_p g_n - f_n g_p`` carries the rounding of its
    *parents*: an edge from a vertex at |z| ~ 1 to one at |z| ~ 1e7 puts the new vertex ~eps * 1e7 off
    its own hyperplanes, far above the side test's tolerance relative to |z| ~ 1, so a duplicate of the
    unit that made it split the cell again (a fuzz case: 16 regions of 4 planes in R^3). Solving the
    tight rows ``H_T z = c_T`` (with the lineality fixed) makes each vertex accurate relative to its own
    size and conditioning. A step is kept only where it lowers the largest tight residual.

    Error bound: the exact vertex is within ``err`` of the combination, hence within ``err + |moved|`` of the
    polished one; and within ``|H_T^+| (|residual| + rounding of the tight rows)`` of it.
    """
    T = tight.astype(float)  # (k, F)
    N = np.einsum("kf,fs,ft->kst", T, H, H)
    if L.shape[0]:
        N = N + (L.T @ L)[None]
    pinv = np.linalg.pinv(N, rcond=1e-10)
    V0 = V
    for _ in range(2):
        r = (V @ H.T - c) * T  # (k, F) residuals on the tight rows only
        step = -np.einsum("kst,kf,ft->ks", pinv, r, H)
        W = V + step
        better = np.abs((W @ H.T - c) * T).max(axis=1) < np.abs(r).max(axis=1)
        V = np.where(better[:, None], W, V)
    r = np.abs((V @ H.T - c) * T).max(axis=1)
    rows = _VERTEX_ULPS * _EPS * (np.linalg.norm(V, axis=1) + np.abs(c * T).max(axis=1))
    gain = np.sqrt(np.linalg.norm(pinv, ord=2, axis=(1, 2)) * T.sum(axis=1))
    err = np.minimum(err + np.linalg.norm(V - V0, axis=1), gain * (r + rows))
    return V, err


def _refine(cell: _Cell, M: np.ndarray, m: np.ndarray, Mabs: np.ndarray,
            mabs: np.ndarray) -> list[tuple[_Cell, np.ndarray]]:
    """Subdivide a cell by all units of one activation layer; return (cell, unit signs) pieces.

    A unit splits a cell when generators lie on both sides of its plane beyond their error bounds (plane
    rounding, :func:`_plane_tol`, plus the generator's own bound): both children then hold a point off the
    plane and are full-dimensional. Otherwise its sign is constant on the cell (a plane within rounding of
    a vertex or of a parallel facet is the same plane in float64).
    """
    units = M.shape[0]
    signs = np.ones(units, dtype=bool)
    norms = np.linalg.norm(M, axis=1)
    zero_row = norms <= _ZERO_ROW * np.linalg.norm(Mabs, axis=1)
    signs[zero_row] = m[zero_row] > 0  # h = 0 counts as negative, as in Network.sign_patterns
    active = np.nonzero(~zero_row)[0]
    a_all, Ahat = np.zeros_like(M), np.zeros_like(M)
    beta_all, bhat = np.zeros(units), np.zeros(units)
    a_all[active] = M[active] / norms[active, None]
    beta_all[active] = m[active] / norms[active]
    Ahat[active] = np.maximum(Mabs[active], np.abs(M[active])) / norms[active, None]
    bhat[active] = np.maximum(mabs[active], np.abs(m[active])) / norms[active]
    results = []
    stack = [(cell, active, signs)]
    while stack:
        cur, pend, sg = stack.pop()
        if pend.size == 0:
            results.append((cur, sg))
            continue
        f = cur.G[:, :-1] @ a_all[pend].T + cur.G[:, -1:] * beta_all[pend]  # (ng, p)
        ptol = _plane_tol(cur.G, Ahat[pend], bhat[pend])
        tol = ptol + cur.err[:, None]
        gi, ui = np.nonzero((np.abs(f) <= tol) & (np.abs(f) > ptol))  # decided by g's own bound
        if gi.size:
            tol[gi, ui] = ptol[gi, ui] + np.minimum(cur.err[gi], _residual_err(cur, gi, a_all[pend[ui]]))
        pos = (f > tol).any(axis=0)
        neg = (f < -tol).any(axis=0)
        if cur.L.shape[0]:
            fL = cur.L @ a_all[pend].T
            tolL = _PLANE_ULPS * _EPS * (np.abs(cur.L) @ Ahat[pend].T) + _VERTEX_ULPS * _EPS
            crosses = (np.abs(fL) > tolL).any(axis=0)
            splits = crosses | (pos & neg)
        else:
            fL = np.zeros((0, len(pend)))
            crosses = np.zeros(len(pend), bool)
            splits = pos & neg
        decided = ~splits
        sg[pend[decided]] = ~(neg[decided] & ~pos[decided])
        if not splits.any():
            results.append((cur, sg))
            continue
        k = int(np.argmax(splits))
        unit = pend[k]
        lower, upper = _split(cur, a_all[unit], beta_all[unit], f[:, k], tol[:, k], fL[:, k], bool(crosses[k]))
        rest = pend[splits][1:]
        sg_up, sg_lo = sg.copy(), sg.copy()
        sg_up[unit], sg_lo[unit] = True, False
        stack.append((upper, rest, sg_up))
        stack.append((lower, rest, sg_lo))
    return results


def _prune(cell: _Cell) -> None:
    """Drop constraints that are not facets (their tight set is empty of vertices or not maximal)."""
    F = cell.H.shape[0]
    if F == 0:
        return
    Z = cell.inc[:, 1:].T  # (F, ng)
    has_vertex = Z[:, cell.G[:, -1] > 0].any(axis=1)
    # sub[i, j]: the tight set of i is contained in that of j
    sub = ~np.any(Z[:, None, :] & ~Z[None, :, :], axis=2)
    equal = sub & sub.T
    keep = has_vertex & ~(sub & ~equal).any(axis=1)
    keep &= ~np.triu(equal, k=1).any(axis=0)  # duplicates of one facet: keep the first
    if keep.all():
        return
    cell.H, cell.c = cell.H[keep], cell.c[keep]
    cell.inc = cell.inc[:, np.concatenate([[True], keep])]


def _refine_interval(lo: float, hi: float, M: np.ndarray, m: np.ndarray, Mabs: np.ndarray, mabs: np.ndarray):
    """S = 1: split ``[lo, hi]`` at the breakpoints ``-m_j / M_j`` of one layer's units (eq. 8).

    Returns a list of ((lo, hi), signs) pieces. A breakpoint is off by at most its plane's rounding
    (:func:`_plane_tol` at the root) plus its own division; breakpoints closer than the sum of their bounds
    are one, so duplicate units and units through a previous breakpoint split nothing twice.
    """
    a, beta = M[:, 0], m
    zero_row = np.abs(a) <= _ZERO_ROW * Mabs[:, 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        roots = np.where(zero_row, np.nan, -beta / a)
        err = _PLANE_ULPS * _EPS * (np.maximum(Mabs[:, 0], np.abs(a)) * np.abs(roots)
                                    + np.maximum(mabs, np.abs(beta))) / np.abs(a)
    err = err + _VERTEX_ULPS * _EPS * np.abs(roots)
    end_err = [_VERTEX_ULPS * _EPS * abs(e) if np.isfinite(e) else 0.0 for e in (lo, hi)]
    inside = ~zero_row & (roots - err > lo + end_err[0]) & (roots + err < hi - end_err[1])
    order = np.argsort(roots[inside], kind="stable")  # equal roots in unit order (as _partition_s1)
    cuts, err = roots[inside][order], err[inside][order]
    if cuts.size > 1:
        keep = np.diff(cuts) > err[1:] + err[:-1]
        cuts = cuts[np.concatenate([[True], keep])]
    ends = np.concatenate([[lo], cuts, [hi]])
    pieces = []
    for left, right in zip(ends[:-1], ends[1:]):
        if np.isfinite(left) and np.isfinite(right):
            probe = 0.5 * (left + right)
        elif np.isfinite(left):
            probe = left + 1.0 + abs(left)
        elif np.isfinite(right):
            probe = right - 1.0 - abs(right)
        else:
            probe = 0.0
        signs = np.where(zero_row, beta > 0, a * probe + beta > 0)
        pieces.append(((float(left), float(right)), signs))
    return pieces


def _interval_cell(lo: float, hi: float) -> _Cell:
    """The double-description cell of ``[lo, hi]`` (ends may be infinite)."""
    H, c, G = [], [], []
    if np.isfinite(lo):
        H.append([-1.0])
        c.append(-lo)
        G.append([lo, 1.0])
    else:
        G.append([-1.0, 0.0])
    if np.isfinite(hi):
        H.append([1.0])
        c.append(hi)
        G.append([hi, 1.0])
    else:
        G.append([1.0, 0.0])
    L = np.zeros((0, 1))
    if not H:
        G, L = [[0.0, 1.0]], np.eye(1)
    G = np.array(G, dtype=float)
    H, c = np.array(H, dtype=float).reshape(-1, 1), np.array(c, dtype=float)
    tight = (G[:, -1:] > 0) & (G[:, :1] * H.T[:1] == c[None, :]) if H.size else np.zeros((len(G), 0), bool)
    inc = np.hstack([(G[:, -1] == 0)[:, None], tight])
    return _Cell(G, L, H, c, inc, np.zeros(len(G)))


class Partition:
    """All regions of the latent space of ``net``; iterate, index, or :meth:`locate` points.

    Immutable: ``net``, ``regions`` (a tuple), ``A``, ``b`` and ``signs`` (read-only arrays) are fixed at
    construction; a network whose inner layers are unchanged gets its own partition from
    :meth:`for_network`, which shares the regions' polytopes, sign lookup and adjacency.

    The S = 2 arrangement's partition keeps its polygons as flat arrays (``source``) and builds each
    :class:`Region` when first read (``part[i]``, iteration, ``regions``), once: the same object thereafter
    (two threads reading the same unbuilt region at the same moment may each get one; their arrays are the same).
    """

    def __init__(self, net: Network, regions: list[Region] | None, incidence=None, *,
                 stacked: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
                 source: _PlanarRegions | None = None):
        self._net = net
        self._source = source
        if stacked is None:  # (A, b, signs) of the regions, stacked: (R, D, S), (R, D), (R, n_units)
            stacked = tuple(np.stack([getattr(r, k) for r in regions]) for k in ("A", "b", "signs"))
        self._A, self._b, self._signs = (_read_only(x) for x in stacked)
        # built regions: all of them (a tuple), or, from a source, a list filled as they are read
        self._regions = tuple(regions) if source is None else None
        self._built = None if source is None else [None] * len(self._signs)
        self._lookup = _pattern_index(self._signs)
        self._incidence = incidence if source is None else source.incidence  # per region: (vertices + rays, facets)
        self._neighbours: list[tuple[int, ...]] | None = None
        self._padded: tuple[np.ndarray, np.ndarray] | None = None
        self._intervals: np.ndarray | None = None

    def __getstate__(self) -> dict:
        """Pickled without the regions a source rebuilds (smaller and faster to ship to Dask / process workers)."""
        state = self.__dict__.copy()
        if self._source is not None:
            state["_regions"], state["_built"] = None, [None] * len(self)
        return state

    @property
    def net(self) -> Network:
        return self._net

    @property
    def regions(self) -> tuple[Region, ...]:
        if self._regions is None:
            polys, maps, built = self._source.polytopes(), self._source.all_layer_maps(), self._built
            regions = tuple(built[i] or _trusted_region(i, s, polys[i], A, b, maps[i], self)
                            for i, (s, A, b) in enumerate(zip(self._signs, self._A, self._b)))
            built[:] = regions  # kept: a thread reading part[i] meanwhile finds its region here
            self._regions = regions
        return self._regions

    def _region(self, i: int) -> Region:
        """Region i (0 <= i < len), built from the source on first read."""
        region = self._built[i]
        if region is None:
            src = self._source
            region = self._built[i] = _trusted_region(i, self._signs[i], src.polytope(i), self._A[i], self._b[i],
                                                      src.layer_maps(i), self)
        return region

    @property
    def A(self) -> np.ndarray:
        """(R, D, S) slopes of the affine maps (eq. 2), read-only."""
        return self._A

    @property
    def b(self) -> np.ndarray:
        """(R, D) offsets of the affine maps (eq. 2), read-only."""
        return self._b

    @property
    def signs(self) -> np.ndarray:
        """(R, n_units) sign patterns, read-only."""
        return self._signs

    def for_network(self, net: Network, A: np.ndarray, b: np.ndarray) -> Partition:
        """The same regions under ``net``, whose affine maps on them are ``A`` (R, D, S), ``b`` (R, D).

        For a ``net`` whose inner layers equal ``self.net``'s (an EM update of the last layer or of the
        covariances does not move the regions, only eq. 2's maps; ``em.repartition`` computes them). The new
        partition shares the polytopes, sign lookup and adjacency, and its regions point to it (not to ``self``).
        """
        A, b = np.asarray(A, dtype=np.float64), np.asarray(b, dtype=np.float64)
        if A.shape[0] != len(self) or b.shape[0] != len(self):
            raise ValueError(f"need one map per region ({len(self)}), got A {A.shape}, b {b.shape}")
        if self._source is not None:  # copies: the new partition's A and b are read-only, the caller's stay as given
            out = Partition(net, None, stacked=(A.copy(), b.copy(), self._signs), source=self._source)
        else:
            regions = [dataclasses.replace(r, A=A[i], b=b[i], _partition=None) for i, r in enumerate(self._regions)]
            out = Partition(net, regions, self._incidence)
            for region in regions:
                region._partition = out
        out._neighbours, out._padded, out._intervals = self._neighbours, self._padded, self._intervals
        return out

    def __len__(self) -> int:
        return len(self._signs)

    def __iter__(self):
        return iter(self.regions)

    def __getitem__(self, i) -> Region:
        if self._regions is not None:
            return self._regions[i]
        try:
            k = operator.index(i)
        except TypeError:  # a slice
            return self.regions[i]
        if not -len(self) <= k < len(self):
            raise IndexError(f"region index {k} out of range for {len(self)} regions")
        return self._region(k % len(self))

    @property
    def latent_dim(self) -> int:
        return self.net.latent_dim

    @property
    def n_bounded(self) -> int:
        if self._source is not None:
            return self._source.n_bounded()
        return sum(r.bounded for r in self.regions)

    def intervals(self) -> np.ndarray:
        """S = 1 only: every region as ``[lo, hi]``, shape (R, 2), infinite ends for unbounded ones."""
        if self._intervals is None:
            self._intervals = np.array([r.polytope.interval() for r in self.regions]).reshape(-1, 2)
        return self._intervals

    def padded_facets(self) -> tuple[np.ndarray, np.ndarray]:
        """All regions' facets stacked as (R, F_max, S) normals and (R, F_max) offsets; padding rows
        have zero normals and +inf offsets (constraints that hold everywhere)."""
        if self._padded is None and self._source is not None:
            self._padded = self._source.padded_facets()
        if self._padded is None:
            F = max((r.H.shape[0] for r in self.regions), default=0)
            H = np.zeros((len(self), F, self.latent_dim))
            c = np.full((len(self), F), np.inf)
            for i, r in enumerate(self.regions):
                H[i, : r.H.shape[0]] = r.H
                c[i, : r.H.shape[0]] = r.c
            self._padded = (H, c)
        return self._padded

    def neighbours(self, i: int) -> tuple[int, ...]:
        """Regions sharing a facet with region i (computed for all regions on first use)."""
        if self._neighbours is None:
            self._neighbours = _neighbours(self)
        return self._neighbours[i]

    def locate(self, Z) -> np.ndarray:
        """Index of the region containing each row of Z (-1 if none, which only a bug can cause)."""
        Z = self.net._as_latent(Z)
        signs = np.packbits(self.net.sign_patterns(Z), axis=1)
        idx = np.array([self._lookup.get(s.tobytes(), -1) for s in signs], dtype=int)
        for i in np.nonzero(idx < 0)[0]:
            # Points on a boundary, or units that are identically zero on a region: use the H-rep.
            slack = np.array([np.max(r.H @ Z[i] - r.c, initial=-np.inf) for r in self.regions])
            best = int(np.argmin(slack))
            if slack[best] <= 1e-7 * (1.0 + np.abs(Z[i]).max()):
                idx[i] = best
        return idx


def _read_only(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


def _pattern_index(signs: np.ndarray) -> dict[bytes, int]:
    """Region index by packed sign pattern (``np.packbits(pattern).tobytes()``, as :meth:`Partition.locate`
    looks it up), all rows packed at once."""
    packed = np.ascontiguousarray(np.packbits(signs, axis=1))
    if packed.shape[1] == 0:
        return {b"": len(signs) - 1} if len(signs) else {}
    return dict(zip(packed.view(np.dtype((np.void, packed.shape[1]))).ravel().tolist(), range(len(signs))))


def partition(net: Network, max_regions: int = DEFAULT_MAX_REGIONS) -> Partition:
    """Enumerate every region (bounded and unbounded) of the latent space of ``net``.

    Raises :class:`RegionBudgetError` as soon as more than ``max_regions`` cells exist.
    """
    if isinstance(max_regions, bool) or not isinstance(max_regions, int | np.integer) or max_regions < 1:
        raise RegionBudgetError("max_regions", f"must be a positive integer, got {max_regions!r}")
    S = net.latent_dim
    if S == 2 and USE_PLANAR_ARRANGEMENT:
        planar = planar_partition(net, max_regions)
        if planar is not None:
            return _from_planar(net, planar)
    if S == 1 and USE_FAST_S1 and any(isinstance(layer, Activation) for layer in net.layers):
        return _partition_s1(net, max_regions)
    if S >= 2 and USE_COMPILED_DD:
        from .dd_kernel import partition_compiled
        return partition_compiled(net, max_regions)
    root = _Cell(G=np.append(np.zeros(S), 1.0)[None], L=np.eye(S), H=np.zeros((0, S)), c=np.zeros(0),
                 inc=np.zeros((1, 1), bool), err=np.zeros(1), M=np.eye(S), m=np.zeros(S), Mabs=np.eye(S),
                 mabs=np.zeros(S))
    cells = [root]
    for li, layer in enumerate(net.layers):
        if isinstance(layer, Linear):
            W, v, Wabs = layer.weight, layer.bias, np.abs(layer.weight)
            for cell in cells:
                cell.M, cell.m, cell.Mabs = W @ cell.M, W @ cell.m + v, Wabs @ cell.Mabs
                cell.mabs = Wabs @ cell.mabs + np.abs(v)
            continue
        assert isinstance(layer, Activation)
        new_cells = []
        for cell in cells:
            if S == 1:
                lo, hi = (-np.inf, np.inf) if cell.L.shape[0] else _cell_interval(cell)
                pieces = [(_interval_cell(*ends), sg)
                          for ends, sg in _refine_interval(lo, hi, cell.M, cell.m, cell.Mabs, cell.mabs)]
            else:
                pieces = _refine(cell, cell.M, cell.m, cell.Mabs, cell.mabs)
            for piece, sg in pieces:
                slopes = layer.slopes(sg)
                piece.maps = cell.maps + [(cell.M, cell.m)]
                piece.signs = cell.signs + [sg]
                piece.M = slopes[:, None] * cell.M
                piece.m = slopes * cell.m
                piece.Mabs = np.abs(slopes)[:, None] * cell.Mabs
                piece.mabs = np.abs(slopes) * cell.mabs
                if S > 1 and piece is not cell:  # an unsplit cell keeps its (irredundant) constraints
                    _prune(piece)
                new_cells.append(piece)
            if len(new_cells) > max_regions:
                raise RegionBudgetError(
                    "max_regions", f"the partition has more than {max_regions} regions by layer {li} "
                    f"(widths {net.widths})", "raise max_regions or use a narrower/shallower network")
        cells = new_cells

    regions, incidence = [], []
    for i, cell in enumerate(cells):
        signs = np.concatenate(cell.signs) if cell.signs else np.zeros(0, dtype=bool)
        order = np.argsort(cell.G[:, -1] == 0, kind="stable")  # vertices first, then rays
        G = cell.G[order]
        nv = int((G[:, -1] > 0).sum())
        poly = Polytope(H=cell.H, c=cell.c, vertices=G[:nv, :-1], rays=G[nv:, :-1], lineality=cell.L)
        regions.append(Region(index=i, signs=signs, polytope=poly, A=cell.M, b=cell.m, layer_maps=cell.maps))
        incidence.append(cell.inc[order][:, 1:])
    part = Partition(net, regions, incidence)
    for region in regions:
        region._partition = part
    return part


def _s1_cuts(lo, hi, M, m, Mabs, mabs):
    """:func:`_refine_interval` for every cell at once: rows of ``M`` .. ``mabs`` (C, k) are the cells' units.

    Returns the sorted, merged breakpoints as (cell, value) arrays, cell-major, and the zero rows (C, k): the
    same elementwise formulas, the same stable order (by root, then unit) and the same merge of neighbours.
    """
    a, beta = M, m
    zero_row = np.abs(a) <= _ZERO_ROW * Mabs
    with np.errstate(divide="ignore", invalid="ignore"):
        roots = np.where(zero_row, np.nan, -beta / a)
        err = _PLANE_ULPS * _EPS * (np.maximum(Mabs, np.abs(a)) * np.abs(roots)
                                    + np.maximum(mabs, np.abs(beta))) / np.abs(a)
        err = err + _VERTEX_ULPS * _EPS * np.abs(roots)
        end_lo = np.where(np.isfinite(lo), _VERTEX_ULPS * _EPS * np.abs(lo), 0.0)
        end_hi = np.where(np.isfinite(hi), _VERTEX_ULPS * _EPS * np.abs(hi), 0.0)
        inside = ~zero_row & (roots - err > (lo + end_lo)[:, None]) & (roots + err < (hi - end_hi)[:, None])
    ci, ui = np.nonzero(inside)
    r, e = roots[ci, ui], err[ci, ui]
    order = np.lexsort((r, ci))  # stable: per cell by root, equal roots in unit order
    ci, r, e = ci[order], r[order], e[order]
    keep = np.ones(len(r), bool)
    keep[1:] = (ci[1:] != ci[:-1]) | (np.diff(r) > e[1:] + e[:-1])
    return ci[keep], r[keep], zero_row


def _s1_pieces(lo, hi, cut_cell, cuts):
    """The pieces of every cell between its cuts: (parent cell, left, right), cell-major, left to right."""
    C = len(lo)
    n_cuts = np.bincount(cut_cell, minlength=C)
    first = np.concatenate([[0], np.cumsum(n_cuts + 1)[:-1]])  # first piece of each cell
    P = int(first[-1] + n_cuts[-1] + 1) if C else 0
    parent = np.repeat(np.arange(C), n_cuts + 1)
    left, right = np.empty(P), np.empty(P)
    left[first], right[first + n_cuts] = lo, hi
    k = np.arange(len(cuts)) - np.concatenate([[0], np.cumsum(n_cuts)[:-1]])[cut_cell]  # rank within its cell
    right[first[cut_cell] + k] = cuts
    left[first[cut_cell] + k + 1] = cuts
    return parent, left, right


def _s1_probe(left, right):
    """A point inside each piece, as :func:`_refine_interval` picks it."""
    fl, fr = np.isfinite(left), np.isfinite(right)
    with np.errstate(invalid="ignore"):
        return np.where(fl & fr, 0.5 * (left + right),
                        np.where(fl, left + 1.0 + np.abs(left), np.where(fr, right - 1.0 - np.abs(right), 0.0)))


def _s1_polytopes(lo, hi):
    """The :class:`Polytope` and incidence of each interval ``[lo, hi]``, as :func:`_interval_cell` and
    :func:`partition` build them (vertices first, then rays; unit normals -1 at ``lo``, +1 at ``hi``)."""
    out = []
    empty, lin = np.zeros((0, 1)), np.zeros((0, 1))
    for left, right in zip(lo.tolist(), hi.tolist()):
        fl, fr = left != -np.inf, right != np.inf
        if fl and fr:
            H, c = np.array([[-1.0], [1.0]]), np.array([-left, right])
            V, R = np.array([[left], [right]]), empty
            inc = np.array([[-left == -left, left == right], [-right == -left, right == right]])
        elif fl:
            H, c, V, R = np.array([[-1.0]]), np.array([-left]), np.array([[left]]), np.array([[1.0]])
            inc = np.array([[True], [False]])
        elif fr:
            H, c, V, R = np.array([[1.0]]), np.array([right]), np.array([[right]]), np.array([[-1.0]])
            inc = np.array([[True], [False]])
        else:
            H, c, V, R = np.zeros((0, 1)), np.zeros(0), np.array([[0.0]]), empty
            out.append((trusted_polytope(H, c, V, R, np.eye(1)), np.zeros((1, 0), bool)))
            continue
        out.append((trusted_polytope(H, c, V, R, lin), inc))
    return out


def _partition_s1(net: Network, max_regions: int) -> Partition:
    """:func:`partition` for S = 1, every cell of a layer at once (paper Sec. 3.2: the regions are the intervals
    between the breakpoints ``-b_j / a_j`` of eq. 8's rows, refined layer by layer).

    The same regions, in the same order, with the same arrays bit for bit, as the per-cell loop: the same
    elementwise formulas on stacked (cells, units) arrays; each cell's ``W @ M`` stays one product per cell
    (a stacked product may sum in another order).
    """
    lo, hi = np.array([-np.inf]), np.array([np.inf])
    M, m, Mabs, mabs = np.ones((1, 1)), np.zeros((1, 1)), np.ones((1, 1)), np.zeros((1, 1))
    layer_maps, layer_signs, parents = [], [], []
    for li, layer in enumerate(net.layers):
        if isinstance(layer, Linear):
            W, v, Wabs = layer.weight, layer.bias, np.abs(layer.weight)
            M = np.stack([(W @ row[:, None])[:, 0] for row in M])
            m = np.stack([W @ row + v for row in m])
            Mabs = np.stack([(Wabs @ row[:, None])[:, 0] for row in Mabs])
            mabs = np.stack([Wabs @ row + np.abs(v) for row in mabs])
            continue
        assert isinstance(layer, Activation)
        cut_cell, cuts, zero_row = _s1_cuts(lo, hi, M, m, Mabs, mabs)
        parent, lo, hi = _s1_pieces(lo, hi, cut_cell, cuts)
        if len(parent) > max_regions:
            raise RegionBudgetError(
                "max_regions", f"the partition has more than {max_regions} regions by layer {li} "
                f"(widths {net.widths})", "raise max_regions or use a narrower/shallower network")
        probe = _s1_probe(lo, hi)
        a, beta = M[parent], m[parent]
        sg = np.where(zero_row[parent], beta > 0, a * probe[:, None] + beta > 0)
        slopes = layer.slopes(sg)
        layer_maps.append((M, m))
        layer_signs.append(sg)
        parents.append(parent)
        M, m = slopes * a, slopes * beta
        Mabs, mabs = np.abs(slopes) * Mabs[parent], np.abs(slopes) * mabs[parent]
    return _s1_assemble(net, lo, hi, M, m, layer_maps, layer_signs, parents)


def _s1_assemble(net, lo, hi, M, m, layer_maps, layer_signs, parents) -> Partition:
    """The :class:`Partition` of the final intervals: each region's ancestor cell in every layer gives its
    pre-activation maps (eq. 8) and its signs."""
    R = len(lo)
    anc = [None] * len(parents)
    idx = np.arange(R)
    for q in range(len(parents) - 1, -1, -1):  # layer q's signs are per piece; its maps per parent cell
        anc[q] = idx
        idx = parents[q][idx]
    signs = np.concatenate([layer_signs[q][anc[q]] for q in range(len(parents))], axis=1)
    cells = [parents[q][anc[q]].tolist() for q in range(len(parents))]
    maps = [[(Mq[i][:, None], mq[i]) for i in cell] for (Mq, mq), cell in zip(layer_maps, cells)]
    per_region = list(zip(*maps))
    regions, incidence = [], []
    A = M[:, :, None]
    for i, (poly, inc) in enumerate(_s1_polytopes(lo, hi)):
        regions.append(_trusted_region(i, signs[i], poly, A[i], m[i], list(per_region[i]), None))
        incidence.append(inc)
    part = Partition(net, regions, incidence)
    for region in regions:
        region._partition = part
    part._intervals = np.stack([lo, hi], axis=1)  # = Polytope.interval() of each region: -(-lo) / 1 is lo
    return part


def _from_planar(net: Network, planar) -> Partition:
    """The :class:`Partition` of the compiled planar arrangement's polygons (``engine.arrangement``); its regions
    are built when first read."""
    return Partition(net, None, stacked=(planar.A, planar.b, planar.signs), source=_PlanarRegions(planar))


class _PlanarRegions:
    """The planar arrangement's polygons as flat arrays with per-region offsets, and the per-face layer maps
    (eq. 8): region i's :class:`Polytope` (built once, shared by :meth:`Partition.for_network`'s partitions)
    and ``layer_maps`` on request."""

    def __init__(self, planar):
        v_ptr, self.V, r_ptr, self.Ry, f_ptr, self.H, self.c, i_ptr, inc = planar.polygon_arrays()
        self.f_ptr, self.r_ptr = f_ptr, r_ptr
        self.v, self.r, self.f = v_ptr.tolist(), r_ptr.tolist(), f_ptr.tolist()
        self.incidence = Incidence(inc, i_ptr.tolist(), self.v, self.r, self.f)
        self.maps = [(Mq, mq, faces.tolist()) for Mq, mq, faces in planar.layer_maps]
        self.empty = np.zeros((0, 2))  # no lineality: the first layer has rank 2 or the double description runs
        self.polys: list[Polytope | None] = [None] * (len(v_ptr) - 1)
        self.pairs: list | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "polys": [None] * len(self.polys), "pairs": None}

    def polytope(self, i: int) -> Polytope:
        poly = self.polys[i]
        if poly is None:
            v, r, f = self.v, self.r, self.f
            poly = self.polys[i] = trusted_polytope(self.H[f[i]:f[i + 1]], self.c[f[i]:f[i + 1]],
                                                    self.V[v[i]:v[i + 1]], self.Ry[r[i]:r[i + 1]], self.empty)
        return poly

    def polytopes(self) -> list[Polytope]:
        """Every region's polytope (those not yet built, in one pass)."""
        H, c, V, Ry, empty, polys = self.H, self.c, self.V, self.Ry, self.empty, self.polys
        v, r, f = self.v, self.r, self.f
        for i, (f0, f1, v0, v1, r0, r1) in enumerate(zip(f, f[1:], v, v[1:], r, r[1:])):
            if polys[i] is None:
                polys[i] = trusted_polytope(H[f0:f1], c[f0:f1], V[v0:v1], Ry[r0:r1], empty)
        return polys

    def _face_pairs(self) -> list:
        if self.pairs is None:  # per layer, each face's (M, m) pair once (faces are fewer than regions)
            self.pairs = [(list(zip(Mq, mq)), faces) for Mq, mq, faces in self.maps]
        return self.pairs

    def layer_maps(self, i: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """Pre-activation (A^{1->l}, b^{1->l}) of each activation layer on region i (eq. 8): its face's."""
        return [pairs[faces[i]] for pairs, faces in self._face_pairs()]

    def all_layer_maps(self) -> list[list[tuple[np.ndarray, np.ndarray]]]:
        """:meth:`layer_maps` of every region, in region order."""
        per_layer = [[pairs[f] for f in faces] for pairs, faces in self._face_pairs()]
        return [list(lm) for lm in zip(*per_layer)] if per_layer else [[] for _ in self.polys]

    def n_bounded(self) -> int:
        return int(np.count_nonzero(np.diff(self.r_ptr) == 0))

    def padded_facets(self) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`Partition.padded_facets` from the flat arrays at once (the same bits)."""
        counts = np.diff(self.f_ptr)
        R, F = len(counts), int(counts.max(initial=0))
        rows = np.repeat(np.arange(R), counts)
        k = np.arange(len(self.c)) - np.repeat(self.f_ptr[:-1], counts)
        H = np.zeros((R, F, 2))
        c = np.full((R, F), np.inf)
        H[rows, k] = self.H
        c[rows, k] = self.c
        return H, c


def _trusted_region(index, signs, polytope, A, b, layer_maps, part) -> Region:
    """``Region(index, signs, polytope, A, b, layer_maps, part)`` without the dataclass ``__init__`` (the same
    object, at half the cost): for regions built from arrays the enumerator produced."""
    region = object.__new__(Region)
    region.__dict__ = {"index": index, "signs": signs, "polytope": polytope, "A": A, "b": b,
                       "layer_maps": layer_maps, "_partition": part}
    return region


def _cell_interval(cell: _Cell) -> tuple[float, float]:
    lo, hi = -np.inf, np.inf
    for h, c in zip(cell.H[:, 0], cell.c):
        if h > 0:
            hi = min(hi, c / h)
        else:
            lo = max(lo, c / h)
    return lo, hi


def _neighbours(part: Partition) -> list[tuple[int, ...]]:
    """Neighbours across each facet: step just outside the facet's centre and locate the point.

    The centre of a facet is the mean of its tight vertices plus the mean of its tight rays, a point
    of its relative interior.
    """
    points, owners = [], []
    for i, (region, inc) in enumerate(zip(part.regions, part._incidence)):
        if region.H.shape[0] == 0:
            continue
        nv = region.vertices.shape[0]
        tv, tr = inc[:nv].T.astype(float), inc[nv:].T.astype(float)  # (F, nv), (F, nr)
        centre = (tv @ region.vertices) / np.maximum(tv.sum(1, keepdims=True), 1)
        if tr.shape[1]:
            centre = centre + (tr @ region.rays) / np.maximum(tr.sum(1, keepdims=True), 1)
        step = 1e-7 * (1.0 + np.abs(centre).max(axis=1, keepdims=True))
        points.append(centre + step * region.H)
        owners.append(np.full(len(centre), i))
    nbrs: list[set[int]] = [set() for _ in part.regions]
    if points:
        where = part.locate(np.vstack(points))
        for i, j in zip(np.concatenate(owners), where):
            if j >= 0 and j != i:
                nbrs[i].add(int(j))
                nbrs[int(j)].add(int(i))
    return [tuple(sorted(s)) for s in nbrs]
