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
    # issue 18 item 7: quick is decisive on its own cases (measured: PASS 67, 0 INCONCLUSIVE, 0 SKIPPED)
    assert not any(r.status in ("INCONCLUSIVE", "SKIPPED") for r in r1), [
        (r.id, r.message) for r in r1 if r.status in ("INCONCLUSIVE", "SKIPPED")]
    assert np.isfinite(m1["false_fail_per_monte_carlo_check"])


def test_run_item_turns_an_exception_into_a_fail_record():
    from verify.suite import run_item

    def boom(delta):
        raise np.linalg.LinAlgError("Singular matrix")

    recs = run_item("tri/some-case", boom, None, 3)
    assert [r.status for r in recs] == ["FAIL"] and recs[0].id == "check-raised/tri/some-case"
    assert "LinAlgError: Singular matrix" in recs[0].message and recs[0].seed == 3
    assert run_item("x", lambda d: ["rec"], None, 0) == ["rec"]


def _slice_of(region, z1):
    import mpmath as mp

    lo, hi = -mp.inf, mp.inf
    for (h1, h2), c in zip(region.H, region.c):
        if h2 > 0:
            hi = min(hi, (mp.mpf(float(c)) - mp.mpf(float(h1)) * z1) / mp.mpf(float(h2)))
        elif h2 < 0:
            lo = max(lo, (mp.mpf(float(c)) - mp.mpf(float(h1)) * z1) / mp.mpf(float(h2)))
    return lo, hi


def test_s2_closed_form_slice_matches_raw_tanh_sinh_and_refuses_a_kink(cases):
    """The S = 2 oracle's inner integral: exact on a region's slice, None on a slice across a kink."""
    import mpmath as mp

    from engine.partition import partition
    from verify.oracles.quadrature import MPModel, _gaussian_slice_moments, _slice_gaussian

    case = cases["relu-S2"]
    part = partition(case.net)
    with mp.workdps(30):
        model = MPModel(case.net, case.X[0])
        checked = 0
        for region in part:
            p = region.polytope.interior_point()
            z1 = mp.mpf(float(p[0]))
            lo, hi = _slice_of(region, z1)
            K0, m, s = _slice_gaussian(model, z1, lo, hi, 30)
            M, _ = _gaussian_slice_moments(lo, hi, m, s)
            pts = [lo] + sorted(t for t in (m - 8 * s, m, m + 8 * s) if lo < t < hi) + [hi]
            for k in range(3):  # raw integrand scaled by exp(-K0): mp.quad's error test is absolute
                ref, err = mp.quad(
                    lambda t, k=k, z1=z1, K0=K0: mp.exp(model.log_f([z1, t]) - K0) * t**k, pts, error=True
                )
                got = s * mp.sqrt(2 * mp.pi) * M[k]
                assert abs(got - ref) <= mp.mpf(10) ** -18 * abs(ref) + 10 * err, (k, region.index, got, ref, err)
            checked += 1
        assert checked == len(part)
        # the whole line at z1 = 0 crosses several regions: not one Gaussian, refused
        assert len(set(part.locate(np.array([[0.0, t] for t in np.linspace(-9, 9, 181)])))) >= 2
        assert _slice_gaussian(model, mp.mpf(0), -mp.inf, mp.inf, 30) is None


def _small_s2_case():
    from engine.network import random_network
    from verify.cases import Case

    net = random_network([2, 3, 2], "relu", cov_x=0.3, rng=16)
    return Case("small-relu-S2", net, net.sample(1, rng=7), set(), "[2,3,2] ReLU (test)")


def test_s2_quadrature_check_passes_and_catches_wrong_mass(monkeypatch):
    case = _small_s2_case()
    s = C.Settings(seed=0, quad_s2=True)
    C._QUAD_CACHE.clear()
    recs = C.check_quadrature(case, s)
    assert [r.status for r in recs] == ["PASS"] * 4, [(r.id, r.status, r.message) for r in recs]
    orig = dist.evaluate

    def wrong(*a, **k):  # log p off by 1e-9 nats (the engine's S = 2 passes no longer share one entry point)
        ev = orig(*a, **k)
        ev.log_marginal = ev.log_marginal + 1e-9
        return ev

    monkeypatch.setattr(dist, "evaluate", wrong)
    st = {r.id.split("/")[0]: r.status for r in C.check_quadrature(case, s)}
    assert st["marginal-vs-quadrature"] == "FAIL"
    C._QUAD_CACHE.clear()


def test_s2_quadrature_closed_inner_matches_tanh_sinh_inner(cases):
    """quad_s2's closed-form slices against its tanh-sinh slices on one region (a few seconds)."""
    from engine.partition import partition
    from verify.oracles.quadrature import quad_s2

    case = cases["relu-S2"]
    part = partition(case.net)
    a = quad_s2(case.net, case.X[0], [part[0]], dps=30)
    b = quad_s2(case.net, case.X[0], [part[0]], dps=20, inner="tanh-sinh")
    assert abs(a.log_px_mp - b.log_px_mp) < 1e-17
    np.testing.assert_allclose(a.mean, b.mean, rtol=0, atol=1e-15)
    np.testing.assert_allclose(a.cov, b.cov, rtol=0, atol=1e-15)
    assert a.rel_error < 1e-20 and b.rel_error < 1e-15
