"""First-order bound on what float64 rounding does to log p(x) (eq. 5): the part of ``log_marginal_error`` that
the integration methods do not see.

Each term of eq. 5 is ``T_w = log int_w N(z; 0, Sigma_z) N(x; A z + b, Sigma_x) dz`` (eq. 4 on region w). The
engine holds ``A``, ``b`` as float64 compositions of the layers (eq. 8) and evaluates ``T_w`` from them in
float64 (whitening, SVD, the completed square, the polygon mass). Both are modelled as perturbations of the
problem: the composition is off by ``|dA| <= gamma eps |W^L| |D| ... |W^1|`` and ``|db| <= gamma eps (|W^L| ...
|v^1| + ... + |v^L|)`` entrywise (``gamma`` = the summed fan-ins plus one per layer), the evaluation by a
backward error of ``c eps`` (``c = 4 (D + S)``) relative to ``|x_w| + |b_w|`` and to ``|A_w|``. To first
order (whitened coordinates, ``r(z) = L_x^-1 (x - A z - b)``, E over the posterior truncated to w)::

    dT_w = E[r(z)^T L_x^-1 (dA z + db)],   |dT_w| <= sqrt(E|r|^2) (|db_w| + |dA_w|_F sqrt(E|z|^2))

with ``E|r|^2 = |r(m)|^2 + tr(A_w C A_w^T)`` and ``E|z|^2 = |m|^2 + tr C`` (m, C the truncated moments). The
residual is bounded without D-length work per pair: ``|r(m)| <= sqrt(q) + d``, ``q = -2 (log_norm - const)``
the completed square (eq. 5's exponent, ``>= |r(mu)|^2``) and ``d = |L_w^-1 (m - mu)|`` (Sigma_w = L_w L_w^T,
``A_w^T A_w <= Sigma_w^-1``), ``tr(A_w C A_w^T) <= tr(Sigma_w^-1 C) <= S`` (Brascamp-Lieb: a Gaussian
truncated to a convex set has ``C <= Sigma_w``; the computed C is not used there, its thin directions are
rounding). The mass's own dependence on the rounded mu_w adds ``d c eps (|e| + |A_w|_F |mu|)`` and every log
term ``8 eps (1 + |log_norm|)``. Pairs of weight below 1e-30 are left out.

On ordinary nets this is ~1e-13 to 1e-10 nats. The pinned fuzz nets of tests/fuzz_cases show why it is needed:
against the exact-rational oracle ``verify.oracles.exact``, float64 evaluations of seven of the eight S = 2 nets
that evaluate are off by more than the integration bars (9e-16 ... 5e-15): from 2.1e-14 and 1.4e-12 nats
(rescaling-0, gain ~1e9 over the noise) to 1.9, 2.4 and 5.1 nats (permutation-4, gain ~1e16: one ulp of x is
~2 noise standard deviations). This bound gives 1.8e-7 ... 6e4 nats there and covers every one: float64
cannot resolve such nets, and the bar says so.
"""

from __future__ import annotations

import math
import weakref

import numba
import numpy as np
from scipy.linalg import solve_triangular

from .network import Linear, Network

_EPS = np.finfo(float).eps
_W_MIN = 1e-30  # pairs of posterior weight below this add less than 1e-30 (e^beta - 1) each: left out


def abs_maps(net: Network, signs: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Per region, the magnitudes ``|W^L| |D^{L-1}| ... |W^1|`` (R, D, S) and ``|W^L| (... (|W^1| 0 + |v^1|)) +
    |v^L|`` (R, D) that bound the rounding of eq. 8's composition, and ``gamma`` (summed fan-ins + 1 a layer).
    Unit-major (units, R, S) while composing, so that every layer is one GEMM over all regions."""
    signs = np.asarray(signs, dtype=bool)
    R, S = len(signs), net.latent_dim
    Aabs = np.broadcast_to(np.eye(S)[:, None, :], (S, R, S)).copy()
    babs = np.zeros((S, R))
    col, gamma = 0, 0.0
    for layer in net.layers:
        if isinstance(layer, Linear):
            W = np.abs(np.asarray(layer.weight, dtype=np.float64))
            Aabs = (W @ Aabs.reshape(W.shape[1], -1)).reshape(W.shape[0], R, S)
            babs = W @ babs + np.abs(np.ravel(layer.bias))[:, None]
            gamma += W.shape[1] + 1
        else:
            n = babs.shape[0]
            slope = np.where(signs[:, col:col + n].T, 1.0, abs(float(layer.negative_slope)))
            Aabs *= slope[:, :, None]
            babs *= slope
            col += n
    return Aabs.transpose(1, 0, 2), babs.T, gamma


def rounding_bar(net: Network, part, rg, X: np.ndarray, mu: np.ndarray, log_norm: np.ndarray, log_mass: np.ndarray,
                 means: np.ndarray, covs: np.ndarray) -> np.ndarray:
    """(N,) bound (nats) on the change of log p(x) by float64 rounding of the region maps and of the terms of
    eq. 5, summed over the pairs that carry weight; see the module docstring. ``rg`` is the partition's
    ``RegionGaussians``, ``mu``, ``log_norm`` (eq. 7, 5) and ``log_mass``, ``means``, ``covs`` (the truncated
    moments) are :func:`engine.evaluate`'s first pass."""
    X_w = solve_triangular(rg.chol_x, np.asarray(X, dtype=np.float64).T, lower=True).T  # only its row norms
    S, D = net.latent_dim, net.data_dim
    c = 4.0 * (D + S)
    nAabs, nbabs, gamma = _abs_norms(net, part)
    inv_lx = 1.0 / np.sqrt(np.linalg.eigvalsh(net.cov_x)[0])  # |L_x^-1|_2
    nA = np.sqrt((rg.A_w ** 2).sum(axis=(1, 2)))
    dA = _EPS * (gamma * inv_lx * nAabs + c * nA)
    db0 = _EPS * gamma * inv_lx * nbabs  # the composition's part of |db_w|; the evaluation's part is per pair
    nb, nx = np.linalg.norm(rg.b_w, axis=1), np.linalg.norm(X_w, axis=1)
    # the (N, R, ...) arrays as they come (evaluate's moments are transposed views of region-major arrays): the
    # compiled pass reads them in tiles, no contiguous copies (they were 25 MB and 13 ms on [2,16,16,5] N = 1000)
    return _bar_pairs(_as_f64(log_norm), _as_f64(log_mass), _as_f64(mu), _as_f64(means), _as_f64(covs),
                      np.ascontiguousarray(rg.chol_cov), np.ascontiguousarray(rg.const), nx, nb, nA, dA, db0, c)


def _as_f64(a) -> np.ndarray:
    """``a`` as a float64 array, in whatever memory order it has (no copy when it is float64 already)."""
    return np.asarray(a, dtype=np.float64)


_TILE = 64  # points per tile of _bar_pairs: its loops run region-outer within a tile, so that arrays of either
# memory order (point-major log_norm, mu; region-major log_mass, means, covs) are read along their memory


@numba.njit(cache=True, nogil=True)
def _bar_pairs(log_norm, log_mass, mu, means, covs, chol, const, nx, nb, nA, dA, db0, c):  # pragma: no cover
    """The bound of :func:`rounding_bar` per point, one pass over its pairs of posterior weight above ``_W_MIN``:
    ``log(1 + sum_w w (e^beta_w - 1))``, in log space where some beta_w is large (it can be thousands of nats).
    Compiled (a numpy version cost ~260 ns a pair, 13 % of an S = 2 evaluate). Points in tiles of ``_TILE``, regions
    outer within a tile: every point still sees its regions in order (max, sum, bound), so the bits do not depend
    on the tiling or on the arrays' memory order."""
    N, R = log_norm.shape
    S = mu.shape[2]
    out = np.zeros(N)
    ws = np.empty((R, _TILE))
    top = np.empty(_TILE)
    total = np.empty(_TILE)
    small = np.empty(_TILE)  # sum of w (e^beta - 1) over beta < 600
    big = np.empty(_TILE)  # log of the same sum over beta >= 600
    y = np.empty(S)
    for n0 in range(0, N, _TILE):
        m = min(_TILE, N - n0)
        top[:] = -np.inf
        total[:] = 0.0
        small[:] = 0.0
        big[:] = -np.inf
        for r in range(R):
            for i in range(m):
                v = log_norm[n0 + i, r] + log_mass[n0 + i, r]
                if v > top[i]:
                    top[i] = v
        for i in range(m):
            if not np.isfinite(top[i]):
                top[i] = 0.0
        for r in range(R):
            for i in range(m):
                v = math.exp(log_norm[n0 + i, r] + log_mass[n0 + i, r] - top[i])
                ws[r, i] = v
                if v == v:
                    total[i] += v
        for r in range(R):
            for i in range(m):
                w = ws[r, i] / total[i]
                if not (w > _W_MIN):
                    continue
                n = n0 + i
                e = nx[n] + nb[r]  # >= |x_w - b_w|
                db = db0[r] + c * _EPS * e
                m2 = 0.0
                tr = 0.0
                nmu = 0.0
                for k in range(S):  # d = |L_w^-1 (m - mu)| by forward substitution
                    acc = means[n, r, k] - mu[n, r, k]
                    for j in range(k):
                        acc -= chol[r, k, j] * y[j]
                    y[k] = acc / chol[r, k, k]
                    m2 += means[n, r, k] * means[n, r, k]
                    tr += covs[n, r, k, k]
                    nmu += mu[n, r, k] * mu[n, r, k]
                d2 = 0.0
                for k in range(S):
                    d2 += y[k] * y[k]
                d = math.sqrt(d2) if d2 == d2 else np.inf  # a zero pivot: a huge bar, not a crash
                q = max(-2.0 * (log_norm[n, r] - const[r]), 0.0)
                er2 = (math.sqrt(q) + d) ** 2 + S  # tr(A_w C A_w^T) <= tr(Sigma_w^-1 C) <= S (Brascamp-Lieb)
                ez2 = m2 + max(tr, 0.0)
                beta = (math.sqrt(er2) * (db + dA[r] * math.sqrt(ez2)) + d * c * _EPS * (e + nA[r] * math.sqrt(nmu))
                        + 8.0 * _EPS * (1.0 + abs(log_norm[n, r])))
                if beta != beta:
                    beta = np.inf
                if beta < 600.0:
                    small[i] += w * math.expm1(beta)
                else:
                    t = math.log(w) + beta
                    big[i] = t if big[i] == -np.inf else max(big[i], t) + math.log1p(math.exp(-abs(big[i] - t)))
        for i in range(m):
            o = math.log1p(small[i])
            if big[i] > -np.inf:
                o = max(o, big[i]) + math.log1p(math.exp(-abs(o - big[i])))
            out[n0 + i] = o
    return out


_NORMS_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _abs_norms(net: Network, part):
    """Frobenius norms of :func:`abs_maps` per region, and gamma; once per (immutable) partition, so that the row
    blocks of ``scaling.evaluate_many`` share them."""
    hit = _NORMS_CACHE.get(part)
    if hit is None:
        Aabs, babs, gamma = abs_maps(getattr(part, "net", None) or net, part.signs)  # the maps part.A was built from
        hit = (np.sqrt((Aabs ** 2).sum(axis=(1, 2))), np.linalg.norm(babs, axis=1), gamma)
        _NORMS_CACHE.clear()
        _NORMS_CACHE[part] = hit
    return hit
