"""E-step expansion, Sec. 4.1 (Appendix G.1):

E_{z|x}[log p(x|z) + log p(z)] = -1/2 log((2 pi)^(S+D) |Sx| |Sz|) - 1/2 Tr(Sz^-1 E2)
   - 1/2 ( x^T Sx^-1 x - 2 x^T Sx^-1 sum_w (A_w e1_w + b_w e0_w)
           + sum_w [ Tr(A_w^T Sx^-1 A_w E2_w) + (e0_w b_w + 2 A_w e1_w)^T Sx^-1 b_w ] ),
with e0_w = E[1_w], e1_w = E[z 1_w], E2_w = E[z z^T 1_w], E2 = sum_w E2_w, sum_w e0_w = 1.

Method: the reference side is E[ sum_w 1_w log N(x; A_w z + b_w, Sx) + log N(z; 0, Sz) ] computed
mechanically: the log-densities are expanded as polynomials in z and each monomial 1, z_i, z_i z_j of
region w is replaced by e0_w, e1_w[i], E2_w[i,j] (linearity of expectation). S = D = 2, two regions,
all entries symbolic (Sx, Sz, E2_w symmetric); the difference, after ``expand_log``, is shown to vanish
with ``together``/``cancel``.
"""

from __future__ import annotations

import sympy as sp

from ._core import Residual, Verdict, check_perturb, is_zero_rational, sym_matrix

EQUATION = "Sec. 4.1 E-step (App. G.1)"
METHOD = "moment substitution in the expanded log-densities; expand_log + together/cancel"
PERTURBATIONS = {
    "wrong_sign": "(e0 b - 2 A e1)^T Sx^-1 b",
    "missing_factor": "(e0 b + A e1)^T Sx^-1 b (factor 2 dropped)",
    "sigma_not_inverse": "Tr(Sz E2) in place of Tr(Sz^-1 E2)",
}


def paper_estep(x, Sx, Sz, regions, perturb=None):
    """The Sec. 4.1 formula; regions = [(A, b, e0, e1, E2)]."""
    S, D = Sz.shape[0], Sx.shape[0]
    Sxi = Sx.inv()
    E2 = sum((r[4] for r in regions), sp.zeros(S, S))
    Szm = Sz if perturb == "sigma_not_inverse" else Sz.inv()
    two = 1 if perturb == "missing_factor" else (-2 if perturb == "wrong_sign" else 2)
    lin = sum((A * e1 + b * e0 for A, b, e0, e1, _ in regions), sp.zeros(D, 1))
    per = sum(
        (A.T * Sxi * A * E2w).trace() + ((e0 * b + two * A * e1).T * Sxi * b)[0, 0]
        for A, b, e0, e1, E2w in regions
    )
    return (
        -sp.log((2 * sp.pi) ** (S + D) * Sx.det() * Sz.det()) / 2
        - (Szm * E2).trace() / 2
        - ((x.T * Sxi * x)[0, 0] - 2 * (x.T * Sxi * lin)[0, 0] + per) / 2
    )


def _log_normal(y, mean, cov):
    d = y - mean
    k = cov.shape[0]
    return -(d.T * cov.inv() * d)[0, 0] / 2 - sp.log((2 * sp.pi) ** k * cov.det()) / 2


def reference_estep(x, Sx, Sz, regions, z):
    """E[sum_w 1_w log N(x; A_w z + b_w, Sx) + log N(z; 0, Sz)] by monomial -> moment substitution."""
    S = z.shape[0]
    total = 0
    for A, b, e0, e1, E2w in regions:
        integrand = _log_normal(x, A * z + b, Sx) + _log_normal(z, sp.zeros(S, 1), Sz)
        poly = sp.Poly(sp.expand(integrand), *z)
        for monom, coeff in poly.terms():
            idx = [i for i, k in enumerate(monom) for _ in range(k)]
            moment = e0 if not idx else (e1[idx[0]] if len(idx) == 1 else E2w[idx[0], idx[1]])
            total += coeff * moment
    return total


def claim(perturb: str | None = None, S: int = 2, D: int = 2, R: int = 2) -> list[Residual]:
    check_perturb(perturb, PERTURBATIONS)
    x = sym_matrix("x", D, 1)
    z = sym_matrix("z", S, 1)
    Sx = sym_matrix("p", D, symmetric=True)
    Sz = sym_matrix("q", S, symmetric=True)
    e0s = list(sp.symbols(f"e0_1:{R}")) if R > 1 else []
    e0s.append(1 - sum(e0s))  # the region masses of the posterior sum to 1
    regions = [
        (sym_matrix(f"A{w}", D, S), sym_matrix(f"c{w}", D, 1), e0s[w], sym_matrix(f"m{w}", S, 1),
         sym_matrix(f"M{w}", S, symmetric=True))
        for w in range(R)
    ]
    lhs = paper_estep(x, Sx, Sz, regions, perturb)
    rhs = reference_estep(x, Sx, Sz, regions, z)
    return [Residual(f"E-step (S={S}, D={D}, {R} regions)", lhs, rhs)]


def prove(perturb: str | None = None) -> Verdict:
    (res,) = claim(perturb)
    diff = sp.expand(sp.expand_log(res.lhs - res.rhs, force=True))
    if is_zero_rational(diff):
        return Verdict(True, "proved", res.label)
    return Verdict(False, "FAILED", f"{res.label}: difference does not cancel")
