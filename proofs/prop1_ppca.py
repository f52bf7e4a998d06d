"""Prop. 1 (mixture weights are the prior masses) and the PPCA reduction, S = D = 1.

(a) Mixture weight of region omega = [l, u]: integrating the omega-term of eq. (5) over x gives the
    prior mass,  int N(x; b, t + a^2 s) Phi_omega(mu(x), v) dx = Phi_omega(0, s)  (Prop. 1).
    Method: both sides vanish at u = l; their u-derivatives agree: d/du of the left side is
    int N(x; b, t + a^2 s) N(u; mu(x), v) dx, evaluated by sympy ``integrate`` of exp(-alpha x^2 + beta x)
    over R (alpha, beta read off the expanded exponent), compared with N(u; 0, s) in formal normal form.
(b) The prior masses of a complete partition (-oo, c1], [c1, c2], [c2, oo) sum to 1 (``limit``).
(c) PPCA reduction: with one region (l -> -oo, u -> oo, sympy ``limit``) the mass factor of eq. (5) is 1,
    so p(x) = N(x; b, t + a^2 s).
"""

from __future__ import annotations

import sympy as sp

from ._core import Residual, Verdict, check_perturb, formal_zero
from .theorem1_marginal_1d import a, b, l, normal_pdf, posterior_params, s, t, truncated_mass, u, x

EQUATION = "Prop. 1 and PPCA (eq. 5 with one region)"
METHOD = "d/du + sympy integrate over x; limits at +-oo; formal normal form"
PERTURBATIONS = {
    "wrong_sign": "mu(x) = v a (x + b)/t",
    "missing_factor": "marginal variance t + a^2 (s dropped)",
    "sigma_not_inverse": "mu(x) = v a (x - b) t",
}

_al = sp.Symbol("alpha", positive=True)
_be = sp.Symbol("beta", real=True)


def claim(perturb: str | None = None) -> list[Residual]:
    check_perturb(perturb, PERTURBATIONS)
    mu, v = posterior_params(perturb)
    K = t + a**2 if perturb == "missing_factor" else t + a**2 * s
    # (a) d/du of the omega-term integrated over x
    integrand = normal_pdf(x, b, K) * normal_pdf(u, mu, v)
    expo = sp.Add(*[e.args[0] for e in sp.Mul.make_args(integrand) if isinstance(e, sp.exp)])
    rest = sp.Mul(*[e for e in sp.Mul.make_args(integrand) if not isinstance(e, sp.exp)])
    poly = sp.Poly(sp.expand(sp.cancel(expo)), x)
    c2, c1, c0 = (poly.coeff_monomial(x**k) for k in (2, 1, 0))
    kernel = sp.integrate(sp.exp(-_al * x**2 + _be * x), (x, -sp.oo, sp.oo))
    lhs_a = rest * sp.exp(c0) * kernel.subs({_al: sp.cancel(-c2), _be: c1})
    out = [Residual("d/du int_x (omega-term) dx = N(u; 0, s)", lhs_a, normal_pdf(u, 0, s))]
    out.append(Residual("both sides vanish at u = l", truncated_mass(0, s, l, l)))
    # (b) prior masses of a complete partition sum to 1
    c1_, c2_ = sp.symbols("c1 c2", real=True)
    y = sp.Symbol("y", real=True)
    total = (sp.limit(truncated_mass(0, s, y, c1_), y, -sp.oo) + truncated_mass(0, s, c1_, c2_)
             + sp.limit(truncated_mass(0, s, c2_, y), y, sp.oo))
    out.append(Residual("sum of prior masses = 1", total, 1))
    # (c) PPCA: one region
    mass = sp.limit(sp.limit(truncated_mass(mu, v, l, u), u, sp.oo), l, -sp.oo)
    out.append(Residual("one region: p(x) = N(x; b, t + a^2 s)", normal_pdf(x, b, K) * mass,
                        normal_pdf(x, b, t + a**2 * s)))
    return out


def prove(perturb: str | None = None) -> Verdict:
    for res in claim(perturb):
        if not formal_zero(res.lhs - res.rhs):
            return Verdict(False, "FAILED", f"{res.label} does not hold")
    return Verdict(True, "proved", "weights = prior masses; masses sum to 1; one region is PPCA")
