"""The partition of latent space into the regions of a CPA network (paper Sec. 3.2, Lemma 3, Cor. 1).

Every region is the set of z sharing one sign pattern of all hidden pre-activations; on it the
network is affine, ``g(z) = A z + b`` (eq. 2), and each pre-activation layer is affine,
``h^l(z) = A^{1->l} z + b^{1->l}`` (eq. 8).

Algorithm: layer-by-layer cell subdivision with the double-description method. Each cell carries
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
Constraints that stop being facets are dropped after each layer, so the final H-representation is
irredundant; its rows have unit norm.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import RegionBudgetError
from .network import Activation, Linear, Network
from .polytope import Polytope

DEFAULT_MAX_REGIONS = 100_000
_REL_TOL = 1e-9  # side-of-hyperplane tolerance, relative to the size of the coordinates
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
    neighbours: tuple[int, ...] = ()

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
    V: np.ndarray  # (nv, S) vertices
    R: np.ndarray  # (nr, S) unit rays
    L: np.ndarray  # (nl, S) orthonormal lineality basis
    H: np.ndarray  # (F, S) unit-norm constraint normals
    c: np.ndarray  # (F,)
    incV: np.ndarray  # (nv, F) bool: vertex tight on constraint
    incR: np.ndarray  # (nr, F) bool: ray parallel to constraint
    M: np.ndarray = field(default=None)  # current affine map of z: (k, S)
    m: np.ndarray = field(default=None)  # (k,)
    Mabs: np.ndarray = field(default=None)  # magnitude bookkeeping to detect cancelled rows
    signs: list = field(default_factory=list)
    maps: list = field(default_factory=list)


def _vertex_tol(V: np.ndarray) -> np.ndarray:
    return _REL_TOL * (1.0 + np.abs(V).max(axis=1)) if V.size else np.zeros(0)


def _adjacent_pairs(inc: np.ndarray, pos: np.ndarray, neg: np.ndarray, d: int) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (i in pos, j in neg) of adjacent generators of a pointed cone of dimension d."""
    P, Q = inc[pos], inc[neg]
    common = P[:, None, :] & Q[None, :, :]  # (p, q, F')
    ok = common.sum(axis=2) >= d - 2
    if not ok.any():
        return np.zeros(0, int), np.zeros(0, int)
    pi, qi = np.nonzero(ok)
    cm = common[pi, qi]  # (k, F')
    # contained[k, g]: generator g is tight on every constraint the pair shares
    contained = ~np.any(cm[:, None, :] & ~inc[None, :, :], axis=2)
    contained[np.arange(len(pi)), pos[pi]] = False
    contained[np.arange(len(pi)), neg[qi]] = False
    adjacent = ~contained.any(axis=1)
    return pos[pi[adjacent]], neg[qi[adjacent]]


def _split(cell: _Cell, a: np.ndarray, beta: float, fV, fR, fL) -> tuple[_Cell, _Cell]:
    """Split a cell by ``a.z + beta = 0`` into its parts ``<= 0`` (first) and ``>= 0`` (second)."""
    S = a.shape[0]
    new_rows = (np.vstack([cell.H, a]), np.append(cell.c, -beta)), (np.vstack([cell.H, -a]), np.append(cell.c, beta))
    if cell.L.shape[0] and np.max(np.abs(fL)) > _REL_TOL:
        # The cell contains lines crossing the hyperplane: project along l, add the ray -l / +l.
        l = fL @ cell.L
        l /= np.linalg.norm(l)
        al = a @ l
        P = cell.L - np.outer(cell.L @ l, l)
        L_new = np.linalg.svd(P)[2][: cell.L.shape[0] - 1] if cell.L.shape[0] > 1 else np.zeros((0, S))
        V_new = cell.V - np.outer(fV / al, l)
        R_new = cell.R - np.outer(fR / al, l)
        if R_new.shape[0]:
            R_new /= np.linalg.norm(R_new, axis=1, keepdims=True)
        incV = np.hstack([cell.incV, np.ones((len(V_new), 1), bool)])
        incR_old = np.hstack([cell.incR, np.ones((len(R_new), 1), bool)])
        ray_inc = np.append(np.ones(cell.H.shape[0], bool), False)[None, :]
        out = []
        for (H, c), ray in zip(new_rows, (-l, l)):
            out.append(_Cell(V_new, np.vstack([R_new, ray]), L_new, H, c, incV,
                             np.vstack([incR_old, ray_inc])))
        return out[0], out[1]

    nv = cell.V.shape[0]
    tolV = _vertex_tol(cell.V)
    f = np.concatenate([fV, fR])
    tol = np.concatenate([tolV, np.full(len(fR), _REL_TOL)])
    gens = np.vstack([cell.V, cell.R])
    t = np.concatenate([np.ones(nv), np.zeros(len(fR))])
    inc = np.vstack([cell.incV, cell.incR])
    inc_h = np.hstack([inc, (t == 0)[:, None]])  # homogenising constraint t >= 0: tight at rays
    pos = np.nonzero(f > tol)[0]
    neg = np.nonzero(f < -tol)[0]
    zero = ~(f > tol) & ~(f < -tol)
    d = S - cell.L.shape[0] + 1
    pi, nj = _adjacent_pairs(inc_h, pos, neg, d)
    fi, fj = f[pi][:, None], f[nj][:, None]
    g_new = fi * gens[nj] - fj * gens[pi]
    t_new = fi[:, 0] * t[nj] - fj[:, 0] * t[pi]
    is_vertex = t_new > 0
    new_V = g_new[is_vertex] / t_new[is_vertex, None]
    new_R = g_new[~is_vertex]
    if new_R.shape[0]:
        new_R = new_R / np.linalg.norm(new_R, axis=1, keepdims=True)
    new_inc = inc[pi] & inc[nj]
    out = []
    for side, (H, c) in ((f < -tol) | zero, new_rows[0]), ((f > tol) | zero, new_rows[1]):
        keepV = side[:nv]
        keepR = side[nv:]
        V = np.vstack([cell.V[keepV], new_V])
        R = np.vstack([cell.R[keepR], new_R])
        incV = np.vstack([cell.incV[keepV], new_inc[is_vertex]])
        incR = np.vstack([cell.incR[keepR], new_inc[~is_vertex]])
        incV = np.hstack([incV, np.concatenate([zero[:nv][keepV], np.ones(is_vertex.sum(), bool)])[:, None]])
        incR = np.hstack([incR, np.concatenate([zero[nv:][keepR], np.ones((~is_vertex).sum(), bool)])[:, None]])
        out.append(_Cell(V, R, cell.L, H, c, incV, incR))
    return out[0], out[1]


def _refine(cell: _Cell, M: np.ndarray, m: np.ndarray, Mabs: np.ndarray) -> list[tuple[_Cell, np.ndarray]]:
    """Subdivide a cell by all units of one activation layer; return (cell, unit signs) pieces."""
    units = M.shape[0]
    signs = np.ones(units, dtype=bool)
    norms = np.linalg.norm(M, axis=1)
    zero_row = norms <= _ZERO_ROW * np.linalg.norm(Mabs, axis=1)
    signs[zero_row] = m[zero_row] >= 0
    active = np.nonzero(~zero_row)[0]
    a_all = np.zeros_like(M)
    beta_all = np.zeros(units)
    a_all[active] = M[active] / norms[active, None]
    beta_all[active] = m[active] / norms[active]
    results = []
    stack = [(cell, active, signs)]
    while stack:
        cur, pend, sg = stack.pop()
        if pend.size == 0:
            results.append((cur, sg))
            continue
        a, beta = a_all[pend], beta_all[pend]
        fV = cur.V @ a.T + beta
        fR = cur.R @ a.T
        fL = cur.L @ a.T
        tolV = _vertex_tol(cur.V)[:, None]
        pos = (fV > tolV).any(axis=0) | (fR > _REL_TOL).any(axis=0)
        neg = (fV < -tolV).any(axis=0) | (fR < -_REL_TOL).any(axis=0)
        crosses_line = (np.abs(fL) > _REL_TOL).any(axis=0) if cur.L.shape[0] else np.zeros(len(pend), bool)
        splits = crosses_line | (pos & neg)
        decided = ~splits
        sg[pend[decided]] = np.where(neg[decided] & ~pos[decided], False, True)
        if not splits.any():
            results.append((cur, sg))
            continue
        k = int(np.argmax(splits))
        unit = pend[k]
        rest = pend[splits][1:]
        lower, upper = _split(cur, a_all[unit], beta_all[unit], fV[:, k], fR[:, k], fL[:, k])
        sg_up = sg.copy()
        sg_up[unit] = True
        sg_lo = sg.copy()
        sg_lo[unit] = False
        stack.append((upper, rest, sg_up))
        stack.append((lower, rest, sg_lo))
    return results


def _prune(cell: _Cell) -> None:
    """Drop constraints that are not facets (their tight set is empty of vertices or not maximal)."""
    F = cell.H.shape[0]
    if F == 0:
        return
    Z = np.vstack([cell.incV, cell.incR]).T  # (F, ng)
    has_vertex = cell.incV.any(axis=0)
    # strictly_inside[i, j]: Z_i is a proper subset of Z_j
    sub = ~np.any(Z[:, None, :] & ~Z[None, :, :], axis=2)
    equal = sub & sub.T
    proper = sub & ~equal
    keep = has_vertex & ~proper.any(axis=1)
    # among constraints with equal tight sets (duplicates of one facet) keep the first
    dup = np.triu(equal, k=1).any(axis=0)
    keep &= ~dup
    if keep.all():
        return
    cell.H, cell.c = cell.H[keep], cell.c[keep]
    cell.incV, cell.incR = cell.incV[:, keep], cell.incR[:, keep]


class Partition:
    """All regions of the latent space of ``net``; iterate, index, or :meth:`locate` points."""

    def __init__(self, net: Network, regions: list[Region]):
        self.net = net
        self.regions = regions
        self.A = np.stack([r.A for r in regions])  # (R, D, S)
        self.b = np.stack([r.b for r in regions])  # (R, D)
        self.signs = np.stack([r.signs for r in regions])  # (R, n_units)
        self._lookup = {np.packbits(s).tobytes(): i for i, s in enumerate(self.signs)}

    def __len__(self) -> int:
        return len(self.regions)

    def __iter__(self):
        return iter(self.regions)

    def __getitem__(self, i: int) -> Region:
        return self.regions[i]

    @property
    def latent_dim(self) -> int:
        return self.net.latent_dim

    @property
    def n_bounded(self) -> int:
        return sum(r.bounded for r in self.regions)

    def locate(self, Z) -> np.ndarray:
        """Index of the region containing each row of Z (-1 if none, which only a bug can cause)."""
        Z = self.net._as_latent(Z)
        signs = self.net.sign_patterns(Z)
        idx = np.array([self._lookup.get(np.packbits(s).tobytes(), -1) for s in signs], dtype=int)
        missing = np.nonzero(idx < 0)[0]
        if missing.size:
            # Points on a boundary, or units that are identically zero on a region: use the H-rep.
            for i in missing:
                slack = [np.max(r.H @ Z[i] - r.c, initial=-np.inf) for r in self.regions]
                best = int(np.argmin(slack))
                if slack[best] <= 1e-7 * (1.0 + np.abs(Z[i]).max()):
                    idx[i] = best
        return idx


def partition(net: Network, max_regions: int = DEFAULT_MAX_REGIONS, neighbours: bool = True) -> Partition:
    """Enumerate every region (bounded and unbounded) of the latent space of ``net``.

    Raises :class:`RegionBudgetError` as soon as more than ``max_regions`` cells exist.
    """
    S = net.latent_dim
    root = _Cell(V=np.zeros((1, S)), R=np.zeros((0, S)), L=np.eye(S), H=np.zeros((0, S)), c=np.zeros(0),
                 incV=np.zeros((1, 0), bool), incR=np.zeros((0, 0), bool),
                 M=np.eye(S), m=np.zeros(S), Mabs=np.eye(S))
    cells = [root]
    for li, layer in enumerate(net.layers):
        if isinstance(layer, Linear):
            W, v, Wabs = layer.weight, layer.bias, np.abs(layer.weight)
            for cell in cells:
                cell.M, cell.m, cell.Mabs = W @ cell.M, W @ cell.m + v, Wabs @ cell.Mabs
            continue
        assert isinstance(layer, Activation)
        new_cells = []
        for cell in cells:
            for piece, sg in _refine(cell, cell.M, cell.m, cell.Mabs):
                slopes = layer.slopes(sg)
                piece.maps = cell.maps + [(cell.M, cell.m)]
                piece.signs = cell.signs + [sg]
                piece.M = slopes[:, None] * cell.M
                piece.m = slopes * cell.m
                piece.Mabs = np.abs(slopes)[:, None] * cell.Mabs
                _prune(piece)
                new_cells.append(piece)
            if len(new_cells) > max_regions:
                raise RegionBudgetError(
                    "max_regions", f"the partition has more than {max_regions} regions by layer {li} "
                    f"(widths {net.widths})", "raise max_regions or use a narrower/shallower network")
        cells = new_cells

    regions = []
    for i, cell in enumerate(cells):
        signs = np.concatenate(cell.signs) if cell.signs else np.zeros(0, dtype=bool)
        poly = Polytope(H=cell.H, c=cell.c, vertices=cell.V, rays=cell.R, lineality=cell.L)
        regions.append(Region(index=i, signs=signs, polytope=poly, A=cell.M, b=cell.m, layer_maps=cell.maps))
    part = Partition(net, regions)
    if neighbours:
        _attach_neighbours(part, cells)
    return part


def _attach_neighbours(part: Partition, cells: list[_Cell]) -> None:
    """Neighbours across each facet: step just outside the facet's centre and locate the point."""
    points, owners = [], []
    for i, cell in enumerate(cells):
        for f in range(cell.H.shape[0]):
            tv, tr = cell.incV[:, f], cell.incR[:, f]
            p = cell.V[tv].mean(axis=0)
            if tr.any():
                p = p + cell.R[tr].mean(axis=0)
            step = 1e-7 * (1.0 + np.abs(p).max())
            points.append(p + step * cell.H[f])
            owners.append(i)
    if not points:
        return
    where = part.locate(np.array(points))
    nbrs: list[set[int]] = [set() for _ in cells]
    for i, j in zip(owners, where):
        if j >= 0 and j != i:
            nbrs[i].add(int(j))
            nbrs[int(j)].add(i)
    for region, s in zip(part.regions, nbrs):
        region.neighbours = tuple(sorted(s))
