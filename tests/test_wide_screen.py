"""The GEMM screen of evaluate's (point, region) pairs (engine.distributions._screened_params).

Two properties: (1) the screened evaluate gives every output bit for bit what the unscreened one gives (the
reference: ``distributions.SCREEN = False``, which computes mu and log_norm for all N x R pairs); (2) the screen's
bound on log_norm, computed in the cancelling GEMM form, is above both the float log_norm of
posterior_region_params and the exact (rational-arithmetic) quadratic form, on adversarial pairs.
"""

from fractions import Fraction

import numpy as np
import pytest

import engine
from engine import distributions as dn

FIELDS = ("log_marginal", "posterior_mean", "posterior_cov", "region_log_weights", "region_means", "region_covs",
          "log_marginal_error")


def _both(net, X, monkeypatch, **kwargs):
    part = engine.partition(net)
    out = []
    monkeypatch.setattr(dn, "SCREEN_MAX_ROWS", 10**9)  # screen these small nets too (blocks of many rows)
    for flag in (False, True):
        monkeypatch.setattr(dn, "SCREEN", flag)
        out.append(engine.evaluate(net, X, part=part, **kwargs))
    return out


def _assert_same(a, b):
    assert a.method == b.method
    for name in FIELDS:
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), name
        if x is not None:
            assert x.dtype == y.dtype and x.shape == y.shape, name
            assert np.array_equal(x, y, equal_nan=True), name


def _full_cov(D, rng):
    M = np.random.default_rng(rng).normal(size=(D, D))
    return 0.05 * np.eye(D) + 0.02 * M @ M.T / D


CASES = [
    ("S2 D5 diagonal", [2, 16, 16, 5], dict(cov_x=0.1), 0.0),
    ("S2 D40 diagonal", [2, 8, 8, 40], dict(cov_x=0.1), 0.0),
    ("S2 D40 far points", [2, 8, 8, 40], dict(cov_x=0.1), 10.0),
    ("S2 D6 full cov_x", [2, 10, 10, 6], dict(cov_x=_full_cov(6, 3)), 0.0),
    ("S2 huge weights", [2, 10, 10, 8], dict(cov_x=0.1, weight_scale=300.0), 0.0),
    ("S2 D2 (D <= S)", [2, 12, 2], dict(cov_x=0.1), 0.0),
    ("S3 D10", [3, 6, 6, 10], dict(cov_x=0.1), 0.0),
    ("S3 D4 full cov_x far", [3, 6, 6, 4], dict(cov_x=_full_cov(4, 5)), 3.0),
]


@pytest.mark.parametrize("name, widths, kw, shift", CASES, ids=[c[0] for c in CASES])
def test_screened_evaluate_is_bit_identical(name, widths, kw, shift, monkeypatch):
    net = engine.random_network(widths, rng=0, **kw)
    X = net.sample(6 if widths[0] == 3 else 10 if shift else 40, rng=1) + shift
    ref, new = _both(net, X, monkeypatch)
    _assert_same(ref, new)
    assert np.isfinite(new.log_marginal).all()


def test_screened_evaluate_bit_identical_with_one_row_blocks(monkeypatch):
    """The wide decoder's regime (R D > _CHUNK_FLOATS: blocks of one row), where the screen skips most pairs."""
    monkeypatch.setattr(dn, "_CHUNK_FLOATS", 1)
    net = engine.random_network([2, 24, 24, 64], rng=0, cov_x=0.1)
    X = net.sample(15, rng=1)
    ref, new = _both(net, X, monkeypatch)
    _assert_same(ref, new)


def test_screen_is_used_only_for_short_blocks(monkeypatch):
    """Default gate: [2,16,16,5] (blocks of 888 rows) takes the unscreened path."""
    net = engine.random_network([2, 16, 16, 5], rng=0, cov_x=0.1)
    calls = []
    monkeypatch.setattr(dn, "_screened_params", lambda *a, **k: calls.append(a))
    engine.evaluate(net, net.sample(5, rng=1))
    assert not calls


def test_screened_evaluate_bit_identical_in_blocks_and_without_terms(monkeypatch):
    net = engine.random_network([2, 12, 12, 20], rng=2, cov_x=0.1)
    X = net.sample(30, rng=3)
    ref, new = _both(net, X, monkeypatch, chunk_size=7, region_terms=False)
    _assert_same(ref, new)


def test_screened_evaluate_bit_identical_with_defer(monkeypatch):
    net = engine.random_network([2, 12, 12, 9], rng=4, cov_x=0.1)
    X = net.sample(20, rng=5)
    ref, new = _both(net, X, monkeypatch, defer=True)
    _assert_same(ref, new)
    _assert_same(dn.complete(ref), dn.complete(new))


def test_screen_skips_most_pairs(monkeypatch):
    """The screen does what it is for: on a net of many regions most pairs never get mu and log_norm (blocks of
    one row, as the wide decoder's R D > _CHUNK_FLOATS gives)."""
    monkeypatch.setattr(dn, "_CHUNK_FLOATS", 1)
    net = engine.random_network([2, 24, 24, 64], rng=0, cov_x=0.1)
    part = engine.partition(net)
    X = net.sample(20, rng=1)
    rg = dn.region_gaussians(net, part)
    mu, log_norm, (upper, first, lower, _) = dn._screened_params(net, part, X, rg, "auto", None, None, "absolute")
    computed = np.isfinite(log_norm)
    assert computed.mean() < 0.5, computed.mean()  # 0.33 measured; 27 % of the pairs are needed
    # the computed pairs are exactly those of the full pass
    mu_all, ln_all = dn.posterior_region_params(net, part, X, rg)
    assert np.array_equal(log_norm[computed], ln_all[computed])
    assert np.array_equal(mu[computed], mu_all[computed])
    # every pair left out is one the unscreened path prunes: log_norm below lower - PRUNE_NATS
    assert (ln_all < lower[:, None] - dn.PRUNE_NATS)[~computed].all()
    # and the unscreened path's own upper bounds, first pairs and lower bound are the screened ones
    up_all = ln_all + dn.log_mass_upper_bound(part, mu_all, rg.cov)
    first_all, lower_all, _ = dn._first_lower(part, mu_all, rg.cov, ln_all, up_all, "auto", None, None, "absolute")
    assert np.array_equal(first, first_all) and np.array_equal(lower, lower_all)
    need_all = up_all >= lower_all[:, None] - dn.PRUNE_NATS
    assert np.array_equal(need_all, upper >= lower[:, None] - dn.PRUNE_NATS)
    assert np.array_equal(upper[computed], up_all[computed])


def _exact_quad(x, b, U, shrink):
    """|e - U f|^2 + sum shrink f^2 with f = U^T e, e = x - b, in exact rationals of the float inputs (what
    posterior_region_params computes, before its rounding)."""
    e = [Fraction(float(xi)) - Fraction(float(bi)) for xi, bi in zip(x, b)]
    cols = [[Fraction(float(u)) for u in U[:, i]] for i in range(U.shape[1])]
    f = [sum(c * ei for c, ei in zip(col, e)) for col in cols]
    perp = [ei - sum(f[i] * cols[i][d] for i in range(len(f))) for d, ei in enumerate(e)]
    return sum(p * p for p in perp) + sum(Fraction(float(s)) * fi * fi for s, fi in zip(shrink, f))


@pytest.mark.parametrize("scale", [1.0, 1e6])
def test_screen_bound_covers_rounding_on_adversarial_pairs(scale):
    """Points far out (|x_w| ~ 1e6 |b_w|) with e nearly in span(U) -- where the GEMM form cancels to the last
    digit -- and nets with huge offsets: the bound is >= the float log_norm and >= the exact one."""
    rng = np.random.default_rng(7)
    for weight_scale in (1.0, 1e4):
        net = engine.random_network([2, 6, 6, 12], rng=1, cov_x=0.1, weight_scale=weight_scale)
        part = engine.partition(net)
        rg = dn.region_gaussians(net, part)
        R, D, k = rg.U.shape
        rows = []
        for r in rng.choice(R, size=min(R, 6), replace=False):
            for tiny in (0.0, 1e-9, 1e-3):
                c = rng.normal(size=k) * scale * (1.0 + np.abs(rg.b_w[r]).max())
                rows.append(rg.b_w[r] + rg.U[r] @ c + tiny * rng.normal(size=D))
        rows.append(scale * rng.normal(size=D))
        X_w = np.array(rows)
        bound = dn._screen_log_norm_bound(rg, X_w)
        mu = np.empty((len(X_w), R, net.latent_dim))
        log_norm = np.empty((len(X_w), R))
        for s in range(0, len(X_w), dn._param_rows(rg)):
            dn._params_block(rg, X_w, s, slice(None), mu, log_norm)
        assert (bound >= log_norm).all(), np.max(log_norm - bound)
        # exact rationals on the pairs whose bound is tightest relative to the float value
        gap = (bound - log_norm).ravel()
        for i in np.argsort(gap)[:8]:
            n, r = divmod(int(i), R)
            q = _exact_quad(X_w[n], rg.b_w[r], rg.U[r], rg.shrink[r])
            exact = Fraction(float(rg.const[r])) - q / 2
            assert Fraction(float(bound[n, r])) >= exact, (n, r, float(exact), bound[n, r])


def test_screen_bound_is_tight_enough_to_screen():
    """On ordinary data the margin costs far less than a nat: the bound is within 1e-6 nats of log_norm."""
    net = engine.random_network([2, 8, 8, 30], rng=0, cov_x=0.1)
    part = engine.partition(net)
    rg = dn.region_gaussians(net, part)
    X = net.sample(10, rng=1)
    X_w = dn._solve_lower(rg.chol_x, X.T).T
    _, log_norm = dn.posterior_region_params(net, part, X, rg)
    bound = dn._screen_log_norm_bound(rg, X_w)
    assert (bound >= log_norm).all()
    assert np.max(bound - log_norm) < 1e-6 * (1.0 + np.max(np.abs(log_norm)))


def test_region_gaussians_cache_follows_the_noise(monkeypatch):
    """evaluate's per-partition cache of region_gaussians and geometry: a new cov_x (same partition) is not
    served the old one's, and a cached call gives what a fresh one gives."""
    net = engine.random_network([2, 10, 10, 6], rng=3, cov_x=0.1)
    part = engine.partition(net)
    X = net.sample(8, rng=4)
    other = net.replace(cov_x=0.3)
    first = engine.evaluate(net, X, part=part)
    moved = engine.evaluate(other, X, part=part)
    dn._GAUSSIANS_CACHE.clear()
    _assert_same(engine.evaluate(other, X, part=part), moved)
    dn._GAUSSIANS_CACHE.clear()
    _assert_same(engine.evaluate(net, X, part=part), first)
    assert not np.array_equal(first.log_marginal, moved.log_marginal)


def test_region_gaussians_cache_goes_with_its_partition():
    """The cache holds the last partition's entry only, and no longer than the partition lives."""
    import gc

    net = engine.random_network([2, 6, 6, 4], rng=5, cov_x=0.1)
    X = net.sample(3, rng=6)
    part = engine.partition(net)
    engine.evaluate(net, X, part=part)
    assert list(dn._GAUSSIANS_CACHE.keys()) == [part]
    second = engine.partition(engine.random_network([2, 5, 5, 4], rng=7, cov_x=0.1))
    engine.evaluate(second.net, X, part=second)
    assert list(dn._GAUSSIANS_CACHE.keys()) == [second]
    del second
    gc.collect()
    assert len(dn._GAUSSIANS_CACHE) == 0
