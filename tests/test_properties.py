"""Property-based tests of dgnexact (verify.properties) under the hypothesis profile in use.

``make test`` runs them with the derandomised ``ci`` profile (same examples every run); ``make
test-full`` with ``dev``. Past failures are pinned with ``@example`` (PINNED below): cases the fuzzer
found that must keep passing.
"""

import numpy as np
import pytest

from verify import properties as P
from verify.strategies import CaseSpec, build_case

#: Minimal cases found by fuzzing dgnexact, per property (kept passing once fixed).
PINNED: dict[str, list] = {name: [] for name in P.PROPERTIES}
PINNED["posterior_weights"].append(
    build_case(
        CaseSpec(
            S=1,
            widths=(3,),
            D=3,
            slopes=(0.56,),
            cov_z="full",
            cov_z_log10=-2,
            cov_x="full",
            degeneracies=(("duplicate", 0, 4),),
            placements=("near", "far", "on", "far", "near"),
            far_log10=4,
            data_seed=2174033592,
        )
    )
)  # weights of a point 1e4 sd off the manifold: tolerance must scale with |log p|

ENGINE = [p.name for p in P.PROPERTIES.values() if p.engine]


def _test(name):
    return P.make_test(name, examples=PINNED[name])


test_prior_mass = _test("prior_mass")
test_region_map = _test("region_map")
test_posterior_weights = _test("posterior_weights")
test_bayes = _test("bayes")
test_ppca = _test("ppca")
test_permutation = _test("permutation")
test_rescaling = _test("rescaling")
test_refinement = _test("refinement")
test_dirac = _test("dirac")
test_em_monotone = _test("em_monotone")
test_batch_order = _test("batch_order")


def test_every_engine_property_has_a_test():
    assert sorted(ENGINE) == sorted(
        n[5:] for n in globals() if n.startswith("test_") and n[5:] in P.PROPERTIES
    )


def _sabotage(name):
    """A corruption of dgnexact's output that property ``name`` must notice."""

    def tweak(ev, net, X):
        if name == "em_monotone":  # E-step forgets the within-region covariance (E2 of Sec. 4.1)
            ev.region_covs = ev.region_covs * 0.0
        elif name in ("permutation", "rescaling", "refinement"):  # depends on how units are written
            W = net.layers[0].weight
            ev.log_marginal = ev.log_marginal + 1e-3 * np.sum(np.arange(1, W.shape[0] + 1) * np.abs(W[:, 0]))
        elif name == "batch_order":  # depends on the batch
            ev.log_marginal = ev.log_marginal + 1e-3 * len(X)
        else:
            ev.log_marginal = ev.log_marginal + 1e-3
            ev.posterior_mean = ev.posterior_mean * (1 + 1e-3)
            ev.region_log_weights = ev.region_log_weights + 1e-3
            ev.region_means = ev.region_means + 1e-2
            ev.region_covs = ev.region_covs * 1.01
        return ev

    return tweak


@pytest.mark.parametrize("name", ENGINE)
def test_property_catches_a_broken_engine(name, monkeypatch):
    """Each property can fail: corrupt the quantity it checks and run it on a plain case."""
    import engine

    case = build_case(CaseSpec(widths=(3,), D=2, placements=("on", "near"), weight_seed=3, data_seed=4))
    if name == "prior_mass":
        real_masses = engine.prior_region_log_masses
        monkeypatch.setattr(engine, "prior_region_log_masses", lambda *a, **k: real_masses(*a, **k) + 1e-6)
    elif name == "region_map":
        real_part = engine.partition

        def shifted(net, **kw):
            part = real_part(net, **kw)
            part.b = part.b + 1e-3
            return part

        monkeypatch.setattr(engine, "partition", shifted)
    else:
        real_eval, tweak = engine.evaluate, _sabotage(name)
        monkeypatch.setattr(engine, "evaluate", lambda net, X, **kw: tweak(real_eval(net, X, **kw), net, X))
    with pytest.raises(AssertionError):
        P.run_property(name, case)
