"""Reweighted EM (Dieng and Paisley 2019, Alg. 1 = REM v1, Alg. 2 = REM v2).

Per minibatch, with the current parameters (theta_t, eta_t):

1. z_r^(k) ~ r_eta(z|x); ``w_k = p(x, z_r^k) / r(z_r^k | x)``, ``alpha = w / sum w``.
2. The moment-matched proposal ``s = N(mu, Sigma)`` (their eq. 15): by self-normalised importance
   sampling, ``mu = sum alpha_k z_r^k``, ``Sigma = sum alpha_k (z_r^k - mu)(z_r^k - mu)^T + eps I``
   (their eq. 22-23), or -- ``proposal="exact"`` -- the EXACT posterior mean and covariance of
   Prop. 2 from :func:`engine.evaluate` (no sampling error in s).
3. z_s^(k) ~ s; ``v_k = p(x, z_s^k) / s(z_s^k)``, ``beta = v / sum v``.
4. Encoder (inclusive KL, eq. 14): maximise ``sum_k beta_k log r_eta(z_s^k | x)``.
5. Decoder: v1 maximises ``sum_k alpha_k log p_theta(x, z_r^k)`` (eq. 8), v2
   ``sum_k beta_k log p_theta(x, z_s^k)`` (eq. 24). Weights are constants (no gradient through them).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .models import DTYPE, Encoder, GaussianDecoder

PROPOSALS = ("is", "exact")


def _mvn_log_prob(z: torch.Tensor, mu: torch.Tensor, chol: torch.Tensor) -> torch.Tensor:
    """log N(z; mu, L L^T) for z (K, B, S), mu (B, S), chol (B, S, S)."""
    S = mu.shape[-1]
    diff = (z - mu).permute(1, 2, 0)  # (B, S, K)
    u = torch.linalg.solve_triangular(chol, diff, upper=False)
    logdet = 2.0 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
    return -0.5 * (S * math.log(2 * math.pi) + logdet[None] + (u * u).sum(1).T)


def rem_loss(model: GaussianDecoder, encoder: Encoder, x: torch.Tensor, n_samples: int = 10, version: int = 1,
             proposal: str = "is", eps: float = 1e-4, generator: torch.Generator | None = None,
             exact_fn=None) -> torch.Tensor:
    """A surrogate whose gradient is REM's (encoder and decoder updates of Alg. 1 or 2).

    ``exact_fn(x_numpy) -> (mean (B,S), cov (B,S,S))`` supplies the exact posterior moments when
    ``proposal == "exact"``.
    """
    K = n_samples
    mean, log_var = encoder(x)
    with torch.no_grad():
        z_r = Encoder.sample(mean, log_var, K, generator)
        log_w = model.log_joint(x, z_r) - Encoder.log_prob(z_r, mean, log_var)
        alpha = torch.softmax(log_w, 0)  # (K, B)
        S = mean.shape[-1]
        if proposal == "exact":
            mu_np, cov_np = exact_fn(x.numpy())
            mu = torch.as_tensor(mu_np, dtype=DTYPE)
            cov = torch.as_tensor(cov_np, dtype=DTYPE) + eps * torch.eye(S, dtype=DTYPE)
        else:
            mu = (alpha[..., None] * z_r).sum(0)
            d = z_r - mu
            cov = torch.einsum("kb,kbs,kbt->bst", alpha, d, d) + eps * torch.eye(S, dtype=DTYPE)
        chol = torch.linalg.cholesky(cov)
        e = torch.randn((K, *mu.shape), dtype=DTYPE, generator=generator)
        z_s = mu + torch.einsum("bst,kbt->kbs", chol, e)
        log_v = model.log_joint(x, z_s) - _mvn_log_prob(z_s, mu, chol)
        beta = torch.softmax(log_v, 0)
    enc_obj = (beta * Encoder.log_prob(z_s, mean, log_var)).sum(0)
    if version == 1:
        dec_obj = (alpha * model.log_joint(x, z_r)).sum(0)
    else:
        dec_obj = (beta * model.log_joint(x, z_s)).sum(0)
    return -(enc_obj + dec_obj).mean()


def exact_posterior_moments(model: GaussianDecoder):
    """``x -> (E[z|x], Cov[z|x])`` of the current decoder by Theorem 1 / Prop. 2 (for proposal='exact')."""
    from ..distributions import evaluate

    net = model.to_network()

    def fn(X: np.ndarray):
        ev = evaluate(net, X)
        return ev.posterior_mean, ev.posterior_cov

    return fn
