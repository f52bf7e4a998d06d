"""S >= 4 pruning to the target (issue 14): the pairs skipped by ``distributions._target_prune`` have their summed
rigorous bounds in ``log_marginal_error``, and that bar covers the truth on a known answer: a rotated S = 4
decoder made of two independent S = 2 blocks (``verify.highdim_checks.block_case``), whose log p(x) is the sum
of the blocks' S = 2 marginals (exact planar integrals, checked against mpmath elsewhere)."""

from __future__ import annotations

import numpy as np
import pytest

import engine.distributions as dist
from engine.distributions import evaluate
from engine.partition import partition
from verify.highdim_checks import block_case


def _blocks_truth(blocks, slices, X):
    return sum(evaluate(net, X[:, sl], part=partition(net)).log_marginal for net, sl in zip(blocks, slices))


@pytest.fixture(scope="module")
def s4_case():
    case, blocks, slices = block_case(4, 41, n_points=2)
    return case, partition(case.net), _blocks_truth(blocks, slices, case.X)


def test_skipped_pairs_bound_covers_the_truth(s4_case, monkeypatch):
    """A budget of 1e-3 skips pairs whose bounds are far from negligible: the bar grows to take them in, and
    still covers the true error (which it must: the skipped terms are missing from the estimate)."""
    case, part, truth = s4_case
    counts = []
    real = dist._target_prune

    def counting(*a, **k):
        out = real(*a, **k)
        counts.append(int((a[5] & ~out[0]).sum()))
        return out

    monkeypatch.setattr(dist, "_target_prune", counting)
    monkeypatch.setattr(dist, "SKIP_BUDGET", 1e-3)
    ev = evaluate(case.net, case.X, part=part)
    err = np.abs(ev.log_marginal - truth)
    assert sum(counts) > 0 and np.max(err) > 1e-6  # pairs were skipped, and that shows in log p
    assert np.all(err <= ev.log_marginal_error), (err, ev.log_marginal_error)
    assert np.all(ev.log_marginal_error <= 2e-3)
    assert np.all(ev.log_marginal <= truth + 1e-12)  # skipping only removes mass


def test_default_budget_meets_the_target(s4_case):
    """The default budget (1e-9 of p(x)): the bar is at most ~1e-9 and covers the error."""
    case, part, truth = s4_case
    ev = evaluate(case.net, case.X, part=part)
    err = np.abs(ev.log_marginal - truth)
    assert np.all(err <= ev.log_marginal_error), (err, ev.log_marginal_error)
    assert np.all(ev.log_marginal_error <= 2e-9)
