"""Suite checks: correct engine PASSes, a seeded wrong engine FAILs the matching check; determinism."""

from __future__ import annotations

import json

import numpy as np
import pytest

import engine.distributions as dist
from verify import checks as C
from verify.cases import build_cases
from verify.report import json_report, text_table


@pytest.fixture(scope="module")
def cases():
    return {c.name: c for c in build_cases("quick")}


def _status(recs, prefix):
    return {r.id: r.status for r in recs if r.id.startswith(prefix)}


def test_quadrature_checks_pass_and_catch_wrong_mass(cases, monkeypatch):
    case = cases["abs-S1"]
    s = C.Settings(seed=0)
    C._QUAD_CACHE.clear()
    recs = C.check_quadrature(case, s)
    assert all(r.status == "PASS" for r in recs), [(r.id, r.status, r.message) for r in recs]
    orig = dist.region_truncated_moments

    def wrong(*a, **k):  # every region mass 1e-7 too large in log: log p off by 1e-7 nats
        lm, m, c, used, err = orig(*a, **k)
        return lm + 1e-7, m, c, used, err

    monkeypatch.setattr(dist, "region_truncated_moments", wrong)
    recs = C.check_quadrature(case, s)
    st = {r.id.split("/")[0]: r.status for r in recs}
    assert st["marginal-vs-quadrature"] == "FAIL"
    assert "worst points" in text_table(
        [r for r in recs if r.status == "FAIL"], {"profile": "t", "seed": 0, "family_false_fail_budget": 1e-6}
    )


def test_wrong_posterior_mean_fails(cases, monkeypatch):
    case = cases["abs-S1"]
    s = C.Settings(seed=0)
    orig = dist.region_truncated_moments

    def wrong(*a, **k):
        lm, m, c, used, err = orig(*a, **k)
        return lm, m + 1e-6, c, used, err

    monkeypatch.setattr(dist, "region_truncated_moments", wrong)
    st = {r.id.split("/")[0]: r.status for r in C.check_quadrature(case, s)}
    assert st["posterior-mean-vs-quadrature"] == "FAIL"


def test_ppca_check_catches_wrong_engine(cases, monkeypatch):
    case = cases["linear-S1"]
    s = C.Settings(seed=0)
    assert all(r.status == "PASS" for r in C.check_ppca(case, s))
    orig = dist.posterior_region_params
    monkeypatch.setattr(
        dist, "posterior_region_params", lambda *a, **k: (lambda t: (t[0], t[1] + 1e-9))(orig(*a, **k))
    )
    assert any(r.status == "FAIL" for r in C.check_ppca(case, s))


def test_monte_carlo_check_fails_on_grossly_wrong_engine(cases, monkeypatch):
    case = cases["abs-S1"]
    s = C.Settings(seed=3, mc_samples=200_000)
    orig = dist.region_truncated_moments

    def wrong(*a, **k):
        lm, m, c, used, err = orig(*a, **k)
        return lm + 0.5, m, c, used, err

    monkeypatch.setattr(dist, "region_truncated_moments", wrong)
    recs = C.check_monte_carlo(case, s, 1e-6)
    assert recs[0].status == "FAIL" and recs[0].false_fail_prob == 5e-7


def test_monte_carlo_and_signs_deterministic_for_a_seed(cases):
    case = cases["leaky-S1"]
    s = C.Settings(seed=7, mc_samples=100_000)
    a = [r.to_dict() for r in C.check_monte_carlo(case, s, 1e-6) + C.check_sign_patterns(case, s, 1e-6)]
    b = [r.to_dict() for r in C.check_monte_carlo(case, s, 1e-6) + C.check_sign_patterns(case, s, 1e-6)]
    assert json.dumps(a) == json.dumps(b)
    c = [r.to_dict() for r in C.check_monte_carlo(case, C.Settings(seed=8, mc_samples=100_000), 1e-6)]
    assert json.dumps(a[:2]) != json.dumps(c)


def test_bayes_and_prior_checks_pass(cases):
    s = C.Settings(seed=0)
    recs = C.check_bayes(cases["relu-S1"], s) + C.check_prior_masses(cases["relu-S1"], s)
    assert all(r.status == "PASS" for r in recs), [(r.id, r.message) for r in recs]


def test_bayes_check_catches_wrong_posterior_covariance(cases, monkeypatch):
    orig = dist.region_gaussians

    def wrong(*a, **k):
        rg = orig(*a, **k)
        rg.cov = rg.cov * (1 + 1e-8)
        return rg

    monkeypatch.setattr(dist, "region_gaussians", wrong)
    recs = C.check_bayes(cases["relu-S1"], C.Settings(seed=0))
    assert recs[0].status == "FAIL"


def test_lemma2_pass():
    recs = C.check_lemma2(C.Settings(seed=0))
    assert [r.status for r in recs] == ["PASS", "PASS"], [(r.id, r.message, r.observed) for r in recs]


def test_skipped_is_never_pass(cases):
    rec = C.check_quadrature(cases["relu-S2"], C.Settings(seed=0, quad_s2=False))
    assert all(r.status == "SKIPPED" and r.message for r in rec)


@pytest.mark.slow
def test_full_quick_suite_passes_and_is_deterministic():
    from verify.suite import run_suite

    r1, m1, _ = run_suite("quick", 0, progress=False)
    r2, m2, _ = run_suite("quick", 0, progress=False)
    assert json_report(r1, m1) == json_report(r2, m2)
    assert not any(r.status == "FAIL" for r in r1), [(r.id, r.message) for r in r1 if r.status == "FAIL"]
    assert np.isfinite(m1["false_fail_per_monte_carlo_check"])
