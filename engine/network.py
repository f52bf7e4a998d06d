"""CPA generative networks and their ``cpa-dgn`` JSON format (paper Sec. 2, eq. 1-2, eq. 4).

A :class:`Network` is a decoder ``g`` made of affine layers and continuous piecewise-affine
activations, with the Gaussian prior ``z ~ N(0, cov_z)`` and noise ``x | z ~ N(g(z), cov_x)``.

Every supported activation is a *two-slope* map ``a(h) = h`` for ``h > 0`` and ``eta * h`` otherwise:
ReLU (eta = 0), leaky-ReLU (any eta, also > 1 or negative) and absolute value (eta = -1). Its
derivative is the diagonal matrix ``D`` of the paper, with entries in ``{eta, 1}`` fixed by the sign
of the pre-activation, which is what makes ``g`` affine on each region (eq. 2).

JSON format, version 1::

    {"format": "cpa-dgn", "version": 1, "latent_dim": S,
     "cov_z": 1.0 | [v1..vS] | [[S x S]],
     "cov_x": 0.01 | [v1..vD] | [[D x D]],
     "layers": [{"type": "linear", "weight": [[out x in]], "bias": [out]},
                {"type": "relu"} | {"type": "leaky_relu", "negative_slope": 0.1} | {"type": "abs"}]}
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DGNInputError

FORMAT_NAME = "cpa-dgn"
FORMAT_VERSION = 1
ACTIVATION_SLOPES = {"relu": 0.0, "abs": -1.0}


@dataclass(frozen=True)
class Linear:
    """Affine layer ``h -> W h + v`` (a convolution is one with a structured W)."""

    weight: np.ndarray  # (out, in)
    bias: np.ndarray  # (out,)

    type = "linear"

    @property
    def in_features(self) -> int:
        return self.weight.shape[1]

    @property
    def out_features(self) -> int:
        return self.weight.shape[0]

    def to_dict(self) -> dict:
        return {"type": "linear", "weight": self.weight.tolist(), "bias": self.bias.tolist()}


@dataclass(frozen=True)
class Activation:
    """Two-slope CPA activation: ``h`` where ``h > 0``, ``negative_slope * h`` elsewhere."""

    kind: str  # "relu", "leaky_relu" or "abs"
    negative_slope: float

    @property
    def type(self) -> str:
        return self.kind

    def slopes(self, positive: np.ndarray) -> np.ndarray:
        """The diagonal of ``D`` (paper Sec. 2) for a boolean array of pre-activation signs."""
        return np.where(positive, 1.0, self.negative_slope)

    def __call__(self, h: np.ndarray) -> np.ndarray:
        return np.where(h > 0, h, self.negative_slope * h)

    def to_dict(self) -> dict:
        if self.kind == "leaky_relu":
            return {"type": "leaky_relu", "negative_slope": self.negative_slope}
        return {"type": self.kind}


Layer = Linear | Activation


def _covariance(name: str, spec: Any, dim: int) -> tuple[Any, np.ndarray]:
    """Parse an isotropic / diagonal / full covariance; return (spec as given, full matrix)."""
    fix = f"give {name} as a positive number, a list of {dim} positive variances or a {dim}x{dim} SPD matrix"
    if isinstance(spec, bool) or spec is None:
        raise DGNInputError(name, f"expected a number, list or matrix, got {spec!r}", fix)
    try:
        arr = np.asarray(spec, dtype=np.float64)
    except (TypeError, ValueError):
        raise DGNInputError(name, "is not numeric", fix) from None
    if not np.all(np.isfinite(arr)):
        raise DGNInputError(name, "contains NaN or infinite values", fix)
    if arr.ndim == 0:
        if arr <= 0:
            raise DGNInputError(name, f"variance {float(arr)!r} is not positive", fix)
        return float(arr), float(arr) * np.eye(dim)
    if arr.ndim == 1:
        if arr.shape != (dim,):
            raise DGNInputError(name, f"has {arr.shape[0]} diagonal variances but the dimension is {dim}", fix)
        if np.any(arr <= 0):
            raise DGNInputError(name, "has a non-positive diagonal variance", fix)
        return arr.copy(), np.diag(arr)
    if arr.ndim == 2:
        if arr.shape != (dim, dim):
            raise DGNInputError(name, f"has shape {arr.shape} but must be {dim}x{dim}", fix)
        if not np.allclose(arr, arr.T, rtol=1e-12, atol=1e-14 * np.abs(arr).max()):
            raise DGNInputError(name, "is not symmetric", fix)
        try:
            np.linalg.cholesky(arr)
        except np.linalg.LinAlgError:
            raise DGNInputError(name, "is not positive definite", fix) from None
        return arr.copy(), 0.5 * (arr + arr.T)
    raise DGNInputError(name, f"has {arr.ndim} dimensions", fix)


def _spec_to_json(spec: Any) -> Any:
    return spec.tolist() if isinstance(spec, np.ndarray) else spec


@dataclass
class Network:
    """Decoder layers plus the latent prior and the observation-noise covariances (eq. 4).

    Build with :func:`Network.from_dict`, :func:`load_network` or :func:`Network.from_torch`; the
    constructor validates shapes and covariances.
    """

    layers: list[Layer]
    latent_dim: int
    cov_z_spec: Any = 1.0
    cov_x_spec: Any = 1.0
    cov_z: np.ndarray = field(init=False, repr=False)
    cov_x: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.latent_dim, bool) or not isinstance(self.latent_dim, int | np.integer):
            raise DGNInputError("latent_dim", f"must be a positive integer, got {self.latent_dim!r}")
        if self.latent_dim < 1:
            raise DGNInputError("latent_dim", f"must be a positive integer, got {self.latent_dim}")
        self.latent_dim = int(self.latent_dim)
        if not self.layers:
            raise DGNInputError("layers", "is empty", "give at least one linear layer")
        width = self.latent_dim
        for i, layer in enumerate(self.layers):
            if isinstance(layer, Linear):
                if layer.in_features != width:
                    what = "latent_dim" if width == self.latent_dim and i == 0 else "the previous layer's output"
                    raise DGNInputError(
                        f"layers[{i}].weight",
                        f"has {layer.in_features} input columns but {what} is {width}",
                        "make consecutive layer shapes agree (weight is out x in)",
                    )
                width = layer.out_features
        if not isinstance(self.layers[-1], Linear):
            raise DGNInputError("layers", "the last layer must be linear", "append a linear output layer")
        self.cov_z_spec, self.cov_z = _covariance("cov_z", self.cov_z_spec, self.latent_dim)
        self.cov_x_spec, self.cov_x = _covariance("cov_x", self.cov_x_spec, self.data_dim)

    # ----------------------------------------------------------------- shape facts
    @property
    def data_dim(self) -> int:
        return self.layers[-1].out_features

    @property
    def activations(self) -> list[tuple[int, Activation]]:
        return [(i, layer) for i, layer in enumerate(self.layers) if isinstance(layer, Activation)]

    @property
    def widths(self) -> list[int]:
        """[S, width of each linear layer's output, ...]: the architecture as written in the paper."""
        return [self.latent_dim] + [lay.out_features for lay in self.layers if isinstance(lay, Linear)]

    @property
    def n_units(self) -> int:
        """Number of activation units, i.e. the length of a region's sign pattern."""
        return sum(self._width_before(i) for i, _ in self.activations)

    def _width_before(self, index: int) -> int:
        width = self.latent_dim
        for layer in self.layers[:index]:
            if isinstance(layer, Linear):
                width = layer.out_features
        return width

    @property
    def is_linear(self) -> bool:
        return not self.activations

    # ----------------------------------------------------------------- forward pass
    def _as_latent(self, Z) -> np.ndarray:
        Z = np.asarray(Z, dtype=np.float64)
        if Z.ndim == 1 and self.latent_dim == 1:
            Z = Z[:, None]
        if Z.ndim != 2 or Z.shape[1] != self.latent_dim:
            raise DGNInputError("z", f"has shape {Z.shape}, expected (N, {self.latent_dim})")
        return Z

    def forward(self, Z) -> np.ndarray:
        """``g(z)`` for each row of Z, shape (N, D)."""
        h = self._as_latent(Z)
        for layer in self.layers:
            h = h @ layer.weight.T + layer.bias if isinstance(layer, Linear) else layer(h)
        return h

    __call__ = forward

    def preactivations(self, Z) -> list[np.ndarray]:
        """Pre-activations ``h^l(z)`` at each activation layer (eq. 8), each (N, width)."""
        h = self._as_latent(Z)
        out = []
        for layer in self.layers:
            if isinstance(layer, Linear):
                h = h @ layer.weight.T + layer.bias
            else:
                out.append(h)
                h = layer(h)
        return out

    def sign_patterns(self, Z) -> np.ndarray:
        """Boolean (N, n_units): pre-activation > 0 for every activation unit (Lemma 3)."""
        pre = self.preactivations(Z)
        if not pre:
            return np.zeros((len(self._as_latent(Z)), 0), dtype=bool)
        return np.concatenate([p > 0 for p in pre], axis=1)

    def sample(self, n: int, rng: np.random.Generator | int | None = None, return_latent: bool = False):
        """Draw (x, z) from the generative model: z ~ N(0, cov_z), x = g(z) + N(0, cov_x)."""
        rng = np.random.default_rng(rng)
        Z = rng.multivariate_normal(np.zeros(self.latent_dim), self.cov_z, size=n, method="cholesky")
        X = self.forward(Z) + rng.multivariate_normal(np.zeros(self.data_dim), self.cov_x, size=n,
                                                      method="cholesky")
        return (X, Z) if return_latent else X

    # ----------------------------------------------------------------- JSON
    def to_dict(self) -> dict:
        return {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "latent_dim": self.latent_dim,
            "cov_z": _spec_to_json(self.cov_z_spec),
            "cov_x": _spec_to_json(self.cov_x_spec),
            "layers": [layer.to_dict() for layer in self.layers],
        }

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, spec: dict) -> Network:
        if not isinstance(spec, dict):
            raise DGNInputError("model", f"expected a JSON object, got {type(spec).__name__}")
        known = {"format", "version", "latent_dim", "cov_z", "cov_x", "layers"}
        unknown = sorted(set(spec) - known)
        if unknown:
            raise DGNInputError(f"model.{unknown[0]}", "is not a field of the cpa-dgn format",
                                f"allowed fields: {', '.join(sorted(known))}")
        if spec.get("format", FORMAT_NAME) != FORMAT_NAME:
            raise DGNInputError("format", f"is {spec.get('format')!r}", f"expected {FORMAT_NAME!r}")
        if spec.get("version", FORMAT_VERSION) != FORMAT_VERSION:
            raise DGNInputError("version", f"is {spec.get('version')!r}", f"this reader supports {FORMAT_VERSION}")
        for key in ("latent_dim", "layers"):
            if key not in spec:
                raise DGNInputError(key, "is missing", "see the cpa-dgn format in engine/network.py")
        if not isinstance(spec["layers"], list):
            raise DGNInputError("layers", "must be a list of layer objects")
        layers = [_layer_from_dict(i, d) for i, d in enumerate(spec["layers"])]
        return cls(layers=layers, latent_dim=spec["latent_dim"],
                   cov_z_spec=spec.get("cov_z", 1.0), cov_x_spec=spec.get("cov_x", 1.0))

    # ----------------------------------------------------------------- torch
    @classmethod
    def from_torch(cls, module, cov_z: Any = 1.0, cov_x: Any = 1.0, input_shape=None) -> Network:
        """Exact lowering of an eval-mode torch decoder (see :mod:`engine.torch_lowering`)."""
        from .torch_lowering import from_torch

        return from_torch(module, cov_z=cov_z, cov_x=cov_x, input_shape=input_shape)

    def to_torch(self):
        """The decoder as a float64 torch ``nn.Sequential`` (abs as :class:`engine.torch_lowering.Abs`)."""
        from .torch_lowering import to_torch

        return to_torch(self)

    def replace(self, layers: list[Layer] | None = None, cov_z: Any = None, cov_x: Any = None) -> Network:
        """A copy with some parts replaced (used by EM updates)."""
        return Network(layers=list(self.layers if layers is None else layers), latent_dim=self.latent_dim,
                       cov_z_spec=self.cov_z_spec if cov_z is None else cov_z,
                       cov_x_spec=self.cov_x_spec if cov_x is None else cov_x)


def _linear(where: str, weight, bias) -> Linear:
    try:
        w = np.array(weight, dtype=np.float64)
        b = np.array(bias, dtype=np.float64)
    except (TypeError, ValueError):
        raise DGNInputError(where, "weight/bias are not numeric arrays") from None
    if w.ndim != 2 or w.shape[0] == 0 or w.shape[1] == 0:
        raise DGNInputError(f"{where}.weight", f"must be a non-empty out x in matrix, got shape {w.shape}")
    if b.shape != (w.shape[0],):
        raise DGNInputError(f"{where}.bias", f"has shape {b.shape} but the weight has {w.shape[0]} rows",
                            "give one bias per output unit")
    if not np.all(np.isfinite(w)):
        raise DGNInputError(f"{where}.weight", "contains NaN or infinite values")
    if not np.all(np.isfinite(b)):
        raise DGNInputError(f"{where}.bias", "contains NaN or infinite values")
    w.setflags(write=False)
    b.setflags(write=False)
    return Linear(w, b)


def _layer_from_dict(i: int, d: Any) -> Layer:
    where = f"layers[{i}]"
    if not isinstance(d, dict) or "type" not in d:
        raise DGNInputError(where, "must be an object with a 'type'")
    kind = d["type"]
    allowed = {"linear": {"type", "weight", "bias"}, "relu": {"type"}, "abs": {"type"},
               "leaky_relu": {"type", "negative_slope"}}
    if kind not in allowed:
        raise DGNInputError(f"{where}.type", f"{kind!r} is not a continuous piecewise-affine layer",
                            "use linear, relu, leaky_relu or abs")
    extra = sorted(set(d) - allowed[kind])
    if extra:
        raise DGNInputError(f"{where}.{extra[0]}", f"is not a field of a {kind} layer")
    if kind == "linear":
        if "weight" not in d:
            raise DGNInputError(f"{where}.weight", "is missing")
        return _linear(where, d["weight"], d.get("bias", [0.0] * len(d["weight"])))
    if kind == "leaky_relu":
        if "negative_slope" not in d:  # no silent default (torch's 0.01 is not everyone's): say it
            raise DGNInputError(f"{where}.negative_slope", "is missing",
                                'give the slope for negative inputs, e.g. '
                                '{"type": "leaky_relu", "negative_slope": 0.1}')
        slope = d["negative_slope"]
        if isinstance(slope, bool) or not isinstance(slope, int | float) or not math.isfinite(slope):
            raise DGNInputError(f"{where}.negative_slope", f"must be a finite number, got {slope!r}")
        return Activation("leaky_relu", float(slope))
    return Activation(kind, ACTIVATION_SLOPES[kind])


def load_network(source: str | Path | dict) -> Network:
    """Load a network from a ``cpa-dgn`` JSON file path, a JSON string or an already-parsed dict.

    A file or JSON text must carry ``"format"`` and ``"version"`` (what it claims to be is checked); a dict
    built in Python may leave them out (they default to the current format)."""
    if isinstance(source, Network):
        return source
    if isinstance(source, dict):
        return Network.from_dict(source)
    if not isinstance(source, str | Path):
        raise DGNInputError("model", f"is {type(source).__name__}",
                            "pass a path to a cpa-dgn JSON file, JSON text, a dict or an engine.Network")
    text = str(source)
    if isinstance(source, str) and text.lstrip().startswith("{"):
        payload = text
    else:
        path = Path(source)
        if not path.exists():
            raise DGNInputError("model", f"file {str(path)!r} does not exist")
        if path.is_dir():
            raise DGNInputError("model", f"{str(path)!r} is a directory", "pass a cpa-dgn JSON file")
        try:
            payload = path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise DGNInputError("model", f"{str(path)!r} cannot be read as text ({type(exc).__name__})",
                                "pass a cpa-dgn JSON file (a torch .pt goes through verify grade)") from None
    try:
        spec = json.loads(payload)
    except json.JSONDecodeError as exc:
        raise DGNInputError("model", f"is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if isinstance(spec, dict):
        for key in ("format", "version"):
            if key not in spec:
                raise DGNInputError(f"model.{key}", "is missing",
                                    f'a cpa-dgn file starts {{"format": "{FORMAT_NAME}", '
                                    f'"version": {FORMAT_VERSION}, ...}}')
    return Network.from_dict(spec)


def as_network(obj, field: str = "net") -> Network:
    """A Network from a Network, a cpa-dgn dict, JSON text or a file path; anything else is one clear error."""
    if isinstance(obj, Network):
        return obj
    if isinstance(obj, dict | str | Path):
        return load_network(obj)
    raise DGNInputError(field, f"is {type(obj).__name__}",
                        "pass an engine.Network (engine.load_network(path)), a cpa-dgn dict or a JSON file path")


def save_network(net: Network, path: str | Path) -> None:
    Path(path).write_text(net.to_json(indent=1))


def random_network(widths: list[int], activation: str = "relu", negative_slope: float = 0.1,
                   cov_z: Any = 1.0, cov_x: Any = 0.1, rng: np.random.Generator | int | None = None,
                   weight_scale: float = 1.0) -> Network:
    """A random network ``[S, h1, ..., D]`` with Gaussian weights (He-style scaling) and biases."""
    if activation not in ("relu", "leaky_relu", "abs"):
        raise DGNInputError("activation", f"{activation!r} is not a two-slope CPA activation",
                            "use relu, leaky_relu (with negative_slope) or abs")
    slope = negative_slope
    if isinstance(slope, bool) or not isinstance(slope, int | float | np.floating) or not math.isfinite(slope):
        raise DGNInputError("negative_slope", f"must be a finite number, got {negative_slope!r}")
    rng = np.random.default_rng(rng)
    layers: list[Layer] = []
    for k, (n_in, n_out) in enumerate(zip(widths[:-1], widths[1:])):
        w = rng.normal(size=(n_out, n_in)) * weight_scale * np.sqrt(2.0 / n_in)
        b = rng.normal(size=n_out) * 0.5 * weight_scale
        layers.append(_linear(f"layers[{len(layers)}]", w, b))
        if k < len(widths) - 2:
            slope = {"relu": 0.0, "abs": -1.0}.get(activation, negative_slope)
            layers.append(Activation(activation, slope))
    return Network(layers=layers, latent_dim=widths[0], cov_z_spec=cov_z, cov_x_spec=cov_x)
