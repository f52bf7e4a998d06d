"""``evaluate`` on the pinned fuzz nets (weights to 1e10, near-duplicate units): a number or one clear line, and a
bar that covers the exact-rational truth.

The fuzz properties that found these nets test the partition only. Evaluated directly, two of them raised
RuntimeWarning "invalid value in sqrt" (h^T Sigma h a few ulps below zero in the most-violated half-space bound)
and ``DGNInputError("cov", ...)`` (the per-region path took a dense Cholesky of a Sigma_omega with condition
~1/eps instead of the accurate factor from the SVD), and one ended in numpy's ``LinAlgError`` traceback.

Their values against ``verify.oracles.exact`` (exact rational partition and region maps, each region's Gaussian
integral at 40 digits; the pins below are checked by tests/test_conditioning.py): on rescaling-0 (gain ~1e9 over
the noise) float64 is off by 1.4e-12 nats, on permutation-4 (gain ~1e16, data ~1e16: one ulp of x is ~2 noise
standard deviations) by 5.1 nats. Before engine.conditioning the bars were 2.2e-15 and 3.0e-15.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import engine
from engine.errors import DGNInputError

CASES = Path(__file__).parent / "fuzz_cases"

# log p(x) of the case's data row by verify.oracles.exact.exact_log_marginal (dps 40; error bound < 1e-30)
EXACT_LOG_P = {"permutation-4-e4c24cd06fe2de78": -62.743110444831638879,
               "rescaling-0-74d16ed212943430": -36.659396493719847042}


def _case(name):
    d = json.loads((CASES / f"{name}.json").read_text())
    return engine.load_network(d["model"]), np.asarray(d["data"], dtype=float)


@pytest.mark.parametrize("name", sorted(EXACT_LOG_P))
def test_extreme_net_evaluates_without_warning(name):
    # a finite number, weights that sum to 1, no warning (pytest turns RuntimeWarnings raised in engine.* into
    # errors), and a finite bar that covers the exact value
    net, X = _case(name)
    ev = engine.evaluate(net, X)
    assert np.all(np.isfinite(ev.log_marginal)) and np.all(np.isfinite(ev.log_marginal_error))
    assert np.allclose(ev.region_log_weights.shape, (len(X), len(engine.partition(net))))
    np.testing.assert_allclose(np.exp(ev.region_log_weights).sum(axis=1), 1.0, rtol=1e-12)
    err = abs(ev.log_marginal[0] - EXACT_LOG_P[name])
    assert err <= ev.log_marginal_error[0], (err, ev.log_marginal_error)


def test_posterior_singular_in_float64_is_one_line():
    # region_map-0's last layer x 1e150: gains ~1e169, s^2 overflows, the shrink 1 / (1 + s^2) is 0 and the factor of
    # Sigma_omega has a zero pivot: no float64 number describes that posterior
    d = json.loads((CASES / "region_map-0-20c099c2bc85d188.json").read_text())
    last = [layer for layer in d["model"]["layers"] if layer["type"] == "linear"][-1]
    last["weight"] = (np.asarray(last["weight"]) * 1e150).tolist()
    net, X = engine.load_network(d["model"]), np.asarray(d["data"], dtype=float)
    with pytest.raises(DGNInputError, match=r"^network: .*singular in float64.*; rescale"):
        engine.evaluate(net, X)


@pytest.mark.parametrize("name", ["region_map-0-20c099c2bc85d188", "permutation-4-e4c24cd06fe2de78"])
def test_graded_posterior_factor_keeps_its_thin_direction(name):
    """Gains 1e17-1e19: Sigma_omega = L_z V diag(1 / (1 + s^2)) V^T L_z^T with shrink factors down to 1e-38. Its
    triangular factor L (QR of the scaled rows, large rows first: ``distributions._graded_rows``) must keep the thin
    direction to relative accuracy: det L = det L_z prod_k sqrt(shrink_k) (the oracle: the singular values, which
    the QR does not see; a triangular determinant is a product, nothing cancels), and L L^T = Sigma_omega to the
    rounding of its thick entries. In the singular values' own order (smallest shrink first) the QR left the thin
    pivot at rounding level: exactly 0 with an AVX2 machine's LAPACK, "singular in float64" on permutation-4, whose
    value float64 does resolve within its bar (``test_extreme_net_evaluates_without_warning``)."""
    from engine.distributions import region_gaussians

    net, X = _case(name)
    rg = region_gaussians(net, engine.partition(net))
    assert rg.shrink.min() < 1e-32 * rg.shrink.max()
    det_lz = np.prod(np.diag(np.linalg.cholesky(net.cov_z)))
    det = np.prod(np.diagonal(rg.chol_cov, axis1=1, axis2=2), axis=1)
    # rtol: the SVD gives a singular value s_k to ~eps s_1 / s_k relative (region_map-0: 2e-8 on the worst region,
    # measured 6.2e-9 there, 4e-16 on permutation-4); the smallest-first order was off by 4.0 and 1.0 (a zero pivot)
    np.testing.assert_allclose(det, det_lz * np.prod(np.sqrt(rg.shrink), axis=1), rtol=1e-7, atol=0)
    LLt = np.einsum("rst,rut->rsu", rg.chol_cov, rg.chol_cov)
    np.testing.assert_allclose(LLt, rg.cov, rtol=0, atol=1e-14 * np.abs(rg.cov).max())
    ev = engine.evaluate(net, X)
    assert np.all(np.isfinite(ev.log_marginal)) and np.all(np.isfinite(ev.log_marginal_error))
