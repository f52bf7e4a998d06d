"""Lemma 2 (zero-noise limit), S = 1 with D = 1 and D = 2, one region containing the limit point.

With Sx = sig^2 I, Sz = s, g(z) = a z + b (a in R^D), eq. (7) gives
Sw = (1/s + a.a/sig^2)^-1 and mu = Sw a.(x - b)/sig^2. Claims (sympy ``limit`` as sig -> 0+):
  lim mu = a.(x - b)/(a.a)   (the least-squares reconstruction z*),
  lim Sw = 0 and lim Sw/sig^2 = 1/(a.a)  (the posterior collapses to a Dirac at z*, variance ~ sig^2).
Note: z* is the limit of the MAP argmin ||x - g(z)||^2 + sig^2 z^T Sz^-1 z; with the regulariser
z^T Sz z of the paper's text (not scaled by sig^2) the limit would be different (perturbation
'paper_regulariser' shows that this version FAILS).
"""

from __future__ import annotations

import sympy as sp

from ._core import Residual, Verdict, check_perturb, is_zero_rational

EQUATION = "Lemma 2, eq. (7)"
METHOD = "sympy limit sig -> 0+ of posterior mean/variance, cancel against z*"
PERTURBATIONS = {
    "wrong_sign": "mu = Sw a.(x + b)/sig^2",
    "missing_factor": "Sw = (1/s + a.a)^-1 (1/sig^2 dropped)",
    "sigma_not_inverse": "mu = Sw a.(x - b) sig^2",
    "paper_regulariser": "z* = argmin ||x - az - b||^2 + s z^2 (unscaled regulariser)",
}


def claim(perturb: str | None = None, D: int = 1) -> list[Residual]:
    check_perturb(perturb, PERTURBATIONS)
    sig, s = sp.symbols("sigma s", positive=True)
    a = sp.Matrix(sp.symbols(f"a1:{D + 1}", positive=True))
    x = sp.Matrix(sp.symbols(f"x1:{D + 1}", real=True))
    b = sp.Matrix(sp.symbols(f"b1:{D + 1}", real=True))
    aa = (a.T * a)[0, 0]
    Sw = 1 / (1 / s + (aa if perturb == "missing_factor" else aa / sig**2))
    if perturb == "wrong_sign":
        mu = Sw * (a.T * (x + b))[0, 0] / sig**2
    elif perturb == "sigma_not_inverse":
        mu = Sw * (a.T * (x - b))[0, 0] * sig**2
    else:
        mu = Sw * (a.T * (x - b))[0, 0] / sig**2
    z = sp.Symbol("z", real=True)
    if perturb == "paper_regulariser":
        obj = ((x - a * z - b).T * (x - a * z - b))[0, 0] + s * z**2
    else:
        obj = ((x - a * z - b).T * (x - a * z - b))[0, 0]
    zstar = sp.solve(sp.diff(obj, z), z)[0]
    return [
        Residual(f"D={D}: lim mu = z*", sp.limit(mu, sig, 0, "+"), zstar),
        Residual(f"D={D}: lim Sw = 0", sp.limit(Sw, sig, 0, "+"), 0),
        Residual(f"D={D}: lim Sw/sig^2 = 1/|a|^2", sp.limit(Sw / sig**2, sig, 0, "+"), 1 / aa),
    ]


def prove(perturb: str | None = None) -> Verdict:
    for D in (1, 2):
        for res in claim(perturb, D):
            if not is_zero_rational(res.lhs - res.rhs):
                return Verdict(False, "FAILED", f"{res.label}: {res.lhs} != {res.rhs}")
    return Verdict(True, "proved", "S = 1, D = 1, 2")
