"""engine.plotting: figures live outside the numeric engine; the posterior panel's zoom and the log-scale marginal."""

import subprocess
import sys

import numpy as np
from scipy.stats import norm

import engine


def test_numeric_engine_does_not_import_matplotlib():
    code = ("import sys, engine, engine.experiments, engine.distributions, engine.em; "
            "print('matplotlib' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_mass_window_is_the_central_interval_of_a_known_density():
    """Oracle: the normal quantiles. The window holds all but POSTERIOR_TAIL each side, padded by 10%."""
    from engine.plotting import POSTERIOR_TAIL, _mass_window

    zg = np.linspace(-40.0, 40.0, 200001)
    lo, hi = _mass_window(zg, norm.pdf(zg, loc=3.0, scale=0.01))
    q_lo, q_hi = norm.ppf([POSTERIOR_TAIL, 1 - POSTERIOR_TAIL], loc=3.0, scale=0.01)
    pad = 0.1 * (q_hi - q_lo)
    assert abs(lo - (q_lo - pad)) < 1e-3 and abs(hi - (q_hi + pad)) < 1e-3


def test_posterior_figure_zooms_to_a_narrow_posterior(tmp_path):
    """A tiny Sigma_x makes p(z|x) far narrower than the prior: the panel's x-range must follow the posterior."""
    from engine.plotting import posterior_figure

    net = engine.random_network([1, 6, 2], rng=2, cov_x=1e-4)
    X = net.sample(50, rng=1)
    name = posterior_figure(net, X, "t", tmp_path)
    assert (tmp_path / name).stat().st_size > 10_000
    from engine.distributions import evaluate
    from engine.plotting import _log_posterior, _mass_window, _posterior_grid

    x0 = net.sample(400, rng=np.random.default_rng(0), return_latent=True)[0][:1]
    ev = evaluate(net, x0)
    zg = _posterior_grid(ev)
    lo, hi = _mass_window(zg, np.exp(_log_posterior(net, x0, zg, ev.log_marginal[0])))
    sd = np.sqrt(ev.posterior_cov[0, 0, 0])
    assert lo <= ev.posterior_mean[0, 0] <= hi and hi - lo < 20 * sd < 1.0
    # the grid integrates the exact posterior to 1 (eq. 6 normalised by the exact p(x) of eq. 5)
    post = np.exp(_log_posterior(net, x0, zg, ev.log_marginal[0]))
    assert abs(np.trapezoid(post, zg) - 1.0) < 1e-6
