"""dgnexact numeric engine: exact marginal, posterior and EM for CPA deep generative networks.

Data flows one way: network -> partition -> regions (H-representation, affine maps) -> Gaussian
integrals -> distributions (marginal, posterior) -> EM / baselines.
"""

from pathlib import Path as _Path

from ._numba_cache import invalidate_stale as _invalidate_stale

_invalidate_stale(_Path(__file__).parent)  # before any kernel loads from numba's cache

from . import datasets  # noqa: E402
from .distributions import (  # noqa: E402
    Evaluation,
    evaluate,
    log_marginal,
    prior_region_log_masses,
    prior_region_masses,
    region_gaussians,
    sample_posterior,
)
from .errors import DGNInputError, RegionBudgetError  # noqa: E402
from .impute import Imputation, impute  # noqa: E402
from .network import Activation, Linear, Network, load_network, random_network, save_network  # noqa: E402
from .partition import Partition, Region, partition  # noqa: E402
from .polytope import Polytope  # noqa: E402
from .posterior import PosteriorMixture, posterior  # noqa: E402
from .validation import check_data  # noqa: E402

__all__ = [
    "EM", "datasets",
    "Activation", "DGNInputError", "Evaluation", "Linear", "Network", "Partition", "Polytope", "Region",
    "RegionBudgetError", "evaluate", "load_network", "log_marginal", "partition", "prior_region_log_masses",
    "prior_region_masses", "random_network", "region_gaussians", "sample_posterior", "save_network",
    "Imputation", "PosteriorMixture", "check_data", "impute", "posterior",
]
__all__ += ["ExactMarginal"]

_LAZY = {"EM": (".em", "EM"), "ExactMarginal": (".torch_marginal", "ExactMarginal")}


def __getattr__(name: str):
    """``engine.EM`` (scikit-learn) and ``engine.ExactMarginal`` (torch) are imported on first use, so that
    ``import engine`` stays light for the commands that need neither."""
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module, __name__), attr)
    raise AttributeError(f"module 'engine' has no attribute {name!r}")
