"""Exact lowering of eval-mode torch decoders to the ``cpa-dgn`` format, and back (paper Sec. 2, eq. 1-2).

Every module below is continuous piecewise-affine (CPA) in eval mode, so a decoder built from them is
``g(z) = A_w z + b_w`` on each region (eq. 2) and lowers EXACTLY to version 1 of the format: dense
``linear`` layers and two-slope activations (``relu`` / ``leaky_relu`` / ``abs``).

- affine, as dense matrices built by pushing the identity basis through the module's bias-free
  functional form in float64 (exact for index maps, one rounding per entry otherwise): ``Linear``,
  ``Conv1d/2d``, ``ConvTranspose1d/2d`` (any stride, padding, output_padding, dilation, groups, bias),
  ``BatchNorm1d/2d`` in eval mode, ``Dropout*`` in eval mode, ``Identity``, ``Flatten``, ``Unflatten``,
  ``Upsample`` / ``UpsamplingNearest2d`` in mode ``nearest``, ``AvgPool1d/2d``;
- activations: ``ReLU``, ``LeakyReLU``, :class:`Abs`, ``PReLU`` with one slope (a leaky layer) or one slope
  per channel (``relu(h) - a_c relu(-h)``), ``Hardtanh`` / ``ReLU6`` (``lo + relu(h - lo) - relu(h - hi)``),
  ``MaxPool1d/2d`` (``max(a, b) = relu(a - b) + relu(b) - relu(-b)``, a binary tree for larger windows);
- consecutive affine maps are merged into one ``linear`` layer.

The lowering keeps the torch autograd graph of the parameters (:func:`lower`), which
:mod:`engine.torch_marginal` uses to differentiate the exact marginal. Anything else (smooth
activations, training-mode batch norm or dropout, non-nearest upsampling, custom modules, ``ModuleList``)
is refused with a one-line :class:`~engine.errors.DGNInputError` naming the module's index and type.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .errors import DGNInputError

DTYPE = torch.float64

SMOOTH = (nn.Tanh, nn.Sigmoid, nn.Softplus, nn.GELU, nn.ELU, nn.SiLU, nn.CELU, nn.SELU, nn.Mish, nn.Softsign,
          nn.LogSigmoid, nn.Hardsigmoid, nn.Hardswish, nn.Tanhshrink, nn.Softmax, nn.LogSoftmax)
DROPOUT = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)
INDEX_MAPS = (nn.Identity, nn.Flatten, nn.Unflatten, nn.Upsample, nn.AvgPool1d, nn.AvgPool2d) + DROPOUT
CONVS = (nn.Conv1d, nn.Conv2d, nn.ConvTranspose1d, nn.ConvTranspose2d)
_HINT = ("use Linear, Conv/ConvTranspose 1d/2d, BatchNorm (eval), Dropout (eval), Identity, Flatten, Unflatten, "
         "nearest Upsample, AvgPool, ReLU, LeakyReLU, PReLU, ReLU6, Hardtanh, MaxPool or Abs in nn.Sequential")


class Abs(nn.Module):
    """``|h|``: the absolute-value activation (leaky slope -1) of the cpa-dgn format, as a torch module."""

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return torch.abs(h)


@dataclass
class Affine:
    """``h -> W h + b`` on the flattened per-sample vector (torch tensors, autograd graph kept)."""

    weight: torch.Tensor  # (out, in)
    bias: torch.Tensor  # (out,)


@dataclass
class Act:
    """A two-slope activation ``h if h > 0 else slope * h`` (slope a float or a 0-d torch tensor)."""

    kind: str  # "relu", "leaky_relu" or "abs"
    slope: Any


@dataclass
class Lowered:
    """A decoder as alternating merged affine maps and activations, with its per-sample shapes."""

    ops: list  # Affine | Act, never two Affine in a row, last one Affine
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]

    @property
    def latent_dim(self) -> int:
        return math.prod(self.input_shape)

    def layers(self) -> list:
        """The cpa-dgn layers (engine ``Linear`` / ``Activation``) of the detached float64 values."""
        from .network import Activation, _linear

        out = []
        for i, op in enumerate(self.ops):
            if isinstance(op, Affine):
                out.append(_linear(f"decoder(lowered)[{i}]", _np(op.weight), _np(op.bias)))
            else:
                out.append(Activation(op.kind, float(op.slope.detach() if torch.is_tensor(op.slope) else op.slope)))
        return out


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().to("cpu", DTYPE).numpy().copy()


def _f64(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.to(DTYPE)


def _flat_modules(module: nn.Module, where: str):
    """(index string, leaf module) for a possibly nested ``nn.Sequential``."""
    if isinstance(module, nn.ModuleList | nn.ModuleDict):
        raise DGNInputError(where, f"is a {type(module).__name__}, which has no forward pass",
                            "wrap the layers in nn.Sequential")
    if isinstance(module, nn.Sequential):
        if type(module).forward is not nn.Sequential.forward:
            raise DGNInputError(where, f"{type(module).__name__} overrides Sequential.forward (a custom module)",
                                _HINT)
        for i, m in enumerate(module):
            yield from _flat_modules(m, f"{where}[{i}]")
    else:
        yield where, module


def _identity_push(fn, shape: tuple[int, ...], where: str, name: str) -> tuple[torch.Tensor, tuple[int, ...]]:
    """Dense matrix (out, in) of a linear map ``fn`` on per-sample tensors of ``shape``, and its output shape."""
    n = math.prod(shape)
    eye = torch.eye(n, dtype=DTYPE).reshape(n, *shape)
    try:
        out = fn(eye)
    except (RuntimeError, ValueError, TypeError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DGNInputError(where, f"{name} cannot take a per-sample input of shape {tuple(shape)} ({msg})",
                            "give input_shape= the latent shape the decoder expects") from None
    return out.reshape(n, -1).T, tuple(out.shape[1:])


def _channel_vector(v: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Per-channel values (C,) repeated over the spatial positions of a per-sample (C, ...) tensor, flat."""
    view = v.reshape(-1, *([1] * (len(shape) - 1)))
    return view.expand(shape).reshape(-1)


def _check_eval(where: str, m: nn.Module) -> None:
    if m.training:
        raise DGNInputError(where, f"{type(m).__name__} is in training mode (its output depends on the batch or "
                            "on random draws)", "call decoder.eval() before lowering")


def _affine_module(where: str, m: nn.Module, shape):
    """(W, b, output shape) of an affine module, or None when ``m`` is not one."""
    name = type(m).__name__
    if isinstance(m, nn.Linear):
        W, out = _identity_push(lambda X: F.linear(X, _f64(m.weight)), shape, where, name)
        b = torch.zeros(W.shape[0], dtype=DTYPE) if m.bias is None else _f64(m.bias).expand(out).reshape(-1)
        return W, b, out
    if isinstance(m, CONVS):
        if isinstance(m, nn.ConvTranspose1d | nn.ConvTranspose2d):
            if m.padding_mode != "zeros":
                raise DGNInputError(where, f"{name} has padding_mode {m.padding_mode!r}", "use padding_mode='zeros'")
            conv = F.conv_transpose1d if isinstance(m, nn.ConvTranspose1d) else F.conv_transpose2d

            def fn(X):
                return conv(X, _f64(m.weight), None, m.stride, m.padding, m.output_padding, m.groups, m.dilation)
        else:
            def fn(X):
                return m._conv_forward(X, _f64(m.weight), None)
        W, out = _identity_push(fn, shape, where, name)
        b = torch.zeros(W.shape[0], dtype=DTYPE) if m.bias is None else _channel_vector(_f64(m.bias), out)
        return W, b, out
    if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
        _check_eval(where, m)
        if m.running_mean is None:
            raise DGNInputError(where, f"{name} has track_running_stats=False, so it normalises by batch statistics",
                                "use running statistics (track_running_stats=True)")
        ndim = (1, 2) if isinstance(m, nn.BatchNorm1d) else (3,)
        if len(shape) not in ndim or shape[0] != m.num_features:
            raise DGNInputError(where, f"{name}({m.num_features}) cannot take a per-sample input of shape {shape}")
        scale = torch.rsqrt(_f64(m.running_var) + m.eps)
        if m.weight is not None:
            scale = scale * _f64(m.weight)
        shift = -_f64(m.running_mean) * scale
        if m.bias is not None:
            shift = shift + _f64(m.bias)
        return torch.diag(_channel_vector(scale, shape)), _channel_vector(shift, shape), tuple(shape)
    if isinstance(m, INDEX_MAPS):
        if isinstance(m, DROPOUT):
            _check_eval(where, m)
        if isinstance(m, nn.Upsample) and m.mode not in ("nearest", "nearest-exact"):
            raise DGNInputError(where, f"Upsample mode {m.mode!r} is not supported", "use mode='nearest'")
        W, out = _identity_push(m, shape, where, name)
        return W, torch.zeros(W.shape[0], dtype=DTYPE), out
    return None


def _relu_block(pre_w, pre_b, post_w, post_b) -> list:
    """``post_w relu(pre_w h + pre_b) + post_b`` as ops."""
    return [Affine(pre_w, pre_b), Act("relu", 0.0), Affine(post_w, post_b)]


def _clamp_ops(n: int, lo: float, hi: float) -> list:
    """Hardtanh / ReLU6: ``lo + relu(h - lo) - relu(h - hi)``."""
    eye = torch.eye(n, dtype=DTYPE)
    pre_b = torch.cat([torch.full((n,), -lo, dtype=DTYPE), torch.full((n,), -hi, dtype=DTYPE)])
    return _relu_block(torch.cat([eye, eye]), pre_b, torch.cat([eye, -eye], dim=1), torch.full((n,), lo, dtype=DTYPE))


def _prelu_ops(where: str, m: nn.PReLU, shape) -> list:
    a = _f64(m.weight)
    if a.numel() == 1:
        return [Act("leaky_relu", a.reshape(()))]
    if len(shape) == 0 or shape[0] != a.numel():
        raise DGNInputError(where, f"PReLU has {a.numel()} slopes but the input has shape {shape}")
    n = math.prod(shape)
    eye = torch.eye(n, dtype=DTYPE)
    zeros = torch.zeros(2 * n, dtype=DTYPE)
    post = torch.cat([eye, -torch.diag(_channel_vector(a, shape))], dim=1)  # relu(h) - a_c relu(-h)
    return _relu_block(torch.cat([eye, -eye]), zeros, post, torch.zeros(n, dtype=DTYPE))


def _maxpool_ops(where: str, m: nn.Module, shape) -> tuple[list, tuple[int, ...]]:
    """Max over each pooling window as a binary tree of ``max(a, b) = relu(a - b) + relu(b) - relu(-b)``."""
    if getattr(m, "return_indices", False):
        raise DGNInputError(where, f"{type(m).__name__} returns indices", "use return_indices=False")
    win, out = _identity_push(m, shape, where, type(m).__name__)  # win[o, i] = 1 iff input i is in window o
    groups = [list(np.nonzero(row)[0]) for row in _np(win)]
    width = math.prod(shape)
    ops: list = []
    while any(len(g) > 1 for g in groups):
        pre, post_cols, new_groups = [], [], []
        values = 0
        for g in groups:
            merged = []
            for k in range(0, len(g) - 1, 2):
                a, b = g[k], g[k + 1]
                pre += [((a, 1.0), (b, -1.0)), ((b, 1.0),), ((b, -1.0),)]
                post_cols.append((values, (1.0, 1.0, -1.0)))
                merged.append(values)
                values += 1
            if len(g) % 2:
                pre += [((g[-1], 1.0),), ((g[-1], -1.0),)]
                post_cols.append((values, (1.0, -1.0)))
                merged.append(values)
                values += 1
            new_groups.append(merged)
        P = torch.zeros(len(pre), width, dtype=DTYPE)
        for r, terms in enumerate(pre):
            for i, c in terms:
                P[r, i] = c
        Q = torch.zeros(values, len(pre), dtype=DTYPE)
        unit = 0
        for v, coefs in post_cols:
            for c in coefs:
                Q[v, unit] = c
                unit += 1
        ops += _relu_block(P, torch.zeros(len(pre), dtype=DTYPE), Q, torch.zeros(values, dtype=DTYPE))
        groups, width = new_groups, values
    sel = torch.zeros(len(groups), width, dtype=DTYPE)
    for o, g in enumerate(groups):
        sel[o, g[0]] = 1.0
    ops.append(Affine(sel, torch.zeros(len(groups), dtype=DTYPE)))
    return ops, out


def _module_ops(where: str, m: nn.Module, shape) -> tuple[list, tuple[int, ...]]:
    name = type(m).__name__
    n = math.prod(shape)
    if isinstance(m, SMOOTH):
        raise DGNInputError(where, f"{name} is not a continuous piecewise-affine layer (it is smooth, so the "
                            "marginal has no exact region-wise form)", _HINT)
    if isinstance(m, nn.ReLU):
        return [Act("relu", 0.0)], shape
    if isinstance(m, nn.LeakyReLU):
        return [Act("leaky_relu", float(m.negative_slope))], shape
    if type(m) is Abs:
        return [Act("abs", -1.0)], shape
    if isinstance(m, nn.PReLU):
        return _prelu_ops(where, m, shape), shape
    if isinstance(m, nn.Hardtanh):  # ReLU6 is a Hardtanh
        if not m.min_val < m.max_val:
            raise DGNInputError(where, f"{name} has min_val {m.min_val} >= max_val {m.max_val}")
        return _clamp_ops(n, float(m.min_val), float(m.max_val)), shape
    if isinstance(m, nn.MaxPool1d | nn.MaxPool2d):
        return _maxpool_ops(where, m, shape)
    aff = _affine_module(where, m, shape)
    if aff is not None:
        W, b, out = aff
        return [Affine(W, b)], out
    kind = "a custom module" if type(m).__module__.split(".")[0] != "torch" else "a torch module it does not know"
    raise DGNInputError(where, f"{name} is not a continuous piecewise-affine layer the lowering knows ({kind})",
                        _HINT)


def _default_input_shape(modules) -> tuple[int, ...]:
    for _, m in modules:
        if isinstance(m, nn.Linear):
            return (m.in_features,)
        if isinstance(m, CONVS):
            return (m.in_channels,) + (1,) * (1 if isinstance(m, nn.Conv1d | nn.ConvTranspose1d) else 2)
        if isinstance(m, nn.BatchNorm1d):
            return (m.num_features,)
        if isinstance(m, nn.BatchNorm2d):
            return (m.num_features, 1, 1)
        if not isinstance(m, (nn.ReLU, nn.LeakyReLU, Abs, nn.Identity, nn.Hardtanh, nn.PReLU) + DROPOUT):
            break
    raise DGNInputError("decoder", "its latent shape cannot be inferred (no leading Linear or convolution)",
                        "pass input_shape=(S,) or the latent tensor shape")


def _merge(ops: list) -> list:
    """Consecutive affine maps multiplied out (``W2 (W1 h + b1) + b2``); a trailing identity if needed."""
    merged: list = []
    for op in ops:
        if isinstance(op, Affine) and merged and isinstance(merged[-1], Affine):
            prev = merged.pop()
            op = Affine(op.weight @ prev.weight, op.weight @ prev.bias + op.bias)
        merged.append(op)
    return merged


def lower(module: nn.Module, input_shape=None) -> Lowered:
    """Lower an eval-mode torch decoder (nested ``nn.Sequential`` of CPA modules) exactly; keeps autograd."""
    if not isinstance(module, nn.Module):
        raise DGNInputError("decoder", f"is a {type(module).__name__}, not a torch module", "pass an nn.Sequential")
    devices = {t.device.type for t in list(module.parameters()) + list(module.buffers())} - {"cpu"}
    if devices:
        raise DGNInputError("decoder", f"has tensors on {sorted(devices)[0]}", "move it to the CPU (decoder.cpu())")
    modules = list(_flat_modules(module, "decoder"))
    if not modules:
        raise DGNInputError("decoder", "is an empty nn.Sequential", "add at least one layer")
    if input_shape is None:
        shape = _default_input_shape(modules)
    else:
        try:
            shape = tuple(int(s) for s in (input_shape if hasattr(input_shape, "__len__") else (input_shape,)))
        except (TypeError, ValueError):
            raise DGNInputError("input_shape", f"must be a tuple of positive integers, got {input_shape!r}") from None
        if not shape or min(shape) < 1:
            raise DGNInputError("input_shape", f"must be a tuple of positive integers, got {input_shape!r}")
    in_shape = shape
    ops: list = []
    for where, m in modules:
        new, shape = _module_ops(where, m, shape)
        ops += new
    ops = _merge(ops)
    if not ops or not isinstance(ops[-1], Affine):
        n = math.prod(shape)
        ops = _merge(ops + [Affine(torch.eye(n, dtype=DTYPE), torch.zeros(n, dtype=DTYPE))])
    return Lowered(ops=ops, input_shape=in_shape, output_shape=shape)


def from_torch(module, cov_z: Any = 1.0, cov_x: Any = 1.0, input_shape=None):
    """The engine :class:`~engine.network.Network` of a torch decoder (see the module docstring)."""
    from .network import Network

    if isinstance(module, nn.Module) and not isinstance(module, nn.Sequential | nn.ModuleList | nn.ModuleDict):
        module = nn.Sequential(module)
    with torch.no_grad():
        low = lower(module, input_shape)
    return Network(layers=low.layers(), latent_dim=low.latent_dim, cov_z_spec=cov_z, cov_x_spec=cov_x)


def to_torch(net) -> nn.Sequential:
    """The network's decoder as a float64 ``nn.Sequential`` of ``Linear``, ``ReLU``, ``LeakyReLU`` and
    :class:`Abs` modules (in eval mode)."""
    mods: list[nn.Module] = []
    for layer in net.layers:
        if layer.type == "linear":
            lin = nn.Linear(layer.in_features, layer.out_features, dtype=DTYPE)
            with torch.no_grad():
                lin.weight.copy_(torch.from_numpy(np.array(layer.weight)))
                lin.bias.copy_(torch.from_numpy(np.array(layer.bias)))
            mods.append(lin)
        elif layer.kind == "relu":
            mods.append(nn.ReLU())
        elif layer.kind == "abs":
            mods.append(Abs())
        else:
            mods.append(nn.LeakyReLU(layer.negative_slope))
    return nn.Sequential(*mods).eval()
