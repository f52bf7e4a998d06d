"""The S = 1 partition computed for every cell of a layer at once (``engine.partition._partition_s1``) against
the per-cell loop it replaces (``USE_FAST_S1 = False``): every field of the Partition, bit for bit, in the same
order, on random and degenerate S = 1 networks; and both against a dense sampling of the forward pass."""

import importlib

import numpy as np
import pytest

import engine
from engine import RegionBudgetError
from engine.network import Activation, Linear, Network

partition_module = importlib.import_module("engine.partition")  # the module, not engine.partition()


def _fields(part):
    out = [part.A, part.b, part.signs, part.intervals()]
    for region, inc in zip(part.regions, part._incidence):
        poly = region.polytope
        out += [region.signs, region.A, region.b, poly.H, poly.c, poly.vertices, poly.rays, poly.lineality, inc,
                np.array(region.index)]
        for M, m in region.layer_maps:
            out += [M, m]
    return out


def _identical(x, y):
    if x.shape != y.shape or x.dtype != y.dtype:
        return False
    if x.dtype.kind == "f":
        return np.array_equal(x, y, equal_nan=True) and np.array_equal(np.signbit(x), np.signbit(y))
    return np.array_equal(x, y)


def assert_identical(old, new):
    a, b = _fields(old), _fields(new)
    assert len(old) == len(new) and len(a) == len(b)
    bad = [k for k, (x, y) in enumerate(zip(a, b)) if not _identical(x, y)]
    assert not bad, f"fields differ at {bad[:5]}"
    assert all(r._partition is new for r in new.regions)


def both(net, monkeypatch, **kw):
    monkeypatch.setattr(partition_module, "USE_FAST_S1", False)
    old = engine.partition(net, **kw)
    monkeypatch.setattr(partition_module, "USE_FAST_S1", True)
    return old, engine.partition(net, **kw)


def _degenerate(net, kind, rng):
    """``net`` with dead units, duplicate / rescaled units (equal breakpoints), huge and tiny weights, or
    leaky / absolute-value activations."""
    layers = []
    for layer in net.layers:
        if isinstance(layer, Linear):
            W, v = layer.weight.copy(), layer.bias.copy()
            if kind == "dead":
                W[rng.random(W.shape) < 0.3] = 0.0
            if kind == "duplicate" and W.shape[0] > 1:
                W[-1], v[-1] = W[0], v[0]
                if W.shape[0] > 2:
                    W[1], v[1] = 2.0 * W[0], 2.0 * v[0]  # the same breakpoint with another rounding bound
            if kind == "scaled":
                W = W * 10.0 ** rng.integers(-8, 9, size=W.shape)
            layer = Linear(W, v)
        elif kind in ("leaky_relu", "abs"):
            layer = Activation(kind, 0.1 if kind == "leaky_relu" else -1.0)
        layers.append(layer)
    return Network(layers, 1)


KINDS = ["plain", "dead", "duplicate", "scaled", "leaky_relu", "abs"]


@pytest.mark.parametrize("kind", KINDS)
def test_fast_s1_partition_is_the_loop_bit_for_bit(kind, monkeypatch):
    rng = np.random.default_rng(KINDS.index(kind))
    for _ in range(25):
        widths = [1, *rng.integers(1, 13, size=rng.integers(1, 4)).tolist(), int(rng.integers(1, 3))]
        net = _degenerate(engine.random_network(widths, rng=int(rng.integers(2**31))), kind, rng)
        old, new = both(net, monkeypatch)
        assert_identical(old, new)


def test_fast_s1_partition_special_nets(monkeypatch):
    """All units dead (one region, the whole line, with lineality); two activation layers, one of them |h|;
    one far breakpoint; breakpoints 1e-13 apart (merged or not, the same in both)."""
    W1 = np.array([[0.0], [0.0]])
    nets = [Network([Linear(W1, np.array([1.0, -1.0])), Activation("relu", 0.0),
                     Linear(np.ones((1, 2)), np.zeros(1))], 1),
            Network([Linear(np.array([[1.0], [-2.0]]), np.array([0.5, 3.0])), Activation("relu", 0.0),
                     Linear(np.array([[1.0, 1.0], [1.0, -1.0]]), np.array([-1.0, 0.0])), Activation("abs", -1.0),
                     Linear(np.ones((1, 2)), np.zeros(1))], 1),
            Network([Linear(np.array([[1e-9], [1.0]]), np.array([1e4, 0.0])), Activation("relu", 0.0),
                     Linear(np.ones((1, 2)), np.zeros(1))], 1),
            Network([Linear(np.array([[1.0], [1.0], [1.0]]), np.array([0.0, 1e-13, 1e-11])), Activation("relu", 0.0),
                     Linear(np.ones((1, 3)), np.zeros(1))], 1)]
    counts = []
    for net in nets:
        old, new = both(net, monkeypatch)
        assert_identical(old, new)
        counts.append(len(new))
    assert counts[0] == 1 and new.regions is not None
    one = both(nets[0], monkeypatch)[1].regions[0].polytope
    assert one.lineality.shape == (1, 1) and one.H.shape == (0, 1)
    assert counts[2] == 3 and counts[1] > 3


EPS = np.finfo(np.float64).eps
RELU = Activation("relu", 0.0)


def _two_units(gap):
    """Breakpoints 1 and 1 + gap; each is known to 72 eps (32 eps (|a| |z| + |b|) / |a| + 8 eps |z|)."""
    return Network([Linear(np.ones((2, 1)), np.array([-1.0, -(1.0 + gap)])), RELU,
                    Linear(np.ones((1, 2)), np.zeros(1))], 1)


def _tied_units(order):
    """Units B = u2 - u1 - 1 and A = u1 - 11 (u1 = relu(z + 10), u2 = relu(2 z + 10)) both break at z = 1 on
    z > -5, known to 776 eps (B: |W| |M| = 3) and 712 eps (A); unit N = u1 - 11 - 1456 eps breaks 1456 eps
    further, known to 712 eps. N's cut survives iff the tie's last unit (in unit order) is A: 712 + 712 < 1456
    < 776 + 712."""
    rows = {"B": ([-1.0, 1.0], -1.0), "A": ([1.0, 0.0], -11.0), "N": ([1.0, 0.0], -(11.0 + 1456 * EPS))}
    W2, v2 = np.array([rows[k][0] for k in order]), np.array([rows[k][1] for k in order])
    return Network([Linear(np.array([[1.0], [2.0]]), np.array([10.0, 10.0])), RELU, Linear(W2, v2), RELU,
                    Linear(np.ones((1, 3)), np.zeros(1))], 1)


@pytest.mark.parametrize("net, count", [(_two_units(100 * EPS), 2), (_two_units(200 * EPS), 3),
                                        (_tied_units("BAN"), 5), (_tied_units("ABN"), 4)])
def test_fast_s1_merges_breakpoints_as_the_loop(net, count, monkeypatch):
    """Breakpoints closer than the sum of their bounds are one cut (100 eps < 144 eps), farther ones two; equal
    breakpoints are taken in unit order (stable), so which bound meets the next breakpoint is defined."""
    old, new = both(net, monkeypatch)
    assert_identical(old, new)
    assert len(new) == count


def test_fast_s1_partition_matches_sampling():
    """Independent of the loop: every sampled z's region (its sign pattern) is enumerated, located, and the
    region's affine map is the forward pass there."""
    net = engine.random_network([1, 16, 16, 2], rng=0, cov_x=0.1)
    part = engine.partition(net)
    Z = np.random.default_rng(0).normal(size=(20000, 1)) * 6.0
    idx = part.locate(Z)
    assert (idx >= 0).all()
    lo, hi = part.intervals()[idx].T
    assert ((lo <= Z[:, 0]) & (Z[:, 0] <= hi)).all()
    np.testing.assert_allclose(np.einsum("nds,ns->nd", part.A[idx], Z) + part.b[idx], net.forward(Z),
                               rtol=1e-12, atol=1e-12)
    patterns = {np.packbits(s).tobytes() for s in net.sign_patterns(Z)}
    assert patterns <= {np.packbits(s).tobytes() for s in part.signs}


def test_fast_s1_region_budget(monkeypatch):
    net = engine.random_network([1, 16, 16, 2], rng=0)
    n = len(engine.partition(net))
    for fast in (False, True):
        monkeypatch.setattr(partition_module, "USE_FAST_S1", fast)
        with pytest.raises(RegionBudgetError):
            engine.partition(net, max_regions=n - 1)
        assert len(engine.partition(net, max_regions=n)) == n
