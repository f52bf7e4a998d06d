"""The paper's Sec. 4.3 experiments: exact EM against VAE / IWAE / REM, all graded exactly.

``python -m engine experiment NAME --out DIR`` for NAME in ``circle``, ``wave``, ``digits4``. Every
run of a seed starts from the SAME decoder initialisation (``engine.em.init_random``, seeded) on the
SAME data. EM (``engine.em.EM``) records its exact mean log-likelihood per iteration; the gradient
baselines are graded every ``grade_every`` updates by the exact NLL (Theorem 1), the exact ELBO of
the encoder's q and KL(q || p(z|x)) (:mod:`engine.baselines.exact_elbo`). Outputs in DIR:
``results.json`` and the figures ``fig3_posterior.png`` (marginal and posterior, paper Fig. 3),
``fig4_nll.png`` (Fig. 4), ``fig5_kl.png`` (Fig. 5), ``fig6_manifolds.png`` (Figs. 6-7) and
``fig_iwae_gap.png`` (IWAE-K gap to the exact log-likelihood against K).
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
    figures: bool = True,
    log=print,
) -> dict[str, Any]:
    """Run experiment ``name``, write ``results.json`` and figures into ``out_dir``, return the results."""
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
    if figures:
        results["figures"] = make_figures(results, X, networks, out)
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


# --------------------------------------------------------------------------- figures
_COLORS = {
    "VAE lr=0.005": "tab:blue",
    "VAE lr=0.001": "tab:red",
    "VAE lr=0.0001": "tab:green",
    "IWAE": "tab:purple",
    "REM v1": "tab:orange",
    "REM v2": "tab:brown",
    "REM v1 (exact s)": "tab:pink",
    "exact MLE": "tab:cyan",
}


def _color(label: str) -> str:
    if label in _COLORS:
        return _COLORS[label]
    return _COLORS.get(label.split(" lr=")[0], "tab:gray")


def make_figures(results: dict[str, Any], X: np.ndarray, networks: dict, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    name = results["experiment"]
    seeds = results["seeds"]
    # Fig. 4: exact NLL
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for e in results["em"]:
        axes[0].plot(
            range(len(e["nll"])),
            e["nll"],
            color="black",
            alpha=0.8,
            label="EM" if e["seed"] == seeds[0] else None,
        )
    axes[0].set_xlabel("EM iteration")
    axes[0].set_ylabel("exact NLL per point (nats)")
    axes[0].set_title(f"{name}: exact EM")
    seen = set()
    for r in results["runs"]:
        lab = r["label"] if r["method"] == "vae" else r["label"].split(" lr=")[0]
        axes[1].plot(
            r["history"]["step"],
            r["history"]["nll"],
            color=_color(lab),
            alpha=0.8,
            label=None if lab in seen else lab,
        )
        seen.add(lab)
    em_best = min(e["final_nll"] for e in results["em"])
    axes[1].axhline(em_best, color="black", ls="--", label="EM final (best seed)")
    axes[1].set_xlabel("gradient update")
    axes[1].set_ylabel("exact NLL per point (nats)")
    axes[1].set_title(f"{name}: gradient baselines, graded exactly (Theorem 1)")
    lo = min(em_best, min(min(r["history"]["nll"]) for r in results["runs"]) if results["runs"] else em_best)
    hi = max(e["nll"][0] for e in results["em"])
    for ax in axes:
        ax.set_ylim(lo - 0.05 * abs(lo) - 0.1, hi + 0.1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    files.append(_save(fig, out / "fig4_nll.png"))
    # Fig. 5: exact KL(q || p(z|x))
    if results["runs"]:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        seen = set()
        for r in results["runs"]:
            lab = r["label"] if r["method"] == "vae" else r["label"].split(" lr=")[0]
            ax.plot(
                r["history"]["step"],
                np.maximum(r["history"]["kl"], 1e-12),
                color=_color(lab),
                alpha=0.8,
                label=None if lab in seen else lab,
            )
            seen.add(lab)
        ax.set_yscale("log")
        ax.set_xlabel("gradient update")
        ax.set_ylabel("exact mean KL(q(z|x) || p(z|x)) (nats)")
        ax.set_title(f"{name}: encoder's q against the true posterior (exact)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
        fig.tight_layout()
        files.append(_save(fig, out / "fig5_kl.png"))
        # IWAE gap against K
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for r in results["runs"]:
            if r["seed"] != seeds[0] or not r["iwae_gaps"]:
                continue
            ks = sorted(int(k) for k in r["iwae_gaps"])
            g = [r["iwae_gaps"][k]["mean_gap"] for k in ks]
            se = [r["iwae_gaps"][k]["se_mean_gap"] for k in ks]
            ax.errorbar(
                ks,
                g,
                yerr=se,
                marker="o",
                capsize=3,
                color=_color(r["label"] if r["method"] == "vae" else r["label"].split(" lr=")[0]),
                label=r["label"],
            )
        ax.set_xscale("log")
        ax.set_yscale("symlog", linthresh=1e-3)
        ax.set_xlabel("K (importance samples)")
        ax.set_ylabel("mean of log p(x) - IWAE_K(x) (nats)")
        ax.set_title(f"{name}: IWAE-K gap to the exact log-likelihood (seed {seeds[0]}, ±1 s.e.)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
        fig.tight_layout()
        files.append(_save(fig, out / "fig_iwae_gap.png"))
    # Figs. 6-7: learned manifolds
    seed = seeds[0]
    shown = [("init", "initialisation"), ("EM", "EM")] + [
        (r["label"], r["label"]) for r in results["runs"] if r["seed"] == seed
    ]
    z = np.linspace(-3.0, 3.0, 400)[:, None]
    if X.shape[1] == 2:
        cols = min(4, len(shown))
        rows = int(np.ceil(len(shown) / cols))
        fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.4 * rows), squeeze=False)
        for ax, (key, title) in zip(axes.flat, shown):
            net = networks[(key, seed)]
            g = net.forward(z)
            ax.scatter(X[:, 0], X[:, 1], s=4, color="tab:blue", alpha=0.4, label="data")
            ax.plot(g[:, 0], g[:, 1], color="tab:red", lw=1.5, label="g(z), z in [-3, 3]")
            nll = _final_nll(results, key, seed)
            ax.set_title(title + ("" if nll is None else f"\nexact NLL {nll:.3f}"), fontsize=9)
            ax.set_xlabel("x1")
            ax.set_ylabel("x2")
            pad = 0.3 * np.ptp(X, axis=0).max()
            ax.set_xlim(X[:, 0].min() - pad, X[:, 0].max() + pad)
            ax.set_ylim(X[:, 1].min() - pad, X[:, 1].max() + pad)
        for ax in list(axes.flat)[len(shown) :]:
            ax.axis("off")
        axes.flat[0].legend(fontsize=7, loc="lower left")
        fig.suptitle(f"{name}: learned CPA manifolds g(z) (seed {seed})")
        fig.tight_layout()
        files.append(_save(fig, out / "fig6_manifolds.png"))
    else:
        side = int(round(np.sqrt(X.shape[1])))
        zq = np.array([-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0])[:, None]
        fig, axes = plt.subplots(
            len(shown), len(zq), figsize=(1.3 * len(zq), 1.4 * len(shown)), squeeze=False
        )
        for i, (key, title) in enumerate(shown):
            imgs = networks[(key, seed)].forward(zq)
            for j in range(len(zq)):
                ax = axes[i, j]
                ax.imshow(imgs[j].reshape(side, side), cmap="gray_r", vmin=0, vmax=1)
                ax.set_xticks([])
                ax.set_yticks([])
                if i == len(shown) - 1:
                    ax.set_xlabel(f"z={zq[j, 0]:g}", fontsize=7)
            nll = _final_nll(results, key, seed)
            axes[i, 0].set_ylabel(
                title + ("" if nll is None else f"\nNLL {nll:.1f}"),
                fontsize=6,
                rotation=0,
                ha="right",
                va="center",
            )
        fig.suptitle(f"{name}: decoded g(z) along the latent axis (seed {seed})", fontsize=9)
        fig.tight_layout()
        files.append(_save(fig, out / "fig6_manifolds.png"))
    files.append(_posterior_figure(networks[("EM", seed)], X, name, out))
    return files


def _final_nll(results, key, seed):
    if key == "EM":
        return next(e["final_nll"] for e in results["em"] if e["seed"] == seed)
    if key == "init":
        return next(e["nll"][0] for e in results["em"] if e["seed"] == seed)
    return next((r["final_nll"] for r in results["runs"] if r["label"] == key and r["seed"] == seed), None)


def _save(fig, path: Path) -> str:
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def _posterior_figure(net, X: np.ndarray, name: str, out: Path) -> str:
    """Paper Fig. 3 for the EM-trained network: samples, marginal p(x) (eq. 5), posterior p(z|x) (eq. 6)."""
    import matplotlib.pyplot as plt

    from .distributions import evaluate
    from .partition import partition

    part = partition(net)
    rng = np.random.default_rng(0)
    Xs, Zs = net.sample(400, rng=rng, return_latent=True)
    x0 = Xs[:1]
    ev = evaluate(net, x0, part=part)
    lo = float(ev.posterior_mean[0, 0] - 6 * np.sqrt(ev.posterior_cov[0, 0, 0]))
    hi = float(ev.posterior_mean[0, 0] + 6 * np.sqrt(ev.posterior_cov[0, 0, 0]))
    zg = np.linspace(min(lo, -3.0), max(hi, 3.0), 2000)[:, None]
    G = net.forward(zg)
    Lx = np.linalg.cholesky(net.cov_x)
    r = np.linalg.solve(Lx, (x0 - G).T)
    log_lik = -0.5 * (r * r).sum(0) - np.log(np.diag(Lx)).sum() - 0.5 * net.data_dim * np.log(2 * np.pi)
    log_prior = -0.5 * zg[:, 0] ** 2 / net.cov_z[0, 0] - 0.5 * np.log(2 * np.pi * net.cov_z[0, 0])
    post = np.exp(log_lik + log_prior - ev.log_marginal[0])
    ncols = 3 if X.shape[1] == 2 else 1
    fig, axes = plt.subplots(1, ncols, figsize=(5 * ncols, 4.3), squeeze=False)
    axes = axes[0]
    if X.shape[1] == 2:
        ax = axes[0]
        ax.scatter(Xs[:, 0], Xs[:, 1], s=4, color="tab:blue", alpha=0.5, label="g(z) + noise")
        gz = net.forward(Zs)
        ax.scatter(gz[:, 0], gz[:, 1], s=4, color="tab:red", label="g(z)")
        ax.scatter(x0[:, 0], x0[:, 1], s=60, color="black", marker="x", label="point x")
        ax.set_xlabel("x1")
        ax.set_ylabel("x2")
        ax.set_title("generated samples (EM-trained)")
        ax.legend(fontsize=7)
        ax = axes[1]
        pad = 0.5
        gx = np.linspace(X[:, 0].min() - pad, X[:, 0].max() + pad, 120)
        gy = np.linspace(X[:, 1].min() - pad, X[:, 1].max() + pad, 120)
        GX, GY = np.meshgrid(gx, gy)
        lp = evaluate(net, np.c_[GX.ravel(), GY.ravel()], part=part).log_marginal.reshape(GX.shape)
        cs = ax.contourf(GX, GY, np.exp(lp), levels=30, cmap="viridis")
        fig.colorbar(cs, ax=ax, label="p(x)")
        ax.set_xlabel("x1")
        ax.set_ylabel("x2")
        ax.set_title("exact marginal p(x) (Theorem 1)")
    ax = axes[-1]
    ax.plot(zg[:, 0], post, color="tab:blue", label="p(z|x) (exact)")
    for reg in part:
        for b in reg.polytope.interval():
            if np.isfinite(b) and zg[0, 0] <= b <= zg[-1, 0]:
                ax.axvline(b, color="black", lw=0.6, alpha=0.6)
    ax.axvline(ev.posterior_mean[0, 0], color="tab:green", lw=2, label="E[z|x]")
    ax.plot([], [], color="black", lw=0.6, label="region boundaries")
    ax.set_xlabel("z")
    ax.set_ylabel("posterior density")
    ax.set_title(f"posterior of one point (log p(x) = {ev.log_marginal[0]:.3f})")
    ax.legend(fontsize=7)
    fig.suptitle(f"{name}: marginal and posterior of the EM-trained DGN (paper Fig. 3)")
    fig.tight_layout()
    return _save(fig, out / "fig3_posterior.png")
