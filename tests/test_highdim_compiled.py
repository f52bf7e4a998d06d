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
    the log mass: the same slices, the same kernel, the same rounds), and the compiled bars are within 5 % of the
    reference's or below: the slices the strict kernel pass leaves take the compiled adaptive cubature on other
    tetrahedra than the reference's (``sliced._resolve``), whose degree-19 / degree-15 difference is another bar,
    and the reference's go through the S = 3 batch (``solid.pair_cubature``), whose bar also carries the slice's input
    conditioning (its vertices against its planes), which the compiled route leaves to the pair's
    ``input_conditioning``: the reference bars are up to 1.7 x the compiled ones (2026-12-07; 5 % before). The
    compiled path's screen of negligible slices (``SKIP_SHARE``, tested against closed forms in test_highdim_sliced)
    is off here."""
    monkeypatch.setattr(sl, "SKIP_SHARE", 0.0)
    for data in regions:
        a = _run(data, False, monkeypatch)
        b = _run(data, True, monkeypatch)
        assert np.all(np.isfinite(a[0]))
        np.testing.assert_allclose(b[0], a[0], rtol=1e-14, atol=1e-14)
        np.testing.assert_allclose(b[1], a[1], rtol=0, atol=1e-12)
        np.testing.assert_allclose(b[2], a[2], rtol=0, atol=1e-12)
        assert np.all(b[3] <= 1.05 * a[3] + 1e-15) and np.all(a[3] <= 2.5 * b[3]), (a[3], b[3])


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
    slicing along the direction to y* (``TOWARD_CLOSEST``, the earlier rule) makes thin slices that sent the numpy
    route (``USE_COMPILED_SLICES = False``) to the nested S = 3 quadrature (since 2026-12-07 to the S = 3 batch's
    ``pair_cubature``); the compiled route's adaptive cubature
    (``sliced._resolve``) takes them, and the generic direction makes none. The routes slice the region
    differently (different slices, panels and bars), and agree within the sum of their bars."""
    import engine.gaussian.polytopes as pt
    from engine.distributions import posterior_region_params, region_gaussians

    net = engine.random_network([4, 8, 8, 5], rng=0, cov_x=0.1)
    part = partition(net)
    rg = region_gaussians(net, part)
    mu, _ = posterior_region_params(net, part, net.sample(100, rng=1)[3:4], rg)
    data = sl.whitened(part[647].polytope, np.linalg.cholesky(rg.cov[647]), mu[:1, 647])
    assert np.linalg.norm(sl.closest_distance(data[0], data[1])[0]) > 0.5
    calls, cub = [], []
    real, real_cub = pt._polytope_moments_single, pt.pair_cubature
    monkeypatch.setattr(pt, "_polytope_moments_single", lambda *a, **k: calls.append(1) or real(*a, **k))
    monkeypatch.setattr(pt, "pair_cubature", lambda *a, **k: cub.append(len(a[1])) or real_cub(*a, **k))
    out = {}
    for toward, compiled in ((True, False), (True, True), (False, True)):
        monkeypatch.setattr(sl, "TOWARD_CLOSEST", toward)
        monkeypatch.setattr(sl, "USE_COMPILED_SLICES", compiled)
        calls.clear()
        cub.clear()
        out[toward, compiled] = sl.sliced_moments(*data, moments=2), len(calls), sum(cub)
    (a, n_old, c_old), (c, n_cub, _), (b, n_new, _) = out[True, False], out[True, True], out[False, True]
    # the numpy route's thin slices are flagged; since the S = 3 batch's compiled cubature (pair_cubature) they no
    # longer reach the nested quadrature there either
    assert c_old >= 1 and n_old == 0 and n_cub == 0 and n_new == 0
    assert abs(np.expm1(a[0][0] - c[0][0])) <= a[3][0] + c[3][0]
    assert abs(np.expm1(a[0][0] - b[0][0])) <= a[3][0] + b[3][0]
    assert max(a[3][0], b[3][0]) < 1e-10
    np.testing.assert_allclose(b[1], a[1], atol=1e-9)
    np.testing.assert_allclose(b[2], a[2], atol=1e-8)


def _mp_box(lo, hi):
    """Per axis, mpmath at 40 digits: log mass, mean and variance of N(0, 1) on [lo, hi] (the oracle)."""
    import mpmath as mp

    mp.mp.dps = 40
    out = []
    for a, b in zip(lo, hi):
        a, b = mp.mpf(a), mp.mpf(b)
        Z = mp.ncdf(b) - mp.ncdf(a)
        m = (mp.npdf(a) - mp.npdf(b)) / Z
        v = 1 + (a * mp.npdf(a) - b * mp.npdf(b)) / Z - m * m
        out.append((float(mp.log(Z)), float(m), float(v)))
    return np.array(out)


def _rotation(seed):
    Q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((3, 3)))
    return Q


def _box_polytope(lo, hi, R):
    """The box [lo, hi] (axis-aligned in u) in coordinates y = R u."""
    from engine.polytope import Polytope

    corners = np.array(np.meshgrid(*zip(lo, hi), indexing="ij")).reshape(3, -1).T
    return Polytope(np.vstack([R.T, -R.T]), np.concatenate([hi, -lo]), corners @ R.T, np.zeros((0, 3)),
                    np.zeros((0, 3)))


def _tet_polytope(V):
    """The tetrahedron of vertices ``V`` (4, 3) as a polytope (outward unit normals)."""
    from engine.polytope import Polytope

    H, c = [], []
    for drop in range(4):
        face = np.delete(V, drop, axis=0)
        n = np.cross(face[1] - face[0], face[2] - face[0])
        n /= np.linalg.norm(n)
        if n @ (V[drop] - face[0]) > 0:
            n = -n
        H.append(n)
        c.append(n @ face[0])
    return Polytope(np.array(H), np.array(c), V, np.zeros((0, 3)), np.zeros((0, 3)))


BOXES = [  # (lo, hi): a unit box at the mean, a small one in the tail, a needle 5.6 long and 0.02 x 0.006 thin,
    # the same needle further out (|y| up to 8: the span rule of cubature_moments gives up on both needles)
    ([-0.5, -0.4, -0.6], [0.5, 0.7, 0.3]),
    ([3.0, -0.05, 1.0], [3.1, 0.05, 1.1]),
    ([-0.5, 2.0, 0.3], [5.1, 2.02, 0.306]),
    ([1.0, 4.0, -3.0], [6.6, 4.02, -2.994]),
]


@pytest.mark.parametrize("lo, hi", BOXES)
def test_adaptive_cubature_matches_rotated_boxes(lo, hi):
    """``solid.cubature.adaptive_cubature`` (the S = 4 slices' cubature) on rotated 3-D boxes against mpmath's
    closed forms (product of 1-D truncated normals): log mass within its bar and 1e-12, mean and covariance within
    1e-9 of the box's spread; the needles need the bisection (``cubature_moments``' span rule refuses them)."""
    from engine.gaussian.solid import SolidGeometry, cubature_moments
    from engine.gaussian.solid import cubature as cub

    lo, hi = np.array(lo), np.array(hi)
    R = _rotation(3)
    p = _box_polytope(lo, hi, R)
    geo = SolidGeometry([p], np.eye(3)[None])
    lm, mean, cov, rel, good = cub.adaptive_cubature(geo.arrays, [0], [1.0], 2)
    ref = _mp_box(lo, hi)
    exact_lm = ref[:, 0].sum()
    exact_mean = R @ ref[:, 1]
    exact_cov = R @ np.diag(ref[:, 2]) @ R.T
    assert good[0]
    err = abs(np.expm1(lm[0] - exact_lm))
    assert err <= rel[0] + 1e-15 and err < 1e-12
    spread = np.sqrt(np.trace(exact_cov))
    np.testing.assert_allclose(mean[0], exact_mean, rtol=0, atol=1e-9 * spread)
    np.testing.assert_allclose(cov[0], exact_cov, rtol=0, atol=1e-9 * spread**2)
    needle = hi[0] - lo[0] > 5.0
    assert cubature_moments(p, np.eye(3), np.zeros((1, 3)))[4][0] != needle


def test_adaptive_cubature_on_tetrahedra_adds_up_to_the_box():
    """A far box cut into the 6 tetrahedra of its Kuhn triangulation (each takes the one-tetrahedron branch of
    ``_tetrahedra``): their masses add up to the box's (mpmath closed form) within the sum of their bars, and their
    weighted means to its mean."""
    from engine.gaussian.solid import SolidGeometry
    from engine.gaussian.solid import cubature as cub

    lo, hi = np.array([1.5, -0.3, 0.8]), np.array([2.1, 0.4, 1.0])
    R = _rotation(7)
    tets = []
    for perm in ((0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)):
        u, pts = np.zeros(3), [np.zeros(3)]
        for k in perm:
            u = u.copy()
            u[k] = 1.0
            pts.append(u)
        V = (lo + np.array(pts) * (hi - lo)) @ R.T
        tets.append(_tet_polytope(V))
    geo = SolidGeometry(tets, np.broadcast_to(np.eye(3), (6, 3, 3)))
    assert geo.ok.all()
    T = np.zeros((8, 4, 3))
    assert all(cub._tetrahedra(geo.arrays, r, T, np.zeros((0, 2, 3))) == 1 for r in range(6))
    lm, mean, _, rel, good = cub.adaptive_cubature(geo.arrays, np.arange(6), np.ones(6), 2)
    assert good.all()
    ref = _mp_box(lo, hi)
    total = np.logaddexp.reduce(lm)
    assert abs(np.expm1(total - ref[:, 0].sum())) <= np.sum(rel * np.exp(lm - total)) + 1e-15
    np.testing.assert_allclose(np.exp(lm - total) @ mean, R @ ref[:, 1], atol=1e-10)


def test_slice_ends_are_the_reference_slices_vertices(regions):
    """The ends ``slice_ends`` gives the cubature (crossings of the 4-D edges, and of the lines from vertices along
    rays for the unbounded regions' bounded slices) are vertices of the reference's ``Polytope`` slices
    (``_Problem.slice``, the points the numpy path hands to the hull) to 1e-12, and each lies on the three slice
    planes that define it."""
    from engine.gaussian.highdim.slice_kernel import slice_ends

    checked = 0
    for data in regions:
        prob = _problem(data)
        M = prob.D.shape[0]
        pidx = np.repeat(np.arange(M), 15)
        nodes = np.concatenate([np.linspace(max(lo, -6.0), min(hi, 6.0), 17)[1:-1] for lo, hi in zip(prob.lo, prob.hi)])
        geo = slice_geometry(prob, pidx, nodes)
        g = geo.arrays
        rows = np.array([k for k in np.nonzero(geo.status == REGULAR)[0]
                         if np.all((g.has_hi[k] & g.has_lo[k])[g.evalid[k]])], dtype=np.intp)
        ends, ok = slice_ends(prob, pidx, nodes, geo, rows)
        assert ok.all()
        for n, k in enumerate(rows):
            verts = prob.slice(pidx[k], nodes[k]).vertices
            E = int(g.evalid[k].sum())
            for e in range(E):
                for s, third in ((0, g.khi[k, e]), (1, g.klo[k, e])):
                    p = ends[n, e, s]
                    assert np.min(np.linalg.norm(verts - p, axis=1)) < 1e-12
                    for f in (g.ei[k, e], g.ej[k, e], third):
                        assert abs(g.Nrm[k, f] @ p - g.cn[k, f]) < 1e-11
                    checked += 1
    assert checked > 1000


def test_adaptive_cubature_refuses_unbounded_regions():
    """An unbounded region (an orthant: edges without a far end) is not the cubature's: ``good`` False, no value."""
    from engine.gaussian.solid import SolidGeometry
    from engine.gaussian.solid import cubature as cub
    from engine.polytope import Polytope

    R = _rotation(2)
    p = Polytope(-R.T, np.array([-1.0, 0.5, 0.2]), (np.array([[1.0, -0.5, -0.2]]) @ R.T), R.copy(), np.zeros((0, 3)))
    geo = SolidGeometry([p], np.eye(3)[None])
    assert geo.ok[0]
    lm, _, _, _, good = cub.adaptive_cubature(geo.arrays, [0], [1.0], 2)
    assert not good[0] and lm[0] == -np.inf


@pytest.mark.parametrize("moments", [1, 2])
def test_resolve_matches_the_polytope_route(monkeypatch, moments):
    """Region 647 of ``random_network([4, 8, 8, 5], rng=0, cov_x=0.1)`` at data point 3 sliced along y* (thin
    slices the strict kernel pass leaves): ``sliced._resolve`` (loosened kernel and compiled adaptive cubature on the
    compiled slices) against the polytope route before it (``COMPILED_RESOLVE = False``: ``integrate_pairs`` with
    its S = 3 batch fallbacks, ``solid.pair_cubature`` and the nested quadrature), with the mean and with the
    covariance (the mass alone leaves no slice to resolve here): log masses within the sum of the bars, means to 1e-9,
    covariances to 1e-8."""
    from engine.distributions import posterior_region_params, region_gaussians

    net = engine.random_network([4, 8, 8, 5], rng=0, cov_x=0.1)
    part = partition(net)
    rg = region_gaussians(net, part)
    mu, _ = posterior_region_params(net, part, net.sample(100, rng=1)[3:4], rg)
    data = sl.whitened(part[647].polytope, np.linalg.cholesky(rg.cov[647]), mu[:1, 647])
    monkeypatch.setattr(sl, "TOWARD_CLOSEST", True)
    rows = []
    real = sl._resolve
    monkeypatch.setattr(sl, "_resolve", lambda *a: rows.append(a[3].size) or real(*a))
    out = {}
    for compiled in (True, False):
        monkeypatch.setattr(sl, "COMPILED_RESOLVE", compiled)
        out[compiled] = sl.sliced_moments(*data, moments=moments)
    assert sum(rows) >= 10
    a, b = out[True], out[False]
    assert abs(np.expm1(a[0][0] - b[0][0])) <= a[3][0] + b[3][0] and a[3][0] < 1e-10
    if moments >= 1:
        np.testing.assert_allclose(a[1], b[1], atol=1e-9)
    if moments >= 2:
        np.testing.assert_allclose(a[2], b[2], atol=1e-8)
