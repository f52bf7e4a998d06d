"""``python -m verify grade``: foreign log-likelihood estimates against the exact log p(x).

Oracle: Theorem 1 (engine.evaluate). The honest estimator is IWAE-5000 with q = N(exact posterior
mean, 1.5 x covariance) (over-dispersed, light-tailed weights); the flag test's false-flag probability
for an unbiased estimator is alpha = 1e-3 (seeded, so deterministic here).
"""

import json

import numpy as np
import pytest
import torch
import torch.nn as nn

from engine import evaluate, random_network
from engine.baselines import iwae_estimate
from verify.cli import main as verify_main
from verify.grading import grade_estimates, network_from_state_dict

SIGMA = 0.3


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("grade")
    torch.manual_seed(0)
    seq = nn.Sequential(nn.Linear(1, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2)).double()
    torch.save(seq.state_dict(), d / "dec.pt")
    net = network_from_state_dict(torch.load(d / "dec.pt", weights_only=True), SIGMA)
    X = net.sample(100, rng=0)
    np.save(d / "X.npy", X)
    ev = evaluate(net, X)
    est = iwae_estimate(net, X, ev.posterior_mean, 1.5 * ev.posterior_cov, 5000, rng=1)
    (d / "honest.json").write_text(json.dumps({"log_likelihood": est.tolist(), "lower_bound": True}))
    (d / "biased.json").write_text(json.dumps({"log_likelihood": (est + 0.5).tolist(), "lower_bound": True}))
    return d, net, X, ev.log_marginal, est


def _grade(d, est_name, *extra, decoder="dec.pt"):
    return verify_main(
        [
            "grade",
            "--decoder",
            str(d / decoder),
            "--sigma",
            str(SIGMA),
            "--data",
            str(d / "X.npy"),
            "--estimates",
            str(d / est_name),
            "--out",
            str(d / "report.json"),
            "--no-progress",
            *(extra or ("--activation", "relu")),
        ]
    )


def test_state_dict_network_matches_torch(setup):
    d, net, X, _, _ = setup
    seq = nn.Sequential(nn.Linear(1, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2)).double()
    seq.load_state_dict(torch.load(d / "dec.pt", weights_only=True))
    z = np.linspace(-3, 3, 50)[:, None]
    assert np.allclose(net.forward(z), seq(torch.from_numpy(z)).detach().numpy(), rtol=0, atol=1e-14)


def test_honest_iwae_passes(setup):
    d, *_ = setup
    assert _grade(d, "honest.json") == 0
    rep = json.loads((d / "report.json").read_text())
    assert not rep["flagged"] and abs(rep["bias"]) <= rep["bias_tolerance"]
    assert rep["lower_bound_violations"] == 0


def test_planted_bias_is_flagged(setup):
    """A claimed lower bound 0.5 nats ABOVE log p: flagged by the one-sided test (not the bias test)."""
    d, *_ = setup
    assert _grade(d, "biased.json") == 1
    rep = json.loads((d / "report.json").read_text())
    assert not rep["bias_flagged"] and abs(rep["bias"] - 0.5) < 0.05 and rep["lower_bound_flagged"]
    assert rep["total_violated"] and rep["sum_excess"] > 40


def test_deterministic_lower_bound():
    exact = np.array([-1.0, -2.0, -3.0])
    ok = grade_estimates(exact, exact - 0.1, lower_bound=True, deterministic=True)
    assert ok["lower_bound_violations"] == 0
    bad = grade_estimates(
        exact,
        exact + np.array([0.0, 0.0, 1e-3]) - 0.1 * np.array([1, 1, 0]),
        lower_bound=True,
        deterministic=True,
    )
    assert bad["lower_bound_violations"] == 1 and bad["flagged"]
    assert bad["worst_points"][0]["index"] in (0, 1, 2)


def _write_bad(d, name, obj):
    path = d / name
    if isinstance(obj, bytes):
        path.write_bytes(obj)
    else:
        torch.save(obj, path)
    return name


@pytest.mark.parametrize(
    "case", ["missing", "garbage", "pickled_module", "conv", "batchnorm", "shapes", "nan", "not_dict"]
)
def test_bad_decoder_exits_2(setup, case, capsys):
    d, *_ = setup
    good = torch.load(d / "dec.pt", weights_only=True)
    if case == "missing":
        name = "nope.pt"
    elif case == "garbage":
        name = _write_bad(d, "garbage.pt", b"\x00not a torch file at all")
    elif case == "pickled_module":
        name = _write_bad(d, "module.pt", nn.Sequential(nn.Linear(1, 2), nn.Tanh()))
    elif case == "conv":
        name = _write_bad(d, "conv.pt", nn.Sequential(nn.Conv2d(1, 2, 3)).state_dict())
    elif case == "batchnorm":
        name = _write_bad(
            d, "bn.pt", nn.Sequential(nn.Linear(1, 4), nn.BatchNorm1d(4), nn.Linear(4, 2)).state_dict()
        )
    elif case == "shapes":
        bad = dict(good)
        bad["2.weight"] = torch.zeros(8, 5, dtype=torch.float64)
        name = _write_bad(d, "shapes.pt", bad)
    elif case == "nan":
        bad = dict(good)
        bad["0.bias"] = torch.full((8,), float("nan"), dtype=torch.float64)
        name = _write_bad(d, "nan.pt", bad)
    else:
        name = _write_bad(d, "list.pt", [torch.zeros(2)])
    assert _grade(d, "honest.json", decoder=name) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("error: decoder")


def test_bad_inputs_exit_2(setup, tmp_path):
    d, *_ = setup
    (d / "short.json").write_text(json.dumps({"log_likelihood": [0.0, 1.0]}))
    assert _grade(d, "short.json") == 2
    (d / "extra.json").write_text(json.dumps({"log_likelihood": [0.0] * 100, "foo": 1}))
    assert _grade(d, "extra.json") == 2
    assert (
        verify_main(
            [
                "grade",
                "--decoder",
                str(d / "dec.pt"),
                "--sigma",
                "-1",
                "--data",
                str(d / "X.npy"),
                "--estimates",
                str(d / "honest.json"), "--activation", "relu",
            ]
        )
        == 2
    )
    np.save(tmp_path / "X3.npy", np.zeros((100, 3)))
    assert (
        verify_main(
            [
                "grade",
                "--decoder",
                str(d / "dec.pt"),
                "--sigma",
                "0.3",
                "--data",
                str(tmp_path / "X3.npy"),
                "--estimates",
                str(d / "honest.json"), "--activation", "relu",
            ]
        )
        == 2
    )


def test_leaky_activation_and_json_decoder(setup, tmp_path):
    seq = nn.Sequential(nn.Linear(2, 5), nn.LeakyReLU(0.2), nn.Linear(5, 3)).double()
    net = network_from_state_dict(seq.state_dict(), 0.1, activation="leaky_relu:0.2")
    z = np.random.default_rng(0).normal(size=(20, 2))
    assert np.allclose(net.forward(z), seq(torch.from_numpy(z)).detach().numpy(), atol=1e-14)
    assert net.cov_x[0, 0] == pytest.approx(0.01)
    d, net1, X, exact, _ = setup
    from engine import save_network

    save_network(random_network([1, 4, 2], rng=0), tmp_path / "m.json")
    (tmp_path / "e.json").write_text(json.dumps({"log_likelihood": [0.0] * len(X)}))
    rc = verify_main(
        [
            "grade",
            "--decoder",
            str(tmp_path / "m.json"),
            "--sigma",
            "0.5",
            "--data",
            str(d / "X.npy"),
            "--estimates",
            str(tmp_path / "e.json"),
            "--out",
            str(tmp_path / "r.json"),
        ]
    )
    assert rc in (0, 1) and "bias" in json.loads((tmp_path / "r.json").read_text())
