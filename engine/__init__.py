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
from .em import EM
from .errors import DGNInputError, RegionBudgetError
from .network import Activation, Linear, Network, load_network, random_network, save_network
from .partition import Partition, Region, partition
from .polytope import Polytope

__all__ = [
    "EM", "datasets",
    "Activation", "DGNInputError", "Evaluation", "Linear", "Network", "Partition", "Polytope", "Region",
    "RegionBudgetError", "evaluate", "load_network", "log_marginal", "partition", "prior_region_log_masses",
    "prior_region_masses", "random_network", "region_gaussians", "sample_posterior", "save_network",
]
__all__ += ["ExactMarginal"]


def __getattr__(name):
    """``engine.ExactMarginal`` imports torch only when first used (``import engine`` stays torch-free)."""
    if name == "ExactMarginal":
        from .torch_marginal import ExactMarginal

        return ExactMarginal
    raise AttributeError(f"module 'engine' has no attribute {name!r}")
