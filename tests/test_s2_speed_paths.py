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
from engine import em as em_module
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


def _graded_simd_log_B(h, lo, hi):
    return K._graded_simd(h, lo, hi)[0]


@pytest.mark.parametrize("edge,rel", [(K.edge_graded, 1e-15), (_graded_simd_log_B, K.GRADED_REL)],
                         ids=["libm", "simd"])
def test_short_edge_rule_against_mpmath(edge, rel):
    """The 10/12/16-point rules are exact to 1e-15 relative (the bound the kernel adds for every graded edge), and the
    cases really take it (one panel, short); the kernel's vector-exp version (``_graded_simd``) to ``GRADED_REL``
    (1e-15 plus ``FAST_EXP_ULPS`` ulps of its node terms)."""
    E = _short_edges()
    short = 0
    worst = 0.0
    for h, lo, hi in E:
        a = lo if hi > 0 else -hi
        wb = hi - lo
        xs, _ = K._short_rule(a, wb, np.hypot(a, h))
        short += xs.size < 20
        got = edge(h, lo, hi)
        want = float(_edge_log_B(h, lo, hi))
        # the rule's bound plus the rounding of the log-space terms: the exponent -(h^2 + a^2) / 2 and log B itself
        tol = rel + 2 * np.finfo(float).eps * (h * h + a * a + abs(want))
        worst = max(worst, abs(np.expm1(got - want)) / tol)
    assert short == len(E)
    assert worst <= 1.0, f"worst error {worst:.3g} x the tolerance"


def test_long_graded_edges_simd_against_mpmath():
    """Graded edges of one or several 20-point panels, some cut at the 40-nat window, by the kernel's vector exp
    (``_graded_parts``): B within ``GRADED_REL`` of 40-digit mpmath and equal to the libm version to 1e-14; where
    every panel spans at most ``_Z_SPAN`` nats, the edge's 1-D mass and mean from the same nodes within the interval
    rule's contract (1e-13 in log mass, 1e-12 standard deviations in the mean; measured 1.6e-15 and 1.3e-14)."""
    rng = np.random.default_rng(16)
    panels = moments = 0
    for _ in range(40):
        h = 10 ** rng.uniform(-1.2, 0.9)
        a = 10 ** rng.uniform(-1.3, 1.0)
        hi = a + 10 ** rng.uniform(0.0, 1.5)
        for lo, up in ((a, hi), (-hi, -a)):
            got = _graded_simd_log_B(h, lo, up)
            want = float(_edge_log_B(h, lo, up))
            tol = K.GRADED_REL + 2 * np.finfo(float).eps * (h * h + a * a + abs(want))
            assert abs(np.expm1(got - want)) <= tol, (h, lo, up)
            assert abs(got - K.edge_graded(h, lo, up)) <= 1e-14 * max(1.0, abs(want))
            _, _, z0, z1, _ = K._graded_parts(h, lo, up)
            if z0 > 0.0:
                moments += 1
                wb = min(up - lo, np.sqrt(a * a + 2 * K._WINDOW) - a)
                lz, ms = K._side_log_mass_mean(lo, up, z0, z1)
                lz_ref, m_ref, sd = _interval_log_mass_mean(*((lo, lo + wb) if up > 0 else (up - wb, up)))
                lz_all, m_all, _ = _interval_log_mass_mean(lo, up)  # the window's cut is below rounding
                assert abs(lz_all - lz_ref) <= 1e-15 * abs(lz_ref) and abs(m_all - m_ref) <= 1e-15 * sd
                assert abs(lz - lz_ref) <= 1e-13 * max(1.0, abs(lz_ref)), (h, lo, up)
                assert abs(ms - m_ref) <= 1e-12 * sd, (h, lo, up)
        rho = K._pole_distance(np.hypot(a, h))
        panels += min(hi - a, np.sqrt(a * a + 2 * K._WINDOW) - a) > rho
    assert panels > 20 and moments > 40  # most take more than one panel; most give the moments too


def test_scaled_graded_edges_against_mpmath():
    """The kernel's graded edges in units of ``e^ref`` (``_graded_scaled``, the node exponentials shifted by ``E - ref``
    inside the vector exp, no scalar ``exp(E - ref)``): ``B e^-ref``, the near end's ``e^(E - ref)``, the far end's
    exponential and the edge's 1-D mass and mean from the shifted nodes, against 40-digit mpmath, for shifts ``E - ref``
    from 0 down to -46 (the kept edges' range: within ``EDGE_DROP_NATS`` of the largest bound), short and long edges,
    both orientations. Tolerances: ``GRADED_REL`` plus the rounding of the log-space terms and of the shift (eps per
    nat)."""
    rng = np.random.default_rng(17)
    eps = np.finfo(float).eps
    edges = list(_short_edges()[::6])
    for _ in range(12):
        h, a = 10 ** rng.uniform(-1.2, 0.9), 10 ** rng.uniform(-1.3, 1.0)
        hi = a + 10 ** rng.uniform(0.0, 1.5)
        edges += [(h, a, hi), (h, -hi, -a)]
    checked_moments = 0
    for k, (h, lo, up) in enumerate(edges):
        a = lo if up > 0 else -up
        shift_want = -(0.0, 1.5, 20.0, 46.0)[k % 4]
        e = -0.5 * (h * h + a * a) - np.log(2 * np.pi)
        ref = e - shift_want
        e_got, total, z0, z1, far, first = K._graded_scaled(h, lo, up, ref, True)
        shift = e_got - ref  # as the kernel forms it
        want = float(_edge_log_B(h, lo, up))
        tol = K.GRADED_REL + 2 * eps * (h * h + a * a + abs(want) + abs(shift) + abs(ref))
        assert abs(np.expm1(np.log(total) + ref - want)) <= tol, (h, lo, up, ref)
        with mp.workdps(40):
            first_want = mp.exp(mp.mpf(shift))
            w = mp.mpf(up) - mp.mpf(lo)
            far_want = mp.exp(mp.mpf(shift) - mp.mpf(a) * w - w * w / 2)
        assert abs(first / first_want - 1) <= 2 * eps, (h, lo, up, ref)
        wb = min(up - lo, np.sqrt(a * a + 2 * K._WINDOW) - a)
        if wb == up - lo:  # not cut at the window: the far end's own exponential (else an upper bound of it)
            assert abs(far / far_want - 1) <= 2 * eps * (1 + abs(shift) + a * (up - lo) + (up - lo) ** 2), (h, lo, up)
        else:
            assert far >= far_want
        if z0 > 0.0:
            checked_moments += 1
            lz, ms = K._side_log_mass_mean(lo, up, z0, z1)
            lz_ref, m_ref, sd = _interval_log_mass_mean(*((lo, lo + wb) if up > 0 else (up - wb, up)))
            assert abs(lz - shift - lz_ref) <= 1e-13 * max(1.0, abs(lz_ref)), (h, lo, up)
            assert abs(ms - m_ref) <= 1e-12 * sd, (h, lo, up)
    assert checked_moments > len(edges) // 2


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
    bounds here are rounding-level: 2e-15 in log mass, 1e-14 (sd + |mean|) in the mean. A quarter of the edges, taken
    alternately by the libm rule (``_graded``) and the kernel's vector-exp one (``_graded_simd``)."""
    used = 0
    edges = _short_edges()[::4]
    for (h, lo, hi), graded in zip(edges, [K._graded, K._graded_simd] * len(edges)):
        _, z0, z1 = graded(h, lo, hi)
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


def test_em_deferred_guard_keeps_the_fit(monkeypatch):
    """With ``COMPLETE_CANDIDATES`` (every accepted evaluation completed before its M-step) deferring the rejected
    candidates' heavy pass changes nothing, bit for bit."""
    monkeypatch.setattr(em_module, "COMPLETE_CANDIDATES", True)
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


def test_em_m_steps_on_first_pass_moments(monkeypatch, thin_net):
    """EM's M-steps on the first pass's moments (default: no heavy pass during the fit) against M-steps on completed
    evaluations (``COMPLETE_CANDIDATES``), on a thin-region net where the heavy pass changes covariances.

    The M-step's inputs (``statistics``: M_omega, X_omega, E[zz^T]) and the exact step's last-layer update agree to
    1e-11 relative (measured 1e-15; the first pass's covariances are accurate to 3e-9 of Sigma_omega and the heavy
    pass moves these pairs by ~1e-13 of it). Whole fits are compared only loosely: the inner layers' frozen-mask
    normal equations are so ill-conditioned here that a 1-ulp change of one datum moves the 3-iteration
    log-likelihood by 7e-6 and weights by 5e-3 relative (measured), so the two fits agree to that sensitivity; each is
    monotone with a true history (recorded log-likelihood = a fresh evaluate's, to rounding), and ``evaluation_`` is
    the complete evaluate of ``network_`` on its partition, bit for bit."""
    net, X, part = thin_net
    first = evaluate(net, X, part=part, defer=True)
    full = complete(first)
    assert not np.array_equal(first.region_covs, full.region_covs)
    a, b = em_module.statistics(first, X), em_module.statistics(full, X)
    for name in ("M", "X", "Ezz"):
        x, y = getattr(a, name), getattr(b, name)
        assert np.max(np.abs(x - y)) <= 1e-11 * np.max(np.abs(y)), name
    last = em_module._linear_indices(net)[-1]
    up_a = em_module.layer_update(net, a, em_module.frozen_maps(net, part), last)
    up_b = em_module.layer_update(net, b, em_module.frozen_maps(net, part), last)
    assert np.max(np.abs(up_a.weight - up_b.weight)) <= 1e-11 * np.max(np.abs(up_b.weight))

    kw = dict(max_iter=3, tol=0.0, random_state=0, backoff=0)
    fast = EM([2, 8, 8, 3], **kw).fit(X)
    monkeypatch.setattr(em_module, "COMPLETE_CANDIDATES", True)
    slow = EM([2, 8, 8, 3], **kw).fit(X)
    ll_f, ll_s = np.array(fast.log_likelihoods_), np.array(slow.log_likelihoods_)
    assert ll_f[0] == ll_s[0]
    assert np.all(np.diff(ll_f) >= 0)
    assert np.all(np.abs(ll_f - ll_s) <= 1e-4 * np.abs(ll_s))  # the fit's own rounding sensitivity (see above)
    fresh = evaluate(fast.network_, X)  # a new partition: the same log p(x) to rounding
    assert abs(fresh.log_marginal.mean() - ll_f[-1]) <= 1e-12 * abs(ll_f[-1])
    ref = evaluate(fast.network_, X, part=fast.evaluation_.partition)
    for name in ("log_marginal", "posterior_mean", "posterior_cov", "region_covs"):
        assert np.array_equal(getattr(fast.evaluation_, name), getattr(ref, name)), name
    assert fast.evaluation_._pending is None


def test_compiled_cancellation_test_is_planar_cancels_bit_for_bit():
    """``kernel.cancel_flags`` (one compiled pass in ``batch_planar_pairs``) against the numpy ``planar.cancels`` it
    replaces, on random and degenerate pairs (zero, negative and NaN covariances, infinite masses, both accuracies,
    loosened thresholds): the same booleans everywhere, so the batch's redo and settled masks do not move."""
    from engine.gaussian.planar import cancels

    rng = np.random.default_rng(7)
    P = 4000
    mean = rng.normal(size=(P, 2)) * 10 ** rng.uniform(-3, 3, size=(P, 1))
    L = rng.normal(size=(P, 2, 2)) * 10 ** rng.uniform(-6, 1, size=(P, 1, 1))
    cov = L @ L.transpose(0, 2, 1)
    cov[::7] *= -1.0  # negative definite: lambda_min < 0, "cancelled"
    cov[::11] = 0.0
    cov[::13, 0, 1] = np.nan
    log_mass = rng.uniform(-50, 0, size=P)
    log_mass[::17] = -np.inf
    rel = 10 ** rng.uniform(-16, -6, size=P)
    loosen = np.where(rng.random(P) < 0.5, 1.0, 10 ** rng.uniform(0, 5, size=P))
    flagged = rng.random(P) < 0.1
    for relative in (True, False):
        redo, strict = K.cancel_flags(mean, cov, log_mass, rel, loosen, relative, flagged)
        assert np.array_equal(redo, cancels(mean, cov, log_mass, rel, loosen, relative=relative) & ~flagged)
        assert np.array_equal(strict, cancels(mean, cov, log_mass, rel, 1.0, relative=True))
    assert 0 < redo.sum() < P and 0 < strict.sum() < P  # both outcomes occur


def test_most_violated_half_space_bound_matches_the_numpy_form():
    """``distributions.log_mass_upper_bound`` (compiled minimum, no (R, N, F) temporary) against the numpy form it
    replaced, to rounding (the dot products may differ by an ulp from BLAS's), on an S = 2 and an S = 3 net; and it
    bounds the exact log masses of the evaluation (the property the pruning relies on)."""
    from scipy.special import log_ndtr

    from engine import distributions as dist

    for widths in ([2, 8, 8, 3], [3, 5, 5, 3]):
        net = engine.random_network(widths, rng=3, cov_x=0.1)
        X = net.sample(40, rng=4)
        part = engine.partition(net)
        rg = dist.region_gaussians(net, part)
        mu, _ = dist.posterior_region_params(net, part, X, rg)
        got = dist.log_mass_upper_bound(part, mu, rg.cov)
        H, c = part.padded_facets()
        den = np.sqrt(np.einsum("rfs,rst,rft->rf", H, rg.cov, H))
        safe = np.where(den > 0, den, 1.0)
        sc = np.where(den > 0, c / safe, np.inf)
        d = sc[:, None, :] - np.matmul(mu.transpose(1, 0, 2), (H / safe[..., None]).transpose(0, 2, 1))
        want = log_ndtr(d.min(axis=2, initial=np.inf)).T
        assert np.array_equal(np.isfinite(got), np.isfinite(want))
        fin = np.isfinite(want)
        assert np.all(np.abs(got[fin] - want[fin]) <= 1e-13 * np.maximum(1.0, np.abs(want[fin])))
        tm = dist.region_truncated_moments(part, mu, rg.cov, moments=0)
        assert np.all(tm.log_mass <= got + 1e-12 * np.maximum(1.0, np.abs(got)))
