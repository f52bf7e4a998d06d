"""Gradient baselines (VAE, IWAE, REM v1/v2, REM with the exact proposal) and their exact grading."""

import numpy as np
import pytest
import torch

from engine import DGNInputError, evaluate, random_network
from engine.baselines import TrainConfig, train_baseline
from engine.baselines.models import Encoder, GaussianDecoder
from engine.baselines.training import grade, iwae_gaps


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    t = rng.uniform(0, 2 * np.pi, 60)
    X = np.c_[np.cos(t), np.sin(t)] + 0.05 * rng.standard_normal((60, 2))
    return random_network([1, 6, 6, 2], cov_x=0.1, rng=0), X


def test_decoder_converts_exactly(data):
    net, X = data
    model = GaussianDecoder(net)
    with torch.no_grad():
        model.log_sigma.add_(0.3)
        for p in model.decoder.parameters():
            p.add_(0.01)
    back = model.to_network()
    z = np.linspace(-4, 4, 101)[:, None]
    ref_g = model.decoder(torch.from_numpy(z)).detach().numpy()
    assert np.allclose(back.forward(z), ref_g, rtol=0, atol=1e-14)
    assert back.cov_x[0, 0] == pytest.approx(np.exp(2 * (0.5 * np.log(0.1) + 0.3)), rel=1e-14)
    # the torch log-likelihood agrees with the engine's Gaussian
    x = torch.from_numpy(X[:5])
    zt = torch.from_numpy(np.full((5, 1), 0.3))
    ll = model.log_likelihood(x, zt).detach().numpy()
    g = back.forward(np.full((5, 1), 0.3))
    ref = -0.5 * ((X[:5] - g) ** 2).sum(1) / back.cov_x[0, 0] - np.log(2 * np.pi * back.cov_x[0, 0])
    assert np.allclose(ll, ref, rtol=1e-13)


@pytest.mark.parametrize(
    "method,proposal",
    [
        ("vae", "is"),
        ("iwae", "is"),
        ("rem_v1", "is"),
        ("rem_v2", "is"),
        ("rem_v1", "exact"),
        ("rem_v2", "exact"),
    ],
)
def test_methods_train_and_grade_exactly(data, method, proposal):
    net, X = data
    K = 1 if method == "vae" else 5
    res = train_baseline(
        net,
        X,
        TrainConfig(
            method=method,
            n_samples=K,
            lr=5e-3,
            n_steps=30,
            grade_every=10,
            batch_size=30,
            rem_proposal=proposal,
            seed=1,
        ),
    )
    h = res.history
    assert h["step"] == [0, 10, 20, 30] and not res.diverged
    assert all(np.isfinite(h["nll"])) and min(h["kl_min"]) >= 0.0
    assert h["nll"][-1] < h["nll"][0]  # 30 Adam steps at lr 5e-3 from a random init improve the likelihood
    # the history's exact numbers are those of the returned network
    assert -evaluate(res.network, X).log_marginal.mean() == pytest.approx(h["nll"][-1], rel=1e-12)


def test_grade_identity_and_iwae_gaps(data):
    net, X = data
    enc = Encoder(2, 1)
    g = grade(net, enc, X)
    assert g["kl_min"] >= 0 and g["kl"] == pytest.approx(g["nll"] * -1 - g["elbo"], abs=1e-10)
    gaps = iwae_gaps(net, enc, X, ks=(1, 100), rng=0)
    assert gaps[1]["mean_gap"] > gaps[100]["mean_gap"]


def test_bad_config(data):
    net, X = data
    with pytest.raises(DGNInputError):
        train_baseline(net, X, TrainConfig(method="gan"))
    with pytest.raises(DGNInputError):
        train_baseline(net, X, TrainConfig(rem_proposal="oracle"))
    with pytest.raises(DGNInputError):
        train_baseline(net.replace(cov_x=[0.1, 0.2]), X, TrainConfig(n_steps=1))
