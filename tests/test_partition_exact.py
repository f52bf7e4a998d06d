"""Region counts proven: the partition against an exact-arithmetic enumeration (paper Lemma 3, Cor. 1).

The oracle shares nothing with ``engine.partition``: weights are taken as the exact rationals of their
float64 values (``fractions.Fraction``), every sign is decided exactly, and regions are found by a
cylindrical sweep instead of cell splitting.

Oracle. Layer by layer, a region R of the first l layers is ``{z : s_j (a_j.z + b_j) > 0}`` over the
units of those layers that are not identically zero on R's ancestors. On R the next layer's
pre-activations are affine (eq. 8), i.e. hyperplanes; adding the S coordinate hyperplanes makes every
cell of the arrangement (R's walls + the new hyperplanes + coordinates) pointed. The projection of an
open pointed cell on z_1 is an open interval whose finite ends are z_1-coordinates of arrangement
vertices in the closure of R, so one slice ``z_1 = x0`` between (and beyond) consecutive such values
meets every cell; recursing on the slice (dimension S - 1) down to S = 1 gives one exact sample point in
every cell. The exact sign pattern at each sample is a region; every region contains a cell.
"""

from __future__ import annotations

import itertools
import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from engine import load_network, partition, random_network
from engine.network import Activation, Linear


def _solve(A, b):
    """Exact Gaussian elimination; None if A is singular."""
    n = len(A)
    M = [list(row) + [rhs] for row, rhs in zip(A, b)]
    for col in range(n):
        piv = next((r for r in range(col, n) if M[r][col] != 0), None)
        if piv is None:
            return None
        M[col], M[piv] = M[piv], M[col]
        for r in range(n):
            if r != col and M[r][col] != 0:
                f = M[r][col] / M[col][col]
                M[r] = [x - f * y for x, y in zip(M[r], M[col])]
    return [M[i][n] / M[i][i] for i in range(n)]


def _key(a, b):
    """A hyperplane up to scale: divide by its first nonzero coefficient."""
    lead = next(x for x in a if x != 0)
    return tuple(x / lead for x in a) + (b / lead,)


def _value(a, b, z):
    return sum(x * y for x, y in zip(a, z)) + b


def _samples(cons, lines, S):
    """Exact points, at least one in every open cell cut by ``lines`` from ``{s (a.z + b) > 0}``."""
    planes = {_key(a, b): (a, b) for a, b, _ in cons}
    planes.update({_key(a, b): (a, b) for a, b in lines})
    for i in range(S):
        e = tuple(Fraction(int(i == j)) for j in range(S))
        planes.setdefault(_key(e, Fraction(0)), (e, Fraction(0)))
    planes = list(planes.values())
    crit = set()
    for subset in itertools.combinations(planes, S):
        v = _solve([a for a, _ in subset], [-b for _, b in subset])
        if v is not None and all(s * _value(a, b, v) >= 0 for a, b, s in cons):
            crit.add(v[0])
    crit = sorted(crit)
    xs = [Fraction(0)] if not crit else (
        [crit[0] - 1] + [(p + q) / 2 for p, q in zip(crit[:-1], crit[1:])] + [crit[-1] + 1])
    out = []
    for x0 in xs:
        if S == 1:
            out.append((x0,))
            continue
        sub_cons, sub_lines, empty = [], [], False
        for a, b, s in cons:
            a2, b2 = a[1:], b + a[0] * x0
            if any(a2):
                sub_cons.append((a2, b2, s))
            elif s * b2 <= 0:
                empty = True
        for a, b in lines:
            a2, b2 = a[1:], b + a[0] * x0
            if any(a2):
                sub_lines.append((a2, b2))
            elif b2 == 0:
                empty = True  # the slice lies on a line: it misses the closure of R (see module doc)
        if not empty:
            out.extend((x0,) + p for p in _samples(sub_cons, sub_lines, S - 1))
    return [p for p in out if all(s * _value(a, b, p) > 0 for a, b, s in cons)
            and all(_value(a, b, p) != 0 for a, b in lines)]


def exact_regions(net, box=None) -> set[tuple[bool, ...]]:
    """Every sign pattern of a full-dimensional region of ``net``, in exact rational arithmetic.

    With ``box``, only the regions that meet the open cube ``|z_i| < box``.
    """
    return set(exact_cells(net, box))


def exact_cells(net, box=None) -> dict[tuple[bool, ...], tuple[list, list]]:
    """As :func:`exact_regions`, each pattern with its walls ``[(a, b, s)]`` (``s (a.z + b) > 0``) and the
    oracle's exact sample points in it."""
    S = net.latent_dim
    ident = [[Fraction(int(i == j)) for j in range(S)] for i in range(S)]
    walls = []
    if box is not None:
        walls = [(tuple(sign * r for r in row), Fraction(box), 1) for row in ident for sign in (1, -1)]
    # a region: (walls [(a, b, s)], affine map rows [(a, b)] of the current layer's input, pattern)
    regions = [(walls, [(tuple(r), Fraction(0)) for r in ident], (), [])]
    layers = net.layers
    for i, layer in enumerate(layers):
        if not isinstance(layer, Linear) or i + 1 >= len(layers) or not isinstance(layers[i + 1], Activation):
            continue
        W = [[Fraction(float(x)) for x in row] for row in layer.weight]
        v = [Fraction(float(x)) for x in layer.bias]
        pos, neg = (Fraction(float(x)) for x in layers[i + 1].slopes(np.array([True, False])))
        nxt = []
        for walls, rows, pattern, _ in regions:
            pre = [(tuple(sum(w * r[0][k] for w, r in zip(Wj, rows)) for k in range(S)),
                    sum(w * r[1] for w, r in zip(Wj, rows)) + vj) for Wj, vj in zip(W, v)]
            cuts = [(a, b) for a, b in pre if any(a)]
            children = {}
            for p in _samples(walls, cuts, S):
                sg = tuple(_value(a, b, p) > 0 for a, b in pre)
                children.setdefault(sg, []).append(p)
            for sg, points in children.items():
                new_walls = walls + [(a, b, 1 if s else -1) for (a, b), s in zip(pre, sg) if any(a)]
                new_rows = [(tuple(x * (pos if s else neg) for x in a), b * (pos if s else neg))
                            for (a, b), s in zip(pre, sg)]
                nxt.append((new_walls, new_rows, pattern + sg, points))
        regions = nxt
    return {pattern: (walls, points) for walls, _, pattern, points in regions}


def _dyadic(rng, shape, den=16, lim=24):
    """Small dyadic rationals: float64 forward passes of them are exact, so degeneracies stay exact."""
    return rng.integers(-lim, lim + 1, size=shape) / den


def _net(S, widths, act="relu", seed=0, tweak=None):
    rng = np.random.default_rng(seed)
    layers, prev = [], S
    for w in widths:
        W, b = _dyadic(rng, (w, prev)), _dyadic(rng, w)
        if tweak is not None and prev == S:
            W, b = tweak(W, b)
        layers += [{"type": "linear", "weight": W.tolist(), "bias": b.tolist()},
                   {"type": "leaky_relu", "negative_slope": 0.25} if act == "leaky_relu" else {"type": act}]
        prev = w
    layers.append({"type": "linear", "weight": _dyadic(rng, (2, prev)).tolist(), "bias": [0.0, 0.0]})
    return load_network({"format": "cpa-dgn", "version": 1, "latent_dim": S, "cov_z": 1.0, "cov_x": 1.0,
                         "layers": layers})


def _duplicates(W, b):
    """Duplicate, opposite and rescaled units, a zero row, a dead unit and three lines through one point."""
    W, b = W.copy(), b.copy()
    W[1], b[1] = W[0], b[0]
    W[2], b[2] = -2 * W[0], -2 * b[0]
    W[3], b[3] = 0.0, 0.0
    if len(W) > 5:
        W[4], b[4] = 0.0, -1.0
        W[5] = W[0] + W[6]  # through the intersection of units 0 and 6 (for S = 2: a point)
        b[5] = b[0] + b[6]
    return W, b


def _parallel(W, b):
    W, b = W.copy(), b.copy()
    W[1], b[1] = 3 * W[0], b[0] + 0.5
    W[2], b[2] = -W[0], 0.25
    return W, b


def _patterns(P):
    return {tuple(bool(x) for x in s) for s in P.signs}


CASES = {
    "s2_relu_5_4": (2, (5, 4), "relu", None),
    "s2_abs_6_5": (2, (6, 5), "abs", None),
    "s2_leaky_4_4_3": (2, (4, 4, 3), "leaky_relu", None),
    "s2_degenerate_8_4": (2, (8, 4), "relu", _duplicates),
    "s2_parallel_5_4": (2, (5, 4), "abs", _parallel),
    "s3_relu_6": (3, (6,), "relu", None),
    "s3_degenerate_8": (3, (8,), "leaky_relu", _duplicates),
    "s3_relu_4_2": (3, (4, 2), "relu", None),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_partition_equals_exact_enumeration(name):
    S, widths, act, tweak = CASES[name]
    net = _net(S, widths, act, seed=len(name), tweak=tweak)
    exact = exact_regions(net)
    P = partition(net)
    assert len(P) == len(exact)
    assert _patterns(P) == exact


# Issue 19 item 1 (fuzz campaign, `permutation` property): four distinct planes in R^3, one of them
# ~1e7 from the origin, and a duplicated unit. The engine gave 16 regions (at most 15 exist).
ISSUE19_NET = {"format": "cpa-dgn", "version": 1, "latent_dim": 3, "cov_z": 1.0, "cov_x": 1.0, "layers": [
    {"type": "linear", "weight": [
        [8.407275867778611e-08, -8.00597082652944e-07, -6.67468257281597e-07],
        [-8.392620335132532e-07, -4.69043732422537e-07, 1.6094207608858545e-06],
        [5.05221714265548e-09, 1.4805540400525297e-08, 8.406488503769447e-08],
        [5.993359482091152e-08, 1.7563561391253313e-07, 9.972474690324804e-07],
        [5.993359482091152e-08, 1.7563561391253313e-07, 9.972474690324804e-07]],
     "bias": [1.5365359936371247e-08, -6.37437219858256e-07, 0.9312531358550555, -7.045909364965606e-07,
              -7.045909364965606e-07]},
    {"type": "relu"},
    {"type": "linear", "weight": [[1.918218574295185e-07, 8.688519849414176e-07, 6.21175982260911e-07,
                                   -3.591397294389821e-07, -1.2543355545659317e-06]],
     "bias": [-4.110794483835314e-07]}]}


def test_issue19_far_plane_duplicate_unit_exact():
    """Exactly, the four distinct planes are in general position (15 regions), but units 2 and 3 have
    normals that agree to ~1e-8 rad in float64, so their line meets beyond |z| ~ 1e23 and three regions
    ({h2 <= 0, h3 > 0} x the two near planes) exist only out there. The engine finds exactly the 12 regions
    that meet the cube |z_i| < 1e20 (proven by the oracle), never a duplicate unit's split."""
    net = load_network(json.loads(json.dumps(ISSUE19_NET)))
    exact = exact_regions(net)
    near = exact_regions(net, box=1e20)
    assert len(exact) == 15 and len(near) == 12
    assert all(not p[2] and p[3] for p in exact - near)
    P = partition(net)
    assert _patterns(P) == near
    assert (P.signs[:, 3] == P.signs[:, 4]).all()  # a duplicated unit never splits a region


def test_exact_oracle_knows_the_textbook_counts():
    """The oracle itself: n lines in general position make 1 + n + n(n-1)/2 regions of the plane, n planes
    in R^3 make 1 + n + C(n, 2) + C(n, 3); three lines through one point make 6."""
    for S, n, expected in ((2, 5, 16), (3, 4, 15)):
        net = random_network([S, n, 1], rng=3)
        assert len(exact_regions(net)) == expected
    net = load_network({"format": "cpa-dgn", "version": 1, "latent_dim": 2, "cov_z": 1.0, "cov_x": 1.0,
                        "layers": [{"type": "linear", "weight": [[1, 0], [0, 1], [1, 1]], "bias": [0, 0, 0]},
                                   {"type": "relu"}, {"type": "linear", "weight": [[1, 1, 1]], "bias": [0]}]})
    assert len(exact_regions(net)) == 6


# Issue 19, the double description's own fuzz findings (`permutation`, campaigns seed 20261206 and 2 with
# --workers 2; the cases are in tests/fuzz_cases/). Each has regions thinner than the old side tolerance
# 1e-12 |z| (parallel planes 7e-13 apart, slivers at 1.4e-13 |z|) but far wider than float64's rounding, so the
# forward pass decides them: the partition found them or not depending on the unit order. With tolerances
# from each plane's and generator's own rounding, both orders give exactly the oracle's regions.
_FUZZ = Path(__file__).parent / "fuzz_cases"


def _fuzz_net(tag):
    case = json.loads(next(_FUZZ.glob(f"permutation-*-{tag}.json")).read_text())
    return load_network(case["model"]), case["aux_seed"]


def _permuted_patterns(net, aux_seed):
    """The property's permutation (verify.properties.permutation), its partition's patterns in the original
    unit order."""
    from verify.properties import permuted_network

    other, i, perm = permuted_network(net, aux_seed)
    Q = partition(other)
    start = sum(layer.out_features for layer in net.layers[:i] if isinstance(layer, Linear))
    signs = Q.signs.copy()
    signs[:, start + perm] = Q.signs[:, start:start + len(perm)]
    return {tuple(bool(x) for x in s) for s in signs}


@pytest.mark.parametrize("tag,count", [("1ebcabdec11f7cb7", 15), ("e824af07e7967c1f", 22),
                                       ("e4c24cd06fe2de78", 78), ("2a9412e676909cec", 49)])
def test_issue19_dd_fuzz_cases_equal_exact_enumeration(tag, count):
    """S = 3 [2, 5, 1] (a 1e5 row beside a 1e-7 row: a sliver 3e-10 wide, 14 vs 15 regions), S = 3 [5] (a
    duplicate unit moved through a vertex: parallel planes 7.1e-13 apart, 22 vs 15), S = 2 [7, 1, 6] (a 1e5
    row; layer 3's six planes are level sets of one unit, 6.5e-13 apart: 68 vs 73, exactly 78) and S = 2
    [7, 1, 5], weights 1e4 (layer 3's planes are level sets of layer 2's one unit: a strip 2.5e-12 to 5e-12
    wide at |z| ~ 3-8 between two of them, 49 vs 48: the vertices on one wall carried error bounds from their
    history above the strip's width; ``partition._residual_err`` bounds them from their tight residuals)."""
    net, aux_seed = _fuzz_net(tag)
    exact = exact_regions(net)
    assert len(exact) == count
    assert _patterns(partition(net)) == exact
    assert _permuted_patterns(net, aux_seed) == exact


@pytest.mark.slow
def test_issue19_dd_fuzz_case_sliver_at_4000_equals_exact_enumeration():
    """S = 2 [4, 5, 11], weights 1e3, leaky slope 1e-6, a duplicated unit (232 vs 233): the missing region is a
    sliver at z ~ (4013, 1790) whose nearest wall is 5.8e-10 away, 1.4e-13 |z| (6 s for the oracle)."""
    net, aux_seed = _fuzz_net("e29803f349276696")
    exact = exact_regions(net)
    assert len(exact) == 233
    assert _patterns(partition(net)) == exact
    assert _permuted_patterns(net, aux_seed) == exact


def _relative_width(walls, points):
    """The largest, over the oracle's exact sample points of a region, of the smallest wall value relative to
    the magnitudes that make it, ``|a.p + b| / (|a|_1 |p|_inf + |b|)``: below ~eps no float64 evaluation of
    the walls can place the point inside."""
    best = Fraction(0)
    for p in points:
        zmax = max(abs(x) for x in p)
        best = max(best, min(abs(_value(a, b, p)) / (sum(abs(x) for x in a) * zmax + abs(b)) for a, b, _ in walls))
    return best


@pytest.mark.slow
def test_issue19_dd_fuzz_case_below_float64_resolution():
    """S = 3 [6, 6, 2], weights 1e4, a duplicate and an antiparallel unit (189 vs 190): exactly 207 regions, of
    which 7 lie beyond |z| ~ 1e6 and are at most 1e-17 (relative) wide at every oracle sample point in them:
    below float64's resolution (the forward pass at those points gives other patterns). Both unit orders give
    the other 200 exactly (2 min for the oracle)."""
    net, aux_seed = _fuzz_net("bf81395f7241f01c")
    cells = exact_cells(net)
    assert len(cells) == 207
    P = _patterns(partition(net))
    assert P <= set(cells) and _permuted_patterns(net, aux_seed) == P
    missing = set(cells) - P
    assert len(missing) == 7
    assert all(_relative_width(*cells[p]) < Fraction(1, 10**17) for p in missing)
    assert all(_relative_width(*cells[p]) > Fraction(1, 10**14) for p in P)


def test_s1_breakpoints_closer_than_1e12_are_resolved():
    """S = 1: two units whose breakpoints are 3e-13 apart (float64 decides the interval between them: the
    old tolerance 1e-12 |z| merged it), and an exact duplicate (merged)."""
    net = load_network({"format": "cpa-dgn", "version": 1, "latent_dim": 1, "cov_z": 1.0, "cov_x": 1.0, "layers": [
        {"type": "linear", "weight": [[1.0], [1.0], [1.0]], "bias": [1.0, 1.0 + 3e-13, 1.0]}, {"type": "relu"},
        {"type": "linear", "weight": [[1.0, 2.0, 3.0]], "bias": [0.0]}]})
    exact = exact_regions(net)
    assert len(exact) == 3
    P = partition(net)
    assert _patterns(P) == exact
    mid = P.intervals()[1].mean()
    assert P.locate([[mid]])[0] == 1


@pytest.mark.slow
@pytest.mark.parametrize("widths,act,count", [([2, 8, 8, 2], "relu", 150), ([2, 10, 5, 2], "leaky_relu", 112)])
def test_far_shifted_net_equals_exact_enumeration(widths, act, count):
    """Nets of tests/test_partition_planar.py moved to (3e9, -1e9): slivers 2.4e-13, 2.0e-13 and 1.4e-13 |z| wide
    (0.7 mm at 3e9; float64 resolves them). The double description finds all of them (the old 1e-12 |z| tolerance
    did not); the planar arrangement, with that tolerance still, gives 149 and 110 (5 s each)."""
    net = random_network(widths, activation=act, negative_slope=0.2, rng=len(widths))
    first = net.layers[0]
    layers = [Linear(first.weight, first.bias - first.weight @ np.array([3e9, -1e9])), *net.layers[1:]]
    net = net.replace(layers=layers)
    exact = exact_regions(net)
    assert len(exact) == count
    assert _patterns(partition(net)) == exact
