"""The compiled double description (``engine.dd_kernel``) against the Python reference and the exact oracle.

The kernel runs the reference's algorithm (``engine.partition``: ``_refine``, ``_split``, ``_combine``,
``_polish``, ``_prune``) in the same order, so both must return the same regions in the same order: equal
sign patterns, equal incidence (generators x facets), equal facet and generator counts, and vertices and rays
equal within their own rounding bounds (the kernel's per-generator ``err``: the two sum dot products in
different orders, which moves an ill-conditioned vertex by up to its bound, e.g. 2.6e-7 at |z| = 3e4 where
nearly parallel planes meet). Independently of the reference, the compiled path's sign patterns must equal the
exact-rational enumeration (``tests.test_partition_exact.exact_regions``, Lemma 3 / Cor. 1).
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np
import pytest

from engine import dd_kernel, load_network, random_network
from tests.test_partition_exact import _duplicates, _net, _parallel, exact_regions

ref = importlib.import_module("engine.partition")
_EPS = np.finfo(np.float64).eps
_FUZZ = Path(__file__).parent / "fuzz_cases"


@pytest.fixture(autouse=True)
def _double_description_at_s2(monkeypatch):
    """This module tests the double description: at S = 2 the default partition is the planar arrangement
    (``engine.arrangement``, tested in ``tests/test_partition_planar.py``), so it is switched off here."""
    monkeypatch.setattr(ref, "USE_PLANAR_ARRANGEMENT", False)


def _python(net):
    old = ref.USE_COMPILED_DD
    ref.USE_COMPILED_DD = False
    try:
        return ref.partition(net)
    finally:
        ref.USE_COMPILED_DD = old


def _consts():
    return np.array([ref._PLANE_ULPS, ref._VERTEX_ULPS, ref._ZERO_ROW])


def _rounding_reach(region, inc):
    """How far rounding can move each generator: ``64 eps (1 + |g| + |c_T|) / sigma``, sigma the smallest
    singular value that fixes it (of its tight facet normals with the lineality basis; for a ray, the smallest
    of the d - 1 that fix a direction in the pointed dimension d). Two computations of a vertex where planes
    meet at an angle of 1e-9 differ by 1e-7 relative and are both right to rounding (residuals ~1e-15 on their
    planes): the same vertex. A wrong vertex on a well-conditioned corner (sigma ~ 1) fails by far."""
    H, c, L = region.H, region.c, region.polytope.lineality
    nv, S = region.vertices.shape[0], H.shape[1]
    d = S - L.shape[0]
    out = []
    for k, g in enumerate(np.vstack([region.vertices, region.rays])):
        T = inc[k]
        sv = np.linalg.svd(np.vstack([H[T], L]), compute_uv=False) if T.any() or L.size else np.zeros(0)
        if k < nv:
            sigma = sv[S - 1] if sv.size >= S else 0.0
            scale = 1.0 + np.abs(g).max() + np.abs(c[T]).max(initial=0.0)
        else:
            sigma = sv[d - 2 + L.shape[0]] if d >= 2 and sv.size >= d - 1 + L.shape[0] else 1.0
            scale = 1.0
        out.append(64 * _EPS * scale / max(sigma, 1e-300))
    return np.array(out)


def _assert_same(net):
    """Compiled and Python partitions of ``net`` are the same regions in the same order; returns the count."""
    assert ref.USE_COMPILED_DD is True  # the compiled path is the default
    P, Q = ref.partition(net), _python(net)
    status, d = dd_kernel.run(net, ref.DEFAULT_MAX_REGIONS, _consts())
    assert status == -1
    assert len(P) == len(Q)
    np.testing.assert_array_equal(P.signs, Q.signs)
    for r, (p, q) in enumerate(zip(P, Q)):
        for key in ("vertices", "rays", "H", "lineality"):
            assert getattr(p.polytope, key).shape == getattr(q.polytope, key).shape, (r, key)
        np.testing.assert_array_equal(P._incidence[r], Q._incidence[r])
        err = d.err[d.gen_off[r]:d.gen_off[r + 1]]
        G, G_ref = np.vstack([p.vertices, p.rays]), np.vstack([q.vertices, q.rays])
        L = p.polytope.lineality  # generators are defined up to the lineality space
        gap = np.abs((G - G_ref) - (G - G_ref) @ L.T @ L).max(axis=1, initial=0.0)
        bound = 2.0 * err + _rounding_reach(p, P._incidence[r])
        assert (gap <= bound).all(), (r, gap.max(), bound[np.argmax(gap - bound)])
        # facets: the same planes (unit normals from the same units' rows)
        np.testing.assert_allclose(p.H, q.H, rtol=0, atol=1e-10)
        np.testing.assert_allclose(p.c, q.c, rtol=1e-9, atol=1e-9)
        Lp, Lq = p.polytope.lineality, q.polytope.lineality
        if Lp.shape[0]:  # the same lineality space (bases may differ by an orthogonal map)
            np.testing.assert_allclose(Lp.T @ Lp, Lq.T @ Lq, atol=1e-12)
        scale = 1.0 + np.abs(q.A).max()
        np.testing.assert_allclose(p.A, q.A, rtol=0, atol=1e-13 * scale)
        np.testing.assert_allclose(p.b, q.b, rtol=0, atol=1e-13 * (1.0 + np.abs(q.b).max()))
        for (Mp, mp), (Mq, mq) in zip(p.layer_maps, q.layer_maps):
            np.testing.assert_allclose(Mp, Mq, rtol=0, atol=1e-13 * (1.0 + np.abs(Mq).max()))
            np.testing.assert_allclose(mp, mq, rtol=0, atol=1e-13 * (1.0 + np.abs(mq).max()))
    return len(P)


@pytest.mark.parametrize("widths,act,seed", [
    ([3, 6, 6, 2], "relu", 0), ([3, 6, 6, 2], "abs", 1), ([3, 7, 5, 3], "leaky_relu", 2),
    ([4, 6, 5, 2], "relu", 3), ([4, 5, 5, 2], "abs", 4), ([4, 6, 4, 2], "leaky_relu", 5),
    ([5, 5, 4, 2], "relu", 6), ([5, 4, 4, 2], "leaky_relu", 7), ([2, 7, 6, 2], "relu", 8),
    ([3, 4, 4, 4, 2], "relu", 9),
])
def test_compiled_equals_python_on_random_nets(widths, act, seed):
    assert _assert_same(random_network(widths, activation=act, rng=seed)) > 10


@pytest.mark.parametrize("case", sorted(_FUZZ.glob("*.json")), ids=lambda c: c.stem)
def test_compiled_equals_python_on_fuzz_cases(case):
    """Every pinned fuzz case (degenerate: duplicated and rescaled units, slivers near rounding, 1e5 rows),
    in its own unit order and in its ``permutation`` property's order."""
    from verify.properties import permuted_network

    data = json.loads(case.read_text())
    net = load_network(data["model"])
    _assert_same(net)
    if data["property"] == "permutation":
        _assert_same(permuted_network(net, data["aux_seed"])[0])


def _through_a_point(W, b):
    """Unit 3 through the common point of units 0, 1, 2 (S = 3), unit 4 duplicates unit 1 scaled by 2^-10 (exactly),
    unit 5 is a zero row with a positive bias."""
    W, b = W.copy(), b.copy()
    W[3], b[3] = W[0] + W[1] + W[2], b[0] + b[1] + b[2]
    W[4], b[4] = 2.0**-10 * W[1], 2.0**-10 * b[1]
    W[5], b[5] = 0.0, 0.5
    return W, b


DEGENERATE = {
    "s3_duplicates": (3, (8, 5), "leaky_relu", _duplicates),
    "s3_parallel": (3, (6, 5), "abs", _parallel),
    "s3_through_a_point": (3, (7, 4), "relu", _through_a_point),
    "s4_duplicates": (4, (8, 4), "relu", _duplicates),
    "s4_parallel": (4, (6, 4), "leaky_relu", _parallel),
    "s4_through_a_point": (4, (6, 4), "abs", _through_a_point),
    "s3_lineality": (3, (2, 6), "relu", None),  # first layer of rank 2 < S: regions contain lines
    "s4_lineality": (4, (2, 3, 5), "leaky_relu", None),
    "s5_lineality": (5, (3, 5), "abs", None),
}


@pytest.mark.parametrize("name", sorted(DEGENERATE))
def test_compiled_equals_python_on_degenerate_nets(name):
    S, widths, act, tweak = DEGENERATE[name]
    _assert_same(_net(S, widths, act, seed=len(name), tweak=tweak))


def test_lineality_survives_to_the_regions():
    """A [3, 1, 2] net: every region (3: the second layer's two planes are parallel to the first's) contains
    the 2-dimensional lineality of the single first-layer unit."""
    net = _net(3, (1, 2), "relu", seed=3)
    P = ref.partition(net)
    assert len(P) == 3 and all(r.polytope.lineality.shape == (2, 3) for r in P)
    _assert_same(net)


EXACT = {
    "s3_relu_5_2": (3, (5, 2), "relu", None),
    "s3_degenerate_8": (3, (8,), "leaky_relu", _duplicates),
    "s3_through_a_point": (3, (6,), "relu", _through_a_point),
    "s3_parallel_4_2": (3, (4, 2), "abs", _parallel),
    "s4_relu_4": (4, (4,), "relu", None),  # the oracle takes ~14 s at S = 4
    "s4_lineality_2_3": (4, (2, 3), "relu", None),
}
_SLOW_EXACT = {"s4_relu_4", "s4_lineality_2_3"}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in _SLOW_EXACT else n
                                  for n in sorted(EXACT)])
def test_compiled_equals_exact_enumeration(name):
    """The compiled path's sign patterns against the exact-rational oracle (no shared code)."""
    S, widths, act, tweak = EXACT[name]
    net = _net(S, widths, act, seed=len(name), tweak=tweak)
    exact = exact_regions(net)
    P = ref.partition(net)
    assert len(P) == len(exact)
    assert {tuple(bool(x) for x in s) for s in P.signs} == exact


def test_compiled_is_reproducible_and_budgeted():
    """Two runs give the same bits; the region budget raises as the Python path does (same message)."""
    net = random_network([4, 6, 6, 2], rng=11)
    _, d1 = dd_kernel.run(net, ref.DEFAULT_MAX_REGIONS, _consts())
    _, d2 = dd_kernel.run(net, ref.DEFAULT_MAX_REGIONS, _consts())
    for x, y in zip(d1, d2):
        assert x.tobytes() == y.tobytes()
    n = len(ref.partition(net))
    with pytest.raises(ref.RegionBudgetError) as compiled:
        ref.partition(net, max_regions=n - 1)
    ref.USE_COMPILED_DD = False
    try:
        with pytest.raises(ref.RegionBudgetError) as python:
            ref.partition(net, max_regions=n - 1)
    finally:
        ref.USE_COMPILED_DD = True
    assert str(compiled.value) == str(python.value)
    assert len(ref.partition(net, max_regions=n)) == n


def test_compiled_partition_locates_its_own_points():
    """Each region's interior point is located in that region (the forward pass's pattern)."""
    net = random_network([3, 8, 8, 2], rng=4)
    P = ref.partition(net)
    Z = np.array([r.polytope.interior_point() for r in P])
    assert (P.locate(Z) == np.arange(len(P))).all()


_DIGEST = """
import hashlib, importlib, sys
import numpy as np
from engine import dd_kernel, random_network
ref = importlib.import_module("engine.partition")
_, d = dd_kernel.run(random_network([4, 6, 6, 2], activation="abs", rng=12), 10**5,
                     np.array([ref._PLANE_ULPS, ref._VERTEX_ULPS, ref._ZERO_ROW]))
print(hashlib.sha256(b"".join(x.tobytes() for x in d)).hexdigest())
"""


@pytest.mark.slow  # two fresh processes (~13 s wall on a loaded machine)
def test_compiled_bits_do_not_depend_on_thread_counts():
    """One BLAS / numba / OpenMP thread or the machine's default: the same bits (no parallel reduction)."""
    import os
    import subprocess
    import sys

    digests = []
    for threads in (None, "1"):
        env = dict(os.environ)
        if threads:
            env.update(OMP_NUM_THREADS=threads, OPENBLAS_NUM_THREADS=threads, MKL_NUM_THREADS=threads,
                       NUMBA_NUM_THREADS=threads)
        out = subprocess.run([sys.executable, "-c", _DIGEST], env=env, capture_output=True, text=True, check=True)
        digests.append(out.stdout.strip())
    assert len(digests[0]) == 64 and digests[0] == digests[1]
