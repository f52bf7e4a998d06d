"""The partition of latent space: exact regions (bounded and not) against dense sampling."""

import numpy as np
import pytest

import engine
from engine import DGNInputError, RegionBudgetError, load_network, partition, random_network


def assert_partition_matches_sampling(net, P, n=20000, scale=4.0, seed=1):
    """Every sampled z lies in exactly one region (H-rep), locate() finds it, g(z) = A z + b there."""
    rng = np.random.default_rng(seed)
    Z = rng.normal(size=(n, net.latent_dim)) * scale
    inside = np.stack([r.polytope.contains(Z, tol=1e-12) for r in P], axis=1)
    assert inside.sum(axis=1).min() >= 1, "a sampled z lies in no region"
    strict = np.stack([r.polytope.contains(Z, tol=-1e-9) for r in P], axis=1)
    assert strict.sum(axis=1).max() <= 1, "a sampled z lies in the interior of two regions"
    idx = P.locate(Z)
    assert (idx >= 0).all()
    assert inside[np.arange(n), idx].all()
    X = net.forward(Z)
    Xr = np.einsum("nds,ns->nd", P.A[idx], Z) + P.b[idx]
    np.testing.assert_allclose(Xr, X, rtol=1e-10, atol=1e-10)
    # every sampled sign pattern is an enumerated region
    patterns = {np.packbits(s).tobytes() for s in net.sign_patterns(Z)}
    assert patterns <= {np.packbits(s).tobytes() for s in P.signs}
    # rays really are recession directions, and the pre-activation maps (eq. 8) are exact
    for r in P:
        p = r.polytope.interior_point()
        for ray in r.rays:
            assert r.polytope.contains((p + 1e3 * ray)[None], tol=1e-6).all()
        pre = net.preactivations(p[None])
        for (M, m), h in zip(r.layer_maps, pre):
            terms = np.abs(M) @ np.abs(p) + np.abs(m)  # rounding of M p + m is ~eps * terms
            np.testing.assert_allclose(M @ p + m, h[0], rtol=1e-9, atol=1e-9 + 1e-12 * terms.max())


@pytest.mark.parametrize("widths", [[1, 8, 8, 2], [2, 8, 8, 3], [3, 6, 6, 2], [2, 6, 4, 5, 2]])
@pytest.mark.parametrize("act", ["relu", "leaky_relu", "abs"])
def test_partition_agrees_with_sampling(widths, act):
    net = random_network(widths, activation=act, negative_slope=0.2, rng=sum(widths))
    P = partition(net)
    assert len(P) >= 2
    assert_partition_matches_sampling(net, P)


def test_unit_rows_and_irredundant_facets():
    net = random_network([2, 8, 8, 2], rng=4)
    for r in partition(net):
        np.testing.assert_allclose(np.linalg.norm(r.H, axis=1), 1.0, rtol=1e-12)
        # irredundant: dropping any facet makes some point outside the region feasible
        for f in range(r.H.shape[0]):
            tight_v = np.isclose(r.vertices @ r.H[f], r.c[f], atol=1e-8)
            assert tight_v.any(), "a facet touches no vertex"


@pytest.mark.parametrize("S", [1, 2, 3])
def test_prior_masses_sum_to_one_s1_and_count_grows(S):
    net = random_network([S, 6, 6, 2], rng=S)
    P = partition(net)
    if S == 1:
        masses = engine.prior_region_masses(net, P)
        assert abs(masses.sum() - 1.0) < 1e-12
        assert (masses > 0).all()
    assert len(P) == len({np.packbits(s).tobytes() for s in P.signs})


def _net(layers, S, cov_x=0.1):
    return load_network({"latent_dim": S, "cov_z": 1.0, "cov_x": cov_x, "layers": layers})


def _lin(W, b):
    return {"type": "linear", "weight": np.asarray(W, float).tolist(), "bias": np.asarray(b, float).tolist()}


def _out(width):
    return _lin(np.random.default_rng(width).normal(size=(2, width)), [0.1, -0.1])


DEGENERATE = {
    # three lines through the origin: 6 cones, one vertex shared by all
    "through_origin": ([_lin([[1, 0], [0, 1], [1, 1]], [0, 0, 0]), {"type": "relu"}, _out(3)], 2, 6),
    # duplicated and opposite units add no region
    "duplicates": ([_lin([[1, 0.5], [1, 0.5], [-1, -0.5], [0.2, 1]], [0.3, 0.3, -0.3, -0.1]), {"type": "abs"},
                    _out(4)], 2, 4),
    # parallel hyperplanes only: the first layer has rank 1, every region contains a line
    "parallel_rank1": ([_lin([[1, 2], [2, 4], [-1, -2]], [0.0, 1.0, 3.0]), {"type": "relu"}, _out(3)], 2, 4),
    # a zero row (h = 0 everywhere) and a dead unit (zero row, negative bias)
    "zero_and_dead": ([_lin([[0, 0], [0, 0], [1, -1]], [0.0, -2.0, 0.5]), {"type": "relu"}, _out(3)], 2, 2),
    # second-layer hyperplane through the first layer's vertex (the origin)
    "layer2_through_vertex": ([_lin([[1, 0], [0, 1]], [0, 0]), {"type": "leaky_relu", "negative_slope": 0.5},
                               _lin([[1, -1], [1, 2]], [0, 0]), {"type": "relu"}, _out(2)], 2, None),
    # linear decoder: one region, the whole space
    "linear": ([_lin([[1, 2], [0, 1], [3, 1]], [0, 1, 2])], 2, 1),
    # S = 1 duplicate breakpoints and a unit with its breakpoint at the previous one
    "s1_duplicates": ([_lin([[1], [1], [2], [-1]], [0.5, 0.5, 1.0, 2.0]), {"type": "relu"},
                       _lin([[1, 1, -1, 0.5]], [0.0])], 1, 3),
    "s3_through_origin": ([_lin([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1]], [0, 0, 0, 0]), {"type": "relu"},
                           _out(4)], 3, 14),
}


@pytest.mark.parametrize("name", sorted(DEGENERATE))
def test_degenerate_arrangements(name):
    layers, S, expected = DEGENERATE[name]
    net = _net(layers, S)
    P = partition(net)
    if expected is not None:
        assert len(P) == expected
    assert_partition_matches_sampling(net, P, n=8000)
    if name == "parallel_rank1":
        assert all(r.polytope.lineality.shape[0] == 1 for r in P)
    if name == "linear":
        assert P[0].polytope.lineality.shape[0] == 2 and P[0].H.shape[0] == 0
    if S == 1:
        assert abs(engine.prior_region_masses(net, P).sum() - 1) < 1e-12


def test_neighbours_are_symmetric_and_cross_one_facet():
    net = _net(DEGENERATE["through_origin"][0], 2)
    P = partition(net)
    for r in P:
        assert len(r.neighbours) == 2  # each of the 6 cones touches 2 others along a ray
        for j in r.neighbours:
            assert r.index in P[j].neighbours
    net = random_network([2, 6, 6, 2], rng=2)
    P = partition(net)
    for r in P:
        assert len(r.neighbours) >= 1
        for j in r.neighbours:
            assert r.index in P[j].neighbours


def test_region_budget_stops_enumeration():
    net = random_network([2, 16, 16, 2], rng=0)
    with pytest.raises(RegionBudgetError) as info:
        partition(net, max_regions=50)
    assert str(info.value).startswith("max_regions: the partition has more than 50 regions")
    assert isinstance(info.value, DGNInputError)


def test_locate_rejects_wrong_latent_shape():
    net = random_network([2, 4, 2], rng=0)
    with pytest.raises(DGNInputError, match=r"z: has shape \(3, 3\)"):
        partition(net).locate(np.zeros((3, 3)))


def test_fuzz_regression_s3_tiny_row_no_overlap():
    """Found by `python -m verify fuzz`: a near-zero first-layer row once produced numerically flat
    cells whose pruned H-representation was a half-space, so regions overlapped."""
    from verify.strategies import CaseSpec, build_case

    net = build_case(CaseSpec(S=3, widths=(6, 6, 1), D=1, activations=("relu", "relu", "relu"),
                              degeneracies=(("tiny_row", 0, 1),))).net
    P = partition(net)
    assert_partition_matches_sampling(net, P, n=20000)


def _far_triangle(centre, size):
    """Three ReLU units whose lines bound a triangle of inradius ``size`` around ``centre``."""
    from engine.network import Activation, Linear, Network

    ang = np.array([0.3, 2.4, 4.4])
    a = np.stack([np.cos(ang), np.sin(ang)], axis=1)
    bias = size - a @ np.asarray(centre, dtype=float)  # a_i.(z - centre) + size >= 0 on the triangle
    layers = [Linear(a, bias), Activation("relu", 0.0), Linear(np.array([[1.0, 2.0, 3.0]]), np.zeros(1))]
    return Network(layers=layers, latent_dim=2), a, bias


@pytest.mark.parametrize("centre,size", [([0.0, 0.0], 1.0), ([1e6, -1e6], 1.0), ([3e12, 1e12], 1.0),
                                         ([3e12, 1e12], 1e3), ([1e14, 2e13], 1e3)])
def test_far_cells_are_not_judged_flat(centre, size):
    """A cell is flat or not by its own shape, wherever it lies: the homogenised generators (v, 1) scaled to
    max 1 lost the t column for vertices beyond |z| ~ 1e6 / size, and merged the triangle (and more) away."""
    net, a, bias = _far_triangle(centre, size)
    P = partition(net)
    assert len(P) == 7 and P.n_bounded == 1
    tri = next(r for r in P if r.bounded)
    corners = np.array([np.linalg.solve(a[[i, j]], -bias[[i, j]]) for i, j in ((0, 1), (1, 2), (0, 2))])
    got = tri.vertices[np.argsort(np.linalg.norm(tri.vertices[:, None] - corners[None], axis=2).argmin(axis=1))]
    np.testing.assert_allclose(got, corners, rtol=0, atol=1e-13 * np.abs(corners).max() + 1e-13 * size)
    rng = np.random.default_rng(0)
    Z = np.asarray(centre) + rng.normal(size=(4000, 2)) * 3 * size
    patterns = {np.packbits(s).tobytes() for s in net.sign_patterns(Z)}
    assert patterns <= {np.packbits(s).tobytes() for s in P.signs}
    assert (P.locate(Z) >= 0).all()


@pytest.mark.parametrize("spec", [dict(widths=(4, 2, 4), weight_seed=4), dict(widths=(2, 3, 5))])
def test_fuzz_regression_far_cells_permutation_invariant(spec):
    """Found by the property fuzzer (``permutation``, gain 1e-6): regions whose vertices all lie beyond
    |z| ~ 1e12 were judged flat and merged into a neighbour that depended on the unit order (31 vs 30
    regions; a wrong affine map). Permuting the units of any hidden layer now gives the same partition."""
    from engine.network import Linear
    from verify.strategies import CaseSpec, build_case

    net = build_case(CaseSpec(S=2, activations=("relu",) * 3, weight_scale=1e-6, **spec)).net
    P = partition(net)
    ref = {np.packbits(s).tobytes() for s in P.signs}
    rng = np.random.default_rng(0)
    linear = [i for i, layer in enumerate(net.layers) if isinstance(layer, Linear)]
    start = 0
    for i, j in zip(linear[:-1], linear[1:]):
        width = net.layers[i].out_features
        for _ in range(4):
            perm = rng.permutation(width)
            layers = list(net.layers)
            layers[i] = Linear(net.layers[i].weight[perm], net.layers[i].bias[perm])
            layers[j] = Linear(net.layers[j].weight[:, perm], net.layers[j].bias)
            Q = partition(net.replace(layers=layers))
            assert len(Q) == len(P)
            signs = Q.signs.copy()
            signs[:, start + perm] = Q.signs[:, start:start + width]  # back to the original unit order
            assert {np.packbits(s).tobytes() for s in signs} == ref
            Z = np.array([r.polytope.interior_point() for r in Q])
            i1, i2 = P.locate(Z), Q.locate(Z)
            assert (i1 >= 0).all() and (i2 >= 0).all()
            np.testing.assert_array_equal(P.signs[i1], signs[i2])
        start += width


def test_fuzz_regression_issue19_duplicate_unit_beside_far_plane():
    """Issue 19 item 1 (`permutation` property, fuzz seed 20261206): a vertex made on an edge from |z| ~ 1 to a
    vertex ~1e7 away carried that far vertex's rounding (2e-9 off its own plane), so the duplicate of the unit
    that made it split the cell again: 16 regions, where 4 planes in R^3 make at most 15 and every permutation
    of the units gave 12. New vertices are now solved on their own tight hyperplanes."""
    from engine.network import Linear
    from tests.test_partition_exact import ISSUE19_NET

    net = load_network(ISSUE19_NET)
    P = partition(net)
    assert len(P) == 12
    assert (P.signs[:, 3] == P.signs[:, 4]).all()
    ref = {np.packbits(s).tobytes() for s in P.signs}
    W1, b1 = net.layers[0].weight, net.layers[0].bias
    W2, b2 = net.layers[2].weight, net.layers[2].bias
    for perm in np.random.default_rng(0).permuted(np.tile(np.arange(5), (24, 1)), axis=1):
        layers = [Linear(W1[perm], b1[perm]), net.layers[1], Linear(W2[:, perm], b2)]
        Q = partition(net.replace(layers=layers))
        signs = np.empty_like(Q.signs)
        signs[:, perm] = Q.signs
        assert {np.packbits(s).tobytes() for s in signs} == ref
    assert_partition_matches_sampling(net, P, n=4000, scale=3e7)


def test_s1_sliver_region_evaluates_without_warning():
    """S = 1 breakpoints 1e-13 apart are two cuts now (float64 resolves them; issue 19). For a point whose
    posterior sits ~1e7 sd away, the sliver's standardised ends round to one number: its mass is 0 to float64,
    with no divide-by-zero warning (engine RuntimeWarnings are errors here), and log p equals that of the net
    whose two units coincide exactly (no sliver) to rounding."""
    def net(gap):
        return load_network({"format": "cpa-dgn", "version": 1, "latent_dim": 1, "cov_z": 1.0, "cov_x": 1e-4,
                             "layers": [{"type": "linear", "weight": [[1.0], [1.0]], "bias": [-1.0, -1.0 - gap]},
                                        {"type": "relu"}, {"type": "linear", "weight": [[1.0, 2.0]], "bias": [0.0]}]})
    sliver, merged = net(1e-13), net(0.0)
    assert len(partition(sliver)) == 3 and len(partition(merged)) == 2
    X = np.array([[3.0], [1e3], [1e5], [-1e3]])
    got, ref = engine.evaluate(sliver, X).log_marginal, engine.evaluate(merged, X).log_marginal
    np.testing.assert_allclose(got, ref, rtol=1e-10)


def _exact_vertex(H, c):
    """The exact intersection of two float64 lines ``H z = c`` (Cramer's rule in rationals)."""
    from fractions import Fraction as F

    (a, b), (d, e) = [[F(x) for x in row] for row in H]
    c0, c1 = F(c[0]), F(c[1])
    det = a * e - b * d
    return (c0 * e - b * c1) / det, (a * c1 - c0 * d) / det


def test_residual_error_bound_covers_the_exact_vertex_along_any_normal():
    """``partition._residual_err`` (issue 19, fuzz case permutation-0-2a94) against exact rationals: a vertex of
    two nearly parallel float64 lines (angles 1e-3 to 1e-11), solved in float64, is within the bound of the
    exact intersection along every tested normal; along the normal of either line the bound is a few ulps of
    |z|, although the vertex itself may be 1e-6 off along the lines; a cell with lines has no bound."""
    import sys
    from fractions import Fraction as F

    P = sys.modules["engine.partition"]
    rng = np.random.default_rng(19)
    for k in range(40):
        theta = 10.0 ** rng.uniform(-11, -3)
        phi = rng.uniform(0, 2 * np.pi)
        H = np.array([[np.cos(phi), np.sin(phi)], [np.cos(phi + theta), np.sin(phi + theta)]])
        c = rng.normal(size=2) * 10.0 ** rng.uniform(-1, 1)
        g = np.linalg.solve(H, c)
        cell = P._Cell(G=np.append(g, 1.0)[None], L=np.zeros((0, 2)), H=H, c=c, inc=np.ones((1, 3), bool),
                       err=np.ones(1))
        gx, gy = _exact_vertex(H, c)
        normals = np.vstack([H, rng.normal(size=(3, 2))])
        normals /= np.linalg.norm(normals, axis=1, keepdims=True)
        bound = P._residual_err(cell, np.zeros(len(normals), int), normals)
        for a, b in zip(normals, bound):
            exact = abs(F(a[0]) * (F(g[0]) - gx) + F(a[1]) * (F(g[1]) - gy))
            assert exact <= F(b), (k, theta, a, float(exact), b)
        assert (bound[:2] <= 64 * np.finfo(float).eps * (1 + np.abs(g).max())).all()
    cell = P._Cell(G=np.array([[0.0, 0.0, 1.0]]), L=np.array([[1.0, 0.0]]), H=np.array([[0.0, 1.0]]),
                   c=np.zeros(1), inc=np.ones((1, 2), bool), err=np.ones(1))
    assert np.isinf(P._residual_err(cell, np.zeros(1, int), np.array([[0.0, 1.0]]))).all()
