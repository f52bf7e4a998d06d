"""Known-answer checks for latent dimensions S = 4, 5, 6, full profile.

A decoder that factors into independent blocks of latent dimension <= 2, ``g(z) = (g_1(u_1), ..., g_B(u_B))``
with ``u = Q^T z`` for a random rotation ``Q`` of latent space, has ``p(x) = prod_b p_b(x_b)`` when
``Sigma_z = I`` (``u ~ N(0, I)`` by rotation invariance) and ``Sigma_x`` is isotropic (eq. 4). Each block's
marginal ``p_b`` is a network of latent dimension 1 or 2, integrated by mpmath quadrature of its raw forward
pass (``oracles.quadrature.quad_s1`` / ``quad_s2``) independently of the engine, and by the engine's exact
S <= 2 path as a second opinion. The rotation hides the structure from the engine: its S = 4-6 regions are
generic-looking polytopes (products of polygons and intervals, rotated) and go through the S >= 4 integrator.

Checks per case: (1) the engine's log p(x) lies within its own error bar ``log_marginal_error`` (plus the
oracle's tolerance) of the product of block marginals; (2) the engine's S <= 2 block marginals agree with
mpmath to ``TOL_LOGP``; (3) the prior region masses sum to 1 within their error bars (Prop. 1); (4) the
error bar against plain Monte Carlo (``checks.check_error_bar``, stated false-fail probability); (5) at S = 4 the
posterior mean and covariance against the blocks' mpmath posteriors, within ``posterior_mean_error`` /
``posterior_cov_error`` plus 10x the quadrature's moment error estimate; (6) cases of the
adversarial campaign (``verify.highdim_campaign``: points far off the model with log p of -120 to -720, Sigma_x = 1e-4,
leaky-ReLU at S = 6; blocks of latent dim 1 under a rotation, Sigma_x diagonal), the engine's log p(x) within its bar
plus the campaign's tolerance of the mpmath block product.
"""

from __future__ import annotations

import numpy as np
from scipy.special import log_ndtr

from engine.network import Activation, Linear, Network

from . import checks as C
from .cases import Case

COV_X = 0.3
BLOCKS = {4: (2, 2), 5: (2, 2, 1), 6: (2, 2, 2)}


def _block_net(s: int, rng) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Weights of one block ``[s, s + 1, s]`` ReLU (He scaling, as ``random_network``)."""
    h = s + 1
    return (rng.normal(size=(h, s)) * np.sqrt(2.0 / s), rng.normal(size=h) * 0.5,
            rng.normal(size=(s, h)) * np.sqrt(2.0 / h), rng.normal(size=s) * 0.5)


def _net(W1, b1, W2, b2, S) -> Network:
    return Network(layers=[Linear(W1, b1), Activation("relu", 0.0), Linear(W2, b2)], latent_dim=S,
                   cov_z_spec=1.0, cov_x_spec=COV_X)


def block_case(S: int, seed: int, n_points: int = 2):
    """(case, block networks, block slices of x): a rotated block-factorised ReLU decoder of latent dim S."""
    rng = np.random.default_rng(seed)
    parts = [_block_net(s, rng) for s in BLOCKS[S]]
    blocks = [_net(*p, s) for p, s in zip(parts, BLOCKS[S])]
    Q, _ = np.linalg.qr(rng.standard_normal((S, S)))
    W1 = np.zeros((sum(p[0].shape[0] for p in parts), S))
    r = c = 0
    for p in parts:
        W1[r:r + p[0].shape[0], c:c + p[0].shape[1]] = p[0]
        r, c = r + p[0].shape[0], c + p[0].shape[1]
    W2 = np.zeros((S, W1.shape[0]))
    r = c = 0
    for p in parts:
        W2[r:r + p[2].shape[0], c:c + p[2].shape[1]] = p[2]
        r, c = r + p[2].shape[0], c + p[2].shape[1]
    net = _net(W1 @ Q.T, np.concatenate([p[1] for p in parts]), W2, np.concatenate([p[3] for p in parts]), S)
    X = net.sample(n_points, rng=rng)
    cuts = np.cumsum((0,) + BLOCKS[S])
    slices = [slice(a, b) for a, b in zip(cuts[:-1], cuts[1:])]
    case = Case(f"blocks-S{S}", net, X, {"blocks"}, f"S = {S}: blocks {BLOCKS[S]} under a random rotation")
    case.rotation = Q
    return case, blocks, slices


def block_log_marginals(blocks, slices, X, dps: int = 20):
    """(engine, mpmath, mpmath relative error estimate): sum over blocks of log p_b(x_b) per point."""
    from engine.distributions import evaluate
    from engine.partition import partition

    from .oracles.quadrature import quad_s1, quad_s2

    eng = np.zeros(len(X))
    ref = np.zeros(len(X))
    rel = 0.0
    for net, sl in zip(blocks, slices):
        part = partition(net)
        eng += evaluate(net, X[:, sl], part=part).log_marginal
        quad = quad_s1 if net.latent_dim == 1 else quad_s2
        for i, x in enumerate(X[:, sl]):
            q = quad(net, x, part, dps=dps)
            ref[i] += q.log_px
            rel = max(rel, q.rel_error)
    return eng, ref, rel


def check_block_marginal(S: int, seed: int, settings) -> list[C.Check]:
    """(1) engine log p(x) at S vs the product of mpmath block marginals, within the engine's error bar;
    (2) the engine's block marginals (S <= 2) vs mpmath."""
    case, blocks, slices = block_case(S, seed)
    eng_b, ref, qrel = block_log_marginals(blocks, slices, case.X)
    ev = C._evaluate(case.net, case.X)
    err = np.full(len(case.X), np.inf) if ev.log_marginal_error is None else np.asarray(ev.log_marginal_error)
    oracle = {"kind": "mpmath quadrature (product of independent blocks)", "precision": "20 digits",
              "method": f"rotated block decoder, blocks {BLOCKS[S]}: log p(x) = sum_b log p_b(x_b) (quad_s1/quad_s2)"}
    tol_q = 10.0 * qrel + C.TOL_LOGP
    ok = np.isfinite(ev.log_marginal) & np.isfinite(err)
    bar = np.where(ok, err, 0.0) + tol_q
    rec = C._record(cid=f"highdim-blocks/{case.name}", claim="Theorem 1 at S = 4-6 (eq. 5) with its error bar",
                    quantity="log p(x)", oracle=oracle, tol=float(np.max(bar)),
                    reason="the engine's own log_marginal_error per point plus 10x the quadrature's error estimate",
                    seed=seed, got=ev.log_marginal, want=ref, atol=bar, oracle_ok=qrel < 1e-10,
                    oracle_note=f"quadrature rel. error estimate {qrel:.1e}")
    if not ok.all():
        rec.status, rec.message = C.FAIL, f"non-finite log p or error bar: {err}"
    rec.message += (f"; method {ev.method}, {ev.n_regions} regions; error bars {np.array2string(err, precision=3)}; "
                    "|error| " + ", ".join(f"{e:.2e}" for e in np.abs(ev.log_marginal - ref)))
    blk = C._record(cid=f"highdim-block-engine/{case.name}", claim="Theorem 1 at S <= 2 (the blocks)",
                    quantity="sum_b log p_b(x_b)", oracle=oracle, tol=tol_q,
                    reason="engine S <= 2 is exact to float64; tolerance as the S <= 2 quadrature checks",
                    seed=seed, got=eng_b, want=ref, atol=tol_q, oracle_ok=qrel < 1e-10)
    return [rec, blk]


def block_posterior_moments(blocks, slices, Q, X, dps: int = 20):
    """(mean (N, S), cov (N, S, S), moment error estimate): the posterior of ``z = Q u`` from the blocks' posteriors
    by mpmath quadrature (``quad_s1`` / ``quad_s2``): ``E[z | x] = Q (E[u_b | x_b])_b``,
    ``Cov[z | x] = Q blockdiag(Cov[u_b | x_b]) Q^T`` (the blocks are independent given x)."""
    from engine.partition import partition

    from .oracles.quadrature import quad_s1, quad_s2

    S = Q.shape[0]
    parts = [partition(net) for net in blocks]
    means, covs, err = np.zeros((len(X), S)), np.zeros((len(X), S, S)), 0.0
    for i, x in enumerate(X):
        mu, C_u = np.zeros(S), np.zeros((S, S))
        for net, part, sl in zip(blocks, parts, slices):
            q = (quad_s1 if net.latent_dim == 1 else quad_s2)(net, x[sl], part, dps=dps)
            mu[sl], C_u[sl, sl] = q.mean, q.cov
            err = max(err, q.moment_error * float(np.sqrt(np.max(np.diag(q.cov)))))
        means[i], covs[i] = Q @ mu, Q @ C_u @ Q.T
    return means, covs, err


def check_block_moments(S: int, seed: int, settings) -> list[C.Check]:
    """(5) Prop. 2 at S = 4: the posterior mean and covariance against the block oracle, within the engine's own
    ``posterior_mean_error`` / ``posterior_cov_error`` plus the oracle's tolerance."""
    case, blocks, slices = block_case(S, seed)
    ev = C._evaluate(case.net, case.X)
    m, c, qerr = block_posterior_moments(blocks, slices, case.rotation, case.X)
    tol_q = 10.0 * qerr + 1e-13  # quadrature estimate, and the rotation's rounding (~1e-16 |z|)
    oracle = {"kind": "mpmath quadrature (independent blocks, rotated)", "precision": "20 digits",
              "method": f"rotated block decoder, blocks {BLOCKS[S]}: Q (E[u_b|x_b])_b, Q blockdiag(Cov[u_b|x_b]) Q^T"}
    out = []
    for name, got, want, bar in (("posterior_mean", ev.posterior_mean, m, ev.posterior_mean_error),
                                 ("posterior_cov", ev.posterior_cov, c, ev.posterior_cov_error)):
        n = len(case.X)
        bar = np.full(n, np.inf) if bar is None else np.asarray(bar)
        atol = (np.where(np.isfinite(bar), bar, 0.0) + tol_q).reshape((n,) + (1,) * (got.ndim - 1))
        rec = C._record(cid=f"highdim-block-moments/{case.name}/{name}", claim="Prop. 2 at S = 4 with its error bar",
                        quantity=name, oracle=oracle, tol=float(np.max(atol)),
                        reason="the engine's own moment error bar per point plus 10x the quadrature's estimate",
                        seed=seed, got=got, want=want, atol=np.broadcast_to(atol, got.shape), oracle_ok=qerr < 1e-10,
                        oracle_note=f"quadrature moment error estimate {qerr:.1e}")
        if not np.all(np.isfinite(bar)):
            rec.status, rec.message = C.FAIL, f"no finite {name} error bar: {bar}"
        rec.message += f"; bars {np.array2string(bar, precision=3)}"
        out.append(rec)
    return out


def check_prior_sum(S: int, seed: int, settings) -> list[C.Check]:
    """(3) Prop. 1: sum of the prior region masses = 1 within the sum of their error bars."""
    from engine.gaussian.polytopes import polytope_moments_arrays
    from engine.partition import partition

    case, _, _ = block_case(S, seed)
    part = partition(case.net)
    polys = [r.polytope for r in part]
    R = len(polys)
    out = polytope_moments_arrays(polys, np.zeros((R, 1, S)), np.broadcast_to(np.eye(S), (R, S, S)), moments=0)
    lm = out.log_mass[:, 0]
    err = np.zeros(R) if out.log_mass_error is None else out.log_mass_error[:, 0]
    # each mass lies in [m e^-err, min(m e^err, cap)], cap = mass of the most violated half-space (rigorous)
    d = np.array([np.min(r.polytope.c / np.linalg.norm(r.polytope.H, axis=1), initial=np.inf) for r in part])
    with np.errstate(over="ignore", invalid="ignore"):
        lo = np.exp(lm - err)
        cap = np.exp(log_ndtr(d))
        hi = np.where(np.isfinite(lm) & np.isfinite(err), np.minimum(np.exp(lm + err), cap), cap)  # unresolved: cap
    total = float(np.sum(np.exp(lm)))
    s_lo, s_hi = float(np.sum(lo)), float(np.sum(hi))
    tol = (s_hi - total if total < 1.0 else total - s_lo) + 1e-13 * R
    oracle = {"kind": "exact identity", "precision": "float64", "method": "sum over the partition = 1"}
    rec = C._record(cid=f"highdim-prior-sum/{case.name}", claim="Prop. 1 (mixture weights sum to 1)",
                    quantity="sum_omega Phi_omega(0, I)", oracle=oracle, tol=tol,
                    reason="the per-region error bars summed (each upper end capped by its most violated half-space)",
                    seed=seed, got=total, want=1.0, atol=tol)
    rec.message += f"; {R} regions, sum in [{s_lo:.6g}, {s_hi:.6g}] by the error bars"
    return [rec]


CAMPAIGN = ("s4-1111-far", "s4-1111-cov1e-4", "s6-111111-leaky")


def check_campaign_case(name: str, settings) -> list[C.Check]:
    """(5) one campaign case: log p(x) vs the product of mpmath block marginals within the error bar + tolerance."""
    from .highdim_campaign import CASES, TOL_LOGP, run

    spec = next(s for s in CASES if s.name == name)
    rows = run(spec, variants=())
    oracle = {"kind": "mpmath quadrature (product of independent blocks)", "precision": "20 digits",
              "method": "rotated block decoder (verify.highdim_campaign): log p(x) = sum_b log p_b(x_b), quad_s1"}
    atol = np.array([r.bar + r.tol for r in rows])
    rec = C._record(cid=f"highdim-campaign/{name}", claim="Theorem 1 at S = 4-6 (eq. 5) with its error bar",
                    quantity="log p(x)", oracle=oracle, tol=float(np.max(atol)),
                    reason=f"log_marginal_error + 10x the quadrature's estimate + {TOL_LOGP:g} + 1e-13 |log p| + the "
                           "rounding of the rotated weights (first order)",
                    seed=spec.seed, got=np.array([r.log_p for r in rows]), want=np.array([r.oracle for r in rows]),
                    atol=atol)
    rec.message += ("; err/bar " + ", ".join(f"{r.ratio:.2g}" for r in rows)
                    + "; posterior mean / cov errors (sd units) "
                    + ", ".join(f"{r.mean_err:.1e} / {r.cov_err:.1e}" for r in rows))
    return [rec]


def highdim_items(settings) -> list:
    """(label, kind, thunk) items for ``suite.plan`` (full profile)."""
    items = []
    for S, seed in ((4, 41), (5, 42), (6, 43)):
        items.append((f"highdim-blocks/S{S}", "det", lambda d, S=S, s=seed: check_block_marginal(S, s, settings)))
        items.append((f"highdim-prior/S{S}", "det", lambda d, S=S, s=seed: check_prior_sum(S, s, settings)))
        items.append((f"highdim-mc/S{S}", "mc",
                      lambda d, S=S, s=seed: C.check_error_bar(block_case(S, s)[0], settings, d)))
    items.append(("highdim-block-moments/S4", "det", lambda d: check_block_moments(4, 41, settings)))
    for name in CAMPAIGN:
        items.append((f"highdim-campaign/{name}", "det", lambda d, n=name: check_campaign_case(n, settings)))
    return items
