"""Divergence-theorem facet formulas (Gaussian moments on a polyhedron without 2^S cones), S = 1 and S = 2.

The claim, stated here in full (it was cited as "NOTES.md Sec. 3", the project's design notes, which are not
part of the repository). The divergence theorem applied to ``Sig grad phi = -(z - mu) phi`` (phi the density of
N(mu, Sig)) on omega turns volume moments into facet integrals; on facet i the integral of phi is
``f_i(c_i) P(omega | u_i = c_i)`` (times ``|h_i|``, which cancels against the normal's ``1 / |h_i|``).
For z ~ N(mu, Sig) and omega = {H z <= c} with rows h_i, u_i = h_i^T z ~ N(h_i^T mu, h_i^T Sig h_i) with
density f_i:

    E[(z - mu) 1_omega]            = - Sig sum_i h_i f_i(c_i) P(omega | u_i = c_i)
    E[(z - mu)(z - mu)^T 1_omega]  = P(omega) Sig - Sig sum_i h_i f_i(c_i) E[(z - mu) 1_omega | u_i = c_i]^T

Method. S = 1: omega = [l, u] (h = +1, -1); both sides in closed form with the 1-D truncated moments
(proved in :mod:`proofs.truncated_moments`), difference zero by the formal exp/erf/sqrt normal form and
``cancel``. S = 2: omega is a general parallelogram {l <= B z <= u} with symbolic B (2x2), symbolic mu
and Sig = B^-1 diag(s1^2, s2^2) B^-T (correlated, facets not axis-aligned); y = B z has independent
coordinates, so the left sides are B^-1 E[(y - nu) 1] and B^-1 E[(y - nu)(y - nu)^T 1] B^-T with 1-D
truncated moments, while the right sides are built from h_i, c_i, f_i(c_i) = N(c_i; h_i^T mu, h_i^T Sig h_i)
and the conditional facet quantities; every entry of the difference is shown to vanish formally.
"""

from __future__ import annotations

import sympy as sp

from ._core import Residual, Verdict, check_perturb, formal_zero_all
from .truncated_moments import moments

EQUATION = "divergence theorem: E[(z-mu)1] and E[(z-mu)(z-mu)^T 1] as facet sums (module docstring), S = 1, 2"
METHOD = "closed-form 1-D moments; parallelogram via y = Bz; formal normal form + cancel"
PERTURBATIONS = {
    "wrong_sign": "E[(z-mu)1] = + Sig sum_i h_i f_i P_i",
    "missing_factor": "P(omega | u_i = c_i) dropped (taken as 1)",
    "sigma_not_inverse": "Sig^-1 in place of Sig in front of the facet sums",
}


def _normal(y, mean, var):
    return sp.exp(-((y - mean) ** 2) / (2 * var)) / sp.sqrt(2 * sp.pi * var)


def _centred(mean, sd, lo, hi):
    m0, m1, m2 = moments(mean, sd, lo, hi)
    return m0, m1 - mean * m0, m2 - 2 * mean * m1 + mean**2 * m0


def claim(perturb: str | None = None, S: int = 2) -> list[Residual]:
    check_perturb(perturb, PERTURBATIONS)
    sgn = 1 if perturb == "wrong_sign" else -1
    if S == 1:
        m, l, u = sp.symbols("mu l u", real=True)
        s = sp.Symbol("sigma", positive=True)
        Sig = s**2
        pre = 1 / Sig if perturb == "sigma_not_inverse" else Sig
        c0, c1, c2 = _centred(m, s, l, u)
        facets = [(1, u), (-1, -l)]  # (h, c); the facet point is z = h c
        cond1 = {u: u - m, -l: l - m}
        e1 = sgn * pre * sum(h * _normal(c, h * m, Sig) for h, c in facets)
        e2 = c0 * Sig + sgn * pre * sum(h * _normal(c, h * m, Sig) * cond1[c] for h, c in facets)
        return [Residual("S=1 first moment", e1, c1), Residual("S=1 second moment", e2, c2)]
    B = sp.Matrix(2, 2, sp.symbols("b11 b12 b21 b22", real=True))
    mu = sp.Matrix(sp.symbols("mu1 mu2", real=True))
    s = sp.symbols("s1 s2", positive=True)
    lo, hi = sp.symbols("l1 l2", real=True), sp.symbols("u1 u2", real=True)
    Bi = B.inv()
    Sig = (Bi * sp.diag(s[0] ** 2, s[1] ** 2) * Bi.T).applyfunc(sp.cancel)
    pre = Sig.inv().applyfunc(sp.cancel) if perturb == "sigma_not_inverse" else Sig
    nu = B * mu
    cm = [_centred(nu[k], s[k], lo[k], hi[k]) for k in range(2)]  # (m0, m1c, m2c) per y-coordinate
    P = cm[0][0] * cm[1][0]
    lhs1 = Bi * sp.Matrix([cm[0][1] * cm[1][0], cm[0][0] * cm[1][1]])
    My = sp.Matrix([[cm[0][2] * cm[1][0], cm[0][1] * cm[1][1]], [cm[0][1] * cm[1][1], cm[0][0] * cm[1][2]]])
    lhs2 = Bi * My * Bi.T
    sum1, sum2 = sp.zeros(2, 1), sp.zeros(2, 2)
    for k in range(2):
        other = 1 - k
        for sign, yval in ((1, hi[k]), (-1, lo[k])):
            h = sign * B[k, :].T
            c = sign * yval
            var = sp.cancel((h.T * Sig * h)[0, 0])
            f = _normal(c, sp.expand((h.T * mu)[0, 0]), var)
            p_cond = 1 if perturb == "missing_factor" else cm[other][0]
            ycond = [0, 0]
            ycond[k] = (yval - nu[k]) * cm[other][0]
            ycond[other] = cm[other][1]
            zcond = Bi * sp.Matrix(ycond)
            sum1 += h * f * p_cond
            sum2 += h * f * zcond.T
    rhs1 = sgn * pre * sum1
    rhs2 = P * Sig + sgn * pre * sum2
    out = [Residual(f"S=2 first moment [{i}]", rhs1[i], lhs1[i]) for i in range(2)]
    out += [
        Residual(f"S=2 second moment [{i},{j}]", rhs2[i, j], lhs2[i, j])
        for i in range(2)
        for j in range(i, 2)
    ]
    return out


def prove(perturb: str | None = None) -> Verdict:
    for S in (1, 2):
        for res in claim(perturb, S):
            if not formal_zero_all([res.lhs - res.rhs]):
                return Verdict(False, "FAILED", f"{res.label} does not vanish")
    return Verdict(True, "proved", "S = 1 interval; S = 2 general parallelogram, correlated Sig")
