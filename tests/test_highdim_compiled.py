"""The compiled slice construction of the S' = 4 outer quadrature (``engine.gaussian.highdim.slice_kernel``, issue 14)
against its numpy reference (``sliced.USE_COMPILED_SLICES = False``) and against independent oracles.

Oracles: the numpy slice polytopes and ``solid.SolidGeometry`` (the S = 3 path's own geometry, built from
``Polytope`` objects); scipy's NNLS least-distance program (``qmc.closest_points``) for the closest points; the
known answers (rotated boxes, block decoders) are in ``test_highdim_sliced.py`` / ``test_highdim_prune.py``, which
run the compiled path by default.
"""

from __future__ import annotations

import numpy as np
import pytest

import engine
import engine.gaussian.highdim.sliced as sl
from engine.gaussian.highdim.qmc import closest_points
from engine.gaussian.highdim.slice_kernel import EMPTY, REGULAR, closest_in_slices, slice_geometry
from engine.gaussian.polytopes import batch_geometry
from engine.partition import partition


@pytest.fixture(scope="module")
def regions():
    """Regions of a small S = 4 partition: two bounded, two unbounded (rays), whitened for three means each (the
    origin, a point 3 away, one 7 away: mean inside, in the tail, far in the tail)."""
    part = partition(engine.random_network([4, 6, 4], rng=0))
    polys = [r.polytope for r in part if not r.polytope.lineality.size]
    bounded = [p for p in polys if p.bounded][:2]
    unbounded = sorted([p for p in polys if not p.bounded], key=lambda p: -p.H.shape[0])[:2]
    rng = np.random.default_rng(5)
    out = []
    for p in bounded + unbounded:
        d = rng.standard_normal(4)
        d /= np.linalg.norm(d)
        centre = p.interior_point()
        means = np.stack([np.zeros(4), centre + 3.0 * d, centre - 7.0 * d])
        out.append(sl.whitened(p, np.eye(4), means))
    assert len(out) == 4 and all(o[3].size for o in out[2:])
    return out


def _run(data, compiled, monkeypatch):
    monkeypatch.setattr(sl, "USE_COMPILED_SLICES", compiled)
    Nrm, D, Yv, Yr = data
    return sl.sliced_moments(Nrm, D, Yv, Yr, moments=2)


def test_compiled_matches_the_reference(regions, monkeypatch):
    """Mass, mean and covariance of the compiled path equal the numpy reference's to rounding (1e-14 relative on
    the log mass: the same slices, the same kernel, the same rounds), and their bars agree. The compiled path's
    screen of negligible slices (``SKIP_SHARE``, tested against closed forms in test_highdim_sliced) is off here."""
    monkeypatch.setattr(sl, "SKIP_SHARE", 0.0)
    for data in regions:
        a = _run(data, False, monkeypatch)
        b = _run(data, True, monkeypatch)
        assert np.all(np.isfinite(a[0]))
        np.testing.assert_allclose(b[0], a[0], rtol=1e-14, atol=1e-14)
        np.testing.assert_allclose(b[1], a[1], rtol=0, atol=1e-12)
        np.testing.assert_allclose(b[2], a[2], rtol=0, atol=1e-12)
        np.testing.assert_allclose(b[3], a[3], rtol=1e-2, atol=1e-15)


def _problem(data):
    Nrm, D, Yv, Yr = data
    closest, _ = sl.closest_distance(Nrm, D)
    return sl._Problem(Nrm, D, Yv, Yr.reshape(-1, 4), closest)


def test_slice_geometry_matches_the_solid_geometry_of_the_numpy_slices(regions):
    """Node by node, the compiled facets and edges are those of ``SolidGeometry`` built from the reference's
    ``Polytope`` slices: the same empty nodes, the same facet rows, the same edge slots, values to 1e-12."""
    for data in regions:
        prob = _problem(data)
        M = prob.D.shape[0]
        pidx = np.repeat(np.arange(M), 40)
        nodes = np.concatenate([np.linspace(max(lo, -12.0), min(hi, 12.0), 40)
                                for lo, hi in zip(prob.lo, prob.hi)])
        geo = slice_geometry(prob, pidx, nodes)
        g = geo.arrays
        polys = [prob.slice(m, t) for m, t in zip(pidx, nodes)]
        assert [p is None for p in polys] == list(geo.status == EMPTY)
        assert np.sum(geo.status == REGULAR) > 40
        for k, p in enumerate(polys):
            if p is None:
                continue
            ref = batch_geometry([p], np.eye(3)[None], np.eye(3)[None])
            assert bool(ref.ok[0]) == (geo.status[k] == REGULAR)
            if not ref.ok[0]:
                continue
            F = p.H.shape[0]
            np.testing.assert_allclose(g.Nrm[k, :F], ref.Nrm[0], atol=1e-15)
            np.testing.assert_allclose(g.cn[k, :F], ref.cn[0], atol=1e-13)
            assert not g.fvalid[k, F:].any()
            E = int(ref.evalid[0].sum())
            assert g.evalid[k, :E].all() and not g.evalid[k, E:].any()
            for name in ("ei", "ej", "khi", "klo", "has_hi", "has_lo"):
                np.testing.assert_array_equal(getattr(g, name)[k, :E], getattr(ref, name)[0, :E], err_msg=name)
            for name in ("c", "sn", "ah", "bh", "gh", "al", "bl", "gl", "m1", "m2"):
                np.testing.assert_allclose(getattr(g, name)[k, :E], getattr(ref, name)[0, :E], rtol=1e-12,
                                           atol=1e-12, err_msg=name)


class _Rows:
    """A stand-in for ``SliceGeometry``: the facet arrays ``closest_in_slices`` reads."""

    def __init__(self, Nrm, cn):
        F = Nrm.shape[1]
        self.arrays = type("A", (), {"Nrm": Nrm, "cn": cn, "fvalid": np.ones(cn.shape, dtype=bool)})()
        self.F = F


def test_closest_points_match_the_nnls_least_distance_program():
    """Random 3-D polyhedra (bounded and unbounded, origin inside and out): the compiled closest point (the nearest
    feasible projection onto faces) equals scipy NNLS's (Lawson-Hanson) to 1e-9, inside: the origin exactly."""
    rng = np.random.default_rng(11)
    K, F = 60, 7
    Nrm = rng.standard_normal((K, F, 3))
    Nrm /= np.linalg.norm(Nrm, axis=2)[..., None]
    x0 = rng.standard_normal((K, 3)) * rng.choice([0.0, 1.0, 4.0], size=(K, 1))  # a point of each polyhedron
    cn = np.einsum("kfj,kj->kf", Nrm, x0) + rng.uniform(0.05, 1.5, (K, F))
    got = closest_in_slices(_Rows(Nrm, cn), np.arange(K))
    want = np.stack([closest_points(Nrm[k], cn[k][None])[0] for k in range(K)])
    np.testing.assert_allclose(got, want, atol=1e-9)
    inside = np.all(cn >= 0.0, axis=1)
    assert inside.any() and (~inside).sum() > 20
    assert np.all(got[inside] == 0.0)


def test_generic_direction_avoids_the_nested_fallback_and_agrees_with_the_closest_direction(monkeypatch):
    """A pair of ``random_network([4, 8, 8, 5], rng=0, cov_x=0.1)`` (region 647 at data point 3, mean outside):
    slicing along the direction to y* (``TOWARD_CLOSEST``, the earlier rule) sends a thin slice to the nested
    S = 3 quadrature; the generic direction sends none. The two routes slice the region differently (different
    slices, panels and bars), and agree within the sum of their bars."""
    import engine.gaussian.polytopes as pt
    from engine.distributions import posterior_region_params, region_gaussians

    net = engine.random_network([4, 8, 8, 5], rng=0, cov_x=0.1)
    part = partition(net)
    rg = region_gaussians(net, part)
    mu, _ = posterior_region_params(net, part, net.sample(100, rng=1)[3:4], rg)
    data = sl.whitened(part[647].polytope, np.linalg.cholesky(rg.cov[647]), mu[:1, 647])
    assert np.linalg.norm(sl.closest_distance(data[0], data[1])[0]) > 0.5
    calls = []
    real = pt._polytope_moments_single
    monkeypatch.setattr(pt, "_polytope_moments_single", lambda *a, **k: calls.append(1) or real(*a, **k))
    out = {}
    for toward in (True, False):
        monkeypatch.setattr(sl, "TOWARD_CLOSEST", toward)
        calls.clear()
        out[toward] = sl.sliced_moments(*data, moments=2), len(calls)
    (a, n_old), (b, n_new) = out[True], out[False]
    assert n_old >= 1 and n_new == 0
    assert abs(np.expm1(a[0][0] - b[0][0])) <= a[3][0] + b[3][0]
    assert max(a[3][0], b[3][0]) < 1e-10
    np.testing.assert_allclose(b[1], a[1], atol=1e-9)
    np.testing.assert_allclose(b[2], a[2], atol=1e-8)
