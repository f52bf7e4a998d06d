"""The S = 4-6 known-answer checks (``verify.highdim_checks``, issue 14): the construction and the verdicts."""

from __future__ import annotations

import numpy as np
import pytest

from verify import checks as C
from verify.highdim_checks import BLOCKS, block_case, check_block_marginal, check_prior_sum
from verify.suite import plan, settings_for


@pytest.mark.parametrize("S", [4, 5, 6])
def test_rotated_decoder_factors_into_blocks(S):
    """g(z) = (g_b((Q^T z)_b))_b exactly, and Q is orthogonal: the premise of p(x) = prod_b p_b(x_b)."""
    case, blocks, slices = block_case(S, 7)
    Q = case.rotation
    np.testing.assert_allclose(Q.T @ Q, np.eye(S), atol=1e-14)
    Z = np.random.default_rng(0).standard_normal((50, S))
    U = Z @ Q
    cuts = np.cumsum((0,) + BLOCKS[S])
    want = np.concatenate([b.forward(U[:, a:c]) for b, a, c in zip(blocks, cuts[:-1], cuts[1:])], axis=1)
    np.testing.assert_allclose(case.net.forward(Z), want, atol=1e-12)
    assert [sl.stop - sl.start for sl in slices] == list(BLOCKS[S])
    np.testing.assert_array_equal(case.net.cov_x, 0.3 * np.eye(S))


def test_full_profile_registers_the_highdim_checks():
    labels = [item[0] for item in plan(settings_for("full", 0))]
    for S in (4, 5, 6):
        assert {f"highdim-blocks/S{S}", f"highdim-prior/S{S}", f"highdim-mc/S{S}"} <= set(labels)


@pytest.mark.slow
def test_s4_block_check_passes_and_catches_an_error(monkeypatch):
    settings = settings_for("full", 0)
    rec, blk = check_block_marginal(4, 41, settings)
    assert rec.status == C.PASS and blk.status == C.PASS, (rec.message, blk.message)
    assert check_prior_sum(4, 41, settings)[0].status == C.PASS
    real = C._evaluate

    def shifted(net, X, **kw):  # an engine off by 0.05 nats must fail (its error bar is ~4e-3)
        ev = real(net, X, **kw)
        ev.log_marginal = ev.log_marginal + 0.05
        return ev

    monkeypatch.setattr(C, "_evaluate", shifted)
    assert check_block_marginal(4, 41, settings)[0].status == C.FAIL


def test_full_profile_registers_the_campaign_checks():
    from verify.highdim_checks import CAMPAIGN

    labels = [item[0] for item in plan(settings_for("full", 0))]
    assert {f"highdim-campaign/{n}" for n in CAMPAIGN} <= set(labels)


def test_campaign_check_passes_and_catches_an_error(monkeypatch):
    """The campaign check (S = 4 far points, ~1.4 s CPU with the oracle) PASSes and FAILs an engine 1e-7 nats off
    (bars ~1e-9)."""
    import verify.highdim_campaign as hc
    from verify.highdim_checks import check_campaign_case

    settings = settings_for("full", 0)
    assert check_campaign_case("s4-1111-far", settings)[0].status == C.PASS
    real = hc._evaluate

    def shifted(net, X, threads=None, **kw):
        ev, w, c = real(net, X, threads, **kw)
        ev.log_marginal = ev.log_marginal + 1e-7
        return ev, w, c

    monkeypatch.setattr(hc, "_evaluate", shifted)
    assert check_campaign_case("s4-1111-far", settings)[0].status == C.FAIL
