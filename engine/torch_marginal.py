"""The exact marginal of a torch CPA decoder as a differentiable ``torch.distributions.Distribution``.

``ExactMarginal(decoder, cov_z, cov_x).log_prob(x)`` is Theorem 1 (eq. 5) of the paper, computed by the
engine in float64, returned as a torch tensor whose gradient with respect to every decoder parameter,
to ``cov_x`` / ``cov_z`` when they are tensors, and to ``x`` is exact.

Gradient. With ``p(x) = sum_w int_w N(z; 0, Sigma_z) N(x; A_w z + b_w, Sigma_x) dz`` the region
boundaries move with the parameters, but the integrand is continuous across them (g is), so the
boundary terms of the Leibniz rule cancel pairwise and the gradient is that of the region-wise closed
form with the partition held fixed. Dividing by p(x) gives Fisher's identity over the exact posterior
mixture of eq. 6 (Prop. 2)::

    d log p(x) = sum_w P(w | x) E[ d log N(z; 0, Sigma_z) + d log N(x; A_w z + b_w, Sigma_x) | x, w ]

and since both logs are quadratic in z on a region, the conditional expectation needs only the
engine's exact truncated moments ``m_w = E[z | x, w]``, ``C_w = Cov[z | x, w]``::

    Q(theta) = sum_w P(w|x) [ -1/2 |L_x^-1 (x - A_w m_w - b_w)|^2 - 1/2 tr(C_w A_w^T Sigma_x^-1 A_w)
                              -1/2 log|Sigma_x| - 1/2 (m_w^T Sigma_z^-1 m_w + tr(Sigma_z^-1 C_w)) - 1/2 log|Sigma_z| ]

with ``P(w|x), m_w, C_w`` held fixed and ``A_w(theta), b_w(theta)`` re-expressed in torch from the lowered
decoder (:func:`engine.torch_lowering.lower` keeps the autograd graph) with the region's activation
pattern frozen. ``grad Q = grad log p(x)`` at the current parameters, so ``log_prob`` returns the exact
value plus ``Q - Q.detach()``. The same Q gives the score ``d log p / dx = Sigma_x^-1 (E[g(z)|x] - x)``.
Exact for S <= 3 (closed forms and certified integration); for S >= 4 the engine's region masses and
moments are importance-sampling estimates with error bars (see ``distributions.evaluate``), and so are
the value and gradient here.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from torch.distributions import Distribution, constraints

from .distributions import evaluate
from .errors import DGNInputError
from .network import Network
from .partition import DEFAULT_MAX_REGIONS, Partition, partition
from .torch_lowering import DTYPE, Affine, Lowered, lower


def _cov_matrix(name: str, spec: Any, dim: int) -> torch.Tensor:
    """A covariance given as a number / (dim,) variances / (dim, dim) matrix, as a dense float64 tensor
    (graph kept when ``spec`` is a tensor); validity is checked by :class:`~engine.network.Network`."""
    t = spec.to(DTYPE) if torch.is_tensor(spec) else torch.as_tensor(np.asarray(spec, dtype=np.float64))
    if t.ndim == 0:
        return t * torch.eye(dim, dtype=DTYPE)
    if t.ndim == 1 and t.shape[0] == dim:
        return torch.diag(t)
    if t.ndim == 2 and t.shape == (dim, dim):
        return 0.5 * (t + t.T)
    raise DGNInputError(name, f"has shape {tuple(t.shape)}", f"give a number, {dim} variances or a {dim}x{dim} matrix")


def _detached(spec: Any) -> Any:
    if torch.is_tensor(spec):
        arr = spec.detach().to("cpu", DTYPE).numpy()
        return float(arr) if arr.ndim == 0 else arr.copy()
    return spec


def region_maps(low: Lowered, signs: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """``A_w`` (R, D, S) and ``b_w`` (R, D) of eq. 2 for each region's activation pattern ``signs``
    (R, n_units), as torch functions of the decoder's parameters (activation pattern frozen)."""
    S = low.latent_dim
    R = signs.shape[0]
    M = torch.eye(S, S + 1, dtype=DTYPE).expand(R, S, S + 1)
    sign_t = torch.from_numpy(np.array(signs, dtype=bool))  # a copy: the partition's arrays are read-only
    unit = 0
    for op in low.ops:
        if isinstance(op, Affine):
            M = torch.matmul(op.weight, M)
            M = torch.cat([M[..., :S], M[..., S:] + op.bias[:, None]], dim=-1)
        else:
            width = M.shape[1]
            slope = op.slope if torch.is_tensor(op.slope) else torch.tensor(float(op.slope), dtype=DTYPE)
            d = torch.where(sign_t[:, unit:unit + width], torch.ones((), dtype=DTYPE), slope.to(DTYPE))
            M = d[..., None] * M
            unit += width
    return M[..., :S], M[..., S]


def fisher_surrogate(low: Lowered, part: Partition, X: torch.Tensor, weights: np.ndarray, means: np.ndarray,
                     covs: np.ndarray, cov_z: torch.Tensor, cov_x: torch.Tensor) -> torch.Tensor:
    """(N,) surrogate Q of the module docstring: its gradient is that of the exact log p(x) (Fisher's
    identity over the posterior mixture of eq. 6, with the truncated moments held fixed)."""
    A, b = region_maps(low, part.signs)  # (R, D, S), (R, D)
    w = torch.from_numpy(weights)  # (N, R)
    live = weights > 0
    m = torch.from_numpy(np.where(live[..., None], means, 0.0))  # (N, R, S)
    C = torch.from_numpy(np.where(live[..., None, None], covs, 0.0))  # (N, R, S, S)
    L_x = torch.linalg.cholesky(cov_x)
    L_z = torch.linalg.cholesky(cov_z)
    N, R, S = m.shape
    D = b.shape[1]
    resid = X[:, None, :] - torch.einsum("rds,nrs->nrd", A, m) - b[None]  # (N, R, D)
    white = torch.linalg.solve_triangular(L_x, resid.reshape(-1, D).T, upper=False).T.reshape(N, R, D)
    A_white = torch.linalg.solve_triangular(L_x, A.transpose(0, 1).reshape(D, R * S), upper=False)
    A_white = A_white.reshape(D, R, S).transpose(0, 1)  # (R, D, S) = L_x^-1 A_w
    gram = A_white.transpose(1, 2) @ A_white  # (R, S, S) = A_w^T Sigma_x^-1 A_w
    prec_z = torch.cholesky_inverse(L_z)
    term_x = (white * white).sum(-1) + torch.einsum("nrst,rst->nr", C, gram)
    term_z = torch.einsum("nrs,st,nrt->nr", m, prec_z, m) + torch.einsum("nrst,st->nr", C, prec_z)
    logdet = 2.0 * (torch.log(torch.diagonal(L_x)).sum() + torch.log(torch.diagonal(L_z)).sum())
    return -0.5 * ((w * (term_x + term_z)).sum(1) + logdet)


class ExactMarginal(Distribution):
    """``p(x) = int N(z; 0, cov_z) N(x; decoder(z), cov_x) dz`` exactly (Theorem 1), for an eval-mode CPA
    torch decoder (any module :func:`engine.torch_lowering.lower` accepts).

    ``event_shape`` is the decoder's per-sample output shape, ``batch_shape`` is empty; ``log_prob(x)``
    takes ``x`` of shape ``sample_shape + event_shape`` and returns a float64 tensor of shape
    ``sample_shape``, differentiable (exactly, see the module docstring) with respect to the decoder's
    parameters, ``cov_x`` / ``cov_z`` given as tensors (a variance, per-coordinate variances or a matrix)
    and ``x``. ``input_shape`` is the decoder's latent shape (inferred from a leading Linear or
    convolution); ``max_regions`` bounds the partition of latent space.
    """

    arg_constraints: dict = {}
    has_rsample = True

    def __init__(self, decoder: nn.Module, cov_z: Any = 1.0, cov_x: Any = 1.0, *, input_shape=None,
                 max_regions: int = DEFAULT_MAX_REGIONS, validate_args: bool | None = None):
        if isinstance(decoder, nn.Module) and not isinstance(decoder, nn.Sequential):
            decoder = nn.Sequential(decoder)
        self.decoder = decoder
        with torch.no_grad():
            low = lower(decoder, input_shape)
        self.input_shape = low.input_shape
        self.cov_z, self.cov_x = cov_z, cov_x
        self.max_regions = max_regions
        self._cache: tuple[str, Network, Partition] | None = None
        self.network()  # validates the covariances now (one-line DGNInputError)
        super().__init__(batch_shape=torch.Size(), event_shape=torch.Size(low.output_shape),
                         validate_args=validate_args)

    @constraints.dependent_property(is_discrete=False, event_dim=0)
    def support(self):
        return constraints.independent(constraints.real, len(self.event_shape))

    @property
    def latent_dim(self) -> int:
        return math.prod(self.input_shape)

    @property
    def data_dim(self) -> int:
        return math.prod(self.event_shape)

    def _lowered_and_network(self) -> tuple[Lowered, Network, Partition]:
        low = lower(self.decoder, self.input_shape)
        net_layers = low.layers()
        key = hashlib.sha1()
        for layer in net_layers:
            for arr in (getattr(layer, "weight", None), getattr(layer, "bias", None)):
                if arr is not None:
                    key.update(np.ascontiguousarray(arr).tobytes())
            key.update(repr(getattr(layer, "negative_slope", layer.type)).encode())
        key.update(repr((_detached(self.cov_z), _detached(self.cov_x))).encode())
        digest = key.hexdigest()
        if self._cache is None or self._cache[0] != digest:
            net = Network(layers=net_layers, latent_dim=low.latent_dim, cov_z_spec=_detached(self.cov_z),
                          cov_x_spec=_detached(self.cov_x))
            self._cache = (digest, net, partition(net, max_regions=self.max_regions))
        return low, self._cache[1], self._cache[2]

    def network(self) -> Network:
        """The engine :class:`~engine.network.Network` of the current parameters (exact lowering)."""
        with torch.no_grad():
            return self._lowered_and_network()[1]

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """Exact ``log p(x)`` (eq. 5), shape ``sample_shape``; gradients as in the module docstring."""
        if self._validate_args:
            self._validate_sample(value)
        value = torch.as_tensor(value)
        n_event = len(self.event_shape)
        if value.ndim < n_event or tuple(value.shape[value.ndim - n_event:]) != tuple(self.event_shape):
            raise DGNInputError("x", f"has shape {tuple(value.shape)}",
                                f"its trailing dimensions must be the event shape {tuple(self.event_shape)}")
        batch = value.shape[:value.ndim - n_event]
        X = value.reshape(-1, self.data_dim).to(DTYPE)
        low, net, part = self._lowered_and_network()
        ev = evaluate(net, X.detach().cpu().numpy(), part=part)
        exact = torch.from_numpy(ev.log_marginal)
        Q = fisher_surrogate(low, part, X, np.exp(ev.region_log_weights), ev.region_means, ev.region_covs,
                             _cov_matrix("cov_z", self.cov_z, self.latent_dim),
                             _cov_matrix("cov_x", self.cov_x, self.data_dim))
        return (exact + (Q - Q.detach())).reshape(batch)

    def rsample(self, sample_shape=()) -> torch.Tensor:
        """``x = decoder(z) + L_x eps``, ``z = L_z eps'`` (reparameterised, shape sample_shape + event_shape)."""
        shape = torch.Size(sample_shape)
        n = math.prod(shape)
        L_z = torch.linalg.cholesky(_cov_matrix("cov_z", self.cov_z, self.latent_dim))
        L_x = torch.linalg.cholesky(_cov_matrix("cov_x", self.cov_x, self.data_dim))
        z = torch.randn(n, self.latent_dim, dtype=DTYPE) @ L_z.T
        param = next(self.decoder.parameters(), None)
        dtype = param.dtype if param is not None else DTYPE
        g = self.decoder(z.to(dtype).reshape(n, *self.input_shape)).reshape(n, -1).to(DTYPE)
        x = g + torch.randn(n, self.data_dim, dtype=DTYPE) @ L_x.T
        return x.reshape(shape + self.event_shape)

    def sample(self, sample_shape=()) -> torch.Tensor:
        with torch.no_grad():
            return self.rsample(sample_shape)
