"""The default verification suite: which checks run on which built-in cases, per profile.

Monte-Carlo checks share one family-wise false-fail budget (default 1e-6), split evenly (Bonferroni).
"""

from __future__ import annotations

import sys
import time
import traceback

from . import checks as C
from .cases import build_cases, error_bar_cases
from .highdim_checks import highdim_items
from .statistics import FAIL, split_budget

FAMILY_BUDGET = 1e-6


def settings_for(profile: str, seed: int) -> C.Settings:
    if profile == "full":
        return C.Settings(
            profile="full",
            seed=seed,
            mc_samples=4_000_000,
            quad_s2=True,
            quad_s2_points=None,
            mc_moments=True,
            lemma2_sigmas=(1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 3e-4),
            em_iters=20,
        )
    # quick: posterior moments judged by oracles that detect 1e-9 errors (S = 1 quadrature, closed form,
    # the S = 2 per-polygon quadrature on one point), not by Monte Carlo (INCONCLUSIVE at 10^6 draws)
    return C.Settings(profile="quick", seed=seed, mc_samples=1_000_000, quad_s2=True, quad_s2_points=1,
                      mc_moments=False)


def plan(settings: C.Settings, cases=None, user_net=None, user_X=None):
    """List of (label, kind, thunk-taking-delta) in run order.

    ``cases`` default to the built-in ones; for the user's model (``user_net``) the checks that do not
    apply are SKIPPED records stating why, and Lemma 2 / EM run on that model.
    """
    user = user_net is not None
    cases = build_cases(settings.profile) if cases is None else cases
    items = []
    for case in cases:
        if "linear" in case.tags or "one_region" in case.tags:
            items.append((f"ppca/{case.name}", "det", lambda d, c=case: C.check_ppca(c, settings)))
        elif user:
            items.append(_skipped(f"ppca-reduction/{case.name}", "Prop. 1 (one region: PPCA/FA)",
                                  "the PPCA/FA reduction applies only to a linear or one-region decoder"))
        if case.S <= 2 and "linear" not in case.tags:
            items.append((f"quad/{case.name}", "det", lambda d, c=case: C.check_quadrature(c, settings)))
        elif user:
            items.append(_skipped(f"marginal-vs-quadrature/{case.name}", "Theorem 1, eq. 5",
                                  "the mpmath quadrature oracle exists for S <= 2 only" if case.S > 2 else
                                  "a linear decoder is judged by the closed form (ppca-reduction) instead"))
        items.append((f"prior/{case.name}", "det", lambda d, c=case: C.check_prior_masses(c, settings)))
        items.append((f"bayes/{case.name}", "det", lambda d, c=case: C.check_bayes(c, settings)))
        if "linear" not in case.tags:
            items.append(
                (f"signs/{case.name}", "mc", lambda d, c=case: C.check_sign_patterns(c, settings, d))
            )
        elif user:
            items.append(_skipped(f"partition-vs-sampled-signs/{case.name}", "Prop. 1, Lemma 3",
                                  "a linear decoder has one region: no sign patterns to sample"))
        if "far" not in case.tags or settings.profile == "full":
            items.append((f"mc/{case.name}", "mc", lambda d, c=case: C.check_monte_carlo(c, settings, d)))
        elif user:
            items.append(_skipped(f"marginal-vs-montecarlo/{case.name}", "Theorem 1, eq. 5",
                                  "prior-sampling Monte Carlo cannot resolve points far off the manifold "
                                  "(log p ~ -10^2 or below) at quick cost: --profile full runs it"))
        items += [(f"tri/{case.name}", "det", lambda d, c=case: C.check_triangulation(c, settings))]
    if user:  # Lemma 2 and EM on the user's model; the built-in S = 4-6 and proof checks do not apply
        return items + _user_model_items(settings, user_net, user_X)
    items.append(("lemma2", "det", lambda d: C.check_lemma2(settings)))
    items.append(("em", "det", lambda d: C.check_em(settings)))
    if settings.profile == "full":
        for case in error_bar_cases():  # S = 4, 5, 6 without lineality: the randomised-QMC error bar
            items.append((f"errbar/{case.name}", "mc", lambda d, c=case: C.check_error_bar(c, settings, d)))
        items += highdim_items(settings)  # S = 4, 5, 6 known answers (rotated block decoders)
        items.append(("proofs", "det", lambda d: C.check_proofs(settings)))
    return items


def _skipped(cid: str, claim: str, reason: str):
    oracle = {"kind": "none", "precision": "-", "method": "-"}
    return (cid, "det", lambda d: [C._skip(cid, claim, "-", oracle, 0, reason)])


def _user_model_items(settings: C.Settings, net, X):
    """Lemma 2 at a latent point where g is injective (else SKIPPED) and EM started at the user's model."""
    from .cases import injective_latent_point

    s_max = max(settings.lemma2_sigmas)
    z0 = injective_latent_point(net, settings.seed, s_max) if net.data_dim >= net.latent_dim else None
    if z0 is None:
        lemma = _skipped("lemma2-mean-to-zstar", "Lemma 2 (zero-noise limit: Dirac at z*(x))",
                         f"no latent point found (50 prior draws) where the decoder is injective (rank-S "
                         f"Jacobian) and its region holds the posterior at noise {s_max:g} (boundary farther "
                         f"than 10 s / smallest singular value); D < S rules it out")
    else:
        lemma = ("lemma2", "det", lambda d: C.check_lemma2(settings, net=net, z0=z0))
    return [lemma, ("em", "det", lambda d: C.check_em(settings, net=net, X=X))]


def run_item(label: str, thunk, delta, seed: int) -> list:
    """Records of one check; a check that raises is a FAIL record naming the exception (the suite goes on)."""
    try:
        return thunk(delta)
    except Exception as exc:  # an engine crash on a valid case is a failed check, not the end of the run
        tb = traceback.extract_tb(exc.__traceback__)
        ours = [f for f in tb if "/engine/" in f.filename or "/verify/" in f.filename] or tb
        where = f" at {ours[-1].filename}:{ours[-1].lineno} in {ours[-1].name}" if ours else ""
        return [
            C.Check(
                id=f"check-raised/{label}",
                claim="the check runs to completion on a valid built-in case",
                quantity=label,
                oracle={"kind": "none", "precision": "-", "method": "-"},
                tolerance=0.0,
                tolerance_reason="an exception is a failure",
                status=FAIL,
                seed=int(seed),
                message=f"{type(exc).__name__}: {exc}{where}",
            )
        ]


def run_suite(
    profile: str = "quick", seed: int = 0, family_budget: float = FAMILY_BUDGET, progress: bool = True,
    model=None, data=None,
):
    """Run every check (on the built-in cases, or on ``model`` with ``data`` or points drawn from it);
    returns (records, report metadata, timings)."""
    from .cases import user_cases

    settings = settings_for(profile, seed)
    cases = None if model is None else user_cases(model, data, seed)
    items = plan(settings, cases, model, data)
    n_mc = sum(kind == "mc" for _, kind, _ in items)
    delta = split_budget(family_budget, n_mc)
    records, timings = [], {}
    try:
        from tqdm import tqdm

        bar = tqdm(items, desc="verify", unit="check", file=sys.stderr, disable=not progress, leave=False)
    except ImportError:  # pragma: no cover
        bar = items
    C._QUAD_CACHE.clear()
    for label, kind, thunk in bar:
        if hasattr(bar, "set_postfix_str"):
            bar.set_postfix_str(label)
        t0 = time.perf_counter()
        records += run_item(label, thunk, delta if kind == "mc" else None, seed)
        timings[label] = round(time.perf_counter() - t0, 3)
    meta = {
        "profile": profile,
        "seed": seed,
        "family_false_fail_budget": family_budget,
        "n_monte_carlo_checks": n_mc,
        "false_fail_per_monte_carlo_check": delta,
        "mc_samples": settings.mc_samples,
        "quadrature_dps": settings.quad_dps,
        "model": "built-in cases" if model is None else "user model",
    }
    return records, meta, timings
