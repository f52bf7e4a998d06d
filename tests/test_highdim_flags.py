"""S = 4 flags for the batch (``shape_kernel.cone_shape_checked``, ``sliced.SlicedGeometry.cone_shape``): the compiled
flags where every decision of the construction is clear of its threshold, ``cones.cone_shape`` (numpy) otherwise. On
partition regions and on degenerate ones (thin slivers, coincident vertices, rays, a vertex a hair off a facet, nearly
parallel facets, lineality) the checked flags are numpy's: the same combinatorics and numbers to ~1e-12, or numpy's own
arrays / exception where a decision is a close call; the masses computed on them agree within their bars or both
routes flag the pair. The batch's reuse of ``budget.pair_bounds``' closest points and the threaded
``budget.raised_lower`` keep the bits."""

from __future__ import annotations

import numpy as np
import pytest

import engine
import engine.gaussian.highdim.sliced as sl
from engine.distributions import posterior_region_params, region_gaussians
from engine.gaussian.highdim import budget as bd
from engine.gaussian.highdim.cones import cone_log_mass, cone_shape, consistent
from engine.gaussian.highdim.shape_kernel import _shape_clear, cone_shape_checked, cone_shape_compiled
from engine.partition import partition


def _same_flags(a, b):
    """``a`` and ``b`` (ConeArrays) equal as ``tests/test_highdim_cones5.test_compiled_flags_equal_cone_shape`` has
    it (integers equal, floats to 1e-12, the edge directions and ``ew``, ``eres``, linear in them, up to sign, the
    inverse Gram matrices to 1e-10 relative), except that an edge's numbers may differ by 64 eps times the condition
    number of its three normals' Gram matrix (LAPACK's SVD and inverse against the cross product and the adjugate:
    an edge of a partition region with three nearly dependent normals, condition ~1e7, differs by 1.8e-9 relative)."""
    eps = np.finfo(float).eps
    kappa = np.array([np.linalg.cond(g) for g in a.eginv]) if a.eginv.size else np.zeros(0)
    for name, x, y in zip(a._fields, a, b):
        x, y = np.asarray(x), np.asarray(y)
        assert x.shape == y.shape, name
        if name == "eres":  # N_3 u of each route's own u, accurate (Dot2): both near 0, the cross product's a bit less
            for e in range(x.shape[0]):
                assert np.abs(y[e]).max() <= max(64.0 * eps * kappa[e], 1e-13), (e, y[e], x[e])
        elif name in ("eu", "ew", "eginv"):
            sign = np.sign(np.einsum("ij,ij->i", a.eu, b.eu)) if name != "eginv" else np.ones(x.shape[0])
            for e in range(x.shape[0]):
                big = np.abs(x[e][np.isfinite(x[e])]).max(initial=0.0)
                atol = max(64.0 * eps * kappa[e] * big, 1e-12 * big, 1e-14)
                np.testing.assert_allclose(sign[e] * y[e], x[e], rtol=1e-10, atol=atol, err_msg=name)
        elif x.dtype.kind == "f":
            np.testing.assert_allclose(y, x, rtol=1e-12, atol=1e-14, err_msg=name)
        else:
            np.testing.assert_array_equal(y, x, err_msg=name)


def _bitwise(a, b):
    return all(np.asarray(x).tobytes() == np.asarray(y).tobytes() for x, y in zip(a, b))


def _outcome(fn, *args):
    """``fn(*args)`` or the type of the exception it raised."""
    try:
        return fn(*args)
    except Exception as exc:  # noqa: BLE001 - the type is compared between the two routes
        return type(exc)


def _rotation(seed):
    return np.linalg.qr(np.random.default_rng(seed).standard_normal((4, 4)))[0]


def _box(lo, hi, Q):
    """A box ``[lo, hi]`` in the axes of ``Q`` (y = Q u), whitened: ``(Nrm, D0, Yv0, Yr)``."""
    corners = np.array(np.meshgrid(*[[lo[i], hi[i]] for i in range(4)], indexing="ij")).reshape(4, -1).T @ Q.T
    return np.vstack([Q.T, -Q.T]), np.concatenate([hi, -lo]), corners, np.zeros((0, 4))


def _clear(args):
    """:func:`shape_kernel._shape_clear` of ``(Nrm, D0, Yv0, Yr)``."""
    N, D, V, R = (np.ascontiguousarray(a, dtype=np.float64) for a in args)
    return bool(V.size) and bool(_shape_clear(N, D, V.reshape(-1, 4), R.reshape(-1, 4)))


LO, HI = np.array([-1.0, -0.5, 0.2, -2.0]), np.array([0.7, 1.5, 2.0, 0.1])


def _rank_threshold(Q):
    """``cones._facet_dims``' rank threshold ``1e-9 max(|Yv0|, 1)`` of the box [LO, HI] in the axes of ``Q``."""
    return 1e-9 * max(np.abs(_box(LO, HI, Q)[2]).max(), 1.0)


def _sliver(w, Q):
    """The box [LO, HI] with its third side ``w`` wide."""
    hi = HI.copy()
    hi[2] = LO[2] + w
    return _box(LO, hi, Q)


def _bent_box(Q):
    """The box [LO, HI] cut by ``u_0 + t u_1 <= HI_0 + t m`` (``m`` the middle of its second side, ``t = sqrt(2e-12)``):
    its facet ``u_0 <= HI_0`` bends by ``|cos| = 1 - 1e-12`` (the ridge test's threshold) along ``u_1 = m``. Vertices
    by brute force over the 4-subsets of the ten planes."""
    from itertools import combinations

    t, m = np.sqrt(2e-12), 0.5 * (LO[1] + HI[1])
    A = np.vstack([np.eye(4), -np.eye(4), [1.0, t, 0.0, 0.0]])
    b = np.concatenate([HI, -LO, [HI[0] + t * m]])
    verts = []
    for rows in combinations(range(A.shape[0]), 4):
        sub = list(rows)
        if abs(np.linalg.det(A[sub])) < 1e-14:
            continue
        u = np.linalg.solve(A[sub], b[sub])
        if np.all(A @ u <= b + 1e-12) and not any(np.allclose(u, w, rtol=0, atol=1e-13) for w in verts):
            verts.append(u)
    norm = np.linalg.norm(A, axis=1)
    return (A / norm[:, None]) @ Q.T, b / norm, np.array(verts) @ Q.T, np.zeros((0, 4))


def _degenerate_cases():
    """Named degenerate and near-degenerate regions ``(Nrm, D0, Yv0, Yr)`` (whitened; the box in the axes of a
    rotation, so no coordinate is special)."""
    Q = _rotation(3)
    cases = {"box": _box(LO, HI, Q)}
    for w in (1e-5, 1e-6, 1e-8, 1e-9, 3e-9, 1e-10, 1e-13):  # slivers: facet ranks near the threshold 1e-9 max|v|
        cases[f"sliver {w:g}"] = _sliver(w, Q)
    cases["sliver between pivot and singular value"] = _sliver(0.7 * _rank_threshold(Q), Q)
    N, D, V, R = _box(LO, HI, Q)
    cases["coincident vertex"] = (N, D, np.vstack([V, V[:1]]), R)
    cases["near-coincident vertex"] = (N, D, np.vstack([V, V[:1] + 1e-10]), R)
    f0 = int(np.argmax(np.abs(V[0] @ N.T - D) < 1e-12))  # a facet of corner 0 (|d| = 1: tolerance 2e-9)
    for eps in (1.5e-9, 3e-9, 1e-7):  # corner 0 a hair off that facet
        Vb = V.copy()
        Vb[0] += eps * N[f0]
        cases[f"vertex off by {eps:g}"] = (N, D, Vb, R)
    cases["duplicate facet"] = (np.vstack([N, N[:1]]), np.concatenate([D, D[:1]]), V, R)
    cases["nearly parallel facet"] = _bent_box(Q)
    a = np.array([-1.0, 0.5, -0.3, 0.2])  # the orthant {u >= a} cut by u_0 + u_1 <= 3: three vertices, two rays
    top = 3.0 - a[0] - a[1]
    Nu = np.vstack([-np.eye(4), np.array([1.0, 1.0, 0.0, 0.0]) / np.sqrt(2.0)])
    Vu = np.array([a, a + [top, 0, 0, 0], a + [0, top, 0, 0]])
    cases["rays"] = (Nu @ Q.T, np.concatenate([-a, [3.0 / np.sqrt(2.0)]]), Vu @ Q.T, np.eye(4)[2:] @ Q.T)
    cases["rays, apex cone"] = (-Q.T, -a, (a @ Q.T)[None], Q.T.copy())
    # a wedge of opening 1e-9: u_0 >= a_0, u_0 + 1e-9 u_1 <= a_0 + 1e-9 a_1, u_2 >= a_2, u_3 >= a_3 (one vertex,
    # four rays; two facets antiparallel to rounding)
    n4 = np.array([1.0, 1e-9, 0.0, 0.0]) / np.hypot(1.0, 1e-9)
    Nw = np.vstack([-np.eye(4)[[0, 2, 3]], n4])
    Dw = np.concatenate([-a[[0, 2, 3]], [n4 @ a]])
    Rw = np.vstack([[0.0, -1.0, 0.0, 0.0], np.array([1e-9, -1.0, 0.0, 0.0]) / np.hypot(1.0, 1e-9), np.eye(4)[2:]])
    cases["thin wedge"] = (Nw @ Q.T, Dw, (a @ Q.T)[None], Rw @ Q.T)
    cases["lineality"] = (np.array([[1.0, 0, 0, 0], [-1.0, 0, 0, 0]]) @ Q.T, np.array([1.0, 1.0]), np.zeros((0, 4)),
                          np.eye(4)[1:] @ Q.T)
    return cases


def _partition_regions(k):
    """The first ``k`` regions (vertices, no lineality) of ``random_network([4, 8, 8, 5], rng=0)``, whitened about
    their vertices' centroid as ``SlicedGeometry.cone_shape`` does."""
    net = engine.random_network([4, 8, 8, 5], rng=0, cov_x=0.1)
    part = partition(net)
    rg = region_gaussians(net, part)
    geo = sl.SlicedGeometry([r.polytope for r in part], rg.cov)
    out = []
    for r in np.nonzero(geo.ok)[0][:k].tolist():
        p = part[r].polytope
        Nrm, D, Yv, Yr = sl.whitened(p, geo.chol[r], p.vertices.mean(axis=0)[None])
        out.append((Nrm, D[0], Yv[0], Yr))
    return out


def test_checked_flags_are_numpys_on_partition_regions():
    """On 150 regions of the [4, 8, 8, 5] partition the checked flags equal ``cones.cone_shape``'s (bounded and
    unbounded regions) and nearly all take the compiled route."""
    compiled = 0
    for args in _partition_regions(150):
        _same_flags(cone_shape(*args), cone_shape_checked(*args))
        compiled += _clear(args)
    assert compiled >= 140


@pytest.mark.parametrize("name", list(_degenerate_cases()))
def test_checked_flags_on_degenerate_regions(name):
    """Each degenerate region: the checked route gives numpy's flags (same combinatorics, numbers to 1e-12) or, where
    a decision is a close call, numpy's arrays bit for bit or numpy's exception; never other flags."""
    args = _degenerate_cases()[name]
    want, got = _outcome(cone_shape, *args), _outcome(cone_shape_checked, *args)
    if isinstance(want, type):
        assert got is want, (name, got, want)
        return
    assert not isinstance(got, type), (name, got)
    _same_flags(want, got)
    if not _clear(args):
        assert _bitwise(want, got), name  # a close call: numpy's own flags


def test_close_calls_are_detected():
    """The cases built on a threshold are close calls (their flags come from numpy), the clear ones are not."""
    cases = _degenerate_cases()
    for name in ("sliver 1e-06", "sliver 1e-08", "sliver 1e-09", "sliver 3e-09", "sliver 1e-10",
                 "sliver between pivot and singular value", "vertex off by 1.5e-09", "vertex off by 3e-09",
                 "near-coincident vertex", "nearly parallel facet", "thin wedge"):
        assert not _clear(cases[name]), name
    for name in ("box", "sliver 1e-05", "sliver 1e-13", "rays", "rays, apex cone", "coincident vertex",
                 "vertex off by 1e-07", "duplicate facet"):
        assert _clear(cases[name]), name


def test_unchecked_compiled_flags_differ_on_a_close_call():
    """Why the check: a sliver whose third Gram-Schmidt pivot (its width w = 0.7 thr) lies below the rank threshold
    while its third singular value (~2 w: four vertices a side) lies above makes the unchecked compiled flags drop
    facets numpy keeps; the checked flags are numpy's."""
    args = _degenerate_cases()["sliver between pivot and singular value"]
    a, b = cone_shape(*args), cone_shape_compiled(*args)
    assert not np.array_equal(a.fvalid, b.fvalid)
    assert _bitwise(a, cone_shape_checked(*args))


@pytest.mark.parametrize("name", ["box", "sliver 1e-06", "sliver 1e-10", "coincident vertex", "rays",
                                  "rays, apex cone", "vertex off by 1e-07", "near-coincident vertex", "thin wedge"])
def test_masses_on_degenerate_regions_agree_or_are_flagged(name):
    """``cones.cone_log_mass`` on the checked flags and on numpy's at three means: both flagged, or both certified
    and within the sum of their bars (never a certified number on one route that the other contradicts)."""
    N, D0, V0, R = _degenerate_cases()[name]
    rng = np.random.default_rng(7)
    shift = np.vstack([np.zeros(4), rng.normal(0.0, 1.0, (2, 4))])
    D = D0[None] - shift @ N.T
    Yv = V0[None] - shift[:, None, :]
    outs = []
    for build in (cone_shape, cone_shape_checked):
        shape = _outcome(build, N, D0, V0, R)
        if isinstance(shape, type):
            outs.append(None)
            continue
        lm, rel, fl = cone_log_mass(N, D, Yv, R, shape=shape)
        outs.append((lm, rel, fl | (not consistent(shape, V0.shape[0]))))
    if outs[0] is None:
        assert outs[1] is None
        return
    (la, ra, fa), (lb, rb, fb) = outs
    np.testing.assert_array_equal(fa, fb)
    ok = ~fa
    assert np.all(np.abs(la[ok] - lb[ok]) <= ra[ok] + rb[ok] + 1e-14), (la, lb, ra, rb)


def test_geometry_flags_checked_against_numpy_flags(monkeypatch):
    """``SlicedGeometry.cone_shape`` with ``COMPILED_FLAGS`` and without: the same flags on 60 partition regions."""
    net = engine.random_network([4, 8, 8, 5], rng=0, cov_x=0.1)
    part = partition(net)
    rg = region_gaussians(net, part)
    polys = [r.polytope for r in part]
    regs = np.nonzero(sl.SlicedGeometry(polys, rg.cov).ok)[0][::37][:60].tolist()
    monkeypatch.setattr(sl, "COMPILED_FLAGS", False)
    old = sl.SlicedGeometry(polys, rg.cov)
    want = [old.cone_shape(r) for r in regs]
    monkeypatch.setattr(sl, "COMPILED_FLAGS", True)
    new = sl.SlicedGeometry(polys, rg.cov)
    for r, w in zip(regs, want):
        g = new.cone_shape(r)
        assert (g is None) == (w is None)
        if w is not None:
            _same_flags(w, g)


def _s4(points=3):
    net = engine.random_network([4, 8, 8, 5], rng=0, cov_x=0.1)
    return net, net.sample(points, rng=1), partition(net)


def test_kept_closest_points_give_the_same_bits(monkeypatch):
    """``sliced._region_cones`` takes the closest points ``budget.pair_bounds`` kept for the block: evaluate's bits are
    those of computing them again (the geometry's store disabled), and the store is empty after the batch."""
    net, X, part = _s4()
    a = engine.evaluate(net, X, part=part)
    monkeypatch.setattr(sl.SlicedGeometry, "keep_closest", lambda self, *args: None)
    monkeypatch.setattr(sl.SlicedGeometry, "kept_closest", lambda self, r, rows, means, D: (
        np.full(rows.size, np.nan), np.zeros(rows.size, dtype=bool)))
    b = engine.evaluate(net, X, part=part)
    for x, y in ((a.log_marginal, b.log_marginal), (a.log_marginal_error, b.log_marginal_error),
                 (a.posterior_mean, b.posterior_mean), (a.posterior_cov, b.posterior_cov)):
        assert x.tobytes() == y.tobytes()


def test_kept_closest_matches_only_equal_means_and_offsets():
    """:meth:`SlicedGeometry.kept_closest` returns a kept bound only for the same point AND the same bits of its mean
    and of its offsets ``D`` (one ulp off in one entry is a miss)."""
    geo = sl.SlicedGeometry([], np.zeros((0, 4, 4)))
    rows = np.array([1, 4, 6, 8])
    means = np.arange(16.0).reshape(4, 4)
    D = np.arange(20.0).reshape(4, 5)
    geo.keep_closest(5, rows, means, D, np.array([-1.0, -2.0, -3.0, -4.0]))
    q = np.array([0, 4, 6, 7, 8, 1])
    qm = np.vstack([np.zeros(4), means[1], np.nextafter(means[2], np.inf), np.ones(4), means[3], means[0]])
    qD = np.vstack([D[0], D[1], D[2], D[3], np.nextafter(D[3], -np.inf), D[0]])
    lb, hit = geo.kept_closest(5, q, qm, qD)
    np.testing.assert_array_equal(hit, [False, True, False, False, False, True])
    np.testing.assert_array_equal(lb[hit], [-2.0, -1.0])
    assert np.isnan(lb[~hit]).all()
    assert not geo.kept_closest(4, q, qm, qD)[1].any()
    geo.drop_closest()
    assert not geo.kept_closest(5, q, qm, qD)[1].any()


def test_fingerprints_see_one_ulp_in_any_entry():
    """:func:`sliced._fingerprints`: a row changed by one ulp (or a sign of zero) in any single entry gets another
    fingerprint."""
    rng = np.random.default_rng(3)
    means, D = rng.normal(size=(1, 4)), rng.normal(size=(1, 17))
    D[0, 5] = 0.0
    base = sl._fingerprints(means, D)[0]
    for j in range(21):
        m2, d2 = means.copy(), D.copy()
        if j < 4:
            m2[0, j] = np.nextafter(m2[0, j], np.inf)
        else:
            d2[0, j - 4] = -0.0 if j - 4 == 5 else np.nextafter(d2[0, j - 4], -np.inf)
        assert sl._fingerprints(m2, d2)[0] != base, j


def test_raised_lower_same_bits_with_1_and_2_threads(monkeypatch):
    """``budget.raised_lower`` runs its regions in worker threads: the same bits with 1 and 2 threads, and the same as
    the region loop it replaced (``cone_log_mass`` per region, filed in place)."""
    net, X, part = _s4(4)
    rg = region_gaussians(net, part)
    mu, log_norm = posterior_region_params(net, part, X, rg)
    geo = sl.SlicedGeometry([r.polytope for r in part], rg.cov)
    score = np.where(geo.ok[None], log_norm, -np.inf)
    top = bd._top(score, 24)
    lower = np.full(X.shape[0], -np.inf)
    want = np.full(top.shape, -np.inf)
    for r in np.nonzero(top.any(axis=0) & geo.ok)[0].tolist():
        rows = np.nonzero(top[:, r] & np.isfinite(log_norm[:, r]))[0]
        Nrm, D, Yv, Yr = geo.whitened(r, mu[rows, r])
        lm, rel, fl = cone_log_mass(Nrm, D, Yv, Yr, shape=geo.cone_shape(r))
        good = ~fl & np.isfinite(lm) & (rel < 0.5)
        with np.errstate(invalid="ignore", divide="ignore"):
            want[rows, r] = np.where(good, log_norm[rows, r] + lm + np.log1p(-np.minimum(rel, 0.5)), -np.inf)
    from scipy.special import logsumexp

    expect = np.maximum(lower, logsumexp(want, axis=1))
    assert np.isfinite(expect).all()
    for threads in ("1", "2"):
        monkeypatch.setenv("DGNEXACT_THREADS", threads)
        got = bd.raised_lower(part, mu, log_norm, top, lower, geo)
        assert got.tobytes() == expect.tobytes(), threads
