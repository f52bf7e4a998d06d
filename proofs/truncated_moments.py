"""1-D truncated moments in closed form (the building blocks of Phi_omega and of the E-step moments,
Sec. 4.1 / Appendix B, in S = 1).

For z ~ N(mu, sig^2), omega = [l, u], alpha = (l - mu)/sig, beta = (u - mu)/sig, phi the standard
normal density and Phi(y) = (1 + erf(y/sqrt 2))/2:

    m0 = E[1_omega]      = Phi(beta) - Phi(alpha)
    m1 = E[z 1_omega]    = mu m0 + sig (phi(alpha) - phi(beta))
    m2 = E[z^2 1_omega]  = (mu^2 + sig^2) m0 + 2 mu sig (phi(alpha) - phi(beta))
                           + sig^2 (alpha phi(alpha) - beta phi(beta))

Method (fundamental theorem of calculus): each closed form F_k(l, u) satisfies
dF_k/du - u^k N(u; mu, sig^2) = 0, dF_k/dl + l^k N(l; mu, sig^2) = 0 and F_k(l, l) = 0, all shown
with the formal exp/erf/sqrt normal form + ``cancel``; hence F_k = int_l^u z^k N(z) dz.
"""

from __future__ import annotations

import sympy as sp

from ._core import Residual, Verdict, check_perturb, formal_zero

EQUATION = "Sec. 4.1 / App. B moments, S = 1"
METHOD = "FTC: d/du, d/dl of closed form minus integrand, formal normal form + cancel"
PERTURBATIONS = {
    "wrong_sign": "m1 = mu m0 - sig (phi(alpha) - phi(beta))",
    "missing_factor": "m2 without the factor 2 in 2 mu sig (phi(alpha) - phi(beta))",
    "sigma_not_inverse": "alpha, beta scaled by sig instead of 1/sig",
}

mu, l, u = sp.symbols("mu l u", real=True)
sig = sp.Symbol("sigma", positive=True)


def phi(y):
    return sp.exp(-(y**2) / 2) / sp.sqrt(2 * sp.pi)


def Phi(y):
    return (1 + sp.erf(y / sp.sqrt(2))) / 2


def moments(mean, sd, lo, hi, perturb: str | None = None):
    """(m0, m1, m2) on [lo, hi] for N(mean, sd^2)."""
    if perturb == "sigma_not_inverse":
        al, be = (lo - mean) * sd, (hi - mean) * sd
    else:
        al, be = (lo - mean) / sd, (hi - mean) / sd
    m0 = Phi(be) - Phi(al)
    dphi = phi(al) - phi(be)
    m1 = mean * m0 + (-1 if perturb == "wrong_sign" else 1) * sd * dphi
    two = 1 if perturb == "missing_factor" else 2
    m2 = (mean**2 + sd**2) * m0 + two * mean * sd * dphi + sd**2 * (al * phi(al) - be * phi(be))
    return m0, m1, m2


def claim(perturb: str | None = None) -> list[Residual]:
    check_perturb(perturb, PERTURBATIONS)
    dens = lambda y: phi((y - mu) / sig) / sig
    out = []
    for k, F in enumerate(moments(mu, sig, l, u, perturb)):
        out.append(Residual(f"d m{k}/du = u^{k} N(u)", sp.diff(F, u), u**k * dens(u)))
        out.append(Residual(f"d m{k}/dl = -l^{k} N(l)", sp.diff(F, l), -(l**k) * dens(l)))
        out.append(Residual(f"m{k}(l, l) = 0", F.subs(u, l)))
    return out


def prove(perturb: str | None = None) -> Verdict:
    for res in claim(perturb):
        if not formal_zero(res.lhs - res.rhs):
            return Verdict(False, "FAILED", f"{res.label} does not hold")
    return Verdict(True, "proved", "m0, m1, m2 on [l, u]")
