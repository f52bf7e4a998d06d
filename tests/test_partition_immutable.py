"""Partition is immutable; Partition.for_network / em.repartition build a new one (issue 13)."""

import dataclasses

import numpy as np
import pytest

import engine
from engine.distributions import evaluate
from engine.em import repartition
from engine.partition import partition


def _last_layer_changed(net):
    last = net.layers[-1]
    return net.replace(layers=list(net.layers[:-1]) + [dataclasses.replace(last, weight=last.weight * 1.5,
                                                                            bias=last.bias + 0.3)])


def test_partition_attributes_are_read_only():
    part = partition(engine.random_network([2, 5, 3], rng=0))
    with pytest.raises(AttributeError):
        part.net = None
    with pytest.raises(AttributeError):
        part.A = part.A.copy()
    with pytest.raises(ValueError):
        part.A[0, 0, 0] = 1.0
    assert isinstance(part.regions, tuple)


def test_repartition_builds_a_new_partition_equal_to_a_fresh_enumeration():
    """Oracle: enumerating the new network from scratch gives the same regions and maps (same sign patterns)."""
    net = engine.random_network([2, 6, 5, 3], rng=9)
    part = partition(net)
    net2 = _last_layer_changed(net)
    p2 = repartition(net2, part)
    assert p2 is not part and p2.net is net2 and part.net is net
    assert all(r._partition is p2 for r in p2) and all(r._partition is part for r in part)
    fresh = partition(net2)
    order = [fresh._lookup[np.packbits(s).tobytes()] for s in p2.signs]
    np.testing.assert_allclose(p2.A, fresh.A[order], rtol=0, atol=1e-12)
    np.testing.assert_allclose(p2.b, fresh.b[order], rtol=0, atol=1e-12)
    assert p2[0].neighbours == part[0].neighbours
    X = net2.sample(4, rng=1)
    np.testing.assert_allclose(evaluate(net2, X, part=p2).log_marginal, evaluate(net2, X).log_marginal,
                               rtol=0, atol=1e-10)
