"""crosscheck --cmd (issue 18 items 1-3, 5, 8): foreign programs as subprocesses, NaN claims as FAILs,
per-field verdicts, --fields, time limit, conversion helpers and the bug gallery of ``verify demo``.

Oracle: the exact engine, itself verified against 30-digit quadrature by ``python -m verify``; the
demo implementation (:mod:`verify.demo_impl`) is written independently (numpy/scipy only) and must
agree with it to 1e-8 nats when correct.
"""

from __future__ import annotations

import json
import shlex
import sys

import numpy as np
import pytest

from verify import demo_impl
from verify.cli import main as cli_main
from verify.crosscheck import crosscheck
from verify.demo import EXPECTED, demo_problem, impl_command

PY = shlex.quote(sys.executable)


@pytest.fixture(scope="module")
def problem(tmp_path_factory):
    from engine import evaluate

    net, X = demo_problem()
    tmp = tmp_path_factory.mktemp("cmd")
    (tmp / "m.json").write_text(json.dumps(net.to_dict()))
    np.save(tmp / "x.npy", X)
    return net, X, evaluate(net, X), tmp


def _cc(tmp, *extra):
    return cli_main(["crosscheck", "--model", str(tmp / "m.json"), "--data", str(tmp / "x.npy"), "--no-progress",
                     *extra])


def test_separate_interpreter_passes_and_buggy_one_fails(problem, capsys):
    """The demo implementation runs in a new Python process; its stdout never reaches ours."""
    _, X, _, tmp = problem
    assert _cc(tmp, "--cmd", impl_command(), "--json", str(tmp / "ok.json")) == 0
    out = capsys.readouterr().out
    assert "demo_impl:" not in out and "all judged fields agree" in out
    rep = json.loads((tmp / "ok.json").read_text())
    assert rep["foreign"]["stdout"].startswith("demo_impl: 7 points")
    assert {k: v["status"] for k, v in rep["fields"].items()} == dict.fromkeys(
        ["log_marginal", "posterior_mean", "posterior_cov", "n_regions"], "PASS")
    assert _cc(tmp, "--cmd", impl_command("pi_for_log_pi"), "--data-format", "csv") == 1
    out = capsys.readouterr().out
    assert "FAIL       log_marginal" in out and "PASS       posterior_mean" in out


def test_shell_script_writing_json(problem, tmp_path):
    """A shell script (no Python) claiming log p(x) and the region count."""
    _, _, ev, tmp = problem
    (tmp_path / "lp.txt").write_text(json.dumps([float(v) for v in ev.log_marginal]))
    script = tmp_path / "impl.sh"
    script.write_text('#!/bin/sh\necho "running on $1" >&2\n'
                      f'printf \'{{"log_marginal": %s, "n_regions": %s}}\' "$(cat {tmp_path}/lp.txt)" "$3" > "$2"\n')
    assert _cc(tmp, "--cmd", f"sh {script} {{model}} {{out}} {ev.n_regions}") == 0
    assert _cc(tmp, "--cmd", f"sh {script} {{model}} {{out}} {ev.n_regions + 1}",
               "--json", str(tmp_path / "r.json")) == 1
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["failed_fields"] == ["n_regions"] and "running on" in rep["foreign"]["stderr"]
    # the same wrong count, not judged: exit 0 with the field reported as not judged
    assert _cc(tmp, "--cmd", f"sh {script} {{model}} {{out}} {ev.n_regions + 1}", "--fields", "log_marginal",
               "--json", str(tmp_path / "r2.json")) == 0
    assert json.loads((tmp_path / "r2.json").read_text())["fields"]["n_regions"]["status"] == "NOT JUDGED"


@pytest.mark.parametrize("kind", ["exit", "timeout", "no_output", "invalid_json", "bad_shape"])
def test_foreign_command_failures_are_fails(problem, tmp_path, capsys, kind):
    _, _, _, tmp = problem
    cmd = {
        "exit": "echo boom >&2; exit 3",
        "timeout": "sleep 30; echo '{}' > {out}",
        "no_output": "true",
        "invalid_json": "echo '{\"log_marginal\": [1, 2' > {out}",
        "bad_shape": "echo '{\"log_marginal\": [1, 2]}' > {out}",
    }[kind]
    if "{out}" not in cmd:
        cmd += " # {out}"
    assert _cc(tmp, "--cmd", cmd, "--timeout", "1", "--json", str(tmp_path / "r.json")) == 1
    out = capsys.readouterr().out
    want = {"exit": "exited with status 3", "timeout": "timed out after 1 s", "no_output": "wrote no claims",
            "invalid_json": "not valid JSON", "bad_shape": "malformed claims"}[kind]
    assert want in out and "FAIL" in out
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["ok"] is False and want in rep["foreign"]["problem"]
    if kind == "exit":
        assert "| boom" in out and rep["foreign"]["stderr"].strip() == "boom"


def test_nan_claim_is_a_fail_naming_the_point(problem, tmp_path, capsys):
    _, _, ev, tmp = problem
    lp = ev.log_marginal.tolist()
    lp[4] = float("nan")
    lp[6] = float("-inf")
    (tmp_path / "c.json").write_text(json.dumps({"log_marginal": lp}))  # NaN / -Infinity tokens
    assert _cc(tmp, "--claims", str(tmp_path / "c.json")) == 1
    out = capsys.readouterr().out
    assert f"x[4]: log_marginal = nan, exact {ev.log_marginal[4]:.6g}" in out
    assert "x[6]: log_marginal = -inf" in out and "2 of 7 bad" in out


def test_requested_field_not_claimed_fails(problem):
    net, X, ev, _ = problem
    res = crosscheck(net, X, {"log_marginal": ev.log_marginal}, fields="log_marginal,posterior_cov")
    assert res.failed_fields == ["posterior_cov"] and res.exit_code == 1


def test_cmd_bad_input_exit_2_before_running(problem, tmp_path, capsys):
    _, _, _, tmp = problem
    marker = tmp_path / "ran"
    assert _cc(tmp, "--cmd", f"touch {marker}") == 2  # no {out}
    assert _cc(tmp, "--cmd", f"touch {marker} {{out}}", "--json", str(tmp_path / "nope" / "r.json")) == 2
    assert _cc(tmp, "--cmd", f"touch {marker} {{out}}", "--fields", "elbo") == 2
    assert not marker.exists()
    errs = capsys.readouterr().err.strip().splitlines()
    assert len(errs) == 3 and all(e.startswith("error:") for e in errs)


def test_time_limit_stops_and_says_so(problem):
    net, X, ev, _ = problem
    res = crosscheck(net, X, {"log_marginal": ev.log_marginal}, time_limit=1e-9)
    assert res.exit_code == 2 and res.n_judged_points == 0 and "only 0 of 7 points judged" in res.text()


def test_conversion_helpers_reproduce_the_forward_pass(problem):
    import torch

    from verify.convert import forward_numpy, to_numpy_layers, to_torch_sequential

    net, _, _, _ = problem
    Z = np.linspace(-4, 4, 41)[:, None]
    layers = to_numpy_layers(net.to_dict())
    assert np.array_equal(forward_numpy(layers["layers"], Z), net.forward(Z))
    assert np.array_equal(layers["cov_x"], np.diag([0.2, 0.3, 0.25]))
    with torch.no_grad():
        out = to_torch_sequential(net.to_dict())(torch.tensor(Z)).numpy()
    assert np.allclose(out, net.forward(Z), rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("bug", [""] + list(demo_impl.BUGS))
def test_demo_implementation_each_bug_caught_in_process(problem, bug):
    """The independent S = 1 implementation: correct -> every field agrees; each bug -> its field fails."""
    net, X, ev, _ = problem
    res = crosscheck(net, X, demo_impl.claims(net.to_dict(), X, bug), evaluation=ev)
    if not bug:
        assert res.ok and res.fields["log_marginal"].max_abs_err < 1e-10
    else:
        assert EXPECTED[bug] in res.failed_fields


def test_demo_command_subset(capsys):
    assert cli_main(["demo", "--bugs", "std_for_variance"]) == 0
    out = capsys.readouterr().out
    assert "PASS (no false alarm)" in out and "CAUGHT    std_for_variance: fails on posterior_cov" in out
    assert "1 of 1 bugs caught" in out


@pytest.mark.slow
def test_demo_command_catches_all_eight(capsys):
    assert cli_main(["demo"]) == 0
    assert "8 of 8 bugs caught" in capsys.readouterr().out


def test_progress_bar_on_stderr_only(problem, tmp_path, capsys):
    _, _, ev, tmp = problem
    (tmp_path / "c.json").write_text(json.dumps({"log_marginal": ev.log_marginal.tolist()}))
    assert cli_main(["crosscheck", "--model", str(tmp / "m.json"), "--data", str(tmp / "x.npy"),
                     "--claims", str(tmp_path / "c.json")]) == 0
    cap = capsys.readouterr()
    assert "crosscheck:" in cap.err and "/7 [" in cap.err and "/7 [" not in cap.out


def test_impl_nan_is_a_fail_but_properties_still_refuse_it(problem, tmp_path, capsys):
    from engine.errors import DGNInputError
    from verify.foreign import call_impl

    net, X, _, tmp = problem
    mod = tmp_path / "nan_impl.py"
    mod.write_text("import numpy as np\ndef f(model, X):\n    v = np.zeros(len(X))\n    v[1] = np.nan\n"
                   "    return {'log_marginal': v}\n")
    assert _cc(tmp, "--impl", f"{mod}:f") == 1
    assert "x[1]: log_marginal = nan" in capsys.readouterr().out
    import importlib.util

    spec = importlib.util.spec_from_file_location("nan_impl", mod)
    m = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(m)
    with pytest.raises(DGNInputError, match="NaN"):
        call_impl(m.f, net, X)  # the fuzz properties' contract: finite claims
