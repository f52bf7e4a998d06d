"""The compiled S = 2 kernel (``planar.kernel``) against the numpy reference path, branch by branch.

Oracles: ``interval.standard_interval_moments`` (itself checked against 60-digit mpmath in
test_interval.py), ``planar.reference._edge_log_B`` and ``planar.planar_moments`` (checked against mpmath in
test_s2_against_quadrature.py). The two implementations follow the same rules, so they must agree to
rounding: 1e-13 in each 1-D and edge log mass, each polygon log mass within the sum of the two paths'
error bounds (the edge sums may cancel), 1e-12 in means and covariances (whitened units).
"""

import mpmath as mp
import numpy as np
import pytest

from engine.gaussian.interval import standard_interval_moments
from engine.gaussian.planar import kernel as K
from engine.gaussian.planar.batch import RegionGeometry, batch_planar_moments
from engine.gaussian.planar.reference import _edge_log_B, cancels, planar_moments
from engine.network import random_network
from engine.partition import partition
from engine.polytope import Polytope


def _interval_cases():
    rng = np.random.default_rng(0)
    lo = [-np.inf, -40.0, -5.0, -1.0, 0.0, 0.3, 3.9, 4.1, 8.0, 30.0, 1e3]
    cases = []
    for a in lo:
        for w in (1e-12, 1e-6, 1e-3, 0.1, 0.5, 2.0, 5.0, 40.0, np.inf):
            cases.append((a, a + w))
    cases += [(a, a + w) for a, w in zip(rng.normal(size=300) * 10, 10 ** rng.uniform(-9, 2, 300))]
    cases = np.array([c for c in cases if c[0] < c[1]], dtype=float)
    return np.concatenate([cases, -cases[:, ::-1]])  # reflected: both sides of the mode


def test_interval_kernel_matches_reference():
    """Every branch of the 1-D rule: narrow, straddling, tail, deep quadrature, deep half-line."""
    cases = _interval_cases()
    lz_ref, m_ref, v_ref = standard_interval_moments(cases[:, 0], cases[:, 1])
    got = np.array([K.interval_log_mass_mean(a, b) for a, b in cases])
    np.testing.assert_allclose(got[:, 0], lz_ref, rtol=1e-13, atol=1e-13)
    sd = np.sqrt(v_ref)
    assert np.all(np.abs(got[:, 1] - m_ref) <= 1e-12 * np.maximum(sd, 1e-300) + 1e-13 * np.abs(m_ref))


def _edges():
    rng = np.random.default_rng(1)
    h = np.concatenate([[0.0, 0.0, 1e-4, 0.03, 0.5, 7.9, 8.1, 20.0], 10 ** rng.uniform(-4, 1.5, 400)])
    out = []
    for hv in h:
        for lo, hi in ((-np.inf, np.inf), (-1.0, 2.0), (0.0, 3.0), (1e-3, 0.01), (0.02, np.inf), (2.0, 2.5),
                       (-np.inf, -30.0), (-0.04, -0.001), (rng.normal() * 5, None)):
            hi = lo + 10 ** rng.uniform(-6, 2) if hi is None else hi
            out.append((hv, lo, hi))
    return np.array(out)


def test_edge_kernel_matches_reference():
    """Owen's T (straddling, near-foot one-sided), the angle rule (h >= 8) and the graded s-rule (the kernel's by the
    vector exp, ``planar.kernel._graded_simd``; the reference's by libm, one node at a time)."""
    E = _edges()
    lb_ref, rel_ref = _edge_log_B(E[:, 0], E[:, 1], E[:, 2])
    got = np.array([K.edge_log_B(h, lo, hi) for h, lo, hi in E])
    fin = np.isfinite(lb_ref)
    assert np.array_equal(fin, np.isfinite(got[:, 0]))
    np.testing.assert_allclose(got[fin, 0], lb_ref[fin], rtol=1e-13, atol=1e-13)
    # the same bound, or the graded rule's plus the vector exp's ulps (kernel.GRADED_REL) where the kernel took it
    graded = got[:, 1] == K.GRADED_REL
    assert np.all(rel_ref[graded] == 1e-15) and 0 < graded.sum() < len(E)
    np.testing.assert_allclose(got[~graded, 1], rel_ref[~graded], rtol=1e-6)


@pytest.fixture(scope="module")
def regions():
    net = random_network([2, 8, 8, 3], rng=4)
    part = partition(net)
    rng = np.random.default_rng(5)
    R = len(part)
    A = rng.normal(size=(R, 2, 2)) * 0.4
    covs = A @ A.transpose(0, 2, 1) + 0.05 * np.eye(2)
    means = rng.normal(size=(R, 8, 2)) * 3.0
    means[:, 0] = 0.0
    means[:, 6] *= 10.0  # deep tails (masses far below 1e-100)
    means[:, 7] *= 100.0
    return [r.polytope for r in part], means, covs


def _kernel_pairs(polys, means, covs, log_weight_scale=np.inf):
    geo = RegionGeometry(polys, covs)
    R, N, _ = means.shape
    pr, pn = np.nonzero(np.broadcast_to(geo.ok[:, None], (R, N)))
    D = geo.cn[pr] - np.einsum("pk,pfk->pf", means[pr, pn], geo.Hn[pr])
    out = K.pair_planar_moments(geo, pr, D, 2, np.full(pr.size, log_weight_scale))
    return geo, pr, pn, D, out


def test_pair_kernel_matches_planar_moments(regions):
    """Whole pairs: mass, relative error bound, mean and covariance against ``planar.planar_moments``."""
    polys, means, covs = regions
    geo, pr, pn, D, (lm, rel, flagged, _, mean, cov, *_) = _kernel_pairs(polys, means, covs)
    assert geo.ok.mean() > 0.9
    redo = cancels(mean, cov, lm, rel)  # moments that cancel are redone by slices in both paths
    masses = moments = 0
    for r in np.unique(pr):
        sel = np.nonzero((pr == r) & ~flagged)[0]
        f = polys[r].H.shape[0]
        l_ref, m_ref, c_ref, rel_ref = planar_moments(geo.Nrm[r, :f], D[sel, :f], 2)
        # both within their own error bounds of the truth: cancelling edge sums up to 4e-12, small polygons
        # (cubature) up to their conditioning; the reference falls back to slices beyond 1e-12
        assert np.all(np.abs(lm[sel] - l_ref) <= rel[sel] + rel_ref + 1e-14 * np.abs(l_ref))
        edge = ~redo[sel]
        m_ref, c_ref = m_ref[edge], c_ref[edge]
        assert np.all(np.abs(mean[sel][edge] - m_ref) <= 1e-12 * (1 + np.abs(m_ref)))
        spread = 1 + np.abs(m_ref).max(axis=1) ** 2
        assert np.all(np.abs(cov[sel][edge] - c_ref) <= 1e-12 * spread[:, None, None])
        masses += sel.size
        moments += edge.sum()
    assert masses > 0.7 * pr.size and moments > 0.25 * pr.size  # the rest: flagged or cancelling


def test_kernel_threads_do_not_change_results(regions, monkeypatch):
    polys, means, covs = regions
    monkeypatch.setenv("DGNEXACT_THREADS", "1")
    monkeypatch.setattr(K, "_MIN_PAIRS_PER_THREAD", 8)
    one = _kernel_pairs(polys, means, covs)[4]
    monkeypatch.setenv("DGNEXACT_THREADS", "3")
    three = _kernel_pairs(polys, means, covs)[4]
    for a, b in zip(one, three):
        np.testing.assert_array_equal(a, b)


def test_pruning_and_loosening_follow_the_weight_bound(regions):
    """A pair is dropped only when its weight bound exp(scale) * mass is provably below e^-50, and its
    accuracy threshold is loosened only in proportion to 1e-3 / weight."""
    polys, means, covs = regions
    _, pr, pn, D, ref = _kernel_pairs(polys, means, covs)
    for scale in (0.0, 20.0, 60.0, 200.0):
        geo, _, _, _, (lm, rel, flagged, loosen, _, _, s_lo, s_hi, act, _) = _kernel_pairs(
            polys, means, covs, log_weight_scale=scale)
        dropped = np.isneginf(lm) & np.isfinite(ref[0])
        assert np.all(scale + ref[0][dropped] < -K.NEGLIGIBLE_NATS)  # the exact mass confirms the bound
        kept = np.isfinite(lm) & ~flagged
        both = kept & ~ref[2]  # loosened: the edge sum may be kept where the strict run used the cubature
        assert np.all(np.abs(lm[both] - ref[0][both]) <= rel[both] + ref[1][both] + 1e-14 * np.abs(lm[both]))
        w = np.exp(scale + lm)
        # rel also reports the rounding of the log-space sum (eps per nat), which decides nothing
        own = np.where(kept, rel - 8 * np.finfo(float).eps * (np.abs(np.where(kept, lm, 0.0)) + 60.0), rel)
        over = kept & ~(own * np.minimum(w, 1.0) <= K.FALLBACK_REL * np.maximum(w, K.LOOSEN_WEIGHT) * 1.001)
        # beyond the threshold only small polygons (cubature), whose bound is their own conditioning
        idx = np.nonzero(over)[0]
        used, l_small, *_ = K.small_polygon_pairs(geo.Nrm, pr[idx], D[idx], s_lo[idx], s_hi[idx], act[idx], 0)
        assert np.all(used) and np.array_equal(l_small, lm[idx])
        assert np.all(rel[kept & ~over] <= 1e-6)


def _polygon(center, size, k, rng):
    """A random convex k-gon of diameter ~size about center: (Polytope, vertices)."""
    ang = np.sort(rng.uniform(0, 2 * np.pi, k))
    V = center + 0.5 * size * np.stack([np.cos(ang), np.sin(ang)], axis=1)
    nxt = np.roll(V, -1, axis=0)
    e = nxt - V
    N = np.stack([e[:, 1], -e[:, 0]], axis=1)  # outward for counter-clockwise vertices
    N /= np.linalg.norm(N, axis=1)[:, None]
    return Polytope(N, np.einsum("ij,ij->i", N, V), V, np.zeros((0, 2)), np.zeros((0, 2))), V


def _mp_polygon_moments(V, dps=40):
    """Mass, mean and covariance of N(0, I_2) on the convex polygon V by mpmath: triangle fan from the
    vertex mean, each triangle by nested tanh-sinh quadrature in exact (mpf) coordinates."""
    with mp.workdps(dps):
        P = [(mp.mpf(float(a)), mp.mpf(float(b))) for a, b in V]
        c = (sum(p[0] for p in P) / len(P), sum(p[1] for p in P) / len(P))
        mom = [mp.mpf(0)] * 6
        for a, b in zip(P, P[1:] + P[:1]):
            det = abs((a[0] - c[0]) * (b[1] - c[1]) - (a[1] - c[1]) * (b[0] - c[0]))
            for k, (px, py) in enumerate(((0, 0), (1, 0), (0, 1), (2, 0), (1, 1), (0, 2))):
                def f(u, t, px=px, py=py, a=a, b=b, det=det):
                    x = c[0] + u * ((a[0] - c[0]) + t * (b[0] - a[0]))
                    y = c[1] + u * ((a[1] - c[1]) + t * (b[1] - a[1]))
                    return u * det * mp.exp(-(x * x + y * y) / 2) * x**px * y**py / (2 * mp.pi)
                mom[k] += mp.quad(f, [0, 1], [0, 1])
        m0 = mom[0]
        mx, my = mom[1] / m0, mom[2] / m0
        cov = [[mom[3] / m0 - mx * mx, mom[4] / m0 - mx * my], [mom[4] / m0 - mx * my, mom[5] / m0 - my * my]]
        return float(mp.log(m0)), np.array([float(mx), float(my)]), np.array(cov, dtype=float)


@pytest.mark.parametrize("dist,size", [(0.0, 0.05), (0.3, 0.4), (2.0, 1e-3), (5.0, 0.02)])
def test_small_polygons_against_mpmath(dist, size):
    """Small polygons (near the origin or far in the tail), where the signed edge sum loses eps / mass:
    the batch (edge sum with shared vertices, the cubature, or slices) is within its reported bound of
    25-digit quadrature and below 1e-11 relative in mass; mean to 1e-10 and covariance to 1e-9 of the
    conditional sd (the covariance contract is 1e-8)."""
    rng = np.random.default_rng(int(1000 * dist + 1e4 * size))
    for k in (3, 5):
        poly, V = _polygon(np.array([dist, 0.3 * dist]), size, k, rng)
        geo = RegionGeometry([poly], np.eye(2)[None])
        lm, mean, cov, rel, flagged, _ = batch_planar_moments(geo, np.zeros(1, dtype=np.intp), np.zeros((1, 2)))
        assert not flagged[0]
        l_ref, m_ref, c_ref = _mp_polygon_moments(V, dps=25)
        assert abs(lm[0] - l_ref) <= min(rel[0], 1e-11) + 1e-15 * abs(l_ref)
        sd = np.sqrt(np.diag(c_ref))
        assert np.all(np.abs(mean[0] - m_ref) <= 1e-10 * sd)
        assert np.all(np.abs(cov[0] - c_ref) <= 1e-9 * np.outer(sd, sd))


def test_warm_compiles_the_small_polygon_kernel_with_the_batch_types():
    """``kernel.warm`` (run by ``python -m engine.warmup``) compiles ``small_polygon_pairs`` for exactly the argument
    types ``planar.batch`` passes: a call built as the batch builds it (fancy-indexed rows of a ``RegionGeometry``)
    adds no new signature, so a first evaluate that reaches the cubature loads it from the cache, not compiles it."""
    K.warm()
    before = set(K.small_polygon_pairs.signatures)
    assert before
    net = random_network([2, 6, 6, 3], rng=0)
    part = partition(net)
    covs = np.repeat(np.eye(2)[None], len(part), axis=0)
    geo = RegionGeometry([r.polytope for r in part], covs)
    P = 4
    pr = np.arange(P) % len(part)
    D = geo.cn[pr] - 0.1 * geo.Hn[pr][:, :, 0]
    out = K.pair_planar_moments(geo, pr, D, 2, np.full(P, np.inf))
    idx = np.nonzero(np.ones(P, dtype=bool))[0]
    K.small_polygon_pairs(geo.Nrm, pr[idx], D[idx], out[6][idx], out[7][idx], out[8][idx], 2, K.SPLIT_MAX)
    assert set(K.small_polygon_pairs.signatures) == before


def _polygon_from_vertices(V):
    """The Polytope of the convex polygon with counter-clockwise vertices V."""
    e = np.roll(V, -1, axis=0) - V
    N = np.stack([e[:, 1], -e[:, 0]], axis=1)
    N /= np.linalg.norm(N, axis=1)[:, None]
    return Polytope(N, np.einsum("ij,ij->i", N, V), V, np.zeros((0, 2)), np.zeros((0, 2)))


@pytest.mark.parametrize("dist,length,width,k", [(2.6, 1.2, 0.06, 4),
                                                 pytest.param(3.3, 3.9, 0.05, 3, marks=pytest.mark.slow),
                                                 pytest.param(1.0, 2.2, 0.3, 5, marks=pytest.mark.slow)])
def test_split_cubature_against_mpmath(dist, length, width, k):
    """The moments' redo cubature beyond span 3 (``small_polygon`` with ``max_split``: each fan triangle cut into
    ``ceil(span / 3)^2`` pieces): long thin polygons out in the tail like those of ``bench_engine``'s heavy pairs (span
    3-20, which went to the nested slice quadrature at ~8 ms a call), against 25-digit mpmath: log mass to 1e-13, mean
    to 1e-12 and covariance to 1e-11 of the conditional sd (the covariance contract is 3e-9 relative to its smallest
    eigenvalue; here lambda_min / sd^2 >= 1e-3). Without the split (``max_split = 1``) the same polygons are refused.
    Measured (30 digits): spans 3.9 / 20.2 / 4.5 (2 / 7 / 2 cuts a side), log mass 8.9e-15 / 1.2e-14 / 4.4e-16, mean
    6.0e-15 / 9.9e-15 / 8.4e-16 sd, covariance 2.6e-15 / 1.5e-14 / 2.1e-16 sd^2, i.e. 1.3e-16 kappa and below (the
    redo's allowance is 1e-14 kappa, ``planar.batch._CUBATURE_COV_UNIT_ERR``). The last two take 9 and 18 s: slow."""
    rng = np.random.default_rng(k)
    ang = rng.uniform(0, np.pi)
    u, v = np.array([np.cos(ang), np.sin(ang)]), np.array([-np.sin(ang), np.cos(ang)])
    t = np.linspace(0.0, 2 * np.pi, k, endpoint=False) + 0.3
    V = np.array([dist, 0.4 * dist]) + 0.5 * (length * np.cos(t)[:, None] * u + width * np.sin(t)[:, None] * v)
    c = V.mean(axis=0)
    L = 2 * np.max(np.linalg.norm(V - c, axis=1))
    span = np.linalg.norm(c) * L + 0.5 * L * L
    assert 3.0 < span <= 3.0 * K.SPLIT_MAX
    geo = RegionGeometry([_polygon_from_vertices(V)], np.eye(2)[None])
    pr = np.zeros(1, dtype=np.intp)
    out = K.pair_planar_moments(geo, pr, geo.cn[pr].copy(), 2, np.full(1, np.inf))
    edges = (out[6], out[7], out[8])
    refused = K.small_polygon_pairs(geo.Nrm, pr, geo.cn[pr].copy(), *edges, 2, 1)
    assert not refused[0][0]
    used, lm, _, mean, cov = K.small_polygon_pairs(geo.Nrm, pr, geo.cn[pr].copy(), *edges, 2, K.SPLIT_MAX)
    assert used[0]
    l_ref, m_ref, c_ref = _mp_polygon_moments(V, dps=25)
    assert abs(lm[0] - l_ref) <= 1e-13
    sd = np.sqrt(np.diag(c_ref))
    assert np.all(np.abs(mean[0] - m_ref) <= 1e-12 * sd)
    assert np.all(np.abs(cov[0] - c_ref) <= 1e-11 * np.outer(sd, sd))
