"""Wrong: the posterior covariance keeps only sum_r w_r Cov[z | x, r] and drops the spread of the
region means, sum_r w_r (m_r - m)(m_r - m)^T (the E2 term of Sec. 4.1 taken as a within-region sum)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # fuzz_common, when loaded as file.py:claims


from fuzz_common import exact_terms, mixture_claims


def claims(model, X):
    _, _, log_joint, means, covs = exact_terms(model, X)
    return mixture_claims(log_joint, means, covs, spread=False)
