"""Networks: cpa-dgn JSON round trip, torch conversion, validation with one-line errors."""

import json

import numpy as np
import pytest
import torch

import engine
from engine import DGNInputError, Network, load_network, random_network
from engine.network import Activation, Linear


def _spec(**overrides):
    spec = {
        "format": "cpa-dgn", "version": 1, "latent_dim": 2, "cov_z": 1.0, "cov_x": [0.1, 0.2, 0.3],
        "layers": [
            {"type": "linear", "weight": [[1.0, -0.5], [0.3, 0.8], [0.1, 0.1]], "bias": [0.1, -0.2, 0.0]},
            {"type": "leaky_relu", "negative_slope": 0.2},
            {"type": "linear", "weight": [[1.0, 0.0, 2.0], [0.5, -1.0, 0.0], [0.0, 0.3, 1.0]], "bias": [0, 0, 1]},
        ],
    }
    spec.update(overrides)
    return spec


@pytest.mark.parametrize("cov_x", [0.05, [0.1, 0.2, 0.3], [[0.2, 0.05, 0.0], [0.05, 0.1, 0.01], [0.0, 0.01, 0.3]]])
@pytest.mark.parametrize("act", [{"type": "relu"}, {"type": "abs"}, {"type": "leaky_relu", "negative_slope": 1.7},
                                 {"type": "leaky_relu", "negative_slope": -0.4}])
def test_json_round_trip_is_exact(tmp_path, cov_x, act):
    rng = np.random.default_rng(0)
    spec = _spec(cov_x=cov_x)
    spec["layers"][0]["weight"] = rng.normal(size=(3, 2)).tolist()  # full-precision floats
    spec["layers"][1] = act
    net = load_network(spec)
    path = tmp_path / "m.json"
    engine.save_network(net, path)
    again = load_network(path)
    assert json.loads(again.to_json()) == json.loads(net.to_json()) == json.loads(json.dumps(spec))
    Z = rng.normal(size=(50, 2))
    np.testing.assert_array_equal(again.forward(Z), net.forward(Z))
    np.testing.assert_array_equal(again.cov_x, net.cov_x)


def test_activations_two_slopes():
    h = np.array([-2.0, -0.5, 0.0, 1.5])
    np.testing.assert_array_equal(Activation("relu", 0.0)(h), [0, 0, 0, 1.5])
    np.testing.assert_array_equal(Activation("abs", -1.0)(h), [2, 0.5, 0, 1.5])
    np.testing.assert_array_equal(Activation("leaky_relu", 3.0)(h), [-6, -1.5, 0, 1.5])


def test_torch_round_trip_matches_forward():
    seq = torch.nn.Sequential(torch.nn.Linear(2, 5), torch.nn.LeakyReLU(0.3), torch.nn.Linear(5, 4),
                              torch.nn.ReLU(), torch.nn.Linear(4, 3)).double()
    net = Network.from_torch(seq, cov_z=1.0, cov_x=0.01)
    assert net.widths == [2, 5, 4, 3] and net.latent_dim == 2 and net.n_units == 9
    Z = np.random.default_rng(1).normal(size=(20, 2))
    with torch.no_grad():
        want = seq(torch.from_numpy(Z)).numpy()
    np.testing.assert_allclose(net.forward(Z), want, rtol=1e-13, atol=1e-13)
    back = net.to_torch()
    with torch.no_grad():
        np.testing.assert_allclose(back(torch.from_numpy(Z)).numpy(), want, rtol=1e-13, atol=1e-13)


def test_random_network_shapes_and_sampling():
    net = random_network([2, 8, 8, 5], activation="abs", rng=3)
    X, Z = net.sample(7, rng=0, return_latent=True)
    assert X.shape == (7, 5) and Z.shape == (7, 2)
    assert net.sign_patterns(Z).shape == (7, 16)


BAD = [
    (lambda s: s["layers"].__setitem__(1, {"type": "tanh"}), "layers[1].type"),
    (lambda s: s["layers"][2].__setitem__("weight", [[1.0, 0.0]] * 3), "layers[2].weight"),
    (lambda s: s.__setitem__("latent_dim", 3), "layers[0].weight"),
    (lambda s: s.__setitem__("latent_dim", 0), "latent_dim"),
    (lambda s: s.__setitem__("cov_z", [[1.0, 2.0], [2.0, 1.0]]), "cov_z"),
    (lambda s: s.__setitem__("cov_z", [[1.0, 0.5], [0.0, 1.0]]), "cov_z"),
    (lambda s: s.__setitem__("cov_x", -1.0), "cov_x"),
    (lambda s: s.__setitem__("cov_x", [0.1, 0.2]), "cov_x"),
    (lambda s: s["layers"][0]["weight"][0].__setitem__(0, float("nan")), "layers[0].weight"),
    (lambda s: s["layers"][0].__setitem__("bias", [0.0]), "layers[0].bias"),
    (lambda s: s.__setitem__("colour", "blue"), "model.colour"),
    (lambda s: s["layers"].pop(), "layers"),
    (lambda s: s.__setitem__("format", "onnx"), "format"),
]


@pytest.mark.parametrize("mutate,field", BAD)
def test_bad_networks_give_one_line_errors(mutate, field):
    spec = _spec()
    mutate(spec)
    with pytest.raises(DGNInputError) as info:
        load_network(spec)
    message = str(info.value)
    assert message.startswith(field + ":"), message
    assert "\n" not in message


def test_non_cpa_torch_module_is_rejected():
    seq = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Tanh(), torch.nn.Linear(3, 2))
    with pytest.raises(DGNInputError, match=r"decoder\[1\]: Tanh is not a continuous piecewise-affine"):
        Network.from_torch(seq)


def test_bad_json_text_and_missing_file(tmp_path):
    with pytest.raises(DGNInputError, match="model: is not valid JSON"):
        load_network("{not json")
    with pytest.raises(DGNInputError, match="does not exist"):
        load_network(tmp_path / "nope.json")


def test_layers_are_immutable():
    net = load_network(_spec())
    layer = net.layers[0]
    assert isinstance(layer, Linear)
    with pytest.raises(ValueError):
        layer.weight[0, 0] = 5.0
