"""The paper's Sec. 4.3 experiments: exact EM against VAE / IWAE / REM, all graded exactly.

``python -m engine experiment NAME --out DIR`` for NAME in ``circle``, ``wave``, ``digits4``. Every
run of a seed starts from the SAME decoder initialisation (``engine.em.init_random``, seeded) on the
SAME data. EM (``engine.em.EM``) records its exact mean log-likelihood per iteration; the gradient
baselines are graded every ``grade_every`` updates by the exact NLL (Theorem 1), the exact ELBO of
the encoder's q and KL(q || p(z|x)) (:mod:`engine.baselines.exact_elbo`). Outputs in DIR:
``results.json`` and, through the experiment command, the figures of :mod:`engine.plotting`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DGNInputError

VAE_LRS = (5e-3, 1e-3, 1e-4)
EXTRA_METHODS = ("iwae", "rem_v1", "rem_v2", "rem_exact", "exact_mle")
EXACT_MLE_LR = 1e-2  # Adam, full batch, on the exact NLL (engine.baselines.exact_mle)
IWAE_KS = (1, 10, 100, 1000)


@dataclass
class ExperimentSpec:
    name: str
    widths: list[int]
    n_points: int | None  # None: the whole dataset
    em_iter: int = 100
    n_steps: int = 2000
    grade_every: int = 100
    batch_size: int = 100
    extra_lr: float = 1e-3  # learning rate of IWAE and REM
    n_particles: int = 10  # K of IWAE and REM
    seeds: tuple[int, ...] = (0, 1, 2)
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


SPECS = {
    "circle": ExperimentSpec(
        "circle",
        [1, 8, 8, 2],
        300,
        notes="unit circle, noise 0.05 (paper Sec. 4.3); decoder [1, 8, 8, 2] ReLU",
    ),
    "wave": ExperimentSpec(
        "wave",
        [1, 8, 8, 2],
        300,
        notes="(z, cos 1.4 z), z ~ U[-pi, pi], noise 0.05 (paper Fig. 6); decoder [1, 8, 8, 2]",
    ),
    "digits4": ExperimentSpec(
        "digits4",
        [1, 8, 8, 8, 64],
        None,
        em_iter=40,
        n_steps=2000,
        seeds=(0, 1),
        notes="sklearn 8x8 digit 4, 181 images in [0, 1] (stand-in for MNIST-4, Fig. 7); "
        "decoder [1, 8, 8, 8, 64]",
    ),
}


def load_data(name: str) -> np.ndarray:
    from . import datasets

    spec = SPECS[name]
    if name == "circle":
        return datasets.circle(n=spec.n_points, noise=0.05, rng=0)
    if name == "wave":
        return datasets.wave(n=spec.n_points, noise=0.05, rng=0)
    return datasets.digits4()


def _initial_network(widths: list[int], X: np.ndarray, seed: int):
    from .em import init_random

    return init_random(widths, X, rng=seed)


def _run_em(net0, X: np.ndarray, max_iter: int) -> dict[str, Any]:
    from .em import EM

    t0 = time.perf_counter()
    em = EM(net0, max_iter=max_iter, tol=1e-7, cov_x_type="isotropic").fit(X)
    nll = [-float(v) for v in em.log_likelihoods_]
    return {
        "nll": nll,
        "final_nll": nll[-1],
        "n_iter": int(em.n_iter_),
        "wall_s": time.perf_counter() - t0,
        "network": em.network_,
    }


def _label(method: str, lr: float) -> str:
    names = {
        "vae": "VAE",
        "iwae": "IWAE",
        "rem_v1": "REM v1",
        "rem_v2": "REM v2",
        "rem_exact": "REM v1 (exact s)",
        "exact_mle": "exact MLE",
    }
    return f"{names[method]} lr={lr:g}"


def run_experiment(
    name: str,
    out_dir: str | Path,
    *,
    seeds=None,
    n_steps: int | None = None,
    em_iter: int | None = None,
    methods=EXTRA_METHODS,
    lrs=VAE_LRS,
    n_points: int | None = None,
    grade_every: int | None = None,
    iwae_ks=IWAE_KS,
    figures=None,
    log=print,
) -> dict[str, Any]:
    """Run experiment ``name``, write ``results.json`` into ``out_dir``, return the results.

    ``figures``: optional ``figures(results, X, networks, out_dir) -> list of file names`` (the experiment
    command passes ``engine.plotting.make_figures``; the numeric engine itself never imports matplotlib),
    called before ``results.json`` is written so that the file lists them.
    """
    if name not in SPECS:
        raise DGNInputError("experiment", f"{name!r} is unknown", f"choose from {', '.join(SPECS)}")
    unknown = sorted(set(methods) - set(EXTRA_METHODS))
    if unknown:
        raise DGNInputError(
            "methods", f"{unknown[0]!r} is unknown", f"choose from {', '.join(EXTRA_METHODS)}"
        )
    import torch
    from threadpoolctl import threadpool_limits

    from .baselines.exact_mle import train_exact_mle
    from .baselines.training import TrainConfig, iwae_gaps, train_baseline

    spec = SPECS[name]
    seeds = tuple(spec.seeds if seeds is None else seeds)
    n_steps = spec.n_steps if n_steps is None else int(n_steps)
    em_iter = spec.em_iter if em_iter is None else int(em_iter)
    grade_every = spec.grade_every if grade_every is None else int(grade_every)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    X = load_data(name)
    if n_points is not None:
        X = X[: int(n_points)]
    torch.set_num_threads(1)
    t_start = time.perf_counter()
    results: dict[str, Any] = {
        "experiment": name,
        "notes": spec.notes,
        "widths": spec.widths,
        "n_points": len(X),
        "seeds": list(seeds),
        "n_steps": n_steps,
        "em_iter": em_iter,
        "grade_every": grade_every,
        "batch_size": spec.batch_size,
        "n_particles": spec.n_particles,
        "em": [],
        "runs": [],
    }
    networks: dict[tuple[str, int], Any] = {}
    with threadpool_limits(limits=1):
        for seed in seeds:
            net0 = _initial_network(spec.widths, X, seed)
            networks[("init", seed)] = net0
            em = _run_em(net0, X, em_iter)
            networks[("EM", seed)] = em.pop("network")
            results["em"].append({"seed": seed, **em})
            log(
                f"[{name}] seed {seed}: EM {em['n_iter']} iterations, NLL {em['nll'][0]:.4f} -> "
                f"{em['final_nll']:.4f} ({em['wall_s']:.1f}s)"
            )
            jobs = [("vae", lr) for lr in lrs] + [(m, EXACT_MLE_LR if m == "exact_mle" else spec.extra_lr)
                                                  for m in methods]
            for method, lr in jobs:
                cfg = TrainConfig(
                    method="rem_v1" if method == "rem_exact" else method,
                    lr=lr,
                    n_steps=n_steps,
                    batch_size=spec.batch_size,
                    n_samples=1 if method == "vae" else spec.n_particles,
                    grade_every=grade_every,
                    rem_proposal="exact" if method == "rem_exact" else "is",
                    seed=seed,
                )
                res = train_exact_mle(net0, X, cfg) if method == "exact_mle" else train_baseline(net0, X, cfg)
                label = _label(method, lr)
                networks[(label, seed)] = res.network
                with_q = iwae_ks and res.encoder is not None  # exact MLE has no encoder
                gaps = iwae_gaps(res.network, res.encoder, X, iwae_ks, rng=seed) if with_q else {}
                h = res.history
                results["runs"].append(
                    {
                        "method": method,
                        "lr": lr,
                        "seed": seed,
                        "label": label,
                        "history": h,
                        "final_nll": h["nll"][-1],
                        "final_kl": h["kl"][-1],
                        "min_kl": float(min(h["kl_min"])),
                        "iwae_gaps": gaps,
                        "diverged": res.diverged,
                        "wall_s": res.wall_s,
                        "network": res.network.to_dict(),
                    }
                )
                log(
                    f"[{name}] seed {seed}: {label}: NLL {h['nll'][0]:.4f} -> {h['nll'][-1]:.4f}, "
                    f"KL {h['kl'][-1]:.4f} ({res.wall_s:.1f}s)"
                )
    results["summary"] = _summary(results)
    results["wall_s"] = time.perf_counter() - t_start
    for e, seed in zip(results["em"], seeds):
        e["network"] = networks[("EM", seed)].to_dict()
    if figures is not None:
        results["figures"] = figures(results, X, networks, out)
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    return results


def _summary(results: dict[str, Any]) -> dict[str, Any]:
    em_final = [e["final_nll"] for e in results["em"]]
    by_label: dict[str, list[float]] = {}
    for r in results["runs"]:
        by_label.setdefault(r["label"], []).append(r["final_nll"])
    vae_final = [r["final_nll"] for r in results["runs"] if r["method"] == "vae"]
    per_seed = []
    for e in results["em"]:
        vae_seed = [
            r["final_nll"] for r in results["runs"] if r["method"] == "vae" and r["seed"] == e["seed"]
        ]
        per_seed.append(bool(vae_seed) and e["final_nll"] < min(vae_seed))
    min_kl = min((r["min_kl"] for r in results["runs"]), default=float("nan"))
    return {
        "em_final_nll": em_final,
        "em_final_nll_mean": float(np.mean(em_final)),
        "final_nll": {
            k: {"mean": float(np.mean(v)), "std": float(np.std(v)), "values": v} for k, v in by_label.items()
        },
        "em_below_every_vae_same_seed": bool(all(per_seed)),
        "em_worst_below_best_vae": bool(vae_final) and max(em_final) < min(vae_final),
        "min_exact_kl_over_all_gradings": min_kl,
    }
