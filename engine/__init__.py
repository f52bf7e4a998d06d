"""dgnexact numeric engine: exact marginal, posterior and EM for CPA deep generative networks.

Data flows one way: network -> partition -> regions (H-representation, affine maps) -> Gaussian
integrals -> distributions (marginal, posterior) -> EM / baselines.
"""

from . import datasets
from .distributions import (
    Evaluation,
    evaluate,
    log_marginal,
    prior_region_log_masses,
    prior_region_masses,
    region_gaussians,
    sample_posterior,
)
from .errors import DGNInputError, RegionBudgetError
from .impute import Imputation, impute
from .network import Activation, Linear, Network, load_network, random_network, save_network
from .partition import Partition, Region, partition
from .polytope import Polytope
from .posterior import PosteriorMixture, posterior
from .validation import check_data

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
