"""S >= 4 randomised QMC (``engine.gaussian.highdim.qmc``, issue 14): reproducible bits and a calibrated error bar.

Oracle for the coverage test: a rotated box ``Q [a, b]`` has standard-normal mass ``prod_i (Phi(b_i) - Phi(a_i))``
(rotation invariance of N(0, I)), exact to rounding by ``log_ndtr``.
"""

from __future__ import annotations

import multiprocessing as mp

import numpy as np
import pytest
from scipy.special import log_ndtr
from scipy.stats import binom, norm

from engine.gaussian.highdim.qmc import COVERAGE, rqmc_moments, t_factor


def _box(S, a, b, seed):
    """Whitened normals and offsets (1, 2S) of ``Q [a, b]`` for the standard normal, and its exact log mass."""
    Q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((S, S)))
    Nrm = np.vstack([Q.T, -Q.T])
    D = np.concatenate([b, -a])[None]
    hi, lo = log_ndtr(b), log_ndtr(a)
    exact = np.sum(hi + np.log1p(-np.exp(lo - hi)))
    return Nrm, D, exact


def test_t_factor_is_the_student_quantile():
    # published table value t_{7}(0.99865) = 4.53 (two-sided 99.73 %); the normal limit is 3.00
    assert t_factor(8) == pytest.approx(4.53, abs=2e-3)
    assert t_factor(10_000) == pytest.approx(norm.ppf(0.5 * (1 + COVERAGE)), abs=2e-3)


def test_default_is_reproducible_and_seed_changes_bits():
    Nrm, D, _ = _box(4, np.array([-1.0, -0.5, 0.2, -2.0]), np.array([0.7, 1.5, 2.0, 0.1]), 3)
    a = rqmc_moments(Nrm, D, n_points=64)
    b = rqmc_moments(Nrm, D, n_points=64)
    for u, v in zip(a, b):
        assert np.array_equal(u, v)
    c = rqmc_moments(Nrm, D, n_points=64, rng=123)
    assert not np.array_equal(a[0], c[0])


def _child(q, Nrm, D):
    q.put(rqmc_moments(Nrm, D, n_points=64)[0].tobytes())


def test_same_bits_in_a_forked_process():
    Nrm, D, _ = _box(5, -np.ones(5), np.full(5, 1.5), 4)
    here = rqmc_moments(Nrm, D, n_points=64)[0].tobytes()
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=_child, args=(q, Nrm, D))
    p.start()
    there = q.get(timeout=60)
    p.join()
    assert there == here


@pytest.mark.slow
def test_error_bar_covers_exact_box_masses():
    """Coverage of the Student-t bar over 240 independently seeded runs on 4 rotated boxes (S = 4, 5; one in
    the tail, mass ~1e-9). Nominal miss rate 0.27 %; the test fails at > 6 misses, which a calibrated bar
    produces with probability P(Binom(240, 0.0027) > 6) < 1e-5 (false-fail probability), and which a bar
    missing 5 % of the time (the normal 3 SE bar with heavy-tailed replicates) would exceed w.p. > 0.99."""
    boxes = [
        _box(4, np.array([-1.0, -0.5, 0.2, -2.0]), np.array([0.7, 1.5, 2.0, 0.1]), 1),
        _box(4, np.array([2.0, 2.5, -1.0, 1.5]), np.array([3.0, 4.0, 1.0, 9.0]), 2),
        _box(5, np.array([-0.3, -1.0, -2.0, 0.0, -0.5]), np.array([0.3, 1.0, 0.5, 0.8, 2.5]), 3),
        _box(4, np.array([-3.0, -0.1, -0.2, -4.0]), np.array([-1.0, 0.1, 0.3, 4.0]), 4),
    ]
    runs, misses, worst = 0, 0, 0.0
    for k, (Nrm, D, exact) in enumerate(boxes):
        for seed in range(60):
            lm, _, _, rel = rqmc_moments(Nrm, D, moments=0, rng=1000 * k + seed, n_points=128)
            runs += 1
            miss = abs(np.expm1(lm[0] - exact))
            worst = max(worst, miss / rel[0])
            misses += miss > rel[0]
    assert binom.sf(6, runs, 1 - COVERAGE) < 1e-5
    assert misses <= 6, f"{misses} of {runs} error bars missed the exact mass (worst miss / bar {worst:.2f})"


_SCRIPT = """
import numpy as np
from engine import random_network
from engine.distributions import evaluate
net = random_network([4, 5, 4], rng=5, cov_x=0.3)
ev = evaluate(net, net.sample(1, rng=6))
print(ev.log_marginal.tobytes().hex(), ev.posterior_mean.tobytes().hex(), ev.log_marginal_error.tobytes().hex())
"""


@pytest.mark.slow
def test_evaluate_s4_same_bits_with_1_and_2_threads():
    """Issue 14, done-when: two runs of the same S >= 4 evaluation, with 1 and 2 worker threads, agree bit for bit."""
    import os
    import subprocess
    import sys

    outs = []
    for threads in ("1", "2", "2"):
        env = dict(os.environ, DGNEXACT_THREADS=threads)
        res = subprocess.run([sys.executable, "-c", _SCRIPT], env=env, capture_output=True, text=True, timeout=600,
                             cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        assert res.returncode == 0, res.stderr[-2000:]
        outs.append(res.stdout.strip())
    assert outs[0] == outs[1] == outs[2]
