"""The error-bar check (S >= 4 randomised QMC): PASS on the real engine, FAIL on a shifted log p or an
unusable (inf / NaN / missing) error bar; the full profile runs it on S = 4, 5, 6 without lineality."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

import engine.distributions as dist
from engine.network import random_network
from verify import checks as C
from verify.cases import Case, error_bar_cases

SETTINGS = C.Settings(seed=0, mc_samples=200_000)
DELTA = 1e-6


def _small_s4_case() -> Case:
    # [4,4,3]: first layer as wide as S, so no region has lineality and every region takes the RQMC path.
    # Chosen among small seeds because the engine's error bar is finite here (on most S >= 4 networks one
    # region with an unresolved RQMC estimate makes the engine report an infinite error bar).
    net = random_network([4, 4, 3], "relu", cov_x=0.3, rng=44)
    return Case("small-rqmc-S4", net, net.sample(1, rng=144), {"rqmc"}, "[4,4,3] ReLU (test)")


@pytest.fixture(scope="module")
def real():
    """The check on the real engine, and the engine's own Evaluation (same seeded RQMC stream)."""
    case = _small_s4_case()
    rec = C.check_error_bar(case, SETTINGS, DELTA)[0]
    ev = dist.evaluate(case.net, case.X, rng=C.rng_for(SETTINGS.seed, f"{rec.id}/engine"))
    return case, rec, ev


def _patch(monkeypatch, ev, **changes):
    monkeypatch.setattr(dist, "evaluate", lambda *a, **k: dataclasses.replace(ev, **changes))


def test_passes_on_the_real_engine(real):
    case, rec, ev = real
    assert rec.status == "PASS", rec.message
    assert rec.id == "error-bar-vs-montecarlo/small-rqmc-S4" and rec.false_fail_prob == DELTA
    method = rec.observed[0]["method"]  # S = 4: the sliced quadrature (issue 14), RQMC its fallback
    assert ("sliced" in method or "rqmc" in method) and np.isfinite(rec.observed[0]["error_bar"])
    assert rec.observed[0]["log_p"] == ev.log_marginal[0] and rec.observed[0]["error_bar"] == ev.log_marginal_error[0]
    lo, _, hi = rec.reference[0]
    assert 0 < hi - lo <= C.TOL_MC_TARGET_LOGP and rec.detectable == pytest.approx(hi - lo)


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_fails_when_log_p_is_shifted_beyond_its_error_bar(real, monkeypatch, sign):
    case, rec, ev = real
    lo, _, hi = rec.reference[0]
    err = float(ev.log_marginal_error[0])
    shift = sign * (10 * err + (hi - lo))  # beyond the MC interval whatever the bar (S = 4 bars are ~1e-13 now)
    _patch(monkeypatch, ev, log_marginal=ev.log_marginal + shift)
    bad = C.check_error_bar(case, SETTINGS, DELTA)[0]
    assert bad.status == "FAIL" and bad.n_bad == 1, bad.message
    assert bad.reference == rec.reference  # the same Monte-Carlo draws
    assert bad.worst[0]["at"] == "x[0]"


def test_passes_a_shift_the_error_bar_covers(real, monkeypatch):
    """Shifted by its own error bar, log p still overlaps the MC interval: the overlap rule, not a point test."""
    case, rec, ev = real
    lo, _, hi = rec.reference[0]
    err = float(ev.log_marginal_error[0])
    target = hi + 0.5 * err  # outside the MC interval, yet within err of it
    _patch(monkeypatch, ev, log_marginal=np.array([target]))
    assert C.check_error_bar(case, SETTINGS, DELTA)[0].status == "PASS"


@pytest.mark.parametrize("bar", [np.inf, np.nan, -1.0, None])
def test_an_unusable_error_bar_fails(real, monkeypatch, bar):
    case, _, ev = real
    _patch(monkeypatch, ev, log_marginal_error=None if bar is None else np.array([bar]))
    bad = C.check_error_bar(case, SETTINGS, DELTA)[0]
    assert bad.status == "FAIL" and "unusable" in bad.message, bad.message


def test_deterministic_for_a_seed(real):
    case, rec, _ = real
    again = C.check_error_bar(case, SETTINGS, DELTA)[0]
    assert json.dumps(again.to_dict()) == json.dumps(rec.to_dict())


def test_full_profile_runs_it_on_s4_s5_s6_without_lineality():
    from verify.suite import plan, settings_for

    cases = error_bar_cases()
    assert [c.S for c in cases] == [4, 5, 6]
    for c in cases:
        part = dist.partition(c.net)
        assert all(r.polytope.lineality.size == 0 for r in part), c.name
        assert len(part) * len(c.X) <= 500, (c.name, len(part))  # RQMC cost ~ regions x points
    full = {label: kind for label, kind, _ in plan(settings_for("full", 0))}
    assert all(full[f"errbar/{c.name}"] == "mc" for c in cases)
    assert not any(label.startswith("errbar/") for label, _, _ in plan(settings_for("quick", 0)))


def test_report_names_an_unusable_error_bar(real, monkeypatch):
    from verify.report import text_table

    case, _, ev = real
    _patch(monkeypatch, ev, log_marginal_error=np.array([np.inf]))
    bad = C.check_error_bar(case, SETTINGS, DELTA)[0]
    assert bad.worst[0]["problem"] == "unusable error bar"
    table = text_table([bad], {"profile": "t", "seed": 0, "family_false_fail_budget": 1e-6})
    assert "x[0]: unusable error bar (" in table and "'error_bar': inf" in table
