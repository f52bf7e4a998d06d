"""The compiled S = 2 planar arrangement (engine/arrangement.py) against the double description.

Two independent enumerations of the same partition (paper Lemma 3, Cor. 1): polygons split by chords in
the projective plane, and cells split in double description with the combinatorial adjacency test. They
share no geometry code, so equal sign patterns, affine maps (eq. 2) and vertex sets on random, scaled and
far-shifted nets check each other; the exact-rational oracle (test_partition_exact.py) checks both.
"""

import sys

import numpy as np
import pytest

from engine import partition, random_network
from engine.network import Linear

_partition_module = sys.modules["engine.partition"]


@pytest.fixture(autouse=True)
def _planar_on(monkeypatch):
    """These tests exercise the planar arrangement, which is off by default (see engine.partition)."""
    monkeypatch.setattr(_partition_module, "USE_PLANAR_ARRANGEMENT", True)


def _double_description(net, monkeypatch):
    with monkeypatch.context() as m:
        m.setattr(_partition_module, "planar_partition", lambda net, max_regions: None)
        return partition(net)


def _scaled(net, scale, shift):
    """Weights times ``scale`` and the first layer moved so that the arrangement sits around ``shift``."""
    layers = list(net.layers)
    first = layers[0]
    layers[0] = Linear(first.weight * scale, (first.bias - first.weight @ np.asarray(shift)) * scale)
    return net.replace(layers=layers)


@pytest.mark.parametrize("widths,act", [([2, 8, 8, 2], "relu"), ([2, 6, 6, 6, 2], "abs"),
                                        ([2, 10, 5, 2], "leaky_relu")])
@pytest.mark.parametrize("scale,shift", [(1.0, (0.0, 0.0)), (1e-6, (0.0, 0.0)), (1e6, (0.0, 0.0)),
                                         (1.0, (3e9, -1e9))])
def test_planar_equals_double_description(widths, act, scale, shift, monkeypatch):
    net = _scaled(random_network(widths, activation=act, negative_slope=0.2, rng=len(widths)), scale, shift)
    P = partition(net)
    Q = _double_description(net, monkeypatch)
    assert len(P) == len(Q)
    index = {np.packbits(s).tobytes(): i for i, s in enumerate(Q.signs)}
    for r in P:
        q = Q[index[np.packbits(r.signs).tobytes()]]
        np.testing.assert_allclose(r.A, q.A, rtol=1e-9, atol=1e-12 * np.abs(q.A).max())
        assert len(r.vertices) == len(q.vertices) and len(r.rays) == len(q.rays)
        size = 1.0 + np.abs(q.vertices).max()
        d = np.abs(r.vertices[:, None, :] - q.vertices[None, :, :]).max(axis=2).min(axis=1)
        assert d.max() <= 1e-9 * size
        assert r.H.shape == q.H.shape
        np.testing.assert_allclose(np.linalg.norm(r.H, axis=1), 1.0, rtol=1e-12)


def test_planar_incidence_is_tight():
    net = random_network([2, 16, 16, 2], rng=0)
    P = partition(net)
    for r, inc in zip(P, P._incidence):
        assert inc.shape == (len(r.vertices) + len(r.rays), r.H.shape[0])
        assert inc.sum(axis=0).min() >= 1 and inc[: len(r.vertices)].sum(axis=1).min() == 2
        slack = r.vertices @ r.H.T - r.c
        np.testing.assert_array_less(slack, 1e-9)
        np.testing.assert_allclose(slack[inc[: len(r.vertices)]], 0.0, atol=1e-9)
