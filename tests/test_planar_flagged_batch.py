"""The S = 2 kernel's flagged pairs by the numpy reference path in one call per facet count
(``polytopes._planar_flagged`` with per-row normals, ``planar.reference.planar_moments``) instead of one call per
region: the same numbers as the per-region calls (to rounding), and against mpmath (``polygon_moments_mp``, 40-digit
nested tanh-sinh quadrature of N(0, I_2) on each polygon; nothing of the engine's planar code)."""

import numpy as np
import pytest

import engine
from engine import distributions as dn
from engine.gaussian import polytopes as P
from engine.gaussian.planar import planar_edges, planar_log_mass, planar_moments
from engine.gaussian.planar.batch import batch_planar_pairs
from verify.oracles.quadrature import polygon_moments_mp


class _Req:
    def __init__(self, part, relative):
        self.polytopes = [r.polytope for r in part]
        self.moments = 2
        self.relative = relative


@pytest.fixture(scope="module")
def flagged():
    """Strict-accuracy kernel pass (no weight loosening) of a [2,16,16,32] net at 3 points: ~200 flagged pairs
    (origin outside thin regions, where the Owen-T sum cancels beyond 4e-12)."""
    net = engine.random_network([2, 16, 16, 32], rng=0, cov_x=0.1)
    part = engine.partition(net)
    X = net.sample(3, rng=1)
    rg, geo = dn._gaussians_and_geometry(net, part, True)
    mu, _ = dn.posterior_region_params(net, part, X, rg)
    pr, pn = np.nonzero(geo.ok[:, None] & np.ones((1, len(X)), dtype=bool))
    out, _ = batch_planar_pairs(geo, pr, mu[pn, pr], 2, None)
    assert out.flagged.sum() >= 100
    return part, geo, pr, out


def _copy(out):
    return out._replace(log_mass=out.log_mass.copy(), rel=out.rel.copy(), mean=out.mean.copy(), cov=out.cov.copy())


@pytest.mark.parametrize("relative", [True, False])
def test_flagged_batch_equals_per_region_calls(flagged, relative):
    part, geo, pr, out = flagged
    fl = out.flagged
    req = _Req(part, relative)
    new = _copy(out)
    P._planar_flagged(req, geo, new, pr, fl)
    old = _copy(out)
    for r in np.unique(pr[fl]):  # the per-region loop it replaced
        sel = np.nonzero(fl & (pr == r))[0]
        f = req.polytopes[r].H.shape[0]
        with np.errstate(invalid="ignore"):
            lm, m, c, rel = planar_moments(geo.Nrm[r, :f], out.D[sel, :f], 2, relative=relative)
        old.log_mass[sel], old.rel[sel] = lm, rel
        old.mean[sel] = np.where(np.isfinite(lm)[:, None], m, 0.0)
        old.cov[sel] = np.where(np.isfinite(lm)[:, None, None], c, 0.0)
    a, b = new.log_mass[fl], old.log_mass[fl]
    assert np.all(np.isfinite(a) == np.isfinite(b))
    fin = np.isfinite(b)
    assert np.all(np.abs(a[fin] - b[fin]) <= 1e-14 * np.maximum(1.0, np.abs(b[fin])))
    # the slices' bar (planar.reference.slice_conditioning, a flat 1e-13 until 2026-12-08) is computed from the outer
    # nodes by numpy's vectorised loops: like the log mass, its last bit may depend on a row's place in the call (51 of
    # 195 one ulp apart)
    assert np.all(np.abs(new.rel[fl] - old.rel[fl]) <= 1e-14 * old.rel[fl])
    sd = np.sqrt(np.minimum(old.cov[fl][:, 0, 0], old.cov[fl][:, 1, 1]))[fin]
    # the means lie up to ~4000 whitened units out: rounding of |mean| (4000 eps) is up to 1e-11 sd here
    scale = np.maximum(sd, 1e-3 * np.abs(old.mean[fl][fin]).max(axis=1))
    assert np.all(np.abs(new.mean[fl] - old.mean[fl])[fin].max(axis=1) <= 1e-9 * scale)
    assert np.all(np.abs(new.cov[fl] - old.cov[fl])[fin].max(axis=(1, 2)) <= 1e-8 * sd * sd)


def test_flagged_batch_against_mpmath(flagged):
    """Four flagged pairs (the widest spread of masses) against 40-digit quadrature: log mass 1e-12 relative, mean
    1e-9 and covariance 1e-8 of the conditional standard deviations (tests/test_s2_against_quadrature.py's), the mean
    also up to its float64 rounding floor."""
    part, geo, pr, out = flagged
    fl = out.flagged
    new = _copy(out)
    P._planar_flagged(_Req(part, True), geo, new, pr, fl)
    idx = np.nonzero(fl & np.isfinite(new.log_mass))[0]
    pick = idx[np.argsort(new.log_mass[idx])[np.linspace(0, idx.size - 1, 4).astype(int)]]
    for p in pick:
        f = int(geo.valid[pr[p]].sum())
        rlm, rm, rC, err = polygon_moments_mp(geo.Nrm[pr[p], :f], out.D[p, :f])
        assert err < 1e-20
        sd = np.sqrt(np.diag(rC))
        assert abs(new.log_mass[p] - rlm) <= 1e-12 * max(1.0, abs(rlm)), (p, new.log_mass[p], rlm)
        # plus the rounding floor of a mean ~4000 whitened units out (64 eps |mean|: 6e-11 there, while the sd of a
        # thin far polygon is ~1e-4); the per-region reference path was measured at the same 1e-14 of |mean|
        floor = 64 * np.finfo(float).eps * np.abs(rm)
        assert np.all(np.abs(new.mean[p] - rm) <= 1e-9 * sd + floor), (p, new.mean[p], rm)
        assert np.all(np.abs(new.cov[p] - rC) <= 1e-8 * np.outer(sd, sd)), (p, new.cov[p], rC)


def test_per_row_normals_equal_one_polygon_calls():
    """planar_edges / planar_log_mass with (M, F, 2) normals: row m gives what a call with its own (F, 2) normals
    gives (two different polygons interleaved, zero rows and a boundary point included)."""
    rng = np.random.default_rng(3)
    polys = []
    for _ in range(2):
        ang = np.sort(rng.uniform(0, 2 * np.pi, 5))
        polys.append(np.stack([np.cos(ang), np.sin(ang)], axis=1))
    polys[1][4] = 0.0  # a zero row (the constraint 0 <= d)
    D = rng.normal(size=(8, 5)) * 3.0
    D[:, 4] = np.abs(D[:, 4])
    D[3, 0] = 0.0  # origin on an edge line
    which = np.arange(8) % 2
    Nrm = np.stack([polys[w] for w in which])
    e_rows = planar_edges(Nrm, D)
    lm_rows, rel_rows = planar_log_mass(Nrm, D)
    for w in (0, 1):
        sel = which == w
        e_one = planar_edges(polys[w], D[sel])
        for a, b in zip(e_rows, e_one):
            np.testing.assert_array_equal(np.asarray(a)[sel], b)  # NaN where it was NaN
        lm, rel = planar_log_mass(polys[w], D[sel])
        assert np.allclose(lm_rows[sel], lm, rtol=1e-15, atol=0, equal_nan=True)
        assert np.array_equal(np.isfinite(lm_rows[sel]), np.isfinite(lm))
