"""Seeded, offline datasets for EM experiments and tests (paper Sec. 4.3 and Fig. 4).

Every generator takes ``n`` (where it applies) and ``rng`` (seed or ``numpy.random.Generator``) and
returns a float64 ``(N, D)`` array; nothing is downloaded.

* :func:`circle`   unit circle in 2-D, angle uniform, plus isotropic Gaussian noise (sigma = 0.05),
                   the paper's Sec. 4.3 toy problem.
* :func:`wave`     ``(z, cos(1.4 z))`` with z uniform on [-pi, pi], plus Gaussian noise (sigma = 0.05).
* :func:`digits4`  scikit-learn's bundled 8x8 digits (UCI optdigits test set, shipped with sklearn)
                   restricted to the digit 4: 181 images, 64 pixels, intensities 0..16 divided by 16
                   so that every pixel lies in [0, 1]. The offline stand-in for the paper's MNIST-4.
* :func:`from_network` draws ``x = g(z) + noise`` from a known network (for recovery tests).
"""

from __future__ import annotations

import numpy as np

from .errors import DGNInputError
from .network import Network


def _count(n, name: str = "n") -> int:
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise DGNInputError(name, f"must be a positive integer, got {n!r}")
    return int(n)


def _noise(noise) -> float:
    if isinstance(noise, bool) or not isinstance(noise, int | float) or not np.isfinite(noise) or noise < 0:
        raise DGNInputError("noise", f"must be a finite number >= 0, got {noise!r}")
    return float(noise)


def circle(n: int = 500, noise: float = 0.05, rng=0) -> np.ndarray:
    """``(cos t, sin t) + noise * N(0, I)``, ``t ~ U[0, 2 pi)``: (n, 2)."""
    n, noise = _count(n), _noise(noise)
    rng = np.random.default_rng(rng)
    t = rng.uniform(0.0, 2.0 * np.pi, size=n)
    return np.column_stack([np.cos(t), np.sin(t)]) + noise * rng.standard_normal((n, 2))


def wave(n: int = 500, noise: float = 0.05, frequency: float = 1.4, rng=0) -> np.ndarray:
    """``(z, cos(frequency z)) + noise * N(0, I)``, ``z ~ U[-pi, pi]``: (n, 2)."""
    n, noise = _count(n), _noise(noise)
    rng = np.random.default_rng(rng)
    z = rng.uniform(-np.pi, np.pi, size=n)
    return np.column_stack([z, np.cos(frequency * z)]) + noise * rng.standard_normal((n, 2))


def digits4(scale: float = 1.0 / 16.0) -> np.ndarray:
    """The 181 images of the digit 4 in scikit-learn's bundled 8x8 digits, times ``scale``: (181, 64).

    Deterministic (no sampling). With the default scale every pixel is in [0, 1]; note that some
    pixels are 0 in every image, so a diagonal or full ``cov_x`` needs the EM variance floor.
    """
    from sklearn.datasets import load_digits

    data = load_digits()
    return np.asarray(data.data[data.target == 4], dtype=np.float64) * float(scale)


def from_network(net: Network, n: int = 2000, rng=0, return_latent: bool = False):
    """``n`` draws ``x = g(z) + eps``, ``z ~ N(0, cov_z)``, ``eps ~ N(0, cov_x)`` of a known network."""
    if not isinstance(net, Network):
        raise DGNInputError("net", f"is a {type(net).__name__}", "pass an engine.Network")
    return net.sample(_count(n), rng=np.random.default_rng(rng), return_latent=return_latent)


__all__ = ["circle", "digits4", "from_network", "wave"]
