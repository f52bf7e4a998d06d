"""Lemma 4 (inclusion-exclusion over the faces of a simplex), S = 1, 2, 3.

For a simplex Delta = H_1 cap ... cap H_{S+1} (half-spaces), the paper's decomposition
H(Delta) = {((-1)^(|J|+S), cap_{j in J} H_j) : J subset {1..S+1}, |J| <= S} is the indicator identity

    1_Delta(z) = sum_{|J| <= S} (-1)^(|J|+S) 1_{cap_{j in J} H_j}(z)     for every z.

The right side depends on z only through its sign pattern K(z) = {j : z in H_j}. Method: exhaustive
enumeration of all 2^(S+1) patterns, exactly. A pattern K != {} is realised by the rational witness
z = sum_j lam_j V_j (barycentric lam_j = -1 off K, positive on K, sum 1) for a random rational simplex
(V_j opposite facet j), its pattern recomputed from the H-representation with Fractions; K = {} is
infeasible (barycentric coordinates sum to 1). Both sides are evaluated at each witness in integers.
"""

from __future__ import annotations

import itertools
import random
from fractions import Fraction

from ._core import Residual, Verdict, check_perturb

EQUATION = "Lemma 4"
METHOD = "exhaustive exact enumeration of sign patterns (rational witnesses)"
PERTURBATIONS = {
    "wrong_sign": "sign (-1)^(|J|+S+1)",
    "missing_factor": "the |J| = S terms dropped",
    "include_full": "|J| <= S+1 (the simplex itself added)",
}


def _det(m):
    m = [r[:] for r in m]
    n, d = len(m), Fraction(1)
    for c in range(n):
        p = next((i for i in range(c, n) if m[i][c] != 0), None)
        if p is None:
            return Fraction(0)
        if p != c:
            m[c], m[p] = m[p], m[c]
            d = -d
        d *= m[c][c]
        for i in range(c + 1, n):
            f = m[i][c] / m[c][c]
            m[i] = [a - f * b for a, b in zip(m[i], m[c])]
    return d


def _halfspaces(V):
    """Facet j (opposite V_j) as (h, c) with h.z <= c containing V_j: h from the null space via cofactors."""
    S = len(V) - 1
    out = []
    for j in range(S + 1):
        pts = [V[i] for i in range(S + 1) if i != j]
        rows = [[Fraction(1)] + list(p) for p in pts]  # affine hyperplane through pts: w0 + w.z = 0
        w = []
        for k in range(S + 1):
            minor = [r[:k] + r[k + 1:] for r in rows]
            w.append((-1) ** k * _det(minor) if minor and minor[0] else Fraction((-1) ** k))
        w0, h = w[0], w[1:]
        val = w0 + sum(a * b for a, b in zip(h, V[j]))
        if val > 0:  # make V_j satisfy h.z <= c with c = -w0
            w0, h = -w0, [-a for a in h]
        out.append((h, -w0))
    return out


def _terms(S, perturb):
    top = S - 1 if perturb == "missing_factor" else (S + 1 if perturb == "include_full" else S)
    for size in range(top + 1):
        for J in itertools.combinations(range(S + 1), size):
            yield J, (-1) ** (size + S + (1 if perturb == "wrong_sign" else 0))


def claim(perturb: str | None = None, S: int = 2, seed: int = 0) -> list[Residual]:
    check_perturb(perturb, PERTURBATIONS)
    rng = random.Random(seed)
    while True:
        V = [[Fraction(rng.randint(-9, 9), rng.randint(1, 5)) for _ in range(S)] for _ in range(S + 1)]
        if _det([[v - V[0][k] for k, v in enumerate(p)] for p in V[1:]]) != 0:
            break
    H = _halfspaces(V)
    out = []
    for K in itertools.product((0, 1), repeat=S + 1):
        if not any(K):  # infeasible: barycentric coordinates sum to 1
            continue
        pos = sum(K)
        lam = [Fraction(1 + (S + 1 - pos), pos) if k else Fraction(-1) for k in K]
        z = [sum(lam[j] * V[j][i] for j in range(S + 1)) for i in range(S)]
        inside = [sum(a * b for a, b in zip(h, z)) < c for h, c in H]
        if tuple(int(t) for t in inside) != K:
            raise AssertionError(f"witness for pattern {K} has pattern {inside}")
        rhs = sum(sgn * int(all(inside[j] for j in J)) for J, sgn in _terms(S, perturb))
        out.append(Residual(f"S={S} pattern {K}", int(all(inside)), rhs))
    return out


def prove(perturb: str | None = None) -> Verdict:
    n = 0
    for S in (1, 2, 3):
        for res in claim(perturb, S):
            n += 1
            if res.lhs != res.rhs:
                return Verdict(False, "FAILED", f"{res.label}: 1_Delta = {res.lhs}, sum = {res.rhs}")
    return Verdict(True, "proved", f"all {n} feasible sign patterns (S = 1, 2, 3); the empty one infeasible")
