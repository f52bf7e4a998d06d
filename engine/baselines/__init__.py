"""Gradient baselines (VAE, IWAE, REM v1/v2) on the same CPA decoder, graded by exact likelihoods.

``exact_elbo`` and ``iwae_estimate`` are pure numpy functions of (network, X, q); the torch models and
the training loop import torch only when used.
"""

from .exact_elbo import ExactELBO, exact_elbo, iwae_estimate, q_region_moments

__all__ = ["BaselineResult", "ExactELBO", "TrainConfig", "exact_elbo", "grade", "iwae_estimate", "iwae_gaps",
           "q_region_moments", "train_baseline"]


def __getattr__(name):
    if name in {"BaselineResult", "TrainConfig", "grade", "iwae_gaps", "train_baseline"}:
        from . import training

        return getattr(training, name)
    raise AttributeError(name)
