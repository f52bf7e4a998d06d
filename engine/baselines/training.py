"""Training loop of the gradient baselines (VAE, IWAE, REM v1/v2) with EXACT grading.

Every ``grade_every`` updates the torch decoder is converted exactly to an engine Network and graded
by closed forms: the exact mean NLL (Theorem 1), the exact ELBO of the encoder's q (see
:mod:`engine.baselines.exact_elbo`) and the exact KL(q || p(z|x)) = log p(x) - ELBO.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from ..distributions import _check_data, evaluate
from ..errors import DGNInputError
from ..network import Network
from ..partition import partition
from .exact_elbo import exact_elbo, iwae_estimate
from .iwae import iwae_loss
from .models import DTYPE, Encoder, GaussianDecoder
from .rem import PROPOSALS, exact_posterior_moments, rem_loss
from .vae import vae_loss

METHODS = ("vae", "iwae", "rem_v1", "rem_v2")


@dataclass
class TrainConfig:
    """Hyper-parameters of one baseline run (Adam on decoder, sigma and encoder together)."""

    method: str = "vae"
    lr: float = 1e-3
    n_steps: int = 2000
    batch_size: int | None = 100  # None: full batch
    n_samples: int = 1  # K: Monte-Carlo samples per point (IWAE / REM particles)
    learn_sigma: bool = True
    encoder_hidden: tuple[int, ...] = (32, 32)
    grade_every: int = 50
    rem_proposal: str = "is"  # "is" (Dieng & Paisley) or "exact" (engine posterior moments)
    rem_eps: float = 1e-4
    seed: int = 0

    def validate(self) -> None:
        if self.method not in METHODS:
            raise DGNInputError("method", f"{self.method!r} is unknown", f"choose from {', '.join(METHODS)}")
        if self.rem_proposal not in PROPOSALS:
            raise DGNInputError("rem_proposal", f"{self.rem_proposal!r} is unknown", "use 'is' or 'exact'")
        for name in ("n_steps", "n_samples", "grade_every"):
            if int(getattr(self, name)) < 1:
                raise DGNInputError(name, f"must be a positive integer, got {getattr(self, name)!r}")
        if not self.lr > 0:
            raise DGNInputError("lr", f"must be positive, got {self.lr!r}")


@dataclass
class BaselineResult:
    config: TrainConfig
    history: dict[str, list] = field(default_factory=dict)
    network: Network | None = None
    encoder: Encoder | None = None
    diverged: bool = False
    wall_s: float = 0.0

    def to_dict(self) -> dict:
        return {"config": asdict(self.config), "history": self.history, "diverged": self.diverged,
                "wall_s": self.wall_s, "network": None if self.network is None else self.network.to_dict()}


def grade(net: Network, encoder: Encoder, X: np.ndarray) -> dict[str, float]:
    """Exact NLL, exact ELBO of q, exact KL(q || p(z|x)) (means over X; KL min/max too)."""
    part = partition(net)
    ev = evaluate(net, X, part=part)
    m, C = encoder.q_params(X)
    el = exact_elbo(net, X, m, C, part=part, log_marginal=ev.log_marginal)
    return {"nll": float(-ev.log_marginal.mean()), "elbo": float(el.elbo.mean()), "kl": float(el.kl.mean()),
            "kl_min": float(el.kl.min()), "kl_max": float(el.kl.max()), "n_regions": len(part)}


def iwae_gaps(net: Network, encoder: Encoder, X: np.ndarray, ks=(1, 10, 100, 1000), rng=0) -> dict[int, dict]:
    """Mean and spread of ``log p(x) - IWAE_K(x)`` under the encoder's q, for each K (exact log p(x))."""
    log_px = evaluate(net, X).log_marginal
    m, C = encoder.q_params(X)
    rng = np.random.default_rng(rng)
    out = {}
    for K in ks:
        gap = log_px - iwae_estimate(net, X, m, C, int(K), rng=rng)
        sd = float(gap.std(ddof=1)) if len(gap) > 1 else 0.0
        out[int(K)] = {"mean_gap": float(gap.mean()), "std_gap": sd, "se_mean_gap": sd / np.sqrt(len(gap))}
    return out


def train_baseline(net: Network, X, config: TrainConfig | None = None, **overrides) -> BaselineResult:
    """Train decoder (initialised from ``net``), sigma and an MLP encoder with Adam; grade exactly."""
    config = config or TrainConfig()
    for k, v in overrides.items():
        if not hasattr(config, k):
            raise DGNInputError(k, "is not a TrainConfig field")
        setattr(config, k, v)
    config.validate()
    X = _check_data(net, X)
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    model = GaussianDecoder(net, learn_sigma=config.learn_sigma)
    encoder = Encoder(net.data_dim, net.latent_dim, tuple(config.encoder_hidden))
    opt = torch.optim.Adam(list(model.parameters()) + list(encoder.parameters()), lr=config.lr)
    Xt = torch.as_tensor(X, dtype=DTYPE)
    N = len(X)
    B = N if config.batch_size is None else min(int(config.batch_size), N)
    hist: dict[str, list] = {k: [] for k in ("step", "nll", "elbo", "kl", "kl_min", "kl_max", "n_regions",
                                             "sigma", "loss")}
    result = BaselineResult(config=config, history=hist)
    t0 = time.perf_counter()
    order = torch.randperm(N, generator=gen)
    pos = 0
    running = []

    def record(step: int) -> None:
        g = grade(model.to_network(), encoder, X)
        hist["step"].append(step)
        for k, v in g.items():
            hist[k].append(v)
        hist["sigma"].append(model.sigma)
        hist["loss"].append(float(np.mean(running)) if running else float("nan"))
        running.clear()

    record(0)
    for step in range(1, config.n_steps + 1):
        if pos + B > N:
            order, pos = torch.randperm(N, generator=gen), 0
        xb = Xt[order[pos:pos + B]]
        pos += B
        if config.method == "vae":
            loss = vae_loss(model, encoder, xb, config.n_samples, gen)
        elif config.method == "iwae":
            loss = iwae_loss(model, encoder, xb, config.n_samples, gen)
        else:
            exact_fn = exact_posterior_moments(model) if config.rem_proposal == "exact" else None
            loss = rem_loss(model, encoder, xb, config.n_samples, version=int(config.method[-1]),
                            proposal=config.rem_proposal, eps=config.rem_eps, generator=gen,
                            exact_fn=exact_fn)
        if not torch.isfinite(loss):
            result.diverged = True
            break
        opt.zero_grad()
        loss.backward()
        opt.step()
        running.append(float(loss.detach()))
        if step % config.grade_every == 0 or step == config.n_steps:
            record(step)
    result.network = model.to_network()
    result.encoder = encoder
    result.wall_s = time.perf_counter() - t0
    return result
