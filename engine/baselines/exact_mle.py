"""Exact-gradient maximum likelihood: Adam on -mean log p(x) through :class:`engine.ExactMarginal`.

The objective is the exact marginal of Theorem 1 (eq. 5) and its gradient is exact (Fisher's identity
over the exact posterior mixture of eq. 6, see :mod:`engine.torch_marginal`), so this answers the
question "given the explicit marginal, why not maximise it directly instead of running EM?". Steps are
full batch by default, so every recorded loss IS the exact mean NLL of the parameters before the step
and monotonicity can be read off the history. The decoder starts from the same network as EM and the
other baselines; ``sigma`` (isotropic output scale, as EM's ``cov_x_type="isotropic"``) is learned,
``cov_z`` is fixed.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from ..distributions import _check_data, evaluate
from ..errors import DGNInputError
from ..network import Network
from ..partition import partition
from ..torch_marginal import ExactMarginal
from .models import DTYPE, isotropic_variance
from .training import BaselineResult, TrainConfig

HISTORY_KEYS = ("step", "nll", "elbo", "kl", "kl_min", "kl_max", "n_regions", "sigma", "loss")


def _network(decoder, cov_z, log_sigma: torch.Tensor) -> Network:
    return Network.from_torch(decoder, cov_z=cov_z, cov_x=float(torch.exp(2.0 * log_sigma).detach()))


def train_exact_mle(net: Network, X, config: TrainConfig | None = None, *, full_batch: bool = True,
                    **overrides) -> BaselineResult:
    """Adam on the exact mean NLL (decoder and sigma) from ``net``; graded by the exact NLL.

    ``config`` supplies ``lr``, ``n_steps``, ``grade_every``, ``seed``, ``learn_sigma`` and (only with
    ``full_batch=False``) ``batch_size``; its ``method`` is ignored. The result has the fields of the
    other baselines' :class:`~engine.baselines.training.BaselineResult` (``encoder`` None; the encoder
    quantities ELBO and KL are NaN in the history).
    """
    config = config or TrainConfig(lr=1e-2)
    for k, v in overrides.items():
        if not hasattr(config, k):
            raise DGNInputError(k, "is not a TrainConfig field")
        setattr(config, k, v)
    for name in ("n_steps", "grade_every"):
        if int(getattr(config, name)) < 1:
            raise DGNInputError(name, f"must be a positive integer, got {getattr(config, name)!r}")
    if not config.lr > 0:
        raise DGNInputError("lr", f"must be positive, got {config.lr!r}")
    X = _check_data(net, X)
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    decoder = net.to_torch()
    log_sigma = torch.tensor(0.5 * math.log(isotropic_variance(net)), dtype=DTYPE,
                             requires_grad=bool(config.learn_sigma))
    params = list(decoder.parameters()) + ([log_sigma] if config.learn_sigma else [])
    opt = torch.optim.Adam(params, lr=config.lr)
    Xt = torch.as_tensor(X, dtype=DTYPE)
    N = len(X)
    B = N if full_batch or config.batch_size is None else min(int(config.batch_size), N)
    hist: dict[str, list] = {k: [] for k in HISTORY_KEYS}
    hist["nll_steps"] = []  # full batch: the exact mean NLL before every step
    result = BaselineResult(config=config, history=hist)
    t0 = time.perf_counter()
    order, pos = torch.randperm(N, generator=gen), 0
    running: list[float] = []

    def record(step: int, nll: float | None = None, n_regions: int | None = None) -> None:
        if nll is None:
            cur = _network(decoder, net.cov_z_spec, log_sigma)
            part = partition(cur)
            nll, n_regions = float(-evaluate(cur, X, part=part).log_marginal.mean()), len(part)
        hist["step"].append(step)
        hist["nll"].append(nll)
        hist["n_regions"].append(n_regions)
        for k in ("elbo", "kl", "kl_min", "kl_max"):
            hist[k].append(float("nan"))
        hist["sigma"].append(float(torch.exp(log_sigma).detach()))
        hist["loss"].append(float(np.mean(running)) if running else float("nan"))
        running.clear()

    for step in range(config.n_steps + 1):
        if pos + B > N:
            order, pos = torch.randperm(N, generator=gen), 0
        xb = Xt if B == N else Xt[order[pos:pos + B]]
        pos += B
        dist = ExactMarginal(decoder, cov_z=net.cov_z_spec, cov_x=torch.exp(2.0 * log_sigma),
                             validate_args=False)
        loss = -dist.log_prob(xb).mean()
        if not torch.isfinite(loss):
            result.diverged = True
            break
        if step % config.grade_every == 0 or step == config.n_steps:
            exact_here = B == N  # the full-batch loss is the exact mean NLL of these parameters
            record(step, float(loss.detach()) if exact_here else None,
                   len(dist._cache[2]) if exact_here else None)
        if step == config.n_steps:
            break
        opt.zero_grad()
        loss.backward()
        opt.step()
        running.append(float(loss.detach()))
        if B == N:
            hist["nll_steps"].append(running[-1])
    result.network = _network(decoder, net.cov_z_spec, log_sigma)
    result.wall_s = time.perf_counter() - t0
    return result
