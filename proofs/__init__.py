"""Symbolic checks of the algebra of Balestriero, Paris, Baraniuk (NeurIPS 2020), with sympy only.

``CLAIMS`` is the registry: each :class:`~proofs._core.Claim` has ``prove(perturb=None)``; a name from
``claim.perturbations`` injects a deliberately wrong formula, under which the proof must FAIL.
Run everything with ``python -m proofs``.
"""

from __future__ import annotations

from . import (
    divergence_facets,
    estep,
    lemma2_zero_noise,
    lemma4_inclusion_exclusion,
    mstep,
    prop1_ppca,
    theorem1_completing_square,
    theorem1_marginal_1d,
    truncated_moments,
)
from ._core import Claim, ClaimResult, Verdict, run_claim


def _claim(key, title, module, prove=None, method=None):
    return Claim(
        key=key, title=title, equation=module.EQUATION, method=method or module.METHOD,
        prove=prove or module.prove, perturbations=dict(module.PERTURBATIONS),
    )


CLAIMS: list[Claim] = [
    _claim("thm1-square-symbolic", "Theorem 1 completing the square, S,D <= 2", theorem1_completing_square),
    _claim("thm1-square-random", "Theorem 1 completing the square, S,D up to 5,8", theorem1_completing_square,
           theorem1_completing_square.prove_random, theorem1_completing_square.METHOD_RANDOM),
    _claim("thm1-marginal-1d", "Theorem 1 / eq. 5 end to end in 1-D", theorem1_marginal_1d),
    _claim("truncated-moments-1d", "1-D truncated mass, mean, second moment", truncated_moments),
    _claim("divergence-facets", "divergence-theorem facet formulas for Gaussian moments, S = 1, 2", divergence_facets),
    _claim("estep", "E-step expansion (Sec. 4.1)", estep),
    _claim("mstep", "M-step stationarity (biases, weights, Sx)", mstep),
    _claim("lemma4", "Lemma 4 inclusion-exclusion, S = 1, 2, 3", lemma4_inclusion_exclusion),
    _claim("prop1-ppca", "Prop. 1 weights = prior masses; PPCA", prop1_ppca),
    _claim("lemma2-zero-noise", "Lemma 2 zero-noise limit", lemma2_zero_noise),
]

__all__ = ["CLAIMS", "Claim", "ClaimResult", "Verdict", "get_claim", "run_claim"]


def get_claim(key: str) -> Claim:
    for c in CLAIMS:
        if c.key == key:
            return c
    raise KeyError(f"unknown claim {key!r}; known: {[c.key for c in CLAIMS]}")
