"""Theorem 1, eq. (5)-(7), end to end in one dimension (S = D = 1).

Claim: for z ~ N(0, s), x | z ~ N(a z + b, t) and a region (interval) omega = [l, u],

    int_l^u N(x; a z + b, t) N(z; 0, s) dz = N(x; b, t + a^2 s) * Phi_omega(mu(x), v),

with v = (1/s + a^2/t)^(-1), mu(x) = v a (x - b) / t (eq. 7) and
Phi_omega(mu, v) = (erf((u - mu)/sqrt(2 v)) - erf((l - mu)/sqrt(2 v))) / 2 (the truncated mass).

Method: the joint's exponent is expanded as c2 z^2 + c1 z + c0 (checked by ``cancel``); sympy
``integrate`` evaluates int_l^u exp(-alpha z^2 + beta z) dz with a positive symbol alpha (an ``erf``
expression), alpha = -c2 and beta = c1 are substituted, and the difference of the two sides is shown to
vanish by :func:`proofs._core.formal_zero` (exp/erf/sqrt formal normal form, then ``cancel``).
"""

from __future__ import annotations

import sympy as sp

from ._core import Residual, Verdict, check_perturb, formal_zero, is_zero_rational

EQUATION = "eq. (5)-(7), S = D = 1"
METHOD = "sympy integrate (erf) + formal exp/erf/sqrt normal form + cancel"
PERTURBATIONS = {
    "wrong_sign": "mu(x) = v a (x + b) / t",
    "missing_factor": "marginal variance t + a^2 (the factor s dropped)",
    "sigma_not_inverse": "mu(x) = v a (x - b) * t (Sigma_x instead of its inverse)",
}

x, b, a, l, u = sp.symbols("x b a l u", real=True)
s, t = sp.symbols("s t", positive=True)
z = sp.Symbol("z", real=True)
_alpha = sp.Symbol("alpha", positive=True)
_beta = sp.Symbol("beta", real=True)


def normal_pdf(y, mean, var):
    return sp.exp(-((y - mean) ** 2) / (2 * var)) / sp.sqrt(2 * sp.pi * var)


def posterior_params(perturb: str | None = None):
    """(mu(x), v) of eq. (7) in one dimension, optionally perturbed."""
    v = 1 / (1 / s + a**2 / t)
    if perturb == "wrong_sign":
        mu = v * a * (x + b) / t
    elif perturb == "sigma_not_inverse":
        mu = v * a * (x - b) * t
    else:
        mu = v * a * (x - b) / t
    return mu, v


def truncated_mass(mu, v, lo, hi):
    return (sp.erf((hi - mu) / sp.sqrt(2 * v)) - sp.erf((lo - mu) / sp.sqrt(2 * v))) / 2


def _kernel_integral():
    """int_l^u exp(-alpha z^2 + beta z) dz, by sympy integrate."""
    return sp.integrate(sp.exp(-_alpha * z**2 + _beta * z), (z, l, u))


def claim(perturb: str | None = None) -> list[Residual]:
    check_perturb(perturb, PERTURBATIONS)
    exponent = sp.expand(-((x - a * z - b) ** 2) / (2 * t) - z**2 / (2 * s))
    poly = sp.Poly(exponent, z)
    c2, c1, c0 = (poly.coeff_monomial(z**k) for k in (2, 1, 0))
    if not is_zero_rational(c2 * z**2 + c1 * z + c0 - exponent):
        raise AssertionError("exponent decomposition")
    const = 1 / sp.sqrt(2 * sp.pi * t) / sp.sqrt(2 * sp.pi * s)
    lhs = const * sp.exp(c0) * _kernel_integral().subs({_alpha: -c2, _beta: c1})
    mu, v = posterior_params(perturb)
    marg_var = t + a**2 if perturb == "missing_factor" else t + a**2 * s
    rhs = normal_pdf(x, b, marg_var) * truncated_mass(mu, v, l, u)
    return [Residual("int_omega joint dz = N(x; b, t + a^2 s) Phi_omega(mu, v)", lhs, rhs)]


def prove(perturb: str | None = None) -> Verdict:
    (res,) = claim(perturb)
    if formal_zero(res.lhs - res.rhs):
        return Verdict(True, "proved", "difference is formally 0")
    return Verdict(False, "FAILED", "difference does not vanish")
