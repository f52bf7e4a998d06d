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
