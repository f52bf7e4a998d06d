"""The S = 2 partition builds its regions when first read (issue 15 item 1): the lazily built regions equal
eagerly built ones bit for bit, repeated reads return the same objects, and pickling round-trips.

Oracle: the eager construction the partition used before (``planar.polygons()`` sliced per region, the
dataclass constructors of :class:`Polytope` and :class:`Region`, the per-region ``padded_facets`` loop),
written out here independently of ``engine.partition``'s lazy path.
"""

import dataclasses
import pickle

import numpy as np
import pytest

import engine
from engine.arrangement import planar_partition
from engine.partition import Partition, Region, partition
from engine.polytope import Polytope, trusted_polytope

NETS = [([2, 6, 5, 3], "relu", 0), ([2, 8, 8, 2], "leaky_relu", 3), ([2, 5, 4], "abs", 7)]
FIELDS = ("H", "c", "vertices", "rays", "lineality")


def _eager(net):
    """The partition as built before laziness: every Region and Polytope constructed up front."""
    planar = planar_partition(net, 10**5)
    A, b, signs = planar.A.copy(), planar.b.copy(), planar.signs.copy()
    maps = [(list(zip(Mq, mq)), a.tolist()) for Mq, mq, a in planar.layer_maps]
    layer_maps = list(zip(*[[pairs[f] for f in faces] for pairs, faces in maps]))
    Hs, cs, Vs, Rs, incidence = planar.polygons()
    regions = [Region(i, s, Polytope(H, c, V, R, np.zeros((0, 2))), Ai, bi, list(lm))
               for i, (s, Ai, bi, H, c, V, R, lm) in enumerate(zip(signs, A, b, Hs, cs, Vs, Rs, layer_maps))]
    part = Partition(net, regions, incidence, stacked=(A, b, signs))
    for region in regions:
        region._partition = part
    return part


def _same_bits(x, y):
    x, y = np.asarray(x), np.asarray(y)
    return x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes()


def _assert_regions_equal(lazy, eager):
    assert len(lazy) == len(eager)
    for i, (p, q) in enumerate(zip(lazy, eager)):
        assert p.index == q.index == i
        for k in ("signs", "A", "b"):
            assert _same_bits(getattr(p, k), getattr(q, k)), (i, k)
        for k in FIELDS:
            assert _same_bits(getattr(p.polytope, k), getattr(q.polytope, k)), (i, k)
        assert len(p.layer_maps) == len(q.layer_maps)
        for (M1, m1), (M2, m2) in zip(p.layer_maps, q.layer_maps):
            assert _same_bits(M1, M2) and _same_bits(m1, m2), i


@pytest.mark.parametrize("widths,act,seed", NETS)
def test_lazy_regions_equal_eager_ones_bit_for_bit(widths, act, seed):
    net = engine.random_network(widths, activation=act, rng=seed)
    lazy, eager = partition(net), _eager(net)
    assert lazy._source is not None and lazy._regions is None  # nothing built yet
    _assert_regions_equal(lazy, eager)
    for k in ("A", "b", "signs"):
        assert _same_bits(getattr(lazy, k), getattr(eager, k))
    assert lazy.n_bounded == eager.n_bounded == sum(r.bounded for r in eager)
    for x, y in zip(lazy.padded_facets(), eager.padded_facets()):  # vectorised against the per-region loop
        assert _same_bits(x, y)
    assert [lazy.neighbours(i) for i in range(len(lazy))] == [eager.neighbours(i) for i in range(len(eager))]
    assert all(_same_bits(lazy._incidence[i], eager._incidence[i]) for i in range(len(lazy)))


def test_repeated_reads_return_the_same_objects():
    part = partition(engine.random_network([2, 6, 5, 3], rng=1))
    n = len(part)
    r3 = part[3]
    assert part[3] is r3 and part[np.int64(3)] is r3 and part[3 - n] is r3
    assert r3._partition is part and r3.polytope is part[3].polytope
    regions = part.regions
    assert isinstance(regions, tuple) and regions[3] is r3 and part.regions is regions
    assert list(part)[3] is r3 and part[1:4] == regions[1:4]
    assert all(r._partition is part for r in part)
    with pytest.raises(IndexError):
        part[n]
    with pytest.raises(IndexError):
        part[-n - 1]


@pytest.mark.parametrize("touch", ["none", "some", "all"])
def test_pickle_round_trip(touch):
    net = engine.random_network([2, 8, 8, 2], activation="leaky_relu", rng=3)
    part, eager = partition(net), _eager(net)
    if touch == "some":
        part[2], part.padded_facets()
    elif touch == "all":
        part.regions, part.neighbours(0)
    back = pickle.loads(pickle.dumps(part))
    _assert_regions_equal(back, eager)
    assert all(r._partition is back for r in back) and back[2] is back.regions[2]
    assert _same_bits(back.locate(np.array([[0.3, -1.2], [5.0, 2.0]])), eager.locate(np.array([[0.3, -1.2],
                                                                                                 [5.0, 2.0]])))
    if touch == "all":
        assert back._neighbours == part._neighbours
    region = pickle.loads(pickle.dumps(part[5]))  # a region alone carries its partition
    assert region._partition[5].index == 5 and _same_bits(region.H, eager[5].H)


def test_for_network_stays_lazy_and_shares_polytopes():
    """The new partition's regions: the new maps, the same polytopes; the caller's A and b stay writable."""
    net = engine.random_network([2, 6, 5, 3], rng=4)
    part, eager = partition(net), _eager(net)
    A, b = part.A * 1.5, part.b + 0.25
    new, new_eager = part.for_network(net, A, b), eager.for_network(net, A, b)
    assert new._regions is None and A.flags.writeable and b.flags.writeable
    _assert_regions_equal(new, new_eager)
    assert all(new[i].polytope is part[i].polytope and new[i]._partition is new for i in range(len(new)))
    assert _same_bits(new.A, A) and not new.A.flags.writeable


def test_trusted_polytope_is_the_dataclass():
    rng = np.random.default_rng(0)
    arrays = [rng.normal(size=s) for s in ((3, 2), (3,), (2, 2), (1, 2), (0, 2))]
    p, q = trusted_polytope(*arrays), Polytope(*arrays)
    assert type(p) is Polytope and repr(p) == repr(q) and vars(p).keys() == vars(q).keys()
    assert all(getattr(p, k) is getattr(q, k) for k in FIELDS)
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.H = arrays[0]
    r = dataclasses.replace(p, c=arrays[1] + 1.0)
    assert _same_bits(r.c, arrays[1] + 1.0) and r.H is p.H
    assert _same_bits(pickle.loads(pickle.dumps(p)).vertices, arrays[2])


def test_threads_reading_regions_at_once_get_equal_regions():
    """Threads (Dask's threaded scheduler, evaluate's workers) reading an unbuilt partition concurrently."""
    from concurrent.futures import ThreadPoolExecutor

    net = engine.random_network([2, 8, 8, 2], rng=5)
    part, eager = partition(net), _eager(net)
    n = len(part)
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda i: part[i % n] if i % 3 else part.regions[i % n], range(4 * n)))
    assert all(g.index == i % n for i, g in enumerate(got))
    _assert_regions_equal(part, eager)
    assert all(part[i] is part.regions[i] for i in range(n))
