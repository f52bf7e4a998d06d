"""The crosscheck catches each kind of wrong claim real implementations make, and passes correct ones."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.special import logsumexp

from engine import evaluate, random_network
from engine.distributions import posterior_region_params, region_gaussians
from engine.gaussian.interval import interval_moments
from engine.partition import partition
from verify.cli import main as cli_main
from verify.crosscheck import crosscheck


@pytest.fixture(scope="module")
def setup():
    net = random_network([1, 6, 6, 3], "relu", cov_x=[0.2, 0.3, 0.25], rng=11)
    X = net.sample(6, rng=5)
    part = partition(net)
    ev = evaluate(net, X, part=part)
    return net, X, part, ev


def _claims(ev):
    return {
        "log_marginal": ev.log_marginal.copy(),
        "posterior_mean": ev.posterior_mean.copy(),
        "posterior_cov": ev.posterior_cov.copy(),
        "n_regions": ev.n_regions,
    }


def test_correct_claims_pass(setup):
    net, X, _, ev = setup
    res = crosscheck(net, X, _claims(ev))
    assert res.ok and res.exit_code == 0
    assert set(res.fields) == {"log_marginal", "posterior_mean", "posterior_cov", "n_regions"}


@pytest.mark.parametrize("offset", [1e-6, -1e-6, 1.0])
def test_constant_offset_in_log_p(setup, offset):
    net, X, _, ev = setup
    res = crosscheck(net, X, {"log_marginal": ev.log_marginal + offset})
    assert not res.ok and res.fields["log_marginal"].n_bad == len(X)
    assert res.fields["log_marginal"].max_abs_err == pytest.approx(abs(offset), rel=1e-6)


def test_offset_on_one_point_only(setup):
    net, X, _, ev = setup
    lp = ev.log_marginal.copy()
    lp[3] += 1e-6
    res = crosscheck(net, X, {"log_marginal": lp})
    assert res.fields["log_marginal"].n_bad == 1 and res.fields["log_marginal"].worst[0]["at"] == "x[3]"


def _region_with_weight(ev):
    w = ev.region_weights
    n, r = np.unravel_index(np.argmin(np.abs(np.log(np.clip(w, 1e-300, 1)) - np.log(1e-3))), w.shape)
    return n, r, w[n, r]


@pytest.mark.parametrize("factor", [0.0, 2.0])  # missing region, duplicated region
def test_missing_or_duplicated_region(setup, factor):
    net, X, _, ev = setup
    n, r, w = _region_with_weight(ev)
    assert w > 1e-5
    lp = ev.log_marginal.copy()
    lp[n] += np.log1p((factor - 1.0) * w)  # the region's term counted 0 or 2 times
    res = crosscheck(net, X, {"log_marginal": lp, "n_regions": ev.n_regions + (-1 if factor == 0 else 1)})
    assert not res.fields["log_marginal"].ok and not res.fields["n_regions"].ok


def test_sd_instead_of_variance(setup):
    net, X, _, ev = setup
    res = crosscheck(net, X, {"posterior_cov": np.sqrt(ev.posterior_cov)})
    assert not res.ok


def test_moments_ignoring_truncation(setup):
    net, X, part, ev = setup
    mu, _ = posterior_region_params(net, part, X)  # untruncated means mu_omega(x)
    w = ev.region_weights
    mean = np.einsum("nr,nrs->ns", w, mu)
    res = crosscheck(net, X, {"posterior_mean": mean})
    assert not res.ok


def test_covariance_without_between_region_term(setup):
    net, X, _, ev = setup
    within = np.einsum("nr,nrst->nst", ev.region_weights, ev.region_covs)
    assert np.abs(within - ev.posterior_cov).max() > 1e-6
    res = crosscheck(net, X, {"posterior_cov": within})
    assert not res.ok


def test_unbounded_regions_clipped_to_a_box(setup):
    net, X, part, ev = setup
    rg = region_gaussians(net, part)
    mu, log_norm = posterior_region_params(net, part, X, rg)
    bounds = np.array([r.polytope.interval() for r in part])
    L = 5.0  # box [-5, 5]: clips at most 6e-7 of the prior mass
    lo, hi = np.clip(bounds[:, 0], -L, L), np.clip(bounds[:, 1], -L, L)
    keep = hi > lo  # regions entirely outside the box vanish
    log_mass, _, _ = interval_moments(
        mu[:, keep, 0], np.sqrt(rg.cov[keep, 0, 0])[None], lo[None, keep], hi[None, keep]
    )
    lp = logsumexp(log_norm[:, keep] + log_mass, axis=1)
    err = np.abs(lp - ev.log_marginal).max()
    assert 1e-9 < err < 1e-4  # a small error, still caught at the 1e-8 nats default
    assert not crosscheck(net, X, {"log_marginal": lp}).ok


def test_moments_off_by_1e_minus_6(setup):
    net, X, _, ev = setup
    assert not crosscheck(net, X, {"posterior_mean": ev.posterior_mean + 1e-6}).ok
    assert not crosscheck(net, X, {"posterior_cov": ev.posterior_cov * (1 + 1e-6) + 1e-6}).ok


def test_configurable_tolerance(setup):
    net, X, _, ev = setup
    assert crosscheck(net, X, {"log_marginal": ev.log_marginal + 1e-6}, tol_logp=1e-5).ok


# ------------------------------------------------------------------ command line
@pytest.fixture
def files(setup, tmp_path):
    net, X, _, ev = setup
    m, d = tmp_path / "m.json", tmp_path / "x.npy"
    m.write_text(net.to_json())
    np.save(d, X)
    return tmp_path, m, d, ev


def _write(tmp, obj, name="c.json"):
    p = tmp / name
    p.write_text(json.dumps(obj))
    return p


def test_cli_pass_and_fail(files, capsys):
    tmp, m, d, ev = files
    good = _write(tmp, {"log_marginal": ev.log_marginal.tolist(), "n_regions": ev.n_regions})
    assert (
        cli_main(
            [
                "crosscheck",
                "--model",
                str(m),
                "--data",
                str(d),
                "--claims",
                str(good),
                "--json",
                str(tmp / "o.json"),
            ]
        )
        == 0
    )
    assert json.loads((tmp / "o.json").read_text())["ok"] is True
    bad = _write(tmp, {"log_marginal": (ev.log_marginal + 1e-6).tolist()}, "b.json")
    assert cli_main(["crosscheck", "--model", str(m), "--data", str(d), "--claims", str(bad)]) == 1
    assert "worst points" in capsys.readouterr().out


def test_cli_impl(files, tmp_path):
    tmp, m, d, _ = files
    mod = tmp_path / "foreign_impl.py"
    mod.write_text(
        "import numpy as np\nfrom engine import evaluate, load_network\n"
        "def good(model, X):\n    ev = evaluate(load_network(model), X)\n"
        "    return {'log_marginal': ev.log_marginal, 'posterior_mean': ev.posterior_mean}\n"
        "def bad(model, X):\n    out = good(model, X)\n    out['log_marginal'] = out['log_marginal'] + 1.0\n"
        "    return out\n"
    )
    assert cli_main(["crosscheck", "--model", str(m), "--data", str(d), "--impl", f"{mod}:good"]) == 0
    assert cli_main(["crosscheck", "--model", str(m), "--data", str(d), "--impl", f"{mod}:bad"]) == 1


@pytest.mark.parametrize("kind", ["shape", "length", "unknown", "cov_shape"])
def test_cli_bad_input_exit_2(files, capsys, kind):
    tmp, m, d, ev = files
    lp = ev.log_marginal.tolist()
    if kind == "shape":
        np.save(tmp / "x2.npy", np.zeros((4, 5)))
        d = tmp / "x2.npy"
        claims = {"log_marginal": lp[:4]}
    elif kind == "length":
        claims = {"log_marginal": lp[:-1]}
    elif kind == "unknown":
        claims = {"log_marginal": lp, "elbo": lp}
    else:
        claims = {"posterior_cov": [[1.0, 2.0]] * len(lp)}
    c = tmp / "c.json"
    c.write_text(json.dumps(claims))  # a NaN claim is a FAIL, not bad input: tests/test_verify_crosscheck_cmd.py
    code = cli_main(["crosscheck", "--model", str(m), "--data", str(d), "--claims", str(c)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("error:") and "\n" not in err
