"""Hypothesis strategies for CPA generative networks and data (paper Sec. 2, eq. 1-2, eq. 4).

Everything random is drawn through small integers and integer seeds, never through raw floats, so
that hypothesis shrinks a failing example towards the simplest network: S = 1, one hidden layer of
one unit, ReLU, unit covariances, weight seed 0, no degeneracy, one point on the manifold.

A drawn :class:`CaseSpec` is turned into a concrete :class:`Case` (a :class:`engine.Network` plus
data ``X``) by the pure function :func:`build_case`; the same spec always gives the same case, which
is what lets ``@example`` pins, campaign chunks on other machines and ``python -m verify replay``
reproduce a failure exactly.

Public strategies
-----------------
* :func:`case_specs` / :func:`cases`: a network and data. Knobs: latent dimension S (1-3), depth (1-3
  activation layers), widths (<= 16; <= 8 by default for S = 3 to bound the number of regions),
  activations (ReLU, leaky-ReLU of any slope incl. negative and > 1, abs), isotropic / diagonal / full
  covariances with variances from 1e-4 to 1e3, weight scales from 1e-6 to 1e4, and deliberate
  degeneracies (:data:`DEGENERACIES`): duplicate and parallel units, zero rows, dead units,
  hyperplanes through the origin or through a vertex of the arrangement.
* data points on the manifold (``g(z)``), near it (``g(z) + noise``), far in the tails (offsets of
  10 to 1e4 noise standard deviations) and from latent tails (``z`` at 6-30 prior standard deviations);
  data dimensions 1 to ``max_data_dim`` (4) and, now and then, ``wide_data_dims`` (16), full covariances included.

Profiles: :func:`register_profiles` registers ``ci`` (derandomised, no database, bounded examples),
``dev`` and ``fuzz`` and loads the one named by ``$HYPOTHESIS_PROFILE`` (default ``dev``).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st

from engine.network import Activation, Linear, Network

ACTIVATIONS = ("relu", "leaky_relu", "abs")
#: Leaky slopes tried first (shrinking goes to the first); any float in [-4, 4] is drawn as well.
SPECIAL_SLOPES = (0.1, 0.0, 0.01, -1.0, 1.0, 2.0, -0.5, 1e-6, 3.5)
#: Degenerate constructions applied to a hidden unit (see :func:`_apply_degeneracy`).
DEGENERACIES = (
    "duplicate",
    "parallel",
    "antiparallel",
    "zero_row",
    "dead",
    "through_origin",
    "through_vertex",
    "tiny_row",
    "huge_row",
)
COV_KINDS = ("iso", "diag", "full")
PLACEMENTS = ("on", "near", "far", "latent_tail")
WEIGHT_SCALES = (1.0, 1e-3, 1e3, 1e-6, 1e4)


@dataclass(frozen=True)
class CaseSpec:
    """Integers (and a few floats) that determine a network and its data through :func:`build_case`."""

    S: int = 1
    widths: tuple[int, ...] = (1,)
    D: int = 1
    activations: tuple[str, ...] = ("relu",)
    slopes: tuple[float, ...] = (0.0,)
    weight_seed: int = 0
    weight_scale: float = 1.0
    cov_z: str = "iso"
    cov_z_log10: int = 0
    cov_x: str = "iso"
    cov_x_log10: int = 0
    degeneracies: tuple[tuple[str, int, int], ...] = ()
    placements: tuple[str, ...] = ("on",)
    far_log10: int = 1
    data_seed: int = 0


@dataclass
class Case:
    """A concrete network and data set; ``aux_seed`` drives any extra randomness of a property."""

    net: Network
    X: np.ndarray
    spec: CaseSpec | None = None
    aux_seed: int = 0
    meta: dict = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.net.to_dict(),
            "data": self.X.tolist(),
            "aux_seed": int(self.aux_seed),
            "spec": None if self.spec is None else _spec_to_json(self.spec),
        }

    @classmethod
    def from_dict(cls, d: dict) -> Case:
        from engine.errors import DGNInputError
        from engine.network import load_network

        for key in ("model", "data"):
            if key not in d:
                raise DGNInputError(f"case.{key}", "is missing", "a case file has model, data and aux_seed")
        net = load_network(d["model"])
        try:
            X = np.array(d["data"], dtype=np.float64).reshape(-1, net.data_dim)
        except (TypeError, ValueError):
            raise DGNInputError("case.data", f"is not an (N, {net.data_dim}) numeric array") from None
        aux = d.get("aux_seed", 0)
        if isinstance(aux, bool) or not isinstance(aux, int):
            raise DGNInputError("case.aux_seed", f"must be an integer, got {aux!r}")
        spec = _spec_from_json(d["spec"]) if d.get("spec") else None
        return cls(net=net, X=X, spec=spec, aux_seed=aux)

    def __repr__(self) -> str:  # what hypothesis prints for a falsifying example
        if self.spec is not None:
            return f"build_case({self.spec!r})"
        return f"Case(widths={self.net.widths}, N={len(self.X)})"


def _spec_to_json(spec: CaseSpec) -> dict:
    return json.loads(json.dumps(asdict(spec)))


def _spec_from_json(d: dict) -> CaseSpec:
    d = dict(d)
    for key in ("widths", "activations", "slopes", "placements"):
        if key in d:
            d[key] = tuple(d[key])
    if "degeneracies" in d:
        d["degeneracies"] = tuple(tuple(x) for x in d["degeneracies"])
    return CaseSpec(**d)


# --------------------------------------------------------------------------- building a case
def _covariance(kind: str, log10: int, dim: int, rng: np.random.Generator):
    """Isotropic number, diagonal list or full SPD matrix with variances around 10**log10."""
    scale = 10.0**log10
    if kind == "iso":
        return scale
    if kind == "diag":
        return (scale * 10.0 ** rng.uniform(-1.5, 1.5, size=dim)).tolist()
    Q, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    eig = scale * 10.0 ** rng.uniform(-1.5, 1.5, size=dim)
    M = (Q * eig) @ Q.T
    return (0.5 * (M + M.T)).tolist()


def _apply_degeneracy(
    kind: str, layer: int, unit: int, Ws: list[np.ndarray], bs: list[np.ndarray], rng: np.random.Generator
) -> None:
    """Make one hidden unit of activation layer ``layer`` degenerate (in place)."""
    W, b = Ws[layer], bs[layer]
    n = W.shape[0]
    u = unit % n
    other = (u + 1) % n
    if kind == "duplicate" and n > 1:
        W[u], b[u] = W[other], b[other]
    elif kind in ("parallel", "antiparallel") and n > 1:
        c = 10.0 ** rng.uniform(-2, 2) * (1 if kind == "parallel" else -1)
        W[u] = c * W[other]
        b[u] = c * b[other] + (rng.normal() if rng.random() < 0.5 else 0.0)
    elif kind == "zero_row":
        W[u] = 0.0
        b[u] = rng.normal()
    elif kind == "dead":
        # negative for every input the layer can see: zero row, strictly negative bias
        W[u] = 0.0
        b[u] = -abs(rng.normal()) - 0.1
    elif kind == "through_origin":
        b[u] = 0.0
    elif kind == "through_vertex" and layer == 0:
        # the hyperplane passes through the intersection point of S other units' hyperplanes
        S = W.shape[1]
        others = [(u + k) % n for k in range(1, S + 1)]
        if len(set(others)) == S and u not in others:
            sol = np.linalg.lstsq(W[others], -b[others], rcond=None)[0]
            b[u] = -W[u] @ sol
        else:
            b[u] = 0.0
    elif kind == "tiny_row":
        W[u] *= 1e-7
        b[u] *= 1e-7
    elif kind == "huge_row":
        W[u] *= 1e5
        b[u] *= 1e5


def build_network(spec: CaseSpec) -> Network:
    """The network of a spec: deterministic in ``spec`` alone."""
    rng = np.random.default_rng([spec.weight_seed, 1])
    dims = [spec.S, *spec.widths, spec.D]
    Ws, bs = [], []
    for n_in, n_out in zip(dims[:-1], dims[1:]):
        Ws.append(rng.normal(size=(n_out, n_in)) * spec.weight_scale * np.sqrt(2.0 / n_in))
        bs.append(rng.normal(size=n_out) * 0.5 * spec.weight_scale)
    for kind, layer, unit in spec.degeneracies:
        if spec.widths:
            _apply_degeneracy(kind, layer % len(spec.widths), unit, Ws, bs, rng)
    layers: list = []
    for k, (W, b) in enumerate(zip(Ws, bs)):
        layers.append(Linear(W, b))
        if k < len(spec.widths):
            kind = spec.activations[k % len(spec.activations)]
            slope = {"relu": 0.0, "abs": -1.0}.get(kind, spec.slopes[k % len(spec.slopes)])
            layers.append(Activation(kind, float(slope)))
    crng = np.random.default_rng([spec.weight_seed, 2])
    return Network(
        layers=layers,
        latent_dim=spec.S,
        cov_z_spec=_covariance(spec.cov_z, spec.cov_z_log10, spec.S, crng),
        cov_x_spec=_covariance(spec.cov_x, spec.cov_x_log10, spec.D, crng),
    )


def build_data(net: Network, spec: CaseSpec) -> np.ndarray:
    """One data point per entry of ``spec.placements`` (on / near / far from the manifold)."""
    rng = np.random.default_rng([spec.data_seed, 3])
    S, D = net.latent_dim, net.data_dim
    chol_z = np.linalg.cholesky(net.cov_z)
    chol_x = np.linalg.cholesky(net.cov_x)
    rows = []
    for place in spec.placements:
        z = chol_z @ rng.normal(size=S)
        if place == "latent_tail":
            z = z * rng.uniform(6.0, 30.0)
        x = net.forward(z[None])[0]
        if place == "near":
            x = x + chol_x @ rng.normal(size=D)
        elif place == "far":
            direction = rng.normal(size=D)
            direction /= np.linalg.norm(direction)
            x = x + (10.0**spec.far_log10) * (chol_x @ direction) * rng.uniform(1.0, 3.0)
        rows.append(x)
    return np.array(rows, dtype=np.float64).reshape(len(spec.placements), D)


def build_case(spec: CaseSpec) -> Case:
    """Network and data of a spec (pure function of the spec)."""
    net = build_network(spec)
    return Case(net=net, X=build_data(net, spec), spec=spec, aux_seed=spec.data_seed)


# --------------------------------------------------------------------------- strategies
DEFAULT_MAX_WIDTH = {1: 16, 2: 12, 3: 6}


@st.composite
def case_specs(
    draw,
    latent_dims=(1, 2, 3),
    max_depth: int = 3,
    max_width: int | dict | None = None,
    max_data_dim: int = 4,
    wide_data_dims=(16,),
    max_points: int = 5,
    activations=ACTIVATIONS,
    degenerate: bool = True,
    placements=PLACEMENTS,
) -> CaseSpec:
    """A :class:`CaseSpec`: architecture, activations, covariances, degeneracies and data placement."""
    S = draw(st.sampled_from(tuple(latent_dims)))
    limits = DEFAULT_MAX_WIDTH if max_width is None else max_width
    wmax = limits[S] if isinstance(limits, dict) else int(limits)
    depth = draw(st.integers(1, max_depth))
    widths = tuple(draw(st.integers(1, wmax)) for _ in range(depth))
    # D >= 16 now and then (a far point with a full 16 x 16 Sigma_x once broke the triangulation path);
    # drawn second, so shrinking still goes to small D
    D = draw(st.one_of(st.integers(1, max_data_dim), st.sampled_from(tuple(wide_data_dims) or (max_data_dim,))))
    acts = tuple(draw(st.sampled_from(tuple(activations))) for _ in range(depth))
    slopes = tuple(
        draw(st.one_of(st.sampled_from(SPECIAL_SLOPES), st.integers(-400, 400).map(lambda k: k / 100.0)))
        for _ in range(depth)
    )
    degs: tuple = ()
    if degenerate:
        degs = tuple(
            draw(
                st.lists(
                    st.tuples(st.sampled_from(DEGENERACIES), st.integers(0, depth - 1), st.integers(0, 15)),
                    max_size=3,
                )
            )
        )
    n = draw(st.integers(1, max_points))
    return CaseSpec(
        S=S,
        widths=widths,
        D=D,
        activations=acts,
        slopes=slopes,
        weight_seed=draw(st.integers(0, 2**32 - 1)),
        weight_scale=draw(st.sampled_from(WEIGHT_SCALES)),
        cov_z=draw(st.sampled_from(COV_KINDS)),
        cov_z_log10=draw(st.integers(-3, 3)),
        cov_x=draw(st.sampled_from(COV_KINDS)),
        cov_x_log10=draw(st.integers(-4, 3)),
        degeneracies=degs,
        placements=tuple(draw(st.sampled_from(tuple(placements))) for _ in range(n)),
        far_log10=draw(st.integers(1, 4)),
        data_seed=draw(st.integers(0, 2**32 - 1)),
    )


def cases(**kwargs) -> st.SearchStrategy[Case]:
    """Concrete :class:`Case` objects; keyword arguments as for :func:`case_specs`."""
    return case_specs(**kwargs).map(build_case)


# --------------------------------------------------------------------------- profiles
PROFILE_ENV = "HYPOTHESIS_PROFILE"
#: Examples per property in the ``ci`` profile: tests/test_properties.py takes ~30 s with it on 2 cores (~60 s
#: at 200; the same derandomised runs at 300 and 1000 examples pass too, bar the reported engine bugs pinned as
#: strict xfails in tests/test_properties.py).
CI_EXAMPLES = 100
_QUIET_CHECKS = [
    HealthCheck.too_slow,
    HealthCheck.data_too_large,
    HealthCheck.filter_too_much,
    HealthCheck.large_base_example,
]


def register_profiles(load: bool = True) -> str:
    """Register ``ci``, ``dev`` and ``fuzz``; load the one named by ``$HYPOTHESIS_PROFILE``.

    * ``ci``: derandomised (same examples every run), no example database, :data:`CI_EXAMPLES` examples per
      property, no deadline: deterministic and bounded in time inside ``make test``.
    * ``dev``: random, local database (failures are replayed first next time), 60 examples.
    * ``fuzz``: random, 2000 examples per property, all phases; for long sessions.
    """
    settings.register_profile(
        "ci",
        derandomize=True,
        database=None,
        max_examples=CI_EXAMPLES,
        deadline=None,
        suppress_health_check=_QUIET_CHECKS,
        print_blob=False,
        phases=[Phase.explicit, Phase.generate, Phase.target, Phase.shrink],
    )
    settings.register_profile("dev", max_examples=60, deadline=None, suppress_health_check=_QUIET_CHECKS)
    settings.register_profile("fuzz", max_examples=2000, deadline=None, suppress_health_check=_QUIET_CHECKS)
    name = os.environ.get(PROFILE_ENV, "dev")
    if load:
        from engine.errors import DGNInputError

        if name not in ("ci", "dev", "fuzz"):
            raise DGNInputError(PROFILE_ENV, f"unknown hypothesis profile {name!r}", "use ci, dev or fuzz")
        settings.load_profile(name)
    return name
