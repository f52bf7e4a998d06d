"""``python -m engine evaluate``: JSON fields, .npy and .csv input, exit 2 on bad input."""

import json
import subprocess
import sys

import numpy as np
import pytest

import engine
from engine.cli import main


@pytest.fixture
def model_and_data(tmp_path):
    net = engine.random_network([1, 5, 5, 3], activation="leaky_relu", rng=0)
    engine.save_network(net, tmp_path / "m.json")
    X = net.sample(4, rng=1)
    np.save(tmp_path / "x.npy", X)
    np.savetxt(tmp_path / "x.csv", X, delimiter=",")
    return net, X, tmp_path


@pytest.mark.parametrize("data", ["x.npy", "x.csv"])
def test_evaluate_writes_fields(model_and_data, data):
    net, X, tmp = model_and_data
    out = tmp / "r.json"
    assert main(["evaluate", "--model", str(tmp / "m.json"), "--data", str(tmp / data), "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    ev = engine.evaluate(net, X)
    np.testing.assert_allclose(result["log_marginal"], ev.log_marginal, rtol=1e-15, atol=0)
    assert np.shape(result["posterior_mean"]) == (4, 1) and np.shape(result["posterior_cov"]) == (4, 1, 1)
    assert np.shape(result["region_weights"]) == (4, ev.n_regions) and result["n_regions"] == ev.n_regions


@pytest.mark.parametrize("args,message", [
    (["--data", "x.npy"], "the following arguments are required: --model"),
    (["--model", "m.json", "--data", "missing.npy"], "error: data: file"),
    (["--model", "m.json", "--data", "bad.npy"],
     "error: data: has shape (4, 2) but the network's output dimension D is 3"),
    (["--model", "bad.json", "--data", "x.npy"], "error: model: is not valid JSON"),
])
def test_evaluate_bad_input_exits_2_with_one_line(model_and_data, args, message):
    _, X, tmp = model_and_data
    np.save(tmp / "bad.npy", X[:, :2])
    (tmp / "bad.json").write_text("{")
    proc = subprocess.run([sys.executable, "-m", "engine", "evaluate", *args], cwd=tmp, capture_output=True, text=True)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert len([line for line in proc.stderr.splitlines() if "error:" in line]) == 1
    assert "Traceback" not in proc.stderr
