"""``evaluate(lower_pairs=...)``: the lower bound of log p(x) seeded by EM with the regions of posterior draws.

The keyword only chooses which pairs' rigorous mass lower bounds enter the bound that prunes pairs and loosens the
accuracy of pairs of small provable weight (``distributions._hinted_lower``). Oracles: ``engine.evaluate`` without
it (log p(x) agrees within the two runs' own error bounds, ``log_marginal_error``), and the exact log p(x) itself,
which every hinted bound must stay below (a bound above it would prune or loosen pairs that matter).
"""

from __future__ import annotations

import numpy as np
import pytest

import engine
import engine.distributions as dist
import engine.em as em_module
from engine import datasets
from engine.errors import DGNInputError
from engine.partition import partition


@pytest.fixture(scope="module")
def fitted():
    """circle, 120 points, a [2,10,10,2] network after 3 EM iterations and the one after 4 (a candidate's neighbour)."""
    X = datasets.circle(120, rng=3)
    a = em_module.EM([2, 10, 10, 2], max_iter=3, tol=0.0, random_state=1).fit(X)
    b = em_module.EM([2, 10, 10, 2], max_iter=4, tol=0.0, random_state=1).fit(X)
    return X, a, b


def _hints(X, a, part):
    eps = np.random.default_rng(0).standard_normal((len(X), em_module.SCREEN_SAMPLES, 2))
    draws = em_module.GuardScreen(a.network_, a.evaluation_, X, eps).latent_draws()
    rng = np.random.default_rng(5)
    return {"draws": em_module.draw_regions(part, draws), "all": np.ones((len(X), len(part)), dtype=bool),
            "random": rng.random((len(X), len(part))) < 0.05, "none": np.zeros((len(X), len(part)), dtype=bool)}


def test_hinted_bound_stays_below_log_p_and_is_tighter(fitted):
    """The hinted lower bound is below the exact log p(x) on every point for every choice of pairs (all pairs,
    random ones, the regions of the previous posterior's draws) and at least as high as the unhinted bound; the
    regions of the screen's first 32 draws cut its median gap to log p(x) by a third at least (measured with the
    3-pair unhinted bound: 3.2 nats unhinted, 1.3 with 16 draws (14 regions a point), 0.58 with 64 (41 regions);
    with the 32-pair unhinted bound of S = 2: 0.76 unhinted, 0.43 with the draws; the posterior has 97 regions of
    weight above 1e-3 a point here)."""
    X, a, b = fitted
    net = b.network_
    part = partition(net)
    exact = engine.evaluate(net, X, part=part).log_marginal
    rg = dist.region_gaussians(net, part)
    mu, log_norm = dist.posterior_region_params(net, part, X, rg)
    from engine.gaussian.polytopes import batch_geometry

    geo = batch_geometry([r.polytope for r in part], rg.cov, rg.chol_cov)
    _, _, base, _ = dist._hinted_lower(part, mu, rg.cov, log_norm, None, np.zeros(log_norm.shape, bool), "auto", None,
                                    geo)
    tol = 1e-12 * np.maximum(1.0, np.abs(exact))
    assert np.all(base <= exact + tol)
    for name, hint in _hints(X, a, part).items():
        _, _, lower, _ = dist._hinted_lower(part, mu, rg.cov, log_norm, None, hint, "auto", None, geo)
        assert np.all(lower <= exact + tol), name
        assert np.all(lower >= base), name
        if name == "draws":
            assert np.median(exact - lower) < (2.0 / 3.0) * np.median(exact - base)


def test_hinted_evaluate_equals_the_plain_one_within_its_error_bounds(fitted):
    """log p(x) with each hint against the plain evaluate: within the sum of the two runs' ``log_marginal_error``
    plus 1e-13 relative (measured 0 on the draws' hint), posterior weights within 1e-9 (the loosened pairs' moments
    are accurate to 3e-9 of Sigma_omega times their weight, eq. 6), and a wrong shape or a non-boolean mask is a
    one-line error."""
    X, a, b = fitted
    net = b.network_
    part = partition(net)
    plain = engine.evaluate(net, X, part=part)
    for name, hint in _hints(X, a, part).items():
        ev = engine.evaluate(net, X, part=part, lower_pairs=hint)
        bar = plain.log_marginal_error + ev.log_marginal_error + 1e-13 * np.abs(plain.log_marginal)
        assert np.all(np.abs(ev.log_marginal - plain.log_marginal) <= bar), name
        np.testing.assert_allclose(np.exp(ev.region_log_weights), np.exp(plain.region_log_weights), rtol=0,
                                   atol=1e-9, err_msg=name)
    with pytest.raises(DGNInputError, match="lower_pairs"):
        engine.evaluate(net, X, part=part, lower_pairs=np.ones((len(X), len(part) + 1), dtype=bool))
    with pytest.raises(DGNInputError, match="lower_pairs: has dtype float64, not bool"):
        engine.evaluate(net, X, part=part, lower_pairs=np.full((len(X), len(part)), np.nan))


def test_em_hint_off_and_on_fit_alike(monkeypatch):
    """EM with the hint (default) and without (``em.LOWER_HINT = False``): both monotone with true histories, the same
    fates and evaluation counts, log-likelihoods within 1e-6 relative (the inner layers' frozen-mask solves amplify
    the moments' loosened rounding, as between first-pass and completed moments in test_s2_speed_paths)."""
    X = datasets.circle(80, rng=0)
    kw = dict(max_iter=4, tol=0.0, random_state=0)
    on = em_module.EM([2, 8, 8, 2], **kw).fit(X)
    monkeypatch.setattr(em_module, "LOWER_HINT", False)
    off = em_module.EM([2, 8, 8, 2], **kw).fit(X)
    for em in (on, off):
        ll = np.array(em.log_likelihoods_)
        assert np.all(np.diff(ll) >= 0)
        assert abs(engine.evaluate(em.network_, X).log_marginal.mean() - ll[-1]) <= 1e-12 * abs(ll[-1])
    assert on.history()["updates"] == off.history()["updates"]
    assert on.history()["evaluations"] == off.history()["evaluations"]
    np.testing.assert_allclose(on.log_likelihoods_, off.log_likelihoods_, rtol=1e-6, atol=0)
