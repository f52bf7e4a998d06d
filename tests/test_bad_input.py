"""Bad-input table (issue 19, items 3-5, 7, 8): every case is one line ``<field>: <problem>; <fix>``, exit 2 on
the command line, raised before any computation; and the documented behaviour of empty input.

Empty input: the command line (``load_data``, .npy and .csv alike) refuses a file without points with one
line and no numpy warning. Output paths: every CLI option that writes a file is checked before anything
is computed (a missing directory, a directory, an unwritable place).
"""

import json
import os
import warnings

import numpy as np
import pytest

import engine
from engine.cli import main
from engine.errors import DGNInputError


@pytest.fixture
def files(tmp_path):
    net = engine.random_network([1, 4, 3], activation="relu", rng=0)
    engine.save_network(net, tmp_path / "m.json")
    np.save(tmp_path / "x.npy", net.sample(5, rng=1))
    np.save(tmp_path / "empty.npy", np.zeros((0, 3)))
    (tmp_path / "empty.csv").write_text("")
    np.save(tmp_path / "complex.npy", np.ones((2, 3), dtype=complex))
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    (tmp_path / "adir").mkdir()
    (tmp_path / "afile").write_text("x")
    spec = json.loads(net.to_json())
    del spec["version"]
    (tmp_path / "noversion.json").write_text(json.dumps(spec))
    return tmp_path


def _run(argv, tmp, capsys):
    argv = [a.replace("TMP", str(tmp)) for a in argv]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no numpy / torch warning may leak before the one line
        code = main(argv)
    err = capsys.readouterr().err.strip()
    return code, err


EVAL = ["evaluate", "--model", "TMP/m.json", "--data", "TMP/x.npy"]
FIT = ["fit", "--model", "TMP/m.json", "--data", "TMP/x.npy", "--max-iter", "100000"]
CLI_TABLE = [
    (EVAL + ["--out", "TMP/missing/r.json"], "--out: directory"),
    (EVAL + ["--out", "TMP/adir"], "--out: '"),
    (EVAL + ["--method", "foo"], "method: unknown integration method 'foo'"),
    (["evaluate", "--model", "TMP/adir", "--data", "TMP/x.npy"], "model: '"),
    (["evaluate", "--model", "TMP/noversion.json", "--data", "TMP/x.npy"], "model.version: is missing"),
    (["evaluate", "--model", "TMP/m.json", "--data", "TMP/empty.npy"], "holds no data points"),
    (["evaluate", "--model", "TMP/m.json", "--data", "TMP/empty.csv"], "holds no data points"),
    (["evaluate", "--model", "TMP/m.json", "--data", "TMP/complex.npy"], "data: Complex data not supported"),
    (["evaluate", "--model", "TMP/m.json", "--data", "TMP/objects.npy"], "a pickle"),
    (["evaluate", "--model", "TMP/m.json", "--data", "TMP/adir"], "is a directory"),
    # --max-iter 100000: these return at once, so the check comes before the fit
    (FIT + ["--out", "TMP/missing/f.json"], "--out: directory"),
    (FIT + ["--out", "TMP/adir"], "--out: '"),
    (FIT + ["--out", "TMP/f.json", "--history", "TMP/missing/h.json"], "--history: directory"),
    (FIT + ["--out", "TMP/f.json", "--history", "TMP/adir"], "--history: '"),
    (["experiment", "circle", "--quick", "--out", "TMP/afile"], "--out: '"),
    (["experiment", "circle", "--quick", "--out", "TMP/afile/sub"], "is not a directory"),
]


@pytest.mark.parametrize("argv,message", CLI_TABLE)
def test_cli_bad_input_one_line_exit_2(files, capsys, argv, message):
    code, err = _run(argv, files, capsys)
    assert code == 2, err
    assert err.startswith("error: ") and message in err, err
    assert len(err.splitlines()) == 1, err


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_cli_read_only_directory(files, capsys):
    ro = files / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        code, err = _run(EVAL + ["--out", "TMP/ro/r.json"], files, capsys)
    finally:
        ro.chmod(0o700)
    assert code == 2 and "--out: cannot write into" in err


def test_fit_max_iter_zero_says_what_it_did(files, capsys):
    code, err = _run(["fit", "--model", "TMP/m.json", "--data", "TMP/x.npy", "--max-iter", "0",
                      "--out", "TMP/f.json"], files, capsys)
    assert code == 0 and err.startswith("fit: 0 EM iteration(s) on 5 point(s)"), err
    assert engine.load_network(files / "f.json").latent_dim == 1


API_TABLE = [
    (lambda: engine.load_network(None), "model: is NoneType"),
    (lambda: engine.evaluate(42, np.zeros((1, 3))), "net: is int"),
    (lambda: engine.evaluate(engine.random_network([1, 4, 3], rng=0), np.zeros((1, 3)), method="foo"),
     "method: unknown integration method 'foo'"),
    (lambda: engine.evaluate(engine.random_network([2, 4, 3], rng=0), np.zeros((1, 3)), method="foo"),
     "method: unknown integration method 'foo'"),
    (lambda: engine.random_network([1, 4, 2], activation="tanh"), "activation: 'tanh'"),
    (lambda: engine.random_network([1, 4, 2], activation="banana"), "activation: 'banana'"),
    (lambda: engine.random_network([1, 4, 2], activation="leaky_relu", negative_slope=float("nan")),
     "negative_slope: must be a finite number"),
    (lambda: engine.load_network({"latent_dim": 1, "layers": [
        {"type": "linear", "weight": [[1.0]], "bias": [0.0]}, {"type": "leaky_relu"},
        {"type": "linear", "weight": [[1.0]], "bias": [0.0]}]}), "layers[1].negative_slope: is missing"),
    (lambda: engine.load_network('{"format": "cpa-dgn", "latent_dim": 1, "layers": []}'), "model.version: is missing"),
    (lambda: engine.evaluate(engine.random_network([1, 4, 3], rng=0), np.full((1, 3), 1e200)),
     "beyond float64's range"),
]


@pytest.mark.parametrize("call,message", API_TABLE)
def test_api_bad_input_one_line(call, message):
    with pytest.raises(DGNInputError) as info:
        call()
    assert message in str(info.value) and "\n" not in str(info.value), str(info.value)


def test_evaluate_accepts_a_cpa_dgn_dict():
    net = engine.random_network([1, 4, 3], rng=0)
    X = net.sample(3, rng=2)
    np.testing.assert_array_equal(engine.evaluate(net.to_dict(), X).log_marginal, engine.evaluate(net, X).log_marginal)


def test_threads_zero_refused(monkeypatch):
    from engine.gaussian.threads import worker_threads

    monkeypatch.setenv("DGNEXACT_THREADS", "0")
    with pytest.raises(DGNInputError, match="DGNEXACT_THREADS: is '0', not a positive thread count"):
        worker_threads()


@pytest.mark.parametrize("S", [1, 2])
def test_api_empty_data_is_an_empty_result(S):
    """The documented API behaviour (README, Engine API): (0, D) data gives an empty result, without warnings."""
    net = engine.random_network([S, 4, 3], rng=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ev = engine.evaluate(net, np.zeros((0, 3)))
    assert ev.log_marginal.shape == (0,) and ev.posterior_mean.shape == (0, S)
