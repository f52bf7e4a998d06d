"""VAE objective (Kingma and Welling 2014): the reparameterised ELBO, eq. 3 of the paper."""

from __future__ import annotations

import torch

from .models import Encoder, GaussianDecoder


def vae_loss(model: GaussianDecoder, encoder: Encoder, x: torch.Tensor, n_samples: int = 1,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """Minus the Monte-Carlo ELBO: ``-(mean_k log p(x|z_k) - KL(q || p(z)))``, z_k = m + s eps_k."""
    mean, log_var = encoder(x)
    z = Encoder.sample(mean, log_var, n_samples, generator)
    recon = model.log_likelihood(x, z).mean(0)
    return -(recon - model.kl_to_prior(mean, log_var)).mean()
