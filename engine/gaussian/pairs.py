"""The pair-batch object model of ``engine.gaussian``: what a caller asks for and what it gets back.

Theorem 1 (eq. 5) needs ``Phi_omega(mu_omega(x), Sigma_omega)`` -- and for the posterior (eq. 6, Sec. 4.1) the
conditional mean and covariance -- for every (region omega, point x) pair. A :class:`PairRequest` names those
pairs (R regions by N means, one covariance per region, a mask of the pairs to compute), which moments, the
per-pair weight bound that lets light pairs be integrated to looser thresholds, and the accuracy mode of the
covariances; a :class:`PairResult` holds the answer region-major, (R, N): the log mass, its absolute error
bound, the conditional mean and covariance, and the method each region took. ``TruncatedMoments`` is one
region's row of it (:meth:`PairResult.region`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from ..errors import DGNInputError
from .constants import ACCURACIES


class PlanarPairs(NamedTuple):
    """What the S = 2 batch kernel returns for P pairs, in the whitened coordinates of each pair's region: log
    mass, mean (P, 2), covariance (P, 2, 2) (None when not asked for), relative error bound, ``flagged`` (the
    caller must recompute the pair) and the whitened offsets ``D`` (P, F) that its exact fallback integrates."""

    log_mass: np.ndarray
    mean: np.ndarray | None
    cov: np.ndarray | None
    rel: np.ndarray
    flagged: np.ndarray
    D: np.ndarray


class SolidPairs(NamedTuple):
    """The S = 3 batch kernel's :class:`PlanarPairs` (mean (P, 3), cov (P, 3, 3)), with ``refine`` instead of the
    offsets: the pair's covariance may cancel beyond ``COV_TOL`` (the caller tries the cubature)."""

    log_mass: np.ndarray
    mean: np.ndarray | None
    cov: np.ndarray | None
    rel: np.ndarray
    flagged: np.ndarray
    refine: np.ndarray


class PointMoments(NamedTuple):
    """A :class:`PairResult` point-major, (N, R): what ``distributions`` sums over regions for each point (eq. 5-6).
    Unpacks as ``log_mass, mean, cov, method, log_mass_error``."""

    log_mass: np.ndarray  # (N, R)
    mean: np.ndarray  # (N, R, S), zeros when not asked for
    cov: np.ndarray  # (N, R, S, S), zeros when not asked for
    method: str
    log_mass_error: np.ndarray | None  # (N, R)


@dataclass
class TruncatedMoments:
    """One region's masses and conditional moments for N means (a row of :class:`PairResult`)."""

    log_mass: np.ndarray  # (N,)
    mean: np.ndarray | None  # (N, S)
    cov: np.ndarray | None  # (N, S, S)
    method: str
    log_mass_error: np.ndarray | None = None  # (N,) absolute error bound on log_mass; None: exact


def log_error(rel):
    """``PairResult``'s stored bound ``log(1 / (1 - rel))`` of a relative mass error ``rel``: ``inf`` from 0.5 on
    (no useful lower bound on the mass)."""
    with np.errstate(invalid="ignore"):
        return np.where(rel < 0.5, -np.log1p(-np.minimum(rel, 0.49)), np.inf)


def _mask(name: str, value, shape, dtype):
    """``value`` as an array of ``shape`` (or None), with a one-line input error otherwise."""
    if value is None:
        return None
    value = np.asarray(value, dtype=dtype)
    if value.shape != shape:
        raise DGNInputError(name, f"shape {value.shape} is not (R={shape[0]}, N={shape[1]})",
                            f"pass an (R, N) {'boolean mask' if dtype is bool else 'array'}")
    return value


@dataclass(frozen=True)
class PairRequest:
    """(region, point) pairs to integrate: ``means`` (R, N, S) under ``covs`` (R, S, S) on ``polytopes`` (R).

    * ``need`` (R, N) bool: pairs to compute (the others come back as mass 0, error 0);
    * ``log_weight_scale`` (R, N): the caller's bound ``w <= exp(log_weight_scale) * mass`` on each pair's
      posterior weight; the S = 2, 3 kernels loosen their thresholds for pairs of weight below 1e-3;
    * ``lower_bound_only`` (S = 2 batch, ``moments=0``): only rigorous lower bounds ``log_mass - error`` are
      needed (unresolved pairs are reported as mass 0 instead of taking the slow exact path);
    * ``accuracy``: ``"relative"`` -- each covariance to its own smallest eigenvalue, however thin -- or
      ``"absolute"`` -- relative to the untruncated Sigma_omega (enough for a region of small posterior weight
      in the mixture of eq. 6, and much cheaper for thin regions);
    * ``geometry``: the per-region whitened geometry (``polytopes.batch_geometry``) when the caller has it.
    """

    polytopes: list
    means: np.ndarray
    covs: np.ndarray
    moments: int = 2
    method: str = "auto"
    rng: Any = None
    need: np.ndarray | None = None
    log_weight_scale: np.ndarray | None = None
    geometry: Any = None
    lower_bound_only: bool = False
    accuracy: str = "relative"

    @classmethod
    def build(cls, polytopes, means, covs, **kwargs) -> PairRequest:
        """Checked request: shapes, masks and the accuracy mode (one-line ``DGNInputError`` otherwise)."""
        R = len(polytopes)
        means = np.asarray(means, dtype=np.float64)
        covs = np.asarray(covs, dtype=np.float64)
        if means.ndim != 3 or means.shape[0] != R:
            raise DGNInputError("means", f"shape {means.shape} is not (R={R}, N, S)", "pass an (R, N, S) array")
        _, N, S = means.shape
        if covs.shape != (R, S, S):
            raise DGNInputError("covs", f"shape {covs.shape} is not (R={R}, S={S}, S={S})",
                                "pass one (S, S) covariance per region")
        need = _mask("need", kwargs.pop("need", None), (R, N), bool)
        lws = _mask("log_weight_scale", kwargs.pop("log_weight_scale", None), (R, N), np.float64)
        if kwargs.get("accuracy", "relative") not in ACCURACIES:
            raise DGNInputError("accuracy", f"unknown covariance accuracy {kwargs['accuracy']!r}",
                                f"use one of {', '.join(ACCURACIES)}")
        return cls(list(polytopes), means, covs, need=np.ones((R, N), dtype=bool) if need is None else need,
                   log_weight_scale=lws, **kwargs)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(R, N, S)."""
        return self.means.shape

    @property
    def relative(self) -> bool:
        """Covariances held relative to their own smallest eigenvalue (else to Sigma_omega)."""
        return self.accuracy == "relative"

    def weight_scale(self, pr, pn):
        """``log_weight_scale`` of the given pairs, or None."""
        return None if self.log_weight_scale is None else self.log_weight_scale[pr, pn]


@dataclass
class PairResult:
    """Region-major answer to a :class:`PairRequest`, R regions by N means.

    ``log_mass`` (R, N) (-inf for pairs not needed), ``mean`` (R, N, S) and ``cov`` (R, N, S, S) (None when not
    asked for; zero where the mass is -inf), ``methods`` (R,) the method each region took, ``log_mass_error``
    (R, N) absolute bounds on ``log_mass`` (0 where a method gives none; None when no region has bounds),
    ``has_error`` (R,) whether region r's method gave bounds and ``settled`` (R, N): pairs whose moments are
    exactly what ``accuracy="relative"`` without ``log_weight_scale`` would give (S = 2 batch kernel only;
    ``planar.batch.batch_planar_pairs``), so a relative-accuracy redo may skip them.

    ``moment_error`` (R, N, 2), S = 3 and 4 with moments: absolute bounds on the errors of ``mean`` (max over its
    entries) and of ``cov`` (max over its entries) in the ORIGINAL coordinates (``polytopes._store_whitened``
    converts each route's whitened bounds); ``inf`` where a route gives none; None where no route of the dimension
    has bounds (S = 2, S >= 5). ``log_mass_cap`` (R, N): for needed pairs a batch skipped within its budget
    (``highdim.sliced._settle_deferred``), a rigorous upper bound on the log mass; ``+inf`` elsewhere (None: none).
    """

    log_mass: np.ndarray
    mean: np.ndarray | None
    cov: np.ndarray | None
    methods: list[str]
    log_mass_error: np.ndarray | None
    has_error: np.ndarray
    _errors: np.ndarray | None = field(default=None, repr=False)
    settled: np.ndarray | None = field(default=None, repr=False)
    skipped: np.ndarray | None = field(default=None, repr=False)  # S = 4: (N,) see highdim.sliced.sliced_batch
    moment_error: np.ndarray | None = field(default=None, repr=False)  # (R, N, 2) see above
    log_mass_cap: np.ndarray | None = field(default=None, repr=False)  # (R, N) see above

    def cap(self, r, rows, log_bound) -> None:
        """Rigorous log upper bounds ``log_bound`` on the masses of region r's skipped pairs ``rows``."""
        if self.log_mass_cap is None:
            self.log_mass_cap = np.full(self.log_mass.shape, np.inf)
        self.log_mass_cap[r, rows] = log_bound

    @classmethod
    def empty(cls, R: int, N: int, S: int, moments: int) -> PairResult:
        """Mass 0 everywhere, to be filled in place by the integrators (errors in ``_errors`` until finished)."""
        return cls(np.full((R, N), -np.inf), np.zeros((R, N, S)) if moments >= 1 else None,
                   np.zeros((R, N, S, S)) if moments >= 2 else None, [None] * R, None, np.zeros(R, dtype=bool),
                   np.zeros((R, N)), np.zeros((R, N), dtype=bool))

    def store(self, r, rows, tm: TruncatedMoments) -> None:
        """One region's per-region result ``tm`` for the means ``rows``."""
        self.log_mass[r, rows] = tm.log_mass
        if self.mean is not None and tm.mean is not None:
            self.mean[r, rows] = tm.mean
        if self.cov is not None and tm.cov is not None:
            self.cov[r, rows] = tm.cov

    def finish(self, default_method: str) -> PairResult:
        """Errors only where some region has bounds, default names for regions without pairs."""
        err, self._errors = self._errors, None
        self.log_mass_error = np.where(self.has_error[:, None], err, 0.0) if self.has_error.any() else None
        self.methods = [name or default_method for name in self.methods]
        return self

    def region(self, r: int) -> TruncatedMoments:
        """Region r's row as :class:`TruncatedMoments` (error None where its method gives no bound)."""
        return TruncatedMoments(self.log_mass[r], None if self.mean is None else self.mean[r],
                                None if self.cov is None else self.cov[r], self.methods[r],
                                self.log_mass_error[r] if self.has_error[r] else None)

    def lower_log_mass(self) -> np.ndarray:
        """(R, N) rigorous lower bounds ``log_mass - log_mass_error`` (``log_mass`` where there is no bound)."""
        return self.log_mass if self.log_mass_error is None else self.log_mass - self.log_mass_error

    @property
    def method(self) -> str:
        """The methods of all regions, joined (what ``Evaluation.method`` reports)."""
        return "+".join(sorted(set(self.methods)))

    def by_point(self, S: int) -> PointMoments:
        """The same arrays point-major (transposed views; zeros (N, R, S[, S]) for moments not asked for)."""
        R, N = self.log_mass.shape
        means = np.zeros((N, R, S)) if self.mean is None else self.mean.transpose(1, 0, 2)
        covs = np.zeros((N, R, S, S)) if self.cov is None else self.cov.transpose(1, 0, 2, 3)
        errors = None if self.log_mass_error is None else self.log_mass_error.T
        return PointMoments(self.log_mass.T, means, covs, self.method, errors)
