"""Exact, monotone EM for CPA generative networks (paper Sec. 4.1-4.2, Appendix G).

Notation. The decoder alternates linear layers ``u^l = W^l h^l + v^l`` (``h^1 = z``) and CPA
activations ``h^{l+1} = D^l u^l`` whose slope matrix ``D^l_omega`` is constant on each region omega of
the partition (Lemma 3). On omega every quantity is affine in z (eq. 2, eq. 8), so for every linear
layer l::

    h^l(z)  = P^l_omega z + p^l_omega                    (input of layer l; P^1 = I, p^1 = 0)
    g(z)    = B^l_omega (W^l h^l(z) + v^l) + r^l_omega     (B^l = W^L D^{L-1} ... W^{l+1} D^l, B^L = I)
    g(z)    = A_omega z + b_omega                         (eq. 2)

``r^l_omega`` collects the biases after layer l. With ``z_hat = [z; 1]`` the posterior statistics of
Sec. 4.1, ``e0 = E[1_omega]``, ``e1 = E[z 1_omega]``, ``E2 = E[z z^T 1_omega]`` (taken under the
current parameters theta_t), enter every formula below only through the per-region sums over data::

    M_omega  = sum_n [[E2, e1], [e1^T, e0]]_{n omega}            (S+1, S+1)
    X_omega  = sum_n x_n [e1; e0]^T_{n omega}                     (D, S+1)

E-step (Sec. 4.1). :func:`expected_complete_loglik` returns, per point,
``Q_n(theta; theta_t) = E_{z|x_n, theta_t}[log p(x_n | z, theta) + log p(z | theta)]``::

    Q_n = -1/2 log|2 pi Sigma_x| - 1/2 log|2 pi Sigma_z| - 1/2 tr(Sigma_z^-1 E[z z^T | x_n])
          -1/2 sum_omega e0 [(x - A m - b)^T Sigma_x^-1 (x - A m - b) + tr(A^T Sigma_x^-1 A C)]

with ``m = e1/e0`` and ``C = E2/e0 - m m^T`` the conditional moments on omega and (A, b) the affine
map of theta on the regions of theta_t (the paper's E-step formula, written about the conditional
mean so that no large terms cancel). When theta moves only the last layer or the covariances the
regions do not move and this is exactly Q; otherwise it is the frozen-mask surrogate of NOTES §3.

M-step (Sec. 4.2, Appendix G; derived here). Write ``Lam = Sigma_x^-1``, ``Theta = [W^l, v^l]``,
``P_hat = [[P, p], [0, 1]]`` so that ``[h^l; 1] = P_hat z_hat``. Then, with the masks of theta_t,

    C_omega = P_hat M_omega P_hat^T,   K_omega = B^T Lam B,   hbar_omega = P_hat M_omega[:, S]
    Y = sum_omega B^T Lam (X_omega P_hat^T - r hbar^T)                          (m, n+1)
    (sum_omega C_omega (x) K_omega) vec(Theta) = vec(Y)                          (normal equations)

because Q is a convex quadratic in Theta with gradient ``sum_omega B^T Lam (X P_hat^T - r hbar^T
- B Theta C)``. Its bias block is the paper's ``v^{l*}`` (Sec. 4.2) at the new W, with the left factor
weighted by e0, ``sum_x sum_omega e0 B^T Lam B`` (the printed formula omits e0). For the
last layer ``B = I, r = 0``, the system factorises and Lam cancels:
``[W^L, v^L] = (sum_omega X_omega P_hat^T) (sum_omega C_omega)^-1``, a weighted least squares.
A proximal ridge ``lam_r/2 |Theta - Theta_t|^2`` with ``lam_r = 1e-12 tr(G)/dim`` keeps the system
definite when units are dead; it keeps Q(new) >= Q(old) (the proximal term is >= 0).

``Sigma_x``: with the new decoder, ``S_x = (1/N) sum_n sum_omega e0 [(x - A m - b)(x - A m - b)^T
+ A C A^T]``; full: ``S_x``; diagonal: ``diag(S_x)``; isotropic: ``tr(S_x)/D``; each the exact
maximiser of Q over its family, clipped from below at ``min_cov_x`` (the constrained maximiser, so
still monotone). ``Sigma_z`` (optional): ``(1/N) sum_n E[z z^T | x_n]``. Note the scale trade-off
``(Sigma_z, W^1) ~ (L Sigma_z L^T, W^1 L^-1)``: learning both leaves the model unchanged up to that
reparametrisation, so ``Sigma_z = I`` is the default.

Monotonicity. Updates of the last layer, Sigma_x and Sigma_z leave the partition in place and are
exact M-steps (the EM argument gives log p >= its old value). An inner layer's frozen-mask update
maximises only a surrogate, so it is guarded by the exact log-likelihood (``engine.evaluate``):
accepted when the mean log-likelihood does not decrease, else halved toward the current parameters
up to ``max_backtracks`` times, else rejected. Every accepted evaluation is the E-step of the next
update (a generalised EM with fresh statistics). Default ``sweep="chain"``: exact step first, then
the inner layers top-down, each guarded (the first accepted guard validates the exact step too); if
all are rejected the exact step alone is evaluated on the unchanged partition. Even the exact step
is guarded: if rounding made the exact log-likelihood fall, it is undone. Hence
``log_likelihoods_`` never decreases.

Cost (S >= 2, where an evaluate is ~N R Gaussian integrals over polygons). No guard evaluation can be skipped:
each accepted one is the next E-step, and the exact step alone, monotone in exact arithmetic, still needs its
evaluation as the next E-step (and it is the only one that catches a rounding fall). Two things make the
evaluations fewer and cheaper, neither changing what is accepted: (1) the screen (:class:`GuardScreen`) estimates
a step's gain by importance sampling from the current exact posterior and leaves unevaluated the steps estimated to
lose (the rejected inner-layer candidates of circle [2,16,16,2] lost 0.2-4 nats per point and cost 2-10 accepted
evaluations each in the slow fallbacks of their thin regions); (2) the regions of the same draws seed evaluate's
lower bound of log p(x) (``lower_pairs``), which sets how far the accuracy of pairs of small provable weight is
loosened: the bound from each point's 3 most promising pairs lay 2-5 nats below log p(x) there (the posterior
spreads over ~100 regions), with the draws' regions ~0.5-1; since S = 2's bound takes 32 pairs, 0.76 and 0.43
(median, tests/test_em_lower_hint.py).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np
from scipy.linalg import LinAlgError, cho_factor, cho_solve, solve_triangular
from scipy.special import logsumexp
from sklearn.base import BaseEstimator, DensityMixin
from sklearn.exceptions import NotFittedError

from .distributions import Evaluation, complete, evaluate
from .errors import DGNInputError, RegionBudgetError
from .network import Linear, Network, load_network, random_network
from .partition import DEFAULT_MAX_REGIONS, Partition, partition

_LOG_2PI = np.log(2.0 * np.pi)


class NotFittedDGNError(DGNInputError, NotFittedError):
    """``EM`` used before ``fit``: a one-line DGNInputError that scikit-learn also recognises."""


def check_random_state(seed) -> np.random.Generator:
    from .validation import check_random_state as check

    return check(seed, "random_state")


COV_X_TYPES = ("isotropic", "diagonal", "full")
_RIDGE = 1e-12
_CHUNK_FLOATS = 4_000_000


# --------------------------------------------------------------------------- frozen-mask maps
@dataclass
class FrozenMaps:
    """Per-region affine structure of ``net`` with the activation masks of ``part`` (eq. 2, eq. 8).

    ``P[k], p[k]``: input of linear layer k as an affine function of z, (R, n_k, S), (R, n_k).
    ``B[k], r[k]``: ``g = B (W h + v) + r`` on each region, (R, D, m_k), (R, D).
    ``A, b``: the decoder's affine map (R, D, S), (R, D). Keys are indices into ``net.layers``.
    """

    P: dict[int, np.ndarray]
    p: dict[int, np.ndarray]
    B: dict[int, np.ndarray]
    r: dict[int, np.ndarray]
    A: np.ndarray
    b: np.ndarray


def _region_slopes(net: Network, signs: np.ndarray) -> dict[int, np.ndarray]:
    """Diagonal of ``D^l_omega`` for every activation layer: {layer index: (R, width)}."""
    out, start = {}, 0
    for i, act in net.activations:
        width = net._width_before(i)
        out[i] = act.slopes(signs[:, start:start + width])
        start += width
    return out


def frozen_maps(net: Network, part: Partition) -> FrozenMaps:
    """The affine maps of ``net``'s layers on the regions of ``part`` (masks taken from ``part``)."""
    R, S, D = len(part), net.latent_dim, net.data_dim
    slopes = _region_slopes(net, part.signs)
    P, p = {}, {}
    M = np.broadcast_to(np.eye(S), (R, S, S))
    m = np.zeros((R, S))
    for i, layer in enumerate(net.layers):
        if isinstance(layer, Linear):
            P[i], p[i] = M, m
            M = layer.weight @ M
            m = m @ layer.weight.T + layer.bias
        else:
            M = slopes[i][:, :, None] * M
            m = slopes[i] * m
    B, r = {}, {}
    Bc = np.broadcast_to(np.eye(D), (R, D, D))
    rc = np.zeros((R, D))
    for i in range(len(net.layers) - 1, -1, -1):
        layer = net.layers[i]
        if isinstance(layer, Linear):
            B[i], r[i] = Bc, rc
            rc = rc + Bc @ layer.bias
            Bc = Bc @ layer.weight
        else:
            Bc = Bc * slopes[i][:, None, :]
    return FrozenMaps(P, p, B, r, np.ascontiguousarray(M), m)


def repartition(net: Network, part: Partition) -> Partition:
    """``part`` with the affine maps of ``net``, for a ``net`` whose inner layers equal ``part.net``'s.

    Updates of the last layer (and of the covariances) do not move the regions; only A, b change: a new
    partition (:meth:`Partition.for_network`) shares the polytopes, sign lookup and adjacency of ``part``.
    """
    fm = frozen_maps(net, part)
    return part.for_network(net, fm.A, fm.b)


# --------------------------------------------------------------------------- E-step statistics
@dataclass
class Statistics:
    """Per-region sums over the data of the Sec. 4.1 moments (see the module docstring)."""

    n: int
    M: np.ndarray  # (R, S+1, S+1)  sum_n [[E2, e1], [e1^T, e0]]
    X: np.ndarray  # (R, D, S+1)    sum_n x_n [e1; e0]^T
    Ezz: np.ndarray  # (S, S)       sum_n E[z z^T | x_n]


COMPLETE_CANDIDATES = False  # True: every accepted evaluation gets the S = 2 heavy pass before its M-step (as before)


def _completed(ev: Evaluation) -> Evaluation:
    """An accepted guard evaluation as the next M-step's E-step: ``ev`` as it is (S = 2: the first pass's moments,
    accurate relative to Sigma_omega, 3e-9 per pair) unless ``COMPLETE_CANDIDATES``.

    The M-step needs the moments only through their sums ``M_omega``, ``X_omega`` and the residual sums of
    ``cov_x_update`` (module docstring), where a pair's covariance enters as ``e0 (C + m m^T)`` beside terms of the
    size of Sigma_omega: an absolute error 3e-9 Sigma_omega moves the update by about 3e-9 relative. The heavy pass
    (relative accuracy for thin heavy regions, for a user's posterior covariances) runs once, on the final
    ``evaluation_``. log p(x), hence the guard and the history, does not depend on it."""
    if not COMPLETE_CANDIDATES:
        return ev
    out = complete(ev)
    out._seeded = getattr(ev, "_seeded", False)
    return out


def _check_data(net: Network, X) -> np.ndarray:
    from .validation import check_data

    return check_data(X, net.data_dim, field="data", one_dim="column")


def _weights(ev: Evaluation) -> np.ndarray:
    return np.exp(ev.region_log_weights)


def _region_sum(w: np.ndarray, T: np.ndarray) -> np.ndarray:
    """``sum_n w[n, r] T[n, r, ...]`` for every region r, shape (R, ...): elementwise passes over memory
    in row chunks (an einsum of this form runs as a slow strided loop). The reference of :func:`_masked_sums`."""
    N, R = w.shape
    flat = T.reshape(N, R, -1)
    out = np.zeros((R, flat.shape[2]))
    step = max(1, _CHUNK_FLOATS // max(1, R * flat.shape[2]))
    for s in range(0, N, step):
        out += (w[s:s + step, :, None] * flat[s:s + step]).sum(axis=0)
    return out.reshape((R, *T.shape[2:]))


@dataclass
class Masked:
    """The E-step moments of an evaluation with pairs of zero weight set to 0, and their sums over the data.

    ``w`` e0 (N, R); ``m`` the conditional means (N, R, S) and ``e1 = w m``; per region ``second`` = sum_n w (C + m
    m^T) and ``within`` = sum_n w C (R, S, S), ``e1_sum`` (R, S) and ``w_sum`` (R,). One compiled pass
    (:func:`_masked_sums`) instead of the masked (N, R, S, S) covariances and their products."""

    w: np.ndarray
    m: np.ndarray
    e1: np.ndarray
    second: np.ndarray
    within: np.ndarray
    e1_sum: np.ndarray
    w_sum: np.ndarray


def _masked_moments(ev: Evaluation) -> Masked:
    """:class:`Masked` of ``ev``: the numbers of the numpy forms it replaced, bit for bit (tests/test_s2_overhead.py
    keeps them: ``np.where(w > 0, ...)`` masks, :func:`_region_sum` in its row chunks, numpy's sums over the points
    in order)."""
    w = _weights(ev)
    means, covs = ev.region_means, ev.region_covs
    N, R, S = means.shape
    step = max(1, _CHUNK_FLOATS // max(1, R * S * S))  # _region_sum's row chunks of (N, R, S * S) arrays
    m, e1, second, within, e1_sum, w_sum = _masked_sums(w, means, covs, step)
    return Masked(w, m, e1, second, within, e1_sum, w_sum)


@numba.njit(cache=True, nogil=True)
def _masked_sums(w, means, covs, step):  # pragma: no cover (compiled)
    """:func:`_masked_moments`' pass. Per region, the points in order: ``m = means`` where ``w > 0`` (else 0; a NaN
    weight masks too), ``e1 = w m``; ``second`` and ``within`` accumulate ``w (C + m_s m_t)`` and ``w C`` from 0 over
    each chunk of ``step`` points, the chunk sums added to 0 in turn (:func:`_region_sum`); ``e1_sum``, ``w_sum``
    accumulate from 0 over all points (numpy's sums over the outer axis). Regions outer: ``means`` and ``covs``, views
    of region-major arrays, are read along their memory."""
    N, R = w.shape
    S = means.shape[2]
    m = np.empty((N, R, S))
    e1 = np.empty((N, R, S))
    second = np.zeros((R, S, S))
    within = np.zeros((R, S, S))
    e1_sum = np.zeros((R, S))
    w_sum = np.zeros(R)
    part2 = np.empty((S, S))
    partc = np.empty((S, S))
    for r in range(R):
        ws = 0.0
        for s0 in range(0, N, step):
            part2[:] = 0.0
            partc[:] = 0.0
            for n in range(s0, min(N, s0 + step)):
                wn = w[n, r]
                keep = wn > 0
                for i in range(S):
                    mi = means[n, r, i] if keep else 0.0
                    m[n, r, i] = mi
                    e1[n, r, i] = wn * mi
                    e1_sum[r, i] += wn * mi
                for i in range(S):
                    for j in range(S):
                        c = covs[n, r, i, j] if keep else 0.0
                        part2[i, j] += wn * (c + m[n, r, i] * m[n, r, j])
                        partc[i, j] += wn * c
                ws += wn
            for i in range(S):
                for j in range(S):
                    second[r, i, j] += part2[i, j]
                    within[r, i, j] += partc[i, j]
        w_sum[r] = ws
    return m, e1, second, within, e1_sum, w_sum


def statistics(ev: Evaluation, X: np.ndarray, masked: Masked | None = None) -> Statistics:
    """Sum the E-step moments e0, e1, E2 (Sec. 4.1) over the data, per region.

    ``masked``: ``_masked_moments(ev)`` if the caller has it already (it is the costliest part here)."""
    mk = _masked_moments(ev) if masked is None else masked
    N, R, S = mk.m.shape
    M = np.empty((R, S + 1, S + 1))
    M[:, :S, :S] = mk.second
    M[:, :S, S] = mk.e1_sum
    M[:, S, :S] = M[:, :S, S]
    M[:, S, S] = mk.w_sum
    Xs = np.empty((R, X.shape[1], S + 1))
    Xs[:, :, :S] = (X.T @ mk.e1.reshape(N, R * S)).reshape(X.shape[1], R, S).transpose(1, 0, 2)
    Xs[:, :, S] = mk.w.T @ X
    Ezz = M[:, :S, :S].sum(axis=0)
    return Statistics(N, M, Xs, 0.5 * (Ezz + Ezz.T))


def _residual_moments(fm: FrozenMaps, ev: Evaluation, X: np.ndarray, full: bool, masked=None) -> np.ndarray:
    """``sum_n sum_omega e0 [(x - A m - b)(...)^T + A C A^T]``: (D, D) if full else its diagonal (D,)."""
    mk = _masked_moments(ev) if masked is None else masked
    w, mean, Cw = mk.w, mk.m, mk.within  # Cw = sum_n w C (R, S, S)
    N, R, S = mean.shape
    D = X.shape[1]
    out = np.zeros((D, D) if full else D)
    chunk = max(1, _CHUNK_FLOATS // max(1, R * D))
    for s in range(0, N, chunk):
        ms = mean[s:s + chunk]
        e = X[s:s + chunk, None, :] - fm.b[None]
        for k in range(S):  # e -= A m, one latent coordinate at a time (S is small)
            e -= fm.A[None, :, :, k] * ms[:, :, None, k]
        we = (w[s:s + chunk, :, None] * e).reshape(-1, D)
        if full:
            out += we.T @ e.reshape(-1, D)
        else:
            out += (we * e.reshape(-1, D)).sum(axis=0)
    AC = np.matmul(fm.A, Cw)  # (R, D, S)
    if full:
        out += AC.transpose(1, 0, 2).reshape(D, -1) @ fm.A.transpose(1, 0, 2).reshape(D, -1).T
        return 0.5 * (out + out.T)
    return out + (AC * fm.A).sum(axis=(0, 2))


def expected_complete_loglik(net: Network, X, ev: Evaluation) -> np.ndarray:
    """Per-point ``Q_n(theta; theta_t)`` of Sec. 4.1 for theta = ``net`` and the E-step ``ev`` (theta_t).

    The regions and masks are those of ``ev.partition``; see the module docstring for the formula.
    """
    X = _check_data(net, X)
    part = ev.partition
    fm = frozen_maps(net, part)
    w = _weights(ev)
    mean = np.where(w[..., None] > 0, ev.region_means, 0.0)
    C = np.where(w[..., None, None] > 0, ev.region_covs, 0.0)
    S, D = net.latent_dim, net.data_dim
    chol_x = np.linalg.cholesky(net.cov_x)
    chol_z = np.linalg.cholesky(net.cov_z)
    R = len(part)
    A_w = solve_triangular(chol_x, fm.A.transpose(1, 0, 2).reshape(D, -1), lower=True)
    A_w = A_w.reshape(D, R, S).transpose(1, 0, 2)
    b_w = solve_triangular(chol_x, fm.b.T, lower=True).T
    X_w = solve_triangular(chol_x, X.T, lower=True).T
    K = np.einsum("rds,rdt->rst", A_w, A_w)
    e = X_w[:, None, :] - np.einsum("rds,nrs->nrd", A_w, mean) - b_w[None]
    quad_x = np.einsum("nr,nrd,nrd->n", w, e, e) + np.einsum("nr,rst,nrst->n", w, K, C)
    inv_chol_z = solve_triangular(chol_z, np.eye(S), lower=True)
    prec_z = inv_chol_z.T @ inv_chol_z
    Ezz = ev.posterior_cov + np.einsum("ns,nt->nst", ev.posterior_mean, ev.posterior_mean)
    quad_z = np.einsum("st,nst->n", prec_z, Ezz)
    logdet_x = 2.0 * np.log(np.diag(chol_x)).sum()
    logdet_z = 2.0 * np.log(np.diag(chol_z)).sum()
    return -0.5 * ((D + S) * _LOG_2PI + logdet_x + logdet_z + quad_x + quad_z)


# --------------------------------------------------------------------------- M-step
def _linear_indices(net: Network) -> list[int]:
    return [i for i, layer in enumerate(net.layers) if isinstance(layer, Linear)]


def _solve_spd(G: np.ndarray, rhs: np.ndarray, x0: np.ndarray) -> np.ndarray:
    """Solve ``(G + lam I) x = rhs + lam x0`` (proximal ridge toward x0, lam = 1e-12 tr(G)/dim)."""
    q = G.shape[0]
    lam = _RIDGE * max(np.trace(G) / q, np.finfo(float).tiny)
    Gr = G + lam * np.eye(q)
    r = rhs + lam * x0
    try:
        return cho_solve(cho_factor(Gr), r)
    except LinAlgError:
        return np.linalg.lstsq(Gr, r, rcond=None)[0]


def layer_update(net: Network, stats: Statistics, fm: FrozenMaps, index: int) -> Linear:
    """Closed-form (frozen-mask) maximiser of Q over ``[W^l, v^l]`` of layer ``net.layers[index]``.

    Normal equations ``(sum_omega C_omega (x) B^T Lam B) vec Theta = vec(sum_omega B^T Lam (X P_hat^T
    - r hbar^T))`` (module docstring). For the last layer this is exact and reduces to a weighted
    least squares ``Theta = (sum X P_hat^T)(sum C)^-1`` independent of Sigma_x.
    """
    layer = net.layers[index]
    assert isinstance(layer, Linear)
    m_out, n_in = layer.weight.shape
    S = net.latent_dim
    P, p = fm.P[index], fm.p[index]
    R = P.shape[0]
    P_hat = np.zeros((R, n_in + 1, S + 1))
    P_hat[:, :n_in, :S] = P
    P_hat[:, :n_in, S] = p
    P_hat[:, n_in, S] = 1.0
    P_hat_T = P_hat.transpose(0, 2, 1)
    C = P_hat @ stats.M @ P_hat_T  # sum_n E[1_omega h_hat h_hat^T]
    XP = stats.X @ P_hat_T  # sum_n x E[1_omega h_hat]^T
    theta0 = np.hstack([layer.weight, layer.bias[:, None]])
    if index == len(net.layers) - 1:
        Ct = C.sum(axis=0)
        Yt = XP.sum(axis=0)
        # (Ct + lam I) Theta^T = Yt^T + lam Theta_t^T, the Lam-weighted proximal ridge
        theta = _solve_spd(Ct, Yt.T, theta0.T).T
    else:
        hbar = (P_hat @ stats.M[:, :, S, None])[..., 0]
        prec_x = np.linalg.inv(net.cov_x)
        B, r = fm.B[index], fm.r[index]
        LB = prec_x @ B
        K = B.transpose(0, 2, 1) @ LB
        D = B.shape[1]
        Y = LB.reshape(R * D, m_out).T @ XP.reshape(R * D, n_in + 1) - (LB * r[..., None]).sum(axis=1).T @ hbar
        q = m_out * (n_in + 1)
        G = (C.reshape(R, -1).T @ K.reshape(R, -1)).reshape(n_in + 1, n_in + 1, m_out, m_out)
        G = G.transpose(0, 2, 1, 3).reshape(q, q)
        G = 0.5 * (G + G.T)
        sol = _solve_spd(G, Y.T.reshape(-1), theta0.T.reshape(-1))
        theta = sol.reshape(n_in + 1, m_out).T
    return Linear(np.ascontiguousarray(theta[:, :n_in]), np.ascontiguousarray(theta[:, n_in]))


def cov_x_update(net: Network, ev: Evaluation, X: np.ndarray, cov_x_type: str, floor: float,
                 masked=None) -> Any:
    """Exact M-step for ``Sigma_x`` in its family (isotropic number, diagonal list or full matrix).

    ``S_x = (1/N) sum_n sum_omega e0 [(x - A m - b)(x - A m - b)^T + A C A^T]`` with (A, b) of ``net``
    on the regions of ``ev``; isotropic ``tr(S_x)/D``, diagonal ``diag(S_x)``, full ``S_x``; variances
    (eigenvalues for full) clipped below at ``floor``, the maximiser over ``{Sigma_x >= floor I}``.
    """
    fm = frozen_maps(net, ev.partition)
    N = X.shape[0]
    if cov_x_type == "full":
        Sx = _residual_moments(fm, ev, X, full=True, masked=masked) / N
        vals, vecs = np.linalg.eigh(Sx)
        Sx = (vecs * np.maximum(vals, floor)) @ vecs.T
        return 0.5 * (Sx + Sx.T)
    diag = _residual_moments(fm, ev, X, full=False, masked=masked) / N
    if cov_x_type == "diagonal":
        return np.maximum(diag, floor)
    return float(max(diag.mean(), floor))


def cov_z_update(stats: Statistics) -> np.ndarray:
    """Exact M-step ``Sigma_z = (1/N) sum_n E[z z^T | x_n]`` (maximiser of the prior term of Q)."""
    return stats.Ezz / stats.n


def project_cov_x(cov_x: np.ndarray, cov_x_type: str, floor: float) -> Any:
    """Cast a full covariance into the chosen family (and floor it), as a cpa-dgn spec."""
    if cov_x_type == "isotropic":
        return float(max(np.trace(cov_x) / cov_x.shape[0], floor))
    if cov_x_type == "diagonal":
        return np.maximum(np.diag(cov_x).copy(), floor)
    vals, vecs = np.linalg.eigh(cov_x)
    out = (vecs * np.maximum(vals, floor)) @ vecs.T
    return 0.5 * (out + out.T)


# --------------------------------------------------------------------------- initialisation
def init_random(widths: list[int], X, activation: str = "relu", negative_slope: float = 0.1,
                rng=None) -> Network:
    """A random network (He-style weights) whose output layer is shifted/scaled to the data.

    The last layer's bias is the data mean and its weights are scaled so that g(z) has roughly the
    data's spread; ``cov_x`` starts at the mean per-dimension data variance (isotropic).
    """
    X = np.asarray(X, dtype=np.float64)
    net = random_network(widths, activation=activation, negative_slope=negative_slope, rng=rng)
    G = net.forward(np.random.default_rng(rng).standard_normal((2000, widths[0])))
    scale = np.sqrt(X.var(axis=0).mean() / max(G.var(axis=0).mean(), 1e-300))
    last = net.layers[-1]
    bias = X.mean(axis=0) - scale * (G.mean(axis=0) - last.bias)
    layers = list(net.layers[:-1]) + [Linear(last.weight * scale, bias)]
    return net.replace(layers=layers, cov_x=float(max(X.var(axis=0).mean(), 1e-12)))


def init_pca(widths: list[int], X, activation: str = "relu", negative_slope: float = 0.1,
             rng=None, n_fit: int = 4000) -> Network:
    """Start from probabilistic PCA (Tipping and Bishop): the ML linear decoder, then a CPA net near it.

    With ``widths = [S, D]`` (a linear decoder) this returns the PPCA maximum-likelihood solution
    ``W = U_S (Lambda_S - sigma^2 I)^{1/2}``, ``v = mean``, ``Sigma_x = sigma^2 I`` (covariances with
    the 1/N normalisation), so EM starts at its fixed point. For a deep net the inner layers are
    random and the last layer is the least-squares fit of the PPCA decoder ``mean + W z`` on
    ``n_fit`` prior draws of z; ``cov_x`` is sigma^2 plus that fit's residual variance.
    """
    X = np.asarray(X, dtype=np.float64)
    S, D = widths[0], widths[-1]
    N = X.shape[0]
    mean = X.mean(axis=0)
    cov = (X - mean).T @ (X - mean) / N
    vals, vecs = np.linalg.eigh(cov)
    vals, vecs = vals[::-1], vecs[:, ::-1]
    sigma2 = float(vals[S:].mean()) if S < D else float(max(vals.min() * 1e-3, 1e-12))
    sigma2 = max(sigma2, 1e-12 * max(vals.max(), 1e-300))
    W = vecs[:, :S] * np.sqrt(np.maximum(vals[:S] - sigma2, 0.0))
    if len(widths) == 2:
        return Network(layers=[Linear(W, mean)], latent_dim=S, cov_z_spec=1.0, cov_x_spec=sigma2)
    net = random_network(widths, activation=activation, negative_slope=negative_slope, rng=rng)
    Z = np.random.default_rng(rng).standard_normal((n_fit, S))
    H = Z
    for layer in net.layers[:-1]:
        H = H @ layer.weight.T + layer.bias if isinstance(layer, Linear) else layer(H)
    H1 = np.hstack([H, np.ones((n_fit, 1))])
    T = mean + Z @ W.T
    coef = np.linalg.lstsq(H1, T, rcond=None)[0]
    resid = float(((T - H1 @ coef) ** 2).mean())
    last = Linear(np.ascontiguousarray(coef[:-1].T), np.ascontiguousarray(coef[-1]))
    return net.replace(layers=list(net.layers[:-1]) + [last], cov_x=sigma2 + resid)


# --------------------------------------------------------------------------- the guard's screen
SCREEN_SAMPLES = 64  # importance samples per data point
SCREEN_INFLATE = 2.0  # the proposal's covariance: this times the exact posterior covariance
SCREEN_NATS = 0.1  # a step is not evaluated when its estimated mean log-likelihood falls by more than this ...
SCREEN_SIGMAS = 3.0  # ... plus this many standard errors of that estimate (over the data points)
SCREEN_SEED = 0  # the standard normal draws (fixed: a fit is reproducible bit for bit)
LOWER_HINT = True  # S >= 2: the regions of the screen's draws seed evaluate's lower bound of log p(x) (lower_pairs)
HINT_DRAWS = 32  # ... the first this many draws per point (circle [2,16,16,2]: evaluate -10 to -20 % CPU)
_SCREEN_FLOATS = 4_000_000  # floats per chunk of the screen's forward pass


def importance_log_marginal(net: Network, X: np.ndarray, Z: np.ndarray, log_q: np.ndarray) -> np.ndarray:
    """(N,) importance-sampling estimate of log p(x) (Theorem 1's marginal, eq. 5) from K latent draws per point:
    ``log (1/K) sum_k N(x; g(z_k), Sigma_x) N(z_k; 0, Sigma_z) / q(z_k)`` with ``Z`` (N, K, S) drawn from the
    proposal q and ``log_q`` (N, K) its log-density there. Biased low (Jensen) by about the proposal's mismatch;
    only the guard's screen uses it, never a reported number."""
    N, K, S = Z.shape
    D = X.shape[1]
    chol_x, chol_z = np.linalg.cholesky(net.cov_x), np.linalg.cholesky(net.cov_z)
    const = -0.5 * (D + S) * _LOG_2PI - np.log(np.diag(chol_x)).sum() - np.log(np.diag(chol_z)).sum()
    width = max([D, S] + [layer.weight.shape[0] for layer in net.layers if isinstance(layer, Linear)])
    step = max(1, _SCREEN_FLOATS // (K * width))
    out = np.empty(N)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        for s in range(0, N, step):
            z = Z[s:s + step].reshape(-1, S)
            h = net.forward(z)
            r = solve_triangular(chol_x, (np.repeat(X[s:s + step], K, axis=0) - h).T, lower=True,
                                 check_finite=False)
            u = solve_triangular(chol_z, z.T, lower=True, check_finite=False)
            log_w = const - 0.5 * ((r * r).sum(axis=0) + (u * u).sum(axis=0)) - log_q[s:s + step].reshape(-1)
            out[s:s + step] = logsumexp(log_w.reshape(-1, K), axis=1) - np.log(K)
    return out


def posterior_proposal(ev: Evaluation, eps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Draws ``Z`` (N, K, S) of the Gaussians ``N(posterior_mean, SCREEN_INFLATE posterior_cov)`` (Prop. 2's exact
    posterior moments of ``ev``) from standard normal ``eps`` (N, K, S), and their log-densities (N, K)."""
    lam, V = np.linalg.eigh(ev.posterior_cov)
    top = np.max(lam, axis=1, keepdims=True)
    lam = SCREEN_INFLATE * np.maximum(lam, 1e-12 * np.where(top > 0, top, 1.0))  # a near-Dirac posterior stays one
    F = V * np.sqrt(lam)[:, None, :]
    Z = ev.posterior_mean[:, None, :] + np.einsum("nst,nkt->nks", F, eps)
    S = eps.shape[2]
    log_q = -0.5 * (eps * eps).sum(axis=2) - 0.5 * np.log(lam).sum(axis=1)[:, None] - 0.5 * S * _LOG_2PI
    return Z, log_q


def draw_regions(part: Partition, draws: np.ndarray) -> np.ndarray:
    """(N, R) bool: the regions of ``part`` holding the latent draws (N, k, S) of each point (``Partition.locate``),
    the pairs EM passes to ``evaluate(lower_pairs=...)``: where the previous exact posterior lies, so likely the
    heavy terms of eq. 5 for a nearby network (a draw on no region, only possible on a boundary, marks nothing)."""
    N, k, S = draws.shape
    idx = part.locate(draws.reshape(-1, S)).reshape(N, k)
    out = np.zeros((N, len(part)), dtype=bool)
    rows = np.repeat(np.arange(N), k)
    keep = idx.ravel() >= 0
    out[rows[keep], idx.ravel()[keep]] = True
    return out


class GuardScreen:
    """The guard's screen (``EM(screen=...)``): which backtracking steps are worth an exact evaluation.

    ``reference``: the network whose exact mean log-likelihood the guard compares against, and ``ev`` its exact
    evaluation. A candidate's gain is estimated by importance sampling with common draws (the same z for both
    networks, from ``ev``'s posterior, :func:`posterior_proposal`): ``d_n = est_n(candidate) - est_n(reference)``.
    The step is screened out (not evaluated) when ``mean(d) + SCREEN_SIGMAS se(d) < -SCREEN_NATS`` or the
    candidate's estimate is not finite; it passes everything when the reference's posterior or estimate is not
    finite (then it knows nothing). The screen never accepts anything: every accepted step is still one whose exact
    log-likelihood (``engine.evaluate``) did not fall, so EM stays monotone and its history true whatever the
    estimate says; a wrong screen-out only loses that step's gain. Built lazily: nothing is computed until the first
    candidate."""

    def __init__(self, reference: Network, ev: Evaluation, X: np.ndarray, eps: np.ndarray):
        self.reference, self.ev, self.X, self.eps = reference, ev, X, eps
        self._draws = self._ref = None

    def _drawn(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The proposal's draws and log-densities; None if the reference's posterior moments are not finite."""
        if self._draws is None:
            ev = self.ev
            finite = np.all(np.isfinite(ev.posterior_mean)) and np.all(np.isfinite(ev.posterior_cov))
            self._draws = posterior_proposal(ev, self.eps) if finite else ()
        return self._draws or None

    def latent_draws(self, k: int = HINT_DRAWS) -> np.ndarray | None:
        """The first ``k`` draws per point of the proposal (N, k, S): where the reference's posterior lies."""
        drawn = self._drawn()
        return None if drawn is None else drawn[0][:, :k]

    def gain(self, candidate: Network) -> tuple[float, float]:
        """The estimated mean gain of ``candidate`` over the reference (nats per point) and its standard error;
        ``(inf, 0)`` when the reference's side is not finite (nothing is known: every step passes)."""
        drawn = self._drawn()
        if drawn is None:
            return np.inf, 0.0
        Z, log_q = drawn
        if self._ref is None:
            self._ref = importance_log_marginal(self.reference, self.X, Z, log_q)
        ref = self._ref
        if not np.all(np.isfinite(ref)):
            return np.inf, 0.0
        d = importance_log_marginal(candidate, self.X, Z, log_q) - ref
        if not np.all(np.isfinite(d)):
            return -np.inf, 0.0
        return float(d.mean()), float(d.std() / np.sqrt(d.size))

    def passes(self, candidate: Network) -> bool:
        """False when the candidate is estimated to lose more than ``SCREEN_NATS`` per point (see the class)."""
        mean, se = self.gain(candidate)
        return mean + SCREEN_SIGMAS * se >= -SCREEN_NATS


# --------------------------------------------------------------------------- the estimator
class EM(DensityMixin, BaseEstimator):
    """Exact EM for a CPA generative network: a scikit-learn density estimator (``check_estimator`` passes).

    Parameters
    ----------
    network : None (default), a Network, cpa-dgn dict/JSON/path, or a list of widths ``[S, h1, ..., D]``.
        None builds the decoder ``[latent_dim, *hidden, n_features_in_]`` from the data at ``fit``; widths
        and None are built by ``init``: ``"random"`` or ``"pca"``, with ``activation`` and ``random_state``.
    latent_dim, hidden : the architecture used when ``network`` is None (default 1 and (16, 16)).
    max_iter, tol : at most ``max_iter`` EM iterations; converged when the mean log-likelihood rises
        by less than ``tol`` nats per point in one iteration.
    cov_x_type : ``"isotropic"`` (default), ``"diagonal"`` or ``"full"``.
    learn_cov_z : learn Sigma_z (default False: fixed to the network's, identity by default). Note the
        trade-off of its scale with W^1 (module docstring).
    random_state : None, a non-negative int, or a numpy Generator / RandomState: seed for the random
        initialisation (anything else is refused at ``fit``).
    warm_start : if True, a second ``fit`` starts from ``network_``.
    verbose : show a tqdm progress bar with the current log-likelihood.
    max_backtracks : halvings of a rejected inner-layer update before giving it up (default 1).
    min_cov_x : floor on Sigma_x's variances (eigenvalues if full), relative to the mean
        per-dimension data variance (default 1e-6; must be > 0). The M-step maximises Q over
        ``{Sigma_x >= floor I}``, so the floor keeps EM monotone (constant pixels of digits4). When the
        data have no variance at all the floor is ``min_cov_x`` itself (absolute, like scikit-learn's
        ``reg_covar``), so Sigma_x cannot collapse to rounding; ``fit`` needs at least 2 points.
    sweep : how the inner layers are updated (all variants are monotone).
        ``"chain"`` (default): the exact M-step (last layer, covariances) from the E-step at theta_t,
        then each inner layer top-down by its frozen-mask update, each guarded by one exact
        evaluation that also serves as the next layer's E-step; if every inner update is rejected the
        exact step alone is evaluated and kept. ``"layerwise"``: each inner layer (bottom-up) guarded
        on its own from fresh statistics, then the exact step. ``"joint"``: exact step, then all
        inner layers by block-coordinate ascent on the surrogate, guarded by one evaluation.
        ``"none"``: exact steps only (last layer and covariances). On circle/wave "chain" gained
        the most likelihood per evaluation; "joint" is cheapest per iteration but often rejected.
    init, activation, negative_slope : how a network given as widths is built (``init_random`` or
        ``init_pca``).
    max_regions, method : passed to ``engine.evaluate`` (region budget; Gaussian-integral method).
    backoff : at most this many iterations an inner layer whose guarded update was rejected is left out
        before it is tried again (``"chain"`` and ``"layerwise"``; default 8, 0 = try every inner layer
        every iteration). After j rejections in a row the layer sits out ``min(2^(j-1), backoff)``
        iterations (fate ``"skipped"``); an acceptance resets j. A rejected try costs up to
        ``max_backtracks + 1`` exact evaluations (partition and integrals) and gains nothing, so this
        brings circle [2,16,16,2] from 3 to about 1-2 evaluations per iteration. Monotone either way.
    scheduler, n_workers : where the E-step's ``engine.evaluate`` integrates (``scheduler=`` and
        ``workers=`` of :func:`engine.evaluate`, :mod:`engine.scaling`): a Dask address such as
        ``"tcp://host:8786"`` or a ``distributed.Client``, or ``n_workers`` local processes (default
        None and 1: this process). The partition is computed here and shipped; the points are split
        into row blocks, so the fit (history, network) is the same as a local one (at S >= 2 to rounding: the
        lower bound seeded by the screen's draws is used by a local evaluate only).
    screen : ``"auto"`` (default: on for S >= 2), True or False. Before a guarded inner-layer step is evaluated
        exactly, its gain is estimated by importance sampling from the current exact posterior
        (:class:`GuardScreen`, K = 64 draws per point, a forward pass of the decoder); a step estimated to lose
        more than 0.1 nats per point (plus 3 standard errors) is not evaluated (it counts as a backtrack, fate
        ``"screened out"`` when no step of the try was evaluated, no back-off pause). Only exact evaluations
        accept, so EM stays monotone and its history true; on circle [2,16,16,2] the rejected inner-layer
        candidates were 0.2-4 nats per point worse and up to 10x costlier to evaluate than the accepted ones. The
        regions of 32 of the draws also seed evaluate's lower bound of log p(x) (``LOWER_HINT``, module docstring);
        ``fit`` then ends with a plain evaluate of ``network_`` so that ``evaluation_`` is exactly that.

    Attributes after ``fit``: ``network_``, ``log_likelihoods_`` (mean exact log p(x) per point; entry
    0 is the starting network, entry t after iteration t), ``n_regions_`` (per entry), ``history_``
    (per iteration: log-likelihood, region count, the fate of every update, wall and CPU seconds, the number of
    exact evaluations and of new partitions it took),
    ``converged_``, ``n_iter_``.
    """

    def __init__(self, network=None, *, latent_dim: int = 1, hidden: tuple = (16, 16), max_iter: int = 100,
                 tol: float = 1e-4, cov_x_type: str = "isotropic", learn_cov_z: bool = False, random_state=None,
                 warm_start: bool = False, verbose: bool = False, init: str = "random", activation: str = "relu",
                 negative_slope: float = 0.1, max_backtracks: int = 1, min_cov_x: float = 1e-6,
                 sweep: str = "chain", max_regions: int = DEFAULT_MAX_REGIONS, method: str = "auto",
                 scheduler=None, n_workers: int = 1, backoff: int = 8, screen="auto"):
        self.network = network
        self.latent_dim = latent_dim
        self.hidden = hidden
        self.max_iter = max_iter
        self.tol = tol
        self.cov_x_type = cov_x_type
        self.learn_cov_z = learn_cov_z
        self.random_state = random_state
        self.warm_start = warm_start
        self.verbose = verbose
        self.init = init
        self.activation = activation
        self.negative_slope = negative_slope
        self.max_backtracks = max_backtracks
        self.min_cov_x = min_cov_x
        self.sweep = sweep
        self.max_regions = max_regions
        self.method = method
        self.scheduler = scheduler
        self.n_workers = n_workers
        self.backoff = backoff
        self.screen = screen

    # ----------------------------------------------------------------- checks
    def _check_params(self) -> None:
        if (isinstance(self.max_iter, bool) or not isinstance(self.max_iter, int | np.integer)
                or self.max_iter < 0):
            raise DGNInputError("max_iter", f"must be a non-negative integer, got {self.max_iter!r}")
        if not isinstance(self.tol, int | float) or not np.isfinite(self.tol) or self.tol < 0:
            raise DGNInputError("tol", f"must be a finite number >= 0, got {self.tol!r}")
        if self.cov_x_type not in COV_X_TYPES:
            raise DGNInputError("cov_x_type", f"is {self.cov_x_type!r}",
                                f"choose one of {', '.join(COV_X_TYPES)}")
        if self.sweep not in ("chain", "joint", "layerwise", "none"):
            raise DGNInputError("sweep", f"is {self.sweep!r}",
                                "choose 'chain', 'joint', 'layerwise' or 'none'")
        if self.init not in ("random", "pca"):
            raise DGNInputError("init", f"is {self.init!r}", "choose 'random' or 'pca'")
        if not isinstance(self.max_backtracks, int) or self.max_backtracks < 0:
            raise DGNInputError("max_backtracks",
                                f"must be a non-negative integer, got {self.max_backtracks!r}")
        if isinstance(self.backoff, bool) or not isinstance(self.backoff, int | np.integer) or self.backoff < 0:
            raise DGNInputError("backoff", f"must be a non-negative integer, got {self.backoff!r}",
                                "0 tries every inner layer every iteration")
        if not (isinstance(self.screen, bool) or self.screen == "auto"):
            raise DGNInputError("screen", f"is {self.screen!r}", "choose 'auto', True or False")
        if not isinstance(self.min_cov_x, int | float) or not 0 < self.min_cov_x < np.inf:
            raise DGNInputError("min_cov_x", f"must be a positive number, got {self.min_cov_x!r}",
                                "a zero floor lets Sigma_x become singular on constant pixels")
        check_random_state(self.random_state)
        from .scaling import check_block_options

        check_block_options(None, self.n_workers, self.scheduler)
        if self.network is None:
            if isinstance(self.latent_dim, bool) or not isinstance(self.latent_dim, int | np.integer) \
                    or self.latent_dim < 1:
                raise DGNInputError("latent_dim", f"must be a positive integer, got {self.latent_dim!r}")
            hidden = self.hidden if isinstance(self.hidden, list | tuple) else [self.hidden]
            if any(isinstance(h, bool) or not isinstance(h, int | np.integer) or h < 1 for h in hidden):
                raise DGNInputError("hidden", f"must be a tuple of positive integers, got {self.hidden!r}",
                                    "e.g. hidden=(16, 16); () for a linear decoder (PPCA)")

    def _widths(self, X: np.ndarray) -> list[int] | None:
        """The decoder's widths when ``network`` is None or a width list; None for a given network."""
        if self.network is None:
            hidden = self.hidden if isinstance(self.hidden, list | tuple) else [self.hidden]
            return [int(self.latent_dim), *(int(h) for h in hidden), X.shape[1]]
        spec = self.network
        if isinstance(spec, list | tuple) and spec and all(isinstance(w, int | np.integer) for w in spec):
            return [int(w) for w in spec]
        return None

    def _validate(self, X, reset: bool) -> np.ndarray:
        """X through :func:`engine.validation.check_data` (one-line refusals: complex, sparse, bool, ragged,
        object, NaN/inf, 1-D) and ``sklearn.utils.validation.validate_data`` (``n_features_in_``, feature
        names; its refusals re-raised as one-line :class:`DGNInputError`)."""
        from sklearn.utils.validation import validate_data

        from .validation import check_data

        Xc = check_data(X, field="data", one_dim="error", min_samples=2 if reset else 1)
        try:
            validate_data(self, X, reset=reset, dtype=np.float64, ensure_min_samples=2 if reset else 1)
        except ValueError as exc:
            raise DGNInputError("data", str(exc).splitlines()[0]) from None
        return Xc

    def _starting_network(self, X: np.ndarray) -> Network:
        if self.warm_start and hasattr(self, "network_"):
            return self.network_
        spec = self.network
        widths = self._widths(X)
        if widths is not None:
            if len(widths) < 2 or min(widths) < 1:
                raise DGNInputError("network", f"widths {widths} are not [S, ..., D] with positive entries")
            if widths[-1] != X.shape[1]:
                raise DGNInputError("network", f"the last width {widths[-1]} differs from the data dimension "
                                    f"{X.shape[1]}", "make the widths end with D")
            make = init_pca if self.init == "pca" else init_random
            return make(widths, X, activation=self.activation, negative_slope=self.negative_slope,
                        rng=check_random_state(self.random_state))
        net = spec if isinstance(spec, Network) else load_network(spec)
        if net.data_dim != X.shape[1]:
            raise DGNInputError("data", f"has {X.shape[1]} features but the network's output dimension D is "
                                f"{net.data_dim}", f"give an (N, {net.data_dim}) array")
        return net

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "network_")

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False  # NaN means missing: use engine.impute with a fitted network_
        tags.input_tags.sparse = False
        tags.non_deterministic = False
        return tags

    def _check_fitted(self) -> None:
        if not hasattr(self, "network_"):
            raise NotFittedDGNError("EM", "is not fitted yet", "call fit(X) first")

    def _evaluate(self, net: Network, X: np.ndarray, part: Partition | None = None, defer: bool = False) -> Evaluation:
        """``engine.evaluate`` of ``net``; ``defer``: a guard's candidate, whose S = 2 heavy pass (moments only)
        runs only if it is accepted (``distributions.complete``): the log-likelihood is final either way. Inside
        :meth:`_evaluate_seeded` the regions of the previous posterior's draws seed evaluate's lower bound of log p(x)
        (``lower_pairs``; the partition is then computed here, and still counted as new)."""
        draws = getattr(self, "_seed_draws", None)
        if getattr(self, "_counts", None) is not None:  # inside fit: count evaluations and new partitions
            self._counts[0] += 1
            self._counts[1] += part is None
        lower_pairs = None
        if draws is not None and LOWER_HINT and self.scheduler is None and self.n_workers == 1:
            from .scaling import rows_per_block

            if part is None:
                part = partition(net, max_regions=self.max_regions)
            if X.shape[0] <= rows_per_block(len(part), net.latent_dim):  # one block: evaluate takes the hint
                lower_pairs = draw_regions(part, draws)
        ev = evaluate(net, X, part=part, max_regions=self.max_regions, method=self.method,
                      rng=self.random_state, workers=self.n_workers, scheduler=self.scheduler, defer=defer,
                      lower_pairs=lower_pairs)
        ev._seeded = lower_pairs is not None  # its loosened pairs' bits differ from a plain evaluate's
        return ev

    # ----------------------------------------------------------------- fit
    def fit(self, X, y=None) -> EM:
        """Run exact EM from the starting network on data X (N, D); returns self.

        BLAS runs single-threaded inside ``fit`` (threadpoolctl): the matrices are small (at most a
        few hundred rows) and threads only add overhead and contention.
        """
        try:  # threadpoolctl ships with scikit-learn, a dependency of this package
            from threadpoolctl import threadpool_limits
        except ImportError:  # pragma: no cover
            threadpool_limits = None
        self._counts = [0, 0, 0]  # exact evaluations, of which new partitions; steps screened out
        try:
            with threadpool_limits(limits=1, user_api="blas") if threadpool_limits else contextlib.nullcontext():
                return self._fit(X)
        finally:
            self._counts = None  # score_samples and friends leave the estimator's state unchanged
            self._screen_eps = self._last_screen = self._seed_draws = None  # the screen's state goes with the fit
            self._last_statistics = None

    def _fit(self, X) -> EM:
        self._check_params()
        X = self._validate(X, reset=not (self.warm_start and hasattr(self, "network_")))
        net = self._starting_network(X)
        spread = float(X.var(axis=0).mean())
        floor = float(self.min_cov_x) * (spread if spread > 0 else 1.0)
        self.cov_x_floor_ = floor
        net = net.replace(cov_x=project_cov_x(net.cov_x, self.cov_x_type, floor))
        ev = _completed(self._evaluate(net, X, defer=True))
        ll = float(ev.log_marginal.mean())
        self.log_likelihoods_ = [ll]
        self.n_regions_ = [ev.n_regions]
        self.history_: list[dict] = []
        self.converged_ = False
        self.n_iter_ = 0
        self._rejections: dict[int, int] = {}  # inner layer -> rejections in a row
        self._pause: dict[int, int] = {}  # inner layer -> iterations left out before the next try
        on = self.screen is True or (self.screen == "auto" and net.latent_dim >= 2)
        self._screen_eps = (np.random.default_rng(SCREEN_SEED).standard_normal((X.shape[0], SCREEN_SAMPLES,
                                                                                net.latent_dim)) if on else None)
        bar = None
        if self.verbose:
            from tqdm.auto import tqdm

            bar = tqdm(total=self.max_iter, desc="EM", unit="it")
        try:
            for it in range(1, self.max_iter + 1):
                t0, c0 = time.perf_counter(), time.process_time()
                n0, p0, s0 = self._counts
                net, ev, ll_new, record = self._iteration(net, ev, X, ll, floor)
                record["iteration"] = it
                record["seconds"] = time.perf_counter() - t0
                record["cpu_seconds"] = time.process_time() - c0  # this process's CPU (all its threads)
                record["evaluations"] = self._counts[0] - n0  # engine.evaluate calls
                record["partitions"] = self._counts[1] - p0  # of which computed a new partition
                record["screened"] = self._counts[2] - s0  # backtracking steps the screen left unevaluated
                self.history_.append(record)
                self.log_likelihoods_.append(ll_new)
                self.n_regions_.append(ev.n_regions)
                self.n_iter_ = it
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loglik=f"{ll_new:.6f}", regions=ev.n_regions)
                gain = ll_new - ll
                ll = ll_new
                if gain <= self.tol:
                    if "skipped" not in record["updates"].values():
                        self.converged_ = True
                        break
                    self._pause.clear()  # a stall with layers left out: try them all before stopping
        finally:
            if bar is not None:
                bar.close()
        self.network_ = net
        # the full evaluate of network_, heavy pass included, bit for bit a plain evaluate on its partition: an
        # evaluation whose lower bound was seeded (LOWER_HINT) has the same log p(x) to rounding, not the same bits
        self.evaluation_ = self._evaluate(net, X, part=ev.partition) if getattr(ev, "_seeded", False) else complete(ev)
        self.lower_bound_ = ll
        return self

    def _exact_step(self, net: Network, ev: Evaluation, X: np.ndarray, floor: float,
                    stats: Statistics, masked=None) -> tuple[Network, list[str]]:
        """Exact M-step on the partition of ``ev``: last layer, then Sigma_x, then Sigma_z if learned."""
        lin = _linear_indices(net)
        layers = list(net.layers)
        layers[lin[-1]] = layer_update(net, stats, frozen_maps(net, ev.partition), lin[-1])
        new = net.replace(layers=layers)
        new = new.replace(cov_x=cov_x_update(new, ev, X, self.cov_x_type, floor, masked=masked))
        names = [f"layer{len(lin) - 1}", "cov_x"]
        if self.learn_cov_z:
            new = new.replace(cov_z=cov_z_update(stats))
            names.append("cov_z")
        return new, names

    def _evaluate_seeded(self, net: Network, X: np.ndarray, screen: GuardScreen | None,
                         part: Partition | None = None) -> Evaluation:
        """:meth:`_evaluate` (deferred) with the lower bound of log p(x) seeded by the regions of ``screen``'s draws
        from the previous exact posterior (``LOWER_HINT``; none without a screen)."""
        self._seed_draws = None if screen is None else screen.latent_draws()  # None: no finite posterior
        try:
            return self._evaluate(net, X, part=part, defer=True)
        finally:
            self._seed_draws = None

    def _statistics(self, ev: Evaluation, X: np.ndarray) -> tuple[tuple, Statistics]:
        """``(_masked_moments(ev), statistics(ev, X))``, kept for the last ``ev``: an accepted guard evaluation feeds
        the next inner layer's update and then, as the next E-step, the next iteration's exact step."""
        last = getattr(self, "_last_statistics", None)
        if last is None or last[0] is not ev:
            masked = _masked_moments(ev)
            self._last_statistics = last = (ev, masked, statistics(ev, X, masked))
        return last[1], last[2]

    def _screen(self, reference: Network, ev: Evaluation, X: np.ndarray) -> GuardScreen | None:
        """The screen of the guard against ``reference`` (exact evaluation ``ev``); None when off. The last one is
        kept: asked again for the same pair, it is returned with its draws and estimates."""
        eps = getattr(self, "_screen_eps", None)
        if eps is None:
            return None
        last = getattr(self, "_last_screen", None)
        if last is None or last.reference is not reference or last.ev is not ev:
            self._last_screen = last = GuardScreen(reference, ev, X, eps)
        return last

    def _try(self, base: Network, proposal: Network, indices: list[int], X: np.ndarray, ll: float,
             screen: GuardScreen | None = None):
        """Accept ``proposal`` (inner layers ``indices`` moved from ``base``) if the exact mean log-likelihood
        is >= ``ll``, else halve the move toward ``base`` up to ``max_backtracks`` times. ``screen``: steps it
        screens out are halved without an exact evaluation (fate "screened out" if no step was evaluated)."""
        step = 1.0
        evaluated = False
        for _ in range(self.max_backtracks + 1):
            layers = list(base.layers)
            for k in indices:
                old, new = base.layers[k], proposal.layers[k]
                layers[k] = Linear(old.weight + step * (new.weight - old.weight),
                                   old.bias + step * (new.bias - old.bias))
            cand = base.replace(layers=layers, cov_x=proposal.cov_x_spec, cov_z=proposal.cov_z_spec)
            if screen is not None and not screen.passes(cand):
                self._counts[2] += 1
                step *= 0.5
                continue
            evaluated = True
            try:
                cand_ev = self._evaluate_seeded(cand, X, screen)
            except RegionBudgetError:
                step *= 0.5
                continue
            cand_ll = float(cand_ev.log_marginal.mean())
            if cand_ll >= ll:
                return cand, _completed(cand_ev), cand_ll, ("accepted" if step == 1.0 else f"accepted (step {step:g})")
            step *= 0.5
        return None, None, None, "rejected" if evaluated else "screened out"

    def _paused(self, k: int) -> bool:
        """True (and one iteration of the pause used up) if inner layer k sits out this iteration."""
        if self._pause.get(k, 0) > 0:
            self._pause[k] -= 1
            return True
        return False

    def _record_try(self, k: int, accepted: bool, evaluated: bool = True) -> None:
        """Count rejections in a row of layer k; pause it ``min(2^(j-1), backoff)`` iterations after j. A try the
        screen left wholly unevaluated (``evaluated`` False) cost no evaluation: it changes nothing."""
        if accepted:
            self._rejections[k] = 0
            return
        if not evaluated:
            return
        j = self._rejections.get(k, 0) + 1
        self._rejections[k] = j
        self._pause[k] = min(2 ** min(j - 1, 30), int(self.backoff))

    def _iteration(self, net: Network, ev: Evaluation, X: np.ndarray, ll: float, floor: float):
        """One generalised-EM iteration; returns (network, its evaluation, mean log-lik, record)."""
        lin = _linear_indices(net)
        inner = lin[:-1]
        updates: dict[str, str] = {}
        record: dict[str, Any] = {"updates": updates}
        if self.sweep == "layerwise":
            # every inner layer's frozen-mask update guarded on its own, with fresh statistics
            for k in inner:
                if self._paused(k):
                    updates[f"layer{lin.index(k)}"] = "skipped"
                    continue
                proposal = layer_update(net, self._statistics(ev, X)[1], frozen_maps(net, ev.partition), k)
                layers = list(net.layers)
                layers[k] = proposal
                cand, cand_ev, cand_ll, fate = self._try(net, net.replace(layers=layers), [k], X, ll,
                                                         self._screen(net, ev, X))
                self._record_try(k, cand is not None, fate != "screened out")
                if cand is not None:
                    net, ev, ll = cand, cand_ev, cand_ll
                updates[f"layer{lin.index(k)}"] = fate
        masked, stats = self._statistics(ev, X)
        exact, names = self._exact_step(net, ev, X, floor, stats, masked)
        if self.sweep == "chain" and inner:
            # exact step first (not yet evaluated), then each inner layer guarded on its own; the first
            # accepted evaluation also validates the exact step and gives fresh statistics
            base, base_ev, validated = exact, ev, False
            screen = self._screen(net, ev, X)  # against the network whose exact log-likelihood is ll
            for k in reversed(inner):
                if self._paused(k):
                    updates[f"layer{lin.index(k)}"] = "skipped"
                    continue
                fm = frozen_maps(base, base_ev.partition)
                st = stats if not validated else self._statistics(base_ev, X)[1]
                layers = list(base.layers)
                layers[k] = layer_update(base, st, fm, k)
                cand, cand_ev, cand_ll, fate = self._try(base, base.replace(layers=layers), [k], X, ll, screen)
                self._record_try(k, cand is not None, fate != "screened out")
                if cand is not None:
                    base, base_ev, ll, validated = cand, cand_ev, cand_ll, True
                    screen = self._screen(cand, cand_ev, X)
                updates[f"layer{lin.index(k)}"] = fate
            if validated:
                for name in names:
                    updates[name] = "accepted"
                record.update(log_likelihood=ll, n_regions=base_ev.n_regions)
                return base, base_ev, ll, record
        if self.sweep == "joint" and inner:
            # inner layers by block-coordinate ascent on the frozen-mask surrogate, from the exact step
            proposal = exact
            fm = frozen_maps(proposal, ev.partition)
            for k in reversed(inner):
                layers = list(proposal.layers)
                layers[k] = layer_update(proposal, stats, fm, k)
                proposal = proposal.replace(layers=layers)
                fm = frozen_maps(proposal, ev.partition)
            cand, cand_ev, cand_ll, fate = self._try(exact, proposal, inner, X, ll, self._screen(net, ev, X))
            for k in inner:
                updates[f"layer{lin.index(k)}"] = fate
            if cand is not None:
                for name in names:
                    updates[name] = "accepted"
                record.update(log_likelihood=cand_ll, n_regions=cand_ev.n_regions)
                return cand, cand_ev, cand_ll, record
        screen = self._screen(net, ev, X)  # its draws seed the lower bound of log p(x) of the exact step's evaluate
        exact_ev = self._evaluate_seeded(exact, X, screen, part=repartition(exact, ev.partition))
        exact_ll = float(exact_ev.log_marginal.mean())
        if exact_ll >= ll:
            net, ev, ll = exact, _completed(exact_ev), exact_ll
            fate = "accepted"
        else:
            fate = f"undone (rounding: {exact_ll - ll:.3g})"
        for name in names:
            updates[name] = fate
        record.update(log_likelihood=ll, n_regions=ev.n_regions)
        return net, ev, ll, record

    # ----------------------------------------------------------------- scoring and sampling
    def score_samples(self, X) -> np.ndarray:
        """Exact ``log p(x)`` (Theorem 1) of each row of X under the fitted network."""
        self._check_fitted()
        return self._evaluate(self.network_, self._validate(X, reset=False)).log_marginal

    def score(self, X, y=None) -> float:
        """Mean exact log-likelihood per point."""
        return float(self.score_samples(X).mean())

    def posterior(self, X) -> Evaluation:
        """Exact posterior of each row (Prop. 2): ``posterior_mean``, ``posterior_cov``, region weights."""
        self._check_fitted()
        return self._evaluate(self.network_, self._validate(X, reset=False))

    def sample(self, n: int = 1, random_state=None, return_latent: bool = False):
        """Draw n points from the fitted model (and their latents if ``return_latent``)."""
        self._check_fitted()
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
            raise DGNInputError("n", f"must be a positive integer, got {n!r}")
        rng = check_random_state(self.random_state if random_state is None else random_state)
        return self.network_.sample(int(n), rng=rng, return_latent=return_latent)

    def n_parameters(self) -> int:
        """Free parameters of the fitted model, counted as the dimension of the set of distributions.

        All weights and biases, minus one per activation unit (every CPA activation here is positively
        homogeneous: scaling a unit's input row by c > 0 and its output column by 1/c leaves g unchanged),
        minus S(S-1)/2 (rotating z in the metric of Sigma_z, absorbed by W^1, leaves p(x) unchanged), plus
        Sigma_x in its family (1, D or D(D+1)/2). Learning Sigma_z adds nothing: its S(S+1)/2 entries trade
        against W^1 through any invertible L, ``(Sigma_z, W^1) ~ (L Sigma_z L^T, W^1 L^-1)`` (module docstring),
        a group of dimension S^2 = S(S+1)/2 + S(S-1)/2. For a linear decoder this is PPCA's
        ``D S + D + 1 - S(S-1)/2`` (isotropic; Tipping and Bishop 1999). Counted at generic parameters: dead
        units or duplicate hyperplanes remove more.
        """
        self._check_fitted()
        net = self.network_
        k = sum(layer.weight.size + layer.bias.size for layer in net.layers if isinstance(layer, Linear))
        D, S = net.data_dim, net.latent_dim
        k -= net.n_units + S * (S - 1) // 2
        k += {"isotropic": 1, "diagonal": D, "full": D * (D + 1) // 2}[self.cov_x_type]
        return int(k)

    def aic(self, X) -> float:
        """Akaike information criterion ``-2 sum log p(x) + 2 k`` (lower is better)."""
        ll = self.score_samples(X).sum()
        return float(-2.0 * ll + 2.0 * self.n_parameters())

    def bic(self, X) -> float:
        """Bayesian information criterion ``-2 sum log p(x) + k log N`` (lower is better)."""
        lp = self.score_samples(X)
        return float(-2.0 * lp.sum() + self.n_parameters() * np.log(lp.shape[0]))

    def history(self) -> dict:
        """JSON-ready history: ``log_likelihoods`` (mean per point; entry 0 = start), ``n_regions``,
        ``converged``, ``n_iter``, ``accepted`` (names of the accepted updates per iteration) and
        ``updates`` (the fate of every update: accepted, accepted (step s), rejected, screened out, skipped,
        undone), ``evaluations`` (exact evaluations, i.e. ``engine.evaluate`` calls, per iteration) and
        ``screened`` (backtracking steps the guard's screen left unevaluated, per iteration)."""
        self._check_fitted()
        return {"log_likelihoods": [float(v) for v in self.log_likelihoods_],
                "n_regions": [int(v) for v in self.n_regions_], "converged": bool(self.converged_),
                "n_iter": int(self.n_iter_),
                "accepted": [[k for k, v in h["updates"].items() if v.startswith("accepted")]
                             for h in self.history_],
                "updates": [h["updates"] for h in self.history_],
                "evaluations": [int(h["evaluations"]) for h in self.history_],
                "screened": [int(h.get("screened", 0)) for h in self.history_]}


__all__ = ["EM", "FrozenMaps", "NotFittedDGNError", "Statistics", "cov_x_update", "cov_z_update",
           "expected_complete_loglik",
           "frozen_maps", "init_pca", "init_random", "layer_update", "project_cov_x", "repartition",
           "statistics"]
