"""IWAE objective (Burda, Grosse, Salakhutdinov 2016): ``log (1/K) sum_k p(x, z_k) / q(z_k | x)``."""

from __future__ import annotations

import math

import torch

from .models import Encoder, GaussianDecoder


def iwae_loss(model: GaussianDecoder, encoder: Encoder, x: torch.Tensor, n_samples: int = 10,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """Minus the IWAE-K bound, reparameterised; gradients flow to the decoder and the encoder."""
    mean, log_var = encoder(x)
    z = Encoder.sample(mean, log_var, n_samples, generator)
    log_w = model.log_joint(x, z) - Encoder.log_prob(z, mean, log_var)
    return -(torch.logsumexp(log_w, 0) - math.log(n_samples)).mean()
