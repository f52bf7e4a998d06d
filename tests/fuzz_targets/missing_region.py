"""Wrong: the region with the smallest prior mass Phi_omega(0, Sigma_z) is left out of eq. 5."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # fuzz_common, when loaded as file.py:claims


import numpy as np
from fuzz_common import exact_terms, mixture_claims

import engine


def claims(model, X):
    net, part, log_joint, means, covs = exact_terms(model, X)
    if len(part) > 1:
        keep = np.ones(len(part), bool)
        keep[int(np.argmin(engine.prior_region_log_masses(net, part)))] = False
        log_joint, means, covs = log_joint[:, keep], means[:, keep], covs[:, keep]
    return mixture_claims(log_joint, means, covs) | {"n_regions": int(len(means[0]))}
