"""The S = 2 speed paths of issue 15 (items 3 and 4) against independent oracles.

* The short one-panel edge rule of ``planar.kernel.edge_graded`` (10, 12 or 16 Gauss-Legendre points, not 20)
  against 40-digit mpmath quadrature of the edge integral, at the edges of its regime, to the 1e-15 relative
  accuracy the kernel's error bound claims for every graded edge.
* ``evaluate(..., defer=True)`` then ``distributions.complete``: bit for bit the plain ``evaluate``; the deferred
  result's log p(x) and error bar are already final.
* EM's guard, which defers the heavy pass of every candidate: the fit (history, network) is bit for bit the fit
  whose every evaluation is complete.
"""

import mpmath as mp
import numpy as np
import pytest

import engine
from engine import datasets
from engine.distributions import complete, evaluate
from engine.em import EM
from engine.gaussian.planar import kernel as K


def _edge_log_B(h, s_lo, s_hi):
    """log B, B = int_{s_lo}^{s_hi} h / (h^2 + s^2) exp(-(h^2 + s^2) / 2) / (2 pi) ds (the mass beyond the edge,
    within its angular sector), 40 digits; the integrand is scaled by its value's Gaussian factor at the end ``a``
    nearest the foot (mpmath's quad stops at an absolute error of 10^-dps)."""
    with mp.workdps(40):
        h, s_lo, s_hi = mp.mpf(h), mp.mpf(s_lo), mp.mpf(s_hi)
        a = s_lo if s_hi > 0 else -s_hi
        f = lambda s: h / (h * h + s * s) * mp.exp(-(s * s - a * a) / 2)  # noqa: E731
        return -(h * h + a * a) / 2 - mp.log(2 * mp.pi) + mp.log(mp.quad(f, [s_lo, (s_lo + s_hi) / 2, s_hi]))


def _short_edges():
    """One-sided edges ``[a, a + wb]`` (and their mirror images) whose single panel takes the short rule: random
    ones and the worst corners of the regime (``wb = dist / 4``, ``dist / 2`` or ``dist``, exponent span 4)."""
    rng = np.random.default_rng(15)
    out = []
    for _ in range(60):
        dist = 10 ** rng.uniform(-1.2, 1.4)
        ang = rng.uniform(0.0, np.pi / 2)
        a, h = dist * np.cos(ang), dist * np.sin(ang)
        wb = rng.uniform(0.0, 1.0) * dist
        out.append((h, a, a + wb))
    for q in (0.25, 0.5, 1.0):
        for dist in (0.06, 0.3, 1.0, 2.5, 5.0, 5.9, 6.1, 12.0):
            for ang in (1e-3, 0.4, 0.8, 1.2, np.pi / 2 - 1e-3):
                a, h = dist * np.cos(ang), dist * np.sin(ang)
                wb = q * dist * (1 - 1e-12)  # just inside the regime (rounding of the corner itself)
                if a * wb + 0.5 * wb * wb > K._SHORT_SPAN:  # the span cap binds: wb where the span is 4
                    wb = (np.sqrt(a * a + 2 * K._SHORT_SPAN) - a) * (1 - 1e-12)
                out.append((h, a, a + wb))
    E = np.array([e for e in out if e[0] > 0 and e[1] * (e[2] - e[1]) + 0.5 * (e[2] - e[1]) ** 2 <= K._SHORT_SPAN])
    return np.concatenate([E, np.stack([E[:, 0], -E[:, 2], -E[:, 1]], axis=1)])


def test_short_edge_rule_against_mpmath():
    """The 10/12/16-point rules are exact to 1e-15 relative (the bound the kernel adds for every graded edge), and the
    cases really take it (one panel, short)."""
    E = _short_edges()
    short = 0
    worst = 0.0
    for h, lo, hi in E:
        a = lo if hi > 0 else -hi
        wb = hi - lo
        xs, _ = K._short_rule(a, wb, np.hypot(a, h))
        short += xs.size < 20
        got = K.edge_graded(h, lo, hi)
        want = float(_edge_log_B(h, lo, hi))
        # 1e-15 (the kernel's claim for a graded edge) plus the rounding of the log-space terms: the exponent
        # -(h^2 + a^2) / 2 and log B itself
        tol = 1e-15 + 2 * np.finfo(float).eps * (h * h + a * a + abs(want))
        worst = max(worst, abs(np.expm1(got - want)) / tol)
    assert short == len(E)
    assert worst <= 1.0, f"worst error {worst:.3g} x the tolerance"


def _interval_log_mass_mean(lo, hi):
    """log P(lo < s < hi) and E[s | lo < s < hi] of s ~ N(0, 1) on a one-sided interval, 40 digits (scaled by the
    density at the end nearest 0, as in :func:`_edge_log_B`)."""
    with mp.workdps(40):
        lo, hi = mp.mpf(lo), mp.mpf(hi)
        a = lo if hi > 0 else -hi
        z0 = mp.quad(lambda s: mp.exp(-(s * s - a * a) / 2), [lo, hi])
        z1 = mp.quad(lambda s: s * mp.exp(-(s * s - a * a) / 2), [lo, hi])
        z2 = mp.quad(lambda s: s * s * mp.exp(-(s * s - a * a) / 2), [lo, hi])
        mean = z1 / z0
        return (float(-a * a / 2 - mp.log(2 * mp.pi) / 2 + mp.log(z0)), float(mean),
                float(mp.sqrt(z2 / z0 - mean * mean)))


def test_edge_moments_from_the_edge_rule_against_mpmath():
    """The 1-D mass and mean that the kernel's moment formula takes from an edge's own quadrature (``_graded`` ->
    ``_side_log_mass_mean``, eq. 6's edge terms) against mpmath, to the interval rule's own accuracy (1e-13 in log
    mass, 1e-12 standard deviations in the mean: tests/test_planar_kernel.py); measured 3e-16 and 6e-16, so the
    bounds here are rounding-level: 2e-15 in log mass, 1e-14 (sd + |mean|) in the mean. A quarter of the edges."""
    used = 0
    edges = _short_edges()[::4]
    for h, lo, hi in edges:
        _, z0, z1 = K._graded(h, lo, hi)
        if not z0 > 0.0:
            continue
        used += 1
        lz, ms = K._side_log_mass_mean(lo, hi, z0, z1)
        lz_ref, m_ref, sd = _interval_log_mass_mean(lo, hi)
        assert abs(lz - lz_ref) <= 2e-15 * max(1.0, abs(lz_ref)), (h, lo, hi)
        assert abs(ms - m_ref) <= 1e-14 * (sd + abs(m_ref)), (h, lo, hi)
    assert used > 0.9 * len(edges)


@pytest.fixture(scope="module")
def thin_net():
    """An S = 2 net whose heavy pass has work: small Sigma_x makes thin heavy regions (relative-accuracy redo)."""
    net = engine.random_network([2, 8, 8, 3], rng=3, cov_x=0.01)
    X = net.sample(60, rng=4)
    return net, X, engine.partition(net)


def test_deferred_evaluate_completes_to_evaluate(thin_net):
    net, X, part = thin_net
    full = evaluate(net, X, part=part)
    deferred = evaluate(net, X, part=part, defer=True)
    assert np.array_equal(deferred.log_marginal, full.log_marginal)
    assert np.array_equal(deferred.log_marginal_error, full.log_marginal_error)
    assert not np.array_equal(deferred.region_covs, full.region_covs)  # the heavy pass changed something
    done = complete(deferred)
    for name in ("log_marginal", "log_marginal_error", "posterior_mean", "posterior_cov", "region_log_weights",
                 "region_means", "region_covs"):
        assert np.array_equal(getattr(done, name), getattr(full, name)), name
    assert complete(full) is full  # nothing deferred: itself


class _EagerEM(EM):
    """EM whose guard evaluates every candidate completely (the reference for the deferred guard)."""

    def _evaluate(self, net, X, part=None, defer=False):
        return super()._evaluate(net, X, part=part, defer=False)


def test_em_deferred_guard_keeps_the_fit():
    X = datasets.circle(80, rng=0)
    kw = dict(max_iter=3, tol=0.0, random_state=0, backoff=0)
    fast = EM([2, 8, 8, 2], **kw).fit(X)
    eager = _EagerEM([2, 8, 8, 2], **kw).fit(X)
    assert fast.log_likelihoods_ == eager.log_likelihoods_
    assert np.all(np.diff(fast.log_likelihoods_) >= 0)
    assert [h["updates"] for h in fast.history_] == [h["updates"] for h in eager.history_]
    for a, b in zip(fast.network_.layers, eager.network_.layers):
        if hasattr(a, "weight"):
            assert np.array_equal(a.weight, b.weight) and np.array_equal(a.bias, b.bias)
    assert np.array_equal(fast.evaluation_.region_covs, eager.evaluation_.region_covs)
