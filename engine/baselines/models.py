"""Torch side of the gradient baselines: the CPA decoder with Gaussian output and an MLP encoder.

The decoder is the engine's :class:`~engine.network.Network` as a float64 ``nn.Sequential``
(:meth:`Network.to_torch`) plus one learned (or fixed) isotropic output scale ``sigma`` that never
depends on z, so that at any step it converts back exactly with
``Network.from_torch(seq, cov_z, cov_x=sigma**2)`` and can be graded by Theorem 1.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn

from ..errors import DGNInputError
from ..network import Network

_LOG_2PI = math.log(2.0 * math.pi)
DTYPE = torch.float64


def isotropic_variance(net: Network) -> float:
    """The single output variance of ``net`` (baselines need ``cov_x = sigma^2 I``)."""
    cov_x = net.cov_x
    v = float(cov_x[0, 0])
    if not np.allclose(cov_x, v * np.eye(net.data_dim), rtol=1e-12, atol=0.0):
        raise DGNInputError("cov_x", "is not isotropic",
                            "the gradient baselines learn one sigma: give cov_x as a number")
    return v


class GaussianDecoder(nn.Module):
    """``x | z ~ N(g(z), sigma^2 I)``, ``z ~ N(0, cov_z)`` with ``g`` a CPA ``nn.Sequential`` (eq. 4)."""

    def __init__(self, net: Network, learn_sigma: bool = True):
        super().__init__()
        self.net_spec_cov_z = net.cov_z_spec
        self.decoder = net.to_torch()
        log_sigma = torch.tensor(0.5 * math.log(isotropic_variance(net)), dtype=DTYPE)
        if learn_sigma:
            self.log_sigma = nn.Parameter(log_sigma)
        else:
            self.register_buffer("log_sigma", log_sigma)
        chol = np.linalg.cholesky(net.cov_z)
        self.register_buffer("chol_z", torch.from_numpy(chol))
        self.logdet_z = float(2.0 * np.log(np.diag(chol)).sum())
        self.S, self.D = net.latent_dim, net.data_dim

    @property
    def sigma(self) -> float:
        return float(torch.exp(self.log_sigma).detach())

    def log_likelihood(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """``log N(x; g(z), sigma^2 I)`` for z of shape (..., B, S), x (B, D) -> (..., B)."""
        g = self.decoder(z)
        sq = ((x - g) ** 2).sum(-1)
        inv_var = torch.exp(-2.0 * self.log_sigma)
        return -0.5 * self.D * _LOG_2PI - self.D * self.log_sigma - 0.5 * sq * inv_var

    def log_prior(self, z: torch.Tensor) -> torch.Tensor:
        u = torch.linalg.solve_triangular(self.chol_z, z.reshape(-1, self.S).T, upper=False).T
        u = u.reshape(z.shape)
        return -0.5 * (self.S * _LOG_2PI + self.logdet_z + (u * u).sum(-1))

    def log_joint(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.log_likelihood(x, z) + self.log_prior(z)

    def kl_to_prior(self, mean: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
        """Closed-form KL(N(mean, diag e^log_var) || N(0, cov_z)), per row."""
        prec = torch.cholesky_inverse(self.chol_z)
        tr = (torch.diagonal(prec) * torch.exp(log_var)).sum(-1)
        maha = torch.einsum("bs,st,bt->b", mean, prec, mean)
        return 0.5 * (tr + maha - self.S + self.logdet_z - log_var.sum(-1))

    def to_network(self) -> Network:
        """The current decoder as an engine Network (exact conversion, float64)."""
        var = float(torch.exp(2.0 * self.log_sigma).detach())
        return Network.from_torch(self.decoder, cov_z=self.net_spec_cov_z, cov_x=var)


class Encoder(nn.Module):
    """MLP recognition network ``x -> (mean, log variance)`` of a diagonal Gaussian q(z|x)."""

    def __init__(self, data_dim: int, latent_dim: int, hidden: tuple[int, ...] = (32, 32)):
        super().__init__()
        dims = [data_dim, *hidden]
        mods: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:]):
            mods += [nn.Linear(a, b, dtype=DTYPE), nn.Tanh()]
        mods.append(nn.Linear(dims[-1], 2 * latent_dim, dtype=DTYPE))
        self.body = nn.Sequential(*mods)
        self.S = latent_dim

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.body(x)
        return out[..., : self.S], out[..., self.S:].clamp(-30.0, 20.0)

    @staticmethod
    def sample(mean, log_var, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        eps = torch.randn((n, *mean.shape), dtype=mean.dtype, generator=generator)
        return mean + torch.exp(0.5 * log_var) * eps

    @staticmethod
    def log_prob(z, mean, log_var) -> torch.Tensor:
        return -0.5 * (_LOG_2PI + log_var + (z - mean) ** 2 * torch.exp(-log_var)).sum(-1)

    def q_params(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """q's mean (N, S) and full covariance (N, S, S) as numpy float64 (for exact grading)."""
        with torch.no_grad():
            m, lv = self(torch.as_tensor(X, dtype=DTYPE))
        v = np.exp(lv.numpy())
        return m.numpy().copy(), v[:, :, None] * np.eye(self.S)[None]
