"""``python -m verify`` run options (issue 19) and the suite on the user's own model (issue 18 item 6),
and the quick profile's decisive oracles (issue 18 item 7)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from engine.network import random_network, save_network
from verify import checks as C
from verify.cases import build_cases
from verify.cli import main as cli_main
from verify.suite import plan, settings_for


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err
    return err


def test_negative_seed_is_one_line_exit_2(capsys):
    assert cli_main(["--seed", "-1"]) == 2
    assert "--seed" in _one_line(capsys)


def test_help_shows_the_run_options(capsys):
    assert cli_main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(opt in out for opt in ("--profile", "--seed", "--json", "--model", "demo"))


def test_unwritable_json_refused_before_running(tmp_path, capsys):
    assert cli_main(["--json", str(tmp_path / "missing" / "r.json")]) == 2
    assert "does not exist" in _one_line(capsys)
    assert cli_main(["--json", str(tmp_path)]) == 2
    assert "is a directory" in _one_line(capsys)
    assert cli_main(["--data", str(tmp_path / "x.npy")]) == 2
    assert "needs --model" in _one_line(capsys)


def test_quick_profile_judges_moments_by_deterministic_oracles():
    """Quick: no Monte-Carlo moment check (INCONCLUSIVE at 10^6 draws); S = 2 quadrature on one point."""
    quick, full = settings_for("quick", 0), settings_for("full", 0)
    assert not quick.mc_moments and quick.quad_s2 and quick.quad_s2_points == 1 and full.mc_moments
    case = {c.name: c for c in build_cases()}["linear-S1"]
    recs = C.check_monte_carlo(case, C.Settings(seed=0, mc_samples=100_000, mc_moments=False), 1e-6)
    assert [r.id for r in recs] == ["marginal-vs-montecarlo/linear-S1"]
    labels = [label for label, _, _ in plan(quick)]
    for name in (c.name for c in build_cases()):  # every case's moments have a 1e-9 oracle in quick
        assert f"quad/{name}" in labels or f"ppca/{name}" in labels, name


def test_marginal_mc_second_look_is_decisive():
    """A point whose first interval is wider than the target gets 4n fresh draws (delta split in two)."""
    case = {c.name: c for c in build_cases()}["leaky-S1"]
    one = C._marginal_intervals(case, 20_000, 1e-7, 0, "t")
    two = C._marginal_intervals(case, 20_000, 1e-7, 0, "t", retry_target=C.TOL_MC_TARGET_LOGP)
    for a, b in zip(one, two, strict=True):
        if a.log_px_hi - a.log_px_lo > C.TOL_MC_TARGET_LOGP:
            assert b.n == 4 * a.n and b.delta == a.delta / 2
        else:
            assert b.n == a.n


@pytest.fixture(scope="module")
def linear_model(tmp_path_factory):
    d = tmp_path_factory.mktemp("um")
    net = random_network([1, 3], cov_x=0.2, rng=6)
    save_network(net, d / "m.json")
    np.save(d / "x.npy", net.sample(3, rng=1))
    return d


def test_suite_on_the_users_linear_model(linear_model, capsys):
    d = linear_model
    rc = cli_main(["--model", str(d / "m.json"), "--data", str(d / "x.npy"), "--no-progress",
                   "--json", str(d / "r.json")])
    out = capsys.readouterr().out
    assert rc == 0 and "ppca-reduction/user-data" in out and "INCONCLUSIVE: 0" in out
    rep = json.loads((d / "r.json").read_text())
    assert rep["meta"]["model"] == "user model"
    skipped = [c for c in rep["checks"] if c["status"] == "SKIPPED"]
    assert skipped and all(c["message"] for c in skipped)
    assert {c["id"].split("/")[0] for c in rep["checks"]} >= {"ppca-reduction", "bayes-consistency",
                                                             "marginal-vs-montecarlo", "lemma2-mean-to-zstar",
                                                             "em-monotone"}


@pytest.mark.slow
def test_suite_on_a_users_relu_model_without_data(tmp_path, capsys):
    net = random_network([1, 3, 2], "relu", cov_x=[[0.3, 0.05], [0.05, 0.2]], cov_z=0.7, rng=5)
    save_network(net, tmp_path / "m.json")
    assert cli_main(["--model", str(tmp_path / "m.json"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "marginal-vs-quadrature/user-far" in out and "FAIL: 0" in out and "INCONCLUSIVE: 0" in out


def test_fuzz_unwritable_out_refused_before_running(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert cli_main(["fuzz", "--budget", "1s", "--out", str(tmp_path / "file")]) == 2
    assert "is a file" in _one_line(capsys)
    assert cli_main(["fuzz", "--budget", "1s", "--out", str(tmp_path / "file" / "b")]) == 2
    assert "cannot be created" in _one_line(capsys)


def test_records_from_named_fields_and_no_engine_privates():
    """Issue 13: ``_record`` takes named fields only; verify/ imports no private engine names."""
    import ast
    from pathlib import Path

    with pytest.raises(TypeError):
        C._record("id", "claim", "q", {}, 1.0, "why", 0, 1.0, 1.0, 1.0)  # positional: refused
    rec = C._record(cid="id", claim="c", quantity="q", oracle={}, tol=1.0, reason="r", seed=0, got=1.0,
                    want=1.5, atol=1.0)
    assert rec.status == "PASS" and rec.abs_err == 0.5
    assert not hasattr(C, "s2_engine_available") and "mc_delta" not in C.Settings.__dataclass_fields__
    root = Path(C.__file__).parent
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("engine"):
                private = [a.name for a in node.names if a.name.startswith("_")]
                assert not private, f"{path.name} imports {private} from {node.module}"
