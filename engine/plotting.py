"""Figures of the paper's Sec. 4.3 experiments (matplotlib); imported only by ``python -m engine experiment``.

One function per figure, each writing one PNG into ``out`` and returning its file name:

* :func:`nll_figure` ``fig4_nll.png`` (paper Fig. 4): exact NLL of EM and of the gradient baselines;
* :func:`kl_figure` ``fig5_kl.png`` (Fig. 5): exact KL(q(z|x) || p(z|x)) of the encoders;
* :func:`iwae_gap_figure` ``fig_iwae_gap.png``: IWAE-K gap to the exact log-likelihood against K;
* :func:`manifold_figure` ``fig6_manifolds.png`` (Figs. 6-7): the learned manifolds g(z);
* :func:`posterior_figure` ``fig3_posterior.png`` (Fig. 3): samples, the exact marginal p(x) of eq. 5 in log
  scale (a collapsed region's peak does not hide the rest of the manifold) and the exact posterior p(z|x) of
  eq. 6, zoomed to where its mass is.

:func:`make_figures` draws them all (what ``engine.experiments.run_experiment(figures=...)`` takes).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

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
LOG_DENSITY_RANGE = 30.0  # nats below the peak of log p(x) shown by the marginal panel
POSTERIOR_TAIL = 1e-4  # posterior mass left outside the zoomed posterior panel (each side)


def _color(label: str) -> str:
    if label in _COLORS:
        return _COLORS[label]
    return _COLORS.get(label.split(" lr=")[0], "tab:gray")


def _short_label(run: dict) -> str:
    return run["label"] if run["method"] == "vae" else run["label"].split(" lr=")[0]


def _save(fig, path: Path) -> str:
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def _final_nll(results, key, seed):
    if key == "EM":
        return next(e["final_nll"] for e in results["em"] if e["seed"] == seed)
    if key == "init":
        return next(e["nll"][0] for e in results["em"] if e["seed"] == seed)
    return next((r["final_nll"] for r in results["runs"] if r["label"] == key and r["seed"] == seed), None)


def _plot_runs(ax, runs, key: str, transform=lambda v: v) -> None:
    """One curve per run of ``history[key]`` against the update step, one legend entry per method."""
    seen = set()
    for r in runs:
        lab = _short_label(r)
        ax.plot(r["history"]["step"], transform(r["history"][key]), color=_color(lab), alpha=0.8,
                label=None if lab in seen else lab)
        seen.add(lab)


def nll_figure(results: dict[str, Any], out: Path) -> str:
    """Paper Fig. 4: exact NLL per point (Theorem 1) along EM and along the gradient baselines."""
    name, seeds = results["experiment"], results["seeds"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for e in results["em"]:
        axes[0].plot(range(len(e["nll"])), e["nll"], color="black", alpha=0.8,
                     label="EM" if e["seed"] == seeds[0] else None)
    axes[0].set_xlabel("EM iteration")
    axes[0].set_title(f"{name}: exact EM")
    _plot_runs(axes[1], results["runs"], "nll")
    em_best = min(e["final_nll"] for e in results["em"])
    axes[1].axhline(em_best, color="black", ls="--", label="EM final (best seed)")
    axes[1].set_xlabel("gradient update")
    axes[1].set_title(f"{name}: gradient baselines, graded exactly (Theorem 1)")
    runs_lo = min(min(r["history"]["nll"]) for r in results["runs"]) if results["runs"] else em_best
    lo, hi = min(em_best, runs_lo), max(e["nll"][0] for e in results["em"])
    for ax in axes:
        ax.set_ylabel("exact NLL per point (nats)")
        ax.set_ylim(lo - 0.05 * abs(lo) - 0.1, hi + 0.1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, out / "fig4_nll.png")


def kl_figure(results: dict[str, Any], out: Path) -> str:
    """Paper Fig. 5: the exact mean KL(q(z|x) || p(z|x)) of each encoder along training."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    with_encoder = [r for r in results["runs"] if np.any(np.isfinite(r["history"]["kl"]))]  # not exact MLE
    _plot_runs(ax, with_encoder, "kl", lambda v: np.maximum(v, 1e-12))
    ax.set_yscale("log")
    ax.set_xlabel("gradient update")
    ax.set_ylabel("exact mean KL(q(z|x) || p(z|x)) (nats)")
    ax.set_title(f"{results['experiment']}: encoder's q against the true posterior (exact)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, out / "fig5_kl.png")


def iwae_gap_figure(results: dict[str, Any], out: Path) -> str:
    """Mean ``log p(x) - IWAE_K(x)`` (exact log p of eq. 5) against K for the first seed's runs, +-1 s.e."""
    seed = results["seeds"][0]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in results["runs"]:
        if r["seed"] != seed or not r["iwae_gaps"]:
            continue
        ks = sorted(int(k) for k in r["iwae_gaps"])
        gap = [r["iwae_gaps"][k]["mean_gap"] for k in ks]
        se = [r["iwae_gaps"][k]["se_mean_gap"] for k in ks]
        ax.errorbar(ks, gap, yerr=se, marker="o", capsize=3, color=_color(_short_label(r)), label=r["label"])
    ax.set_xscale("log")
    ax.set_yscale("symlog", linthresh=1e-3)
    ax.set_xlabel("K (importance samples)")
    ax.set_ylabel("mean of log p(x) - IWAE_K(x) (nats)")
    ax.set_title(f"{results['experiment']}: IWAE-K gap to the exact log-likelihood (seed {seed}, ±1 s.e.)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, out / "fig_iwae_gap.png")


def _shown(results, seed):
    return [("init", "initialisation"), ("EM", "EM")] + [
        (r["label"], r["label"]) for r in results["runs"] if r["seed"] == seed]


def _manifold_curves(results, X, networks, seed):
    """Data and g(z), z in [-3, 3], one panel per network (2-D data)."""
    shown = _shown(results, seed)
    z = np.linspace(-3.0, 3.0, 400)[:, None]
    cols = min(4, len(shown))
    rows = int(np.ceil(len(shown) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.4 * rows), squeeze=False)
    pad = 0.3 * np.ptp(X, axis=0).max()
    for ax, (key, title) in zip(axes.flat, shown):
        g = networks[(key, seed)].forward(z)
        ax.scatter(X[:, 0], X[:, 1], s=4, color="tab:blue", alpha=0.4, label="data")
        ax.plot(g[:, 0], g[:, 1], color="tab:red", lw=1.5, label="g(z), z in [-3, 3]")
        nll = _final_nll(results, key, seed)
        ax.set_title(title + ("" if nll is None else f"\nexact NLL {nll:.3f}"), fontsize=9)
        ax.set_xlabel("x1")
        ax.set_ylabel("x2")
        ax.set_xlim(X[:, 0].min() - pad, X[:, 0].max() + pad)
        ax.set_ylim(X[:, 1].min() - pad, X[:, 1].max() + pad)
        ax.legend(fontsize=6, loc="lower left")
    for ax in list(axes.flat)[len(shown):]:
        ax.axis("off")
    fig.suptitle(f"{results['experiment']}: learned CPA manifolds g(z) (seed {seed})")
    return fig


def _manifold_images(results, X, networks, seed):
    """Decoded images g(z) along the latent axis, one row per network (image data)."""
    shown = _shown(results, seed)
    side = int(round(np.sqrt(X.shape[1])))
    zq = np.array([-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0])[:, None]
    fig, axes = plt.subplots(len(shown), len(zq), figsize=(1.3 * len(zq), 1.4 * len(shown)), squeeze=False)
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
        axes[i, 0].set_ylabel(title + ("" if nll is None else f"\nNLL {nll:.1f}"), fontsize=6, rotation=0,
                              ha="right", va="center")
    fig.suptitle(f"{results['experiment']}: decoded g(z) along the latent axis (seed {seed})", fontsize=9)
    return fig


def manifold_figure(results: dict[str, Any], X: np.ndarray, networks: dict, out: Path) -> str:
    """Paper Figs. 6-7: the manifold g(z) of the initial, the EM-trained and each baseline's network (first seed)."""
    seed = results["seeds"][0]
    draw = _manifold_curves if X.shape[1] == 2 else _manifold_images
    fig = draw(results, X, networks, seed)
    fig.tight_layout()
    return _save(fig, out / "fig6_manifolds.png")


def _posterior_grid(ev) -> np.ndarray:
    """z grid (S = 1) dense around every region that carries posterior weight (its truncated mean +- 8 sd), so
    that a narrow mode is resolved however far it lies from the others."""
    w = ev.region_weights[0]
    pieces = []
    for r in np.nonzero(w > 1e-8)[0]:
        m, sd = ev.region_means[0, r, 0], np.sqrt(max(ev.region_covs[0, r, 0, 0], 1e-300))
        pieces.append(np.linspace(m - 8.0 * sd, m + 8.0 * sd, 600))
    m, sd = ev.posterior_mean[0, 0], np.sqrt(ev.posterior_cov[0, 0, 0])
    pieces.append(np.linspace(m - 8.0 * sd, m + 8.0 * sd, 2000))
    return np.unique(np.concatenate(pieces))


def _log_posterior(net, x0, zg, log_marginal):
    """log p(z|x) = log N(x; g(z), Sigma_x) + log N(z; 0, Sigma_z) - log p(x) on the grid (eq. 6)."""
    G = net.forward(zg[:, None])
    Lx = np.linalg.cholesky(net.cov_x)
    r = np.linalg.solve(Lx, (x0 - G).T)
    log_lik = -0.5 * (r * r).sum(0) - np.log(np.diag(Lx)).sum() - 0.5 * net.data_dim * np.log(2 * np.pi)
    log_prior = -0.5 * zg ** 2 / net.cov_z[0, 0] - 0.5 * np.log(2 * np.pi * net.cov_z[0, 0])
    return log_lik + log_prior - log_marginal


def _mass_window(zg, post):
    """The z interval holding all but ``POSTERIOR_TAIL`` of the posterior on each side, padded by 10%."""
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (post[1:] + post[:-1]) * np.diff(zg))])
    cdf /= cdf[-1]
    lo = zg[np.searchsorted(cdf, POSTERIOR_TAIL)]
    hi = zg[min(np.searchsorted(cdf, 1.0 - POSTERIOR_TAIL), zg.size - 1)]
    pad = 0.1 * max(hi - lo, 1e-12)
    return lo - pad, hi + pad


def _posterior_panel(ax, net, part, ev, x0) -> None:
    """The exact p(z|x) of one point, zoomed to its mass, with E[z|x] and the region boundaries in view."""
    zg = _posterior_grid(ev)
    post = np.exp(_log_posterior(net, x0, zg, ev.log_marginal[0]))
    lo, hi = _mass_window(zg, post)
    ax.plot(zg, post, color="tab:blue", label="p(z|x) (exact, eq. 6)")
    ax.plot([], [], color="black", lw=0.6, label="region boundaries")
    for reg in part:
        for b in reg.polytope.interval():
            if np.isfinite(b) and lo <= b <= hi:
                ax.axvline(b, color="black", lw=0.6, alpha=0.6)
    ax.axvline(ev.posterior_mean[0, 0], color="tab:green", lw=2, label="E[z|x]")
    ax.set_xlim(lo, hi)
    ax.set_xlabel("z")
    ax.set_ylabel("posterior density")
    ax.set_title(f"posterior of one point (log p(x) = {ev.log_marginal[0]:.3f})")
    ax.legend(fontsize=7)


def _samples_panel(ax, net, Xs, Zs, x0) -> None:
    ax.scatter(Xs[:, 0], Xs[:, 1], s=4, color="tab:blue", alpha=0.5, label="g(z) + noise")
    gz = net.forward(Zs)
    ax.scatter(gz[:, 0], gz[:, 1], s=4, color="tab:red", label="g(z)")
    ax.scatter(x0[:, 0], x0[:, 1], s=60, color="black", marker="x", label="point x")
    ax.set_xlabel("x1")
    ax.set_ylabel("x2")
    ax.set_title("generated samples (EM-trained)")
    ax.legend(fontsize=7)


def _marginal_panel(fig, ax, net, part, X) -> None:
    """log p(x) (eq. 5) on a grid, shown over ``LOG_DENSITY_RANGE`` nats below its peak: in log scale one
    collapsed region's tall peak does not flatten the rest of the manifold into the background."""
    from .distributions import evaluate

    pad = 0.5
    gx = np.linspace(X[:, 0].min() - pad, X[:, 0].max() + pad, 120)
    gy = np.linspace(X[:, 1].min() - pad, X[:, 1].max() + pad, 120)
    GX, GY = np.meshgrid(gx, gy)
    lp = evaluate(net, np.c_[GX.ravel(), GY.ravel()], part=part).log_marginal.reshape(GX.shape)
    top = float(np.max(lp))
    levels = np.linspace(top - LOG_DENSITY_RANGE, top, 31)
    cs = ax.contourf(GX, GY, np.maximum(lp, levels[0]), levels=levels, cmap="viridis")
    fig.colorbar(cs, ax=ax, label=f"log p(x) (nats; floor at peak - {LOG_DENSITY_RANGE:g})")
    ax.scatter(X[:, 0], X[:, 1], s=2, color="white", alpha=0.5, label="data")
    ax.set_xlabel("x1")
    ax.set_ylabel("x2")
    ax.set_title("exact marginal log p(x) (Theorem 1)")
    ax.legend(fontsize=7, loc="lower left")


def posterior_figure(net, X: np.ndarray, name: str, out: Path) -> str:
    """Paper Fig. 3 for the EM-trained network: samples, marginal log p(x) (eq. 5), posterior p(z|x) (eq. 6)."""
    from .distributions import evaluate
    from .partition import partition

    part = partition(net)
    Xs, Zs = net.sample(400, rng=np.random.default_rng(0), return_latent=True)
    x0 = Xs[:1]
    ev = evaluate(net, x0, part=part)
    ncols = 3 if X.shape[1] == 2 else 1
    fig, axes = plt.subplots(1, ncols, figsize=(5 * ncols, 4.3), squeeze=False)
    axes = axes[0]
    if X.shape[1] == 2:
        _samples_panel(axes[0], net, Xs, Zs, x0)
        _marginal_panel(fig, axes[1], net, part, X)
    _posterior_panel(axes[-1], net, part, ev, x0)
    fig.suptitle(f"{name}: marginal and posterior of the EM-trained DGN (paper Fig. 3)")
    fig.tight_layout()
    return _save(fig, out / "fig3_posterior.png")


def make_figures(results: dict[str, Any], X: np.ndarray, networks: dict, out: Path) -> list[str]:
    """Every figure of an experiment run (``networks[(label, seed)]``: the trained networks); file names."""
    out = Path(out)
    files = [nll_figure(results, out)]
    if results["runs"]:
        files += [kl_figure(results, out), iwae_gap_figure(results, out)]
    files.append(manifold_figure(results, X, networks, out))
    files.append(posterior_figure(networks[("EM", results["seeds"][0])], X, results["experiment"], out))
    return files
