"""S = 2 ``evaluate``: the heavy (relative-accuracy) pass skips the pairs the first pass settled.

Posterior weights above 1e-3 (eq. 6) need each region's conditional covariance (eq. 7) accurate relative
to its own smallest eigenvalue. The first pass integrates at absolute accuracy; the pairs whose
divergence-formula covariance is already relative-accurate (``planar.batch.batch_planar_pairs``'s
``settled``) are kept. The reference here is the always-redo path (``distributions.REDO_SETTLED``): every
heavy pair's moments, including the thin, ill-conditioned heavy regions of circle data, must agree to
1e-12 of the covariance's smallest eigenvalue. (The accuracy of the redo path itself against quadrature of
the raw model is tests/test_s2_end_to_end.py and tests/test_s2_against_quadrature.py.)
"""

import numpy as np
import pytest

import engine
from engine import datasets
from engine import distributions as D

CASES = [  # (widths, cov_x, data): random data from the net, circle data far off and close to the manifold
    ([2, 8, 8, 3], 0.1, None),
    ([2, 16, 16, 2], 1.0, "circle"),
    ([2, 16, 16, 2], 0.01, "circle"),
]


def _run(net, X, part, monkeypatch, redo_all):
    """``evaluate`` with the heavy pass skipping settled pairs (or not), and the heavy / settled masks it saw."""
    seen = {}
    heavy_pass = D._heavy_pass

    def spy(part, mu, covs, log_joint, means, covs_r, settled, **kwargs):
        seen["heavy"] = log_joint - D.logsumexp(log_joint, axis=1, keepdims=True) > np.log(1e-3)
        seen["settled"] = settled
        return heavy_pass(part, mu, covs, log_joint, means, covs_r, settled, **kwargs)

    monkeypatch.setattr(D, "_heavy_pass", spy)
    monkeypatch.setattr(D, "REDO_SETTLED", redo_all)
    return D.evaluate(net, X, part=part), seen


@pytest.mark.parametrize("widths, cov_x, data", CASES)
def test_skipped_heavy_pairs_equal_the_always_redo_path(widths, cov_x, data, monkeypatch):
    net = engine.random_network(widths, rng=0, cov_x=cov_x)
    X = datasets.circle(80, rng=1) if data else net.sample(80, rng=1)
    part = engine.partition(net)
    fast, seen = _run(net, X, part, monkeypatch, redo_all=False)
    ref, _ = _run(net, X, part, monkeypatch, redo_all=True)
    heavy, settled = seen["heavy"], seen["settled"]
    skipped = heavy & settled
    # the comparison is not vacuous: pairs are skipped, and others are still redone
    assert skipped.sum() > 0.5 * heavy.sum() and (heavy & ~settled).any()
    C = ref.region_covs[heavy]
    lam = np.linalg.eigvalsh(C)[:, 0]
    assert np.all(lam > 0)
    err = np.abs(fast.region_covs[heavy] - C).max(axis=(1, 2)) / lam
    assert err.max() <= 1e-12
    scale = 1.0 + np.abs(ref.region_means[heavy]).max(axis=1)
    assert (np.abs(fast.region_means[heavy] - ref.region_means[heavy]).max(axis=1) / scale).max() <= 1e-12
    np.testing.assert_array_equal(fast.log_marginal, ref.log_marginal)
    lam_post = np.linalg.eigvalsh(ref.posterior_cov)[:, 0]
    assert (np.abs(fast.posterior_cov - ref.posterior_cov).max(axis=(1, 2)) / lam_post).max() <= 1e-12
    np.testing.assert_allclose(fast.posterior_mean, ref.posterior_mean, rtol=1e-12, atol=1e-12)


def test_settled_pairs_are_only_unloosened_unflagged_kernel_pairs():
    """``settled`` from an absolute-accuracy call with weight scales marks exactly pairs whose moments equal a
    plain relative-accuracy call bit for bit; loosened pairs (weight bound below 1e-3) are never settled."""
    from engine.gaussian.planar import batch_planar_pairs
    from engine.gaussian.polytopes import batch_geometry

    net = engine.random_network([2, 16, 16, 2], rng=0, cov_x=1.0)
    part = engine.partition(net)
    rg = D.region_gaussians(net, part)
    X = datasets.circle(40, rng=1)
    mu, _ = D.posterior_region_params(net, part, X, rg)
    geo = batch_geometry([r.polytope for r in part], rg.cov, rg.chol_cov)
    pr, pn = np.nonzero(np.broadcast_to(geo.ok[:, None], (len(part), len(X))))
    m = mu[pn, pr]
    rng = np.random.default_rng(0)
    scale = np.where(rng.random(pr.size) < 0.5, np.inf, -30.0)  # half the pairs: weight bound tiny, loosened
    out, settled = batch_planar_pairs(geo, pr, m, 2, scale, cov_relative=False)
    rel, _ = batch_planar_pairs(geo, pr, m, 2, None, cov_relative=True)
    assert settled.sum() > 0.1 * pr.size and not np.any(settled & (scale < 0))
    np.testing.assert_array_equal(out.cov[settled], rel.cov[settled])
    np.testing.assert_array_equal(out.mean[settled], rel.mean[settled])
