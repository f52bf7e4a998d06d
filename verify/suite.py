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
            lemma2_sigmas=(1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 3e-4),
            em_iters=20,
        )
    return C.Settings(profile="quick", seed=seed, mc_samples=1_000_000)


def plan(settings: C.Settings):
    """List of (label, kind, thunk-taking-delta) in run order."""
    cases = build_cases(settings.profile)
    items = []
    for case in cases:
        if "linear" in case.tags or "one_region" in case.tags:
            items.append((f"ppca/{case.name}", "det", lambda d, c=case: C.check_ppca(c, settings)))
        if case.S <= 2 and "linear" not in case.tags:
            items.append((f"quad/{case.name}", "det", lambda d, c=case: C.check_quadrature(c, settings)))
        items.append((f"prior/{case.name}", "det", lambda d, c=case: C.check_prior_masses(c, settings)))
        items.append((f"bayes/{case.name}", "det", lambda d, c=case: C.check_bayes(c, settings)))
        if "linear" not in case.tags:
            items.append(
                (f"signs/{case.name}", "mc", lambda d, c=case: C.check_sign_patterns(c, settings, d))
            )
        if "far" not in case.tags or settings.profile == "full":
            items.append((f"mc/{case.name}", "mc", lambda d, c=case: C.check_monte_carlo(c, settings, d)))
        items += [(f"tri/{case.name}", "det", lambda d, c=case: C.check_triangulation(c, settings))]
    items.append(("lemma2", "det", lambda d: C.check_lemma2(settings)))
    items.append(("em", "det", lambda d: C.check_em(settings)))
    if settings.profile == "full":
        for case in error_bar_cases():  # S = 4, 5, 6 without lineality: the randomised-QMC error bar
            items.append((f"errbar/{case.name}", "mc", lambda d, c=case: C.check_error_bar(c, settings, d)))
        items += highdim_items(settings)  # S = 4, 5, 6 known answers (rotated block decoders, issue 14)
        items.append(("proofs", "det", lambda d: C.check_proofs(settings)))
    return items


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
                f"check-raised/{label}",
                "the check runs to completion on a valid built-in case",
                label,
                {"kind": "none", "precision": "-", "method": "-"},
                0.0,
                "an exception is a failure",
                FAIL,
                int(seed),
                message=f"{type(exc).__name__}: {exc}{where}",
            )
        ]


def run_suite(
    profile: str = "quick", seed: int = 0, family_budget: float = FAMILY_BUDGET, progress: bool = True
):
    """Run every check; returns (records, report metadata, timings)."""
    settings = settings_for(profile, seed)
    items = plan(settings)
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
    }
    return records, meta, timings
