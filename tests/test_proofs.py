"""Tests of the sympy proofs package (``proofs``): true claims hold, perturbed claims FAIL."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
import sympy as sp

from proofs import CLAIMS, _core, get_claim, lemma4_inclusion_exclusion, run_claim, theorem1_completing_square

FAST_TRUE = [
    "thm1-square-random", "thm1-marginal-1d", "truncated-moments-1d", "estep", "lemma4",
    "prop1-ppca", "lemma2-zero-noise", "mstep",
]
# thm1-square-symbolic (~8 s) and divergence-facets (~18 s) run true only in the slow full-suite test


@pytest.mark.parametrize("key", FAST_TRUE)
def test_true_claim_holds(key):
    r = run_claim(get_claim(key))
    assert r.ok, r.detail
    assert r.status in {"proved", "checked"}


def _perturb_cases():
    for c in CLAIMS:
        for name in c.perturbations:
            yield pytest.param(c.key, name, id=f"{c.key}-{name}")


@pytest.mark.parametrize("key,perturb", list(_perturb_cases()))
def test_perturbed_claim_fails(key, perturb):
    r = run_claim(get_claim(key), perturb)
    assert not r.ok and r.status == "FAILED", (r.status, r.detail)


def test_every_claim_has_perturbations():
    for c in CLAIMS:
        assert len(c.perturbations) >= 3, c.key


def test_unknown_perturbation_is_an_error_not_a_pass():
    r = run_claim(get_claim("lemma4"), "no_such_variant")
    assert not r.ok and r.status == "ERROR"


@pytest.mark.parametrize("perturb", list(theorem1_completing_square.PERTURBATIONS))
def test_thm1_symbolic_perturbations_fail_at_small_dims(perturb):
    # prove() checks (2, 2) with the true formula only; every variant must already fail below it
    failed = any(
        res.lhs - res.rhs != 0
        for S, D in theorem1_completing_square.SYMBOLIC_DIMS
        for res in theorem1_completing_square.claim(perturb, S, D)
    )
    assert failed


def test_schwartz_zippel_bound_is_reported_and_small():
    v = theorem1_completing_square.prove_random()
    assert v.ok and "Schwartz-Zippel" in v.detail
    S, D = theorem1_completing_square.RANDOM_DIMS[-1]
    assert theorem1_completing_square.degree_bound(S, D) / 2**40 < 1e-9


def test_formal_zero_is_sound_on_known_cases():
    x = sp.Symbol("x", real=True)
    s = sp.Symbol("s", positive=True)
    assert _core.formal_zero(sp.erf(-x / sp.sqrt(2 * s)) + sp.erf(x * sp.sqrt(2) / (2 * sp.sqrt(s))))
    assert _core.formal_zero(sp.exp(x) * sp.exp(x**2) - sp.exp(x + x**2))
    assert not _core.formal_zero(sp.erf(x) - sp.erf(2 * x))
    assert not _core.formal_zero(sp.sqrt(s) * sp.exp(x) - sp.exp(x))
    assert not _core.formal_zero(sp.sqrt(2) - 1)


def test_lemma4_enumerates_all_feasible_patterns():
    for S in (1, 2, 3):
        assert len(lemma4_inclusion_exclusion.claim(None, S)) == 2 ** (S + 1) - 1


def _cli(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "proofs", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_cli_exit_codes_and_json(tmp_path):
    out = tmp_path / "r.json"
    p = _cli("--only", "lemma4", "lemma2-zero-noise", "--json", str(out))
    assert p.returncode == 0, p.stdout + p.stderr
    data = json.loads(out.read_text())
    assert data["ok"] is True
    assert [c["claim"] for c in data["claims"]] == ["lemma4", "lemma2-zero-noise"]
    assert all({"method", "status", "seconds"} <= set(c) for c in data["claims"])
    p = _cli("--only", "lemma4", "--perturb", "wrong_sign", "--json", str(out))
    assert p.returncode == 1
    assert json.loads(out.read_text())["claims"][0]["status"] == "FAILED"
    assert _cli("--only", "nope").returncode == 2


@pytest.mark.slow
def test_full_suite_passes_within_budget(tmp_path):
    out = tmp_path / "all.json"
    t0 = time.perf_counter()
    p = _cli("--json", str(out))
    assert p.returncode == 0, p.stdout + p.stderr
    data = json.loads(out.read_text())
    assert data["ok"] and len(data["claims"]) == len(CLAIMS)
    assert all(c["status"] in {"proved", "checked"} for c in data["claims"])
    assert time.perf_counter() - t0 < 300
