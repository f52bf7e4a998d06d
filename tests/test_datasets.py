"""engine.datasets: shapes, seeding, and the documented generative definitions."""

from __future__ import annotations

import numpy as np
import pytest

import engine
from engine import datasets
from engine.errors import DGNInputError


def test_circle_is_seeded_and_has_unit_radius_with_noise_005():
    X = datasets.circle(4000, rng=3)
    assert X.shape == (4000, 2) and X.dtype == np.float64
    np.testing.assert_array_equal(X, datasets.circle(4000, rng=3))
    assert not np.array_equal(X, datasets.circle(4000, rng=4))
    radius = np.linalg.norm(X, axis=1)
    # radial noise of N(0, 0.05^2) noise on the unit circle: mean ~1 (+sigma^2/2), sd ~0.05;
    # 4000 draws: standard error of the mean 8e-4, of the sd ~6e-4 -> 8 sigma margins
    assert abs(radius.mean() - 1.0) < 0.008
    assert abs(radius.std() - 0.05) < 0.005
    assert np.allclose(datasets.circle(10, noise=0.0, rng=0) ** 2 @ np.ones(2), 1.0)


def test_wave_follows_cos_14z():
    X = datasets.wave(3000, noise=0.0, rng=1)
    np.testing.assert_allclose(X[:, 1], np.cos(1.4 * X[:, 0]), atol=1e-15)
    assert X[:, 0].min() >= -np.pi and X[:, 0].max() <= np.pi
    Xn = datasets.wave(3000, rng=1)
    resid = Xn - X  # same seed, same z draws; the noise is the only difference
    assert abs(resid.std() - 0.05) < 0.005


def test_digits4_is_the_sklearn_digit_four_scaled_to_unit_interval():
    from sklearn.datasets import load_digits

    X = datasets.digits4()
    d = load_digits()
    assert X.shape == ((d.target == 4).sum(), 64) == (181, 64)
    assert X.min() >= 0.0 and X.max() <= 1.0
    np.testing.assert_array_equal(X * 16, d.data[d.target == 4])


def test_from_network_matches_network_sample():
    net = engine.random_network([1, 4, 3], rng=0)
    X, Z = datasets.from_network(net, 50, rng=7, return_latent=True)
    assert X.shape == (50, 3) and Z.shape == (50, 1)
    np.testing.assert_array_equal(X, net.sample(50, rng=7))


@pytest.mark.parametrize("call", [lambda: datasets.circle(0), lambda: datasets.wave(5, noise=-1.0),
                                  lambda: datasets.circle(2.5), lambda: datasets.from_network("net")])
def test_bad_arguments_raise_one_line_errors(call):
    with pytest.raises(DGNInputError):
        call()
