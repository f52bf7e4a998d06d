"""Adversarial known-answer campaign for S = 4, 5, 6 (issue 14): does every error bar cover?

Oracle: a decoder that factors into independent blocks of latent dimension 1 or 2 hidden by a random rotation Q
(``u = Q^T z``), ``g(z) = (g_1(u_1), ..., g_B(u_B))``, with ``Sigma_z = I`` and ``Sigma_x`` diagonal, has

    p(x) = int prod_b N(x_b; g_b(u_b), Sigma_x,b) N(u_b; 0, I) du = prod_b p_b(x_b)

(the likelihood factors because ``Sigma_x`` is block diagonal along the output blocks, the prior because u ~ N(0, I)
by rotation invariance), and the posterior of u factors too: ``E[z|x] = Q m_u``, ``Cov[z|x] = Q diag(C_b) Q^T``.
Each ``p_b`` and its posterior moments come from mpmath quadrature of the block's raw forward pass
(``oracles.quadrature.quad_s1`` / ``quad_s2``, 20 digits), which shares nothing with the engine's integrators.
Blocks may be wide (two hidden layers of 8-16 units), leaky-ReLU or abs, with more outputs than latent dimensions.

The rotated net's first layer is ``fl(W_1 Q^T)``, not ``W_1 Q^T``, and the float ``Q`` is orthogonal to ~1e-16 only:
the engine integrates a model a few ulps of the weights away from the oracle's. :func:`model_tolerance` bounds the
resulting change of log p to first order (the likelihood's gradient times the output shift, doubled) and it is
added to the oracle's tolerance and printed.

Verdict per point: ``|log p - oracle| <= log_marginal_error + tol``, tol = 10 x the quadrature's relative error
estimate + ``checks.TOL_LOGP`` (1e-10 + 1e-13 |log p|) + the model tolerance. The posterior mean and covariance
errors are reported in the oracle's u coordinates, in units of the posterior standard deviations (no bar yet).

Run ``python -m verify.highdim_campaign [--only NAME ...]``; it prints one row per point and the worst err/bar. The
oracle costs 3 s CPU a case of latent-dim-1 blocks and 15-85 s a case with 2-D blocks of one hidden layer; the whole
list takes hours on 2 cores (the wide two-layer blocks and ``s4-far30-D6`` the longest): pick cases with ``--only``.
The ``options`` variants: "threads" (1 vs 2, bits compared), "no-terms" (``region_terms=False``, bits compared),
"rqmc" (``method="rqmc"``), "unpruned-relative" / "unpruned-absolute" (``region_truncated_moments(accuracy=...)``
over every region: ``evaluate`` itself has no ``accuracy`` option).
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass, field

import mpmath as mp
import numpy as np

from engine.network import Activation, Linear, Network

TOL_LOGP = 1e-10


@dataclass(frozen=True)
class Block:
    """One independent block: latent dim ``s`` (1 or 2), hidden widths, output dim."""

    s: int
    hidden: tuple[int, ...]
    out: int


@dataclass(frozen=True)
class Spec:
    """A campaign case: blocks, activation, noise, seed and how the points are placed.

    ``points``: ("sample",) draws from the model; ("scale", k) k times draws; ("off", r) draws plus r times a
    random unit vector (off the decoder's image when D > S); ("far", r) r times a random unit vector.
    ("vertex", e): ``g(Q u0)`` plus e times standard normal noise, u0 a vertex of the first layer's arrangement
    (s units of each block vanish): with a small ``cov_x`` the posterior straddles a vertex of the S-dim partition.
    ``cov_x``: an isotropic variance or a tuple of per-output variances (diagonal: the factorisation holds).
    """

    name: str
    blocks: tuple[Block, ...]
    seed: int
    points: tuple = ("sample",)
    n_points: int = 2
    activation: str = "relu"
    slope: float = 0.0
    cov_x: float | tuple = 0.3
    options: tuple[str, ...] = ()  # extra evaluate variants: "threads", "no-terms", "rqmc", "unpruned"

    @property
    def S(self) -> int:
        return sum(b.s for b in self.blocks)

    @property
    def D(self) -> int:
        return sum(b.out for b in self.blocks)


@dataclass
class Built:
    spec: Spec
    net: Network
    blocks: list
    in_slices: list
    out_slices: list
    Q: np.ndarray
    X: np.ndarray
    W1: np.ndarray  # the unrotated block-diagonal first layer
    extra: dict = field(default_factory=dict)


def _act(spec: Spec) -> Activation:
    slope = {"relu": 0.0, "abs": -1.0}.get(spec.activation, spec.slope)
    return Activation(spec.activation, slope)


def _block_layers(b: Block, rng) -> list[tuple[np.ndarray, np.ndarray]]:
    """(W, bias) per affine layer of one block, He scaling as ``random_network`` (biases N(0, 0.5^2))."""
    widths = (b.s, *b.hidden, b.out)
    return [(rng.normal(size=(o, i)) * np.sqrt(2.0 / i), rng.normal(size=o) * 0.5)
            for i, o in zip(widths[:-1], widths[1:])]


def _block_diag(mats: list[np.ndarray]) -> np.ndarray:
    out = np.zeros((sum(m.shape[0] for m in mats), sum(m.shape[1] for m in mats)))
    r = c = 0
    for m in mats:
        out[r:r + m.shape[0], c:c + m.shape[1]] = m
        r, c = r + m.shape[0], c + m.shape[1]
    return out


def _layers(weights, biases, act) -> list:
    layers = []
    for k, (W, b) in enumerate(zip(weights, biases)):
        if k:
            layers.append(act)
        layers.append(Linear(W, b))
    return layers


def _slices(sizes) -> list[slice]:
    cuts = np.cumsum((0, *sizes))
    return [slice(int(a), int(b)) for a, b in zip(cuts[:-1], cuts[1:])]


def _cov_x(spec: Spec) -> np.ndarray:
    return np.full(spec.D, float(spec.cov_x)) if np.ndim(spec.cov_x) == 0 else np.asarray(spec.cov_x, float)


def build(spec: Spec) -> Built:
    """The rotated block decoder of ``spec``, its block networks and the points."""
    if len({len(b.hidden) for b in spec.blocks}) != 1:
        raise ValueError("every block needs the same number of hidden layers")
    rng = np.random.default_rng(spec.seed)
    parts = [_block_layers(b, rng) for b in spec.blocks]
    act = _act(spec)
    cx = _cov_x(spec)
    outs = _slices([b.out for b in spec.blocks])
    blocks = [Network(layers=_layers([w for w, _ in p], [c for _, c in p], act), latent_dim=b.s, cov_z_spec=1.0,
                      cov_x_spec=cx[sl].copy()) for p, b, sl in zip(parts, spec.blocks, outs)]
    S = spec.S
    Q, _ = np.linalg.qr(rng.standard_normal((S, S)))
    depth = len(parts[0])
    Ws = [_block_diag([p[k][0] for p in parts]) for k in range(depth)]
    bs = [np.concatenate([p[k][1] for p in parts]) for k in range(depth)]
    W1 = Ws[0]
    Ws[0] = W1 @ Q.T
    net = Network(layers=_layers(Ws, bs, act), latent_dim=S, cov_z_spec=1.0,
                  cov_x_spec=float(spec.cov_x) if np.ndim(spec.cov_x) == 0 else cx.copy())
    ins = _slices([b.s for b in spec.blocks])
    if spec.points[0] == "vertex":
        Z = np.stack([Q @ _vertex(parts, ins, S, rng) for _ in range(spec.n_points)])
        X = net.forward(Z) + spec.points[1] * rng.standard_normal((spec.n_points, spec.D))
    else:
        X = _points(spec, net, rng)
    return Built(spec, net, blocks, ins, outs, Q, X, W1)


def _vertex(parts, ins, S, rng) -> np.ndarray:
    """A vertex of the first layer's arrangement in u: in each block, where s of its first-layer units vanish."""
    u = np.zeros(S)
    for p, si in zip(parts, ins):
        W, c = p[0]
        rows = rng.choice(W.shape[0], size=si.stop - si.start, replace=False)
        u[si] = np.linalg.solve(W[rows], -c[rows])
    return u


def _points(spec: Spec, net: Network, rng) -> np.ndarray:
    kind = spec.points[0]
    X = net.sample(spec.n_points, rng=rng)
    if kind == "sample":
        return X
    if kind == "scale":
        return spec.points[1] * X
    v = rng.standard_normal(X.shape)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    if kind == "off":
        return X + spec.points[1] * v
    if kind == "far":
        return spec.points[1] * v
    raise ValueError(f"unknown point placement {spec.points!r}")


# ---------------------------------------------------------------------------------------------------- oracle

@dataclass
class Oracle:
    log_px: np.ndarray  # (N,)
    rel: np.ndarray  # (N,) the quadrature's relative error estimate of p(x), summed over blocks
    mean_u: np.ndarray  # (N, S)
    cov_u: np.ndarray  # (N, S, S)
    mom_err: np.ndarray  # (N,) the quadrature's moment error estimate (units of the posterior sd)
    seconds: float
    engine_blocks: np.ndarray | None = None  # (N,) sum of the engine's own S <= 2 block marginals (second opinion)


def block_oracle(b: Built, dps: int = 20) -> Oracle:
    """Sum over blocks of the mpmath log p_b(x_b); the posterior moments of u assembled block-diagonally.

    Per point and block, mpmath integrates the regions to which the engine's S <= 2 evaluation gives a weight; the
    others it prunes by a rigorous bound (prefactor x the mass of the most violated half-space, each < e^-50 of
    p_b(x_b), ``evaluate``'s PRUNE_NATS), so leaving them out moves log p_b by < R e^-50 (added to the estimate).
    The engine chooses nothing else: the values are the raw model's, by quadrature.
    """
    from engine.distributions import evaluate
    from engine.partition import partition

    from .oracles.quadrature import quad_s1, quad_s2

    t0 = time.process_time()
    N, S = len(b.X), b.spec.S
    out = Oracle(np.zeros(N), np.zeros(N), np.zeros((N, S)), np.zeros((N, S, S)), np.zeros(N), 0.0, np.zeros(N))
    for net, si, so in zip(b.blocks, b.in_slices, b.out_slices):
        part = partition(net)
        quad = quad_s1 if net.latent_dim == 1 else quad_s2
        ev = evaluate(net, b.X[:, so], part=part)
        out.engine_blocks += ev.log_marginal
        for i, x in enumerate(b.X[:, so]):
            keep = np.isfinite(ev.region_log_weights[i])
            q = quad(net, x, [part[r] for r in np.nonzero(keep)[0]], dps=dps)
            out.log_px[i] += q.log_px
            out.rel[i] += q.rel_error + len(part) * np.exp(-50.0) * (~keep).any()
            out.mean_u[i, si] = q.mean
            out.cov_u[i, si, si] = q.cov
            out.mom_err[i] = max(out.mom_err[i], q.moment_error)
    out.seconds = time.process_time() - t0
    return out


def _spectral(layer_weights) -> float:
    return float(np.prod([np.linalg.norm(W, 2) for W in layer_weights]))


def model_tolerance(b: Built, log_px: np.ndarray, mean_z: np.ndarray, cov_z: np.ndarray) -> np.ndarray:
    """First-order bound, doubled, on |log p_engine-net - log p_block-net| from the rounding of ``W_1 Q^T``.

    With ``z = Q~ u`` (Q~ the exactly orthogonal polar factor of the float Q), the engine's first layer is
    ``W_1 + Delta`` in u, ``|Delta| <= |fl(W_1 Q^T) - W_1 Q^T| + |W_1| |Q^T Q - I|`` (Frobenius, exact products in
    40-digit mpmath). The output moves by at most ``L |Delta| |u|`` (L: the product of the other layers' spectral
    norms times the largest |slope|), so log N(x; g, Sigma_x) moves by ``|r| sigma^-1 L |Delta| |u|`` with
    ``|r|^2 <= 2 (|log p| + D + 10)`` in whitened units and ``|u| <= |E z| + 6 sqrt(tr Cov z)``.
    """
    net = b.net
    W_eng = net.layers[0].weight
    with mp.workdps(40):
        E = mp.matrix(W_eng.tolist()) - mp.matrix(b.W1.tolist()) * mp.matrix(b.Q.T.tolist())
        e_rot = float(mp.mnorm(E, "f"))
        G = mp.matrix(b.Q.T.tolist()) * mp.matrix(b.Q.tolist()) - mp.eye(b.spec.S)
        e_orth = float(mp.mnorm(G, "f"))
    delta = e_rot + np.linalg.norm(b.W1) * e_orth
    lin = [layer.weight for layer in net.layers[1:] if isinstance(layer, Linear)]
    slope = max(1.0, abs(_act(b.spec).negative_slope))
    L = _spectral(lin) * slope ** len(lin)
    sigma = float(np.sqrt(np.min(np.diag(net.cov_x))))
    u = np.linalg.norm(mean_z, axis=1) + 6.0 * np.sqrt(np.trace(cov_z, axis1=1, axis2=2))
    r = np.sqrt(2.0 * (np.abs(log_px) + net.data_dim + 10.0))
    return 2.0 * r * L * delta * u / sigma + 2.0 * (L * delta * u / sigma) ** 2


# ---------------------------------------------------------------------------------------------------- engine

def _evaluate(net, X, threads=None, **kw):
    from engine.distributions import evaluate

    old = os.environ.get("DGNEXACT_THREADS")
    if threads is not None:
        os.environ["DGNEXACT_THREADS"] = str(threads)
    try:
        t0, c0 = time.perf_counter(), time.process_time()
        ev = evaluate(net, X, **kw)
        return ev, time.perf_counter() - t0, time.process_time() - c0
    finally:
        if threads is not None:
            if old is None:
                os.environ.pop("DGNEXACT_THREADS", None)
            else:
                os.environ["DGNEXACT_THREADS"] = old


def unpruned(net, X, part, accuracy: str):
    """log p(x) and its bar from ``region_truncated_moments(accuracy=...)`` over every region (no pruning): eq. 5
    summed by logsumexp, the bar ``log sum_r w_r e^{err_r}`` (either side) as ``evaluate``'s without caps."""
    from scipy.special import logsumexp

    from engine.distributions import posterior_region_params, region_gaussians, region_truncated_moments

    rg = region_gaussians(net, part)
    mu, log_norm = posterior_region_params(net, part, X, rg)
    pm = region_truncated_moments(part, mu, rg.cov, accuracy=accuracy)
    lj = log_norm + pm.log_mass
    lp = logsumexp(lj, axis=1)
    w = np.exp(lj - lp[:, None])
    err = pm.log_mass_error
    with np.errstate(over="ignore", invalid="ignore"):
        up = np.where(w > 0, w * np.expm1(err), 0.0).sum(axis=1)
        down = np.where(w > 0, -w * np.expm1(-err), 0.0).sum(axis=1)
        bar = np.maximum(np.log1p(up), -np.log1p(-np.minimum(down, 1.0)))
    return lp, bar


@dataclass
class Row:
    case: str
    variant: str
    point: int
    S: int
    R: int
    log_p: float
    oracle: float
    err: float
    bar: float
    tol: float
    mean_err: float
    cov_err: float
    seconds: float
    cpu: float
    note: str = ""

    @property
    def ratio(self) -> float:
        return self.err / self.bar if self.bar > 0 else np.inf

    @property
    def covered(self) -> bool:
        return bool(np.isfinite(self.log_p) and self.err <= self.bar + self.tol)


def moment_errors(b: Built, ev, orc: Oracle) -> tuple[np.ndarray, np.ndarray]:
    """Posterior mean / covariance errors in u = Q^T z: max |dm_i| / sd_i and max |dC_ij| / (sd_i sd_j)."""
    Q = b.Q
    mu = ev.posterior_mean @ Q
    cu = np.einsum("si,nst,tj->nij", Q, ev.posterior_cov, Q)
    sd = np.sqrt(np.einsum("nii->ni", orc.cov_u))
    me = np.max(np.abs(mu - orc.mean_u) / sd, axis=1)
    ce = np.max(np.abs(cu - orc.cov_u) / (sd[:, :, None] * sd[:, None, :]), axis=(1, 2))
    return me, ce


def run(spec: Spec, dps: int = 20, variants: tuple[str, ...] | None = None) -> list[Row]:
    """Every row of one case: the default ``evaluate`` and the variants of ``spec.options``."""
    from engine.partition import partition

    b = build(spec)
    orc = block_oracle(b, dps)
    part = partition(b.net)
    ev, wall, cpu = _evaluate(b.net, b.X, part=part)
    mean_z = orc.mean_u @ b.Q.T
    cov_z = np.einsum("si,nij,tj->nst", b.Q, orc.cov_u, b.Q)
    mtol = model_tolerance(b, orc.log_px, mean_z, cov_z)
    tol = 10.0 * orc.rel + TOL_LOGP + 1e-13 * np.abs(orc.log_px) + mtol
    rows = _rows(b, "default", ev, orc, tol, wall, cpu, len(part),
                 f"S<=2 engine blocks - oracle {np.max(np.abs(orc.engine_blocks - orc.log_px)):.1e}; "
                 f"model tol {np.max(mtol):.1e}; oracle {orc.seconds:.0f} s cpu")
    for v in spec.options if variants is None else variants:
        rows += _variant(b, v, ev, orc, tol, part)
    return rows


def _rows(b, variant, ev, orc, tol, wall, cpu, R, note="") -> list[Row]:
    bar = np.full(len(b.X), np.inf) if ev.log_marginal_error is None else np.asarray(ev.log_marginal_error)
    me, ce = moment_errors(b, ev, orc)
    N = len(b.X)
    return [Row(b.spec.name, variant, i, b.spec.S, R, float(ev.log_marginal[i]), float(orc.log_px[i]),
                float(abs(ev.log_marginal[i] - orc.log_px[i])), float(bar[i]), float(tol[i]), float(me[i]),
                float(ce[i]), wall / N, cpu / N, note) for i in range(N)]


def _same_bits(a, c) -> bool:
    return all(np.array_equal(getattr(a, f), getattr(c, f)) for f in
               ("log_marginal", "log_marginal_error", "posterior_mean", "posterior_cov"))


def _variant(b: Built, v: str, ev, orc, tol, part) -> list[Row]:
    if v == "threads":
        e1, w1, c1 = _evaluate(b.net, b.X, threads=1, part=part)
        e2, w2, c2 = _evaluate(b.net, b.X, threads=2, part=part)
        note = "bits 1 = 2 threads = default" if _same_bits(e1, e2) and _same_bits(e1, ev) else "BITS DIFFER"
        return _rows(b, "threads=1", e1, orc, tol, w1, c1, len(part), note)
    if v == "no-terms":
        e, w, c = _evaluate(b.net, b.X, part=part, region_terms=False)
        note = "bits = default" if _same_bits(e, ev) else "BITS DIFFER"
        return _rows(b, "region_terms=False", e, orc, tol, w, c, len(part), note)
    if v == "rqmc":
        e, w, c = _evaluate(b.net, b.X, part=part, method="rqmc", rng=0)
        return _rows(b, "method=rqmc", e, orc, tol, w, c, len(part), "bar: 99.73 % t-interval")
    if v in ("unpruned-relative", "unpruned-absolute"):
        acc = v.split("-")[1]
        t0, c0 = time.perf_counter(), time.process_time()
        lp, bar = unpruned(b.net, b.X, part, acc)
        w, c = time.perf_counter() - t0, time.process_time() - c0
        fake = _Fake(lp, bar, ev.posterior_mean, ev.posterior_cov)
        return _rows(b, f"unpruned accuracy={acc}", fake, orc, tol, w, c, len(part), "moments: default's")
    raise ValueError(f"unknown variant {v!r}")


@dataclass
class _Fake:
    log_marginal: np.ndarray
    log_marginal_error: np.ndarray
    posterior_mean: np.ndarray
    posterior_cov: np.ndarray


# ---------------------------------------------------------------------------------------------------- cases

def _B(s, hidden, out=None):
    return Block(s, tuple(hidden), s if out is None else out)


SMALL = (_B(2, (3,)), _B(2, (3,)))
CASES: tuple[Spec, ...] = (
    # far off the model: x scaled, pushed off the image, or far in a random direction
    Spec("s4-scale10", SMALL, 101, ("scale", 10.0)),
    Spec("s4-scale30", SMALL, 102, ("scale", 30.0)),
    Spec("s4-off20-D6", (_B(2, (4,), 3), _B(2, (4,), 3)), 103, ("off", 20.0)),
    Spec("s4-far30-D6", (_B(2, (4,), 3), _B(2, (4,), 3)), 104, ("far", 30.0)),
    # small noise: the posterior near the Dirac limit
    Spec("s4-cov1e-2", SMALL, 111, cov_x=1e-2),
    Spec("s4-cov1e-3", SMALL, 112, cov_x=1e-3),
    Spec("s4-cov1e-4", SMALL, 113, cov_x=1e-4),
    Spec("s4-cov1e-3-off", (_B(2, (4,), 3), _B(2, (4,), 3)), 114, ("off", 1.0), cov_x=1e-3),
    Spec("s4-diag-cov", SMALL, 115, cov_x=(1e-3, 0.5, 0.02, 2.0)),
    # activations and block shapes
    Spec("s4-leaky", SMALL, 121, activation="leaky_relu", slope=0.2),
    Spec("s4-abs", SMALL, 122, activation="abs"),
    Spec("s4-211", (_B(2, (3,)), _B(1, (2,)), _B(1, (2,))), 123, ("off", 5.0)),
    Spec("s4-211-abs-far", (_B(2, (4,), 3), _B(1, (3,), 2), _B(1, (3,), 2)), 124, ("far", 15.0),
         activation="abs"),
    # wider blocks, two hidden layers
    Spec("s4-wide8x8", (_B(2, (8, 8), 3), _B(2, (8, 8), 3)), 131, ("sample",)),
    Spec("s4-wide8x8-far", (_B(2, (8, 8), 3), _B(2, (8, 8), 3)), 132, ("off", 15.0)),
    Spec("s4-wide12-leaky-cov1e-3", (_B(2, (12, 8), 3), _B(2, (8, 8), 2)), 133, activation="leaky_relu",
         slope=0.1, cov_x=1e-3),
    # S = 5, 6
    Spec("s5-221-far", (_B(2, (3,)), _B(2, (3,)), _B(1, (2,))), 141, ("scale", 10.0)),
    Spec("s5-221-cov1e-3", (_B(2, (3,), 3), _B(2, (3,)), _B(1, (2,), 2)), 142, cov_x=1e-3),
    Spec("s5-2111-abs", (_B(2, (3,)), _B(1, (2,)), _B(1, (2,)), _B(1, (2,))), 143, ("off", 8.0),
         activation="abs"),
    Spec("s6-222-far", (_B(2, (3,)), _B(2, (3,)), _B(2, (3,))), 151, ("off", 10.0)),
    Spec("s6-222-cov1e-3", (_B(2, (3,)), _B(2, (3,)), _B(2, (3,))), 152, cov_x=1e-3),
    Spec("s6-2211-leaky", (_B(2, (3,), 3), _B(2, (3,)), _B(1, (2,)), _B(1, (2,))), 153, ("scale", 5.0),
         activation="leaky_relu", slope=0.3),
    # the posterior on a vertex of the partition (the mean near faces of every dimension)
    Spec("s4-vertex-cov1e-4", SMALL, 181, ("vertex", 0.0), cov_x=1e-4),
    Spec("s4-vertex-cov1e-2", SMALL, 182, ("vertex", 0.02), cov_x=1e-2),
    Spec("s4-211-vertex-cov1e-3", (_B(2, (3,)), _B(1, (2,)), _B(1, (2,))), 183, ("vertex", 0.0), cov_x=1e-3),
    Spec("s4-1111-vertex-cov1e-4", tuple(_B(1, (3,), 2) for _ in range(4)), 184, ("vertex", 0.0), cov_x=1e-4),
    Spec("s5-11111-vertex-cov1e-3", tuple(_B(1, (2,), 2) for _ in range(5)), 185, ("vertex", 0.0), cov_x=1e-3),
    Spec("s6-111111-vertex-cov1e-3", tuple(_B(1, (2,)) for _ in range(6)), 186, ("vertex", 0.0), cov_x=1e-3),
    Spec("s6-222-vertex-cov1e-3", (_B(2, (3,)), _B(2, (3,)), _B(2, (3,))), 187, ("vertex", 0.0), cov_x=1e-3),
    # blocks of latent dim 1 (cheap oracle: the fast tests' cases)
    Spec("s4-1111-far", tuple(_B(1, (3,), 2) for _ in range(4)), 171, ("far", 20.0)),
    Spec("s4-1111-cov1e-4", tuple(_B(1, (3,), 2) for _ in range(4)), 172, ("off", 0.5), cov_x=1e-4),
    Spec("s5-11111-abs-off", tuple(_B(1, (2,), 2) for _ in range(5)), 173, ("off", 12.0), activation="abs"),
    Spec("s6-111111-leaky", tuple(_B(1, (2,)) for _ in range(6)), 174, ("scale", 8.0), activation="leaky_relu",
         slope=0.25),
    # evaluate's options
    Spec("s4-options", SMALL, 161, ("off", 6.0),
         options=("threads", "no-terms", "unpruned-relative", "unpruned-absolute", "rqmc")),
)


def _fmt(r: Row) -> str:
    flag = "" if r.covered else "  <-- NOT COVERED"
    return (f"{r.case:26s} {r.variant:28s} {r.point:2d} {r.S:2d} {r.R:6d} {r.log_p:14.6f} {r.oracle:14.6f} "
            f"{r.err:9.2e} {r.bar:9.2e} {r.tol:9.2e} {r.ratio:9.2e} {r.mean_err:9.2e} {r.cov_err:9.2e} "
            f"{r.seconds:7.2f} {r.cpu:7.2f} {r.note}{flag}")


HEADER = (f"{'case':26s} {'variant':28s} {'pt':>2s} {'S':>2s} {'R':>6s} {'log p':>14s} {'oracle':>14s} "
          f"{'|err|':>9s} {'bar':>9s} {'tol':>9s} {'err/bar':>9s} {'mean err':>9s} {'cov err':>9s} "
          f"{'wall/pt':>7s} {'cpu/pt':>7s}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", help="case names (default: all)")
    ap.add_argument("--dps", type=int, default=20)
    args = ap.parse_args(argv)
    specs = [s for s in CASES if not args.only or s.name in args.only]
    print(HEADER, flush=True)
    rows = []
    for spec in specs:
        for r in run(spec, args.dps):
            rows.append(r)
            print(_fmt(r), flush=True)
    worst = max(rows, key=lambda r: r.err / (r.bar + r.tol))
    miss = [r for r in rows if not r.covered]
    print(f"\n{len(rows)} rows, {len(miss)} not covered; worst err/(bar + tol) = "
          f"{worst.err / (worst.bar + worst.tol):.3g} ({worst.case} {worst.variant} point {worst.point}); "
          f"worst err/bar = {max(r.ratio for r in rows):.3g}; worst mean err {max(r.mean_err for r in rows):.2e} sd, "
          f"cov err {max(r.cov_err for r in rows):.2e}")
    return 1 if miss else 0


if __name__ == "__main__":
    raise SystemExit(main())
