"""Theorem 1 core identity (completing the square), eq. (5)-(7):

    N(x; A z + b, Sx) N(z; 0, Sz) = N(x; b, Sx + A Sz A^T) N(z; mu(x), Sw),
    Sw = (Sz^-1 + A^T Sx^-1 A)^-1,   mu(x) = Sw A^T Sx^-1 (x - b).

Compared as log-densities, the claim splits into
  (i)  the quadratic forms:  (x-Az-b)^T Sx^-1 (x-Az-b) + z^T Sz^-1 z
                             - (x-b)^T (Sx + A Sz A^T)^-1 (x-b) - (z-mu)^T Sw^-1 (z-mu) = 0;
  (ii) the normalising constants: det(Sx) det(Sz) - det(Sx + A Sz A^T) det(Sw) = 0
       (a comparison of squares of the constants, so no square roots are involved).

Methods.
* :func:`prove` -- fully symbolic for every (S, D) with S, D <= 2: A, b, x, z and the symmetric Sx, Sz
  have independent symbolic entries; both residuals are rational functions, put over one denominator
  (``together``) and shown to vanish by expanding the numerator as a sparse polynomial.
* :func:`prove_random` -- larger (S, D): the entries are drawn uniformly from a set of M integers and
  both residuals are evaluated exactly with ``fractions.Fraction``. Multiplying the residual by the
  product of denominators det(Sx) det(Sz) det(Sx + A Sz A^T) det(N)^2 (N = det(Sx)det(Sz) Sw^-1 is a
  polynomial matrix) gives a polynomial P of total degree <= ``degree_bound(S, D)``. If the identity were
  false, P would be a nonzero polynomial and by the Schwartz-Zippel lemma one trial would pass with
  probability <= deg/M (draws with a vanishing denominator are redrawn); k independent trials pass with
  probability <= (deg/M)^k, which is reported.
"""

from __future__ import annotations

import random
from fractions import Fraction

import sympy as sp

from ._core import Residual, Verdict, check_perturb, sym_matrix

EQUATION = "Theorem 1, eq. (5)-(7)"
METHOD = "symbolic, all S,D <= 2: cleared numerators of exponent and determinants expand to 0"
METHOD_RANDOM = "exact rationals at random integer points (Schwartz-Zippel)"
PERTURBATIONS = {
    "wrong_sign": "mu(x) = Sw A^T Sx^-1 (x + b)",
    "missing_factor": "marginal covariance Sx + A A^T (Sz dropped)",
    "sigma_not_inverse": "mu(x) = Sw A^T Sx (x - b) (Sx instead of Sx^-1)",
    "transpose": "Sw = (Sz^-1 + A^T Sx^-1 A)^-1 replaced by (Sz^-1 + A^T Sx A)^-1",
}
SYMBOLIC_DIMS = ((1, 1), (1, 2), (2, 1))  # plus (2, 2) by claim_22
RANDOM_DIMS = ((3, 3), (3, 5), (4, 6), (5, 8))


# ------------------------------------------------------------------ formulas (generic over a "field")
def _formulas(A, b, x, z, Sx, Sz, inv, det, perturb):
    """Both residuals of the identity, for matrices supporting +, -, @ and the given inv/det."""
    Sx_i = inv(Sx)
    Sz_i = inv(Sz)
    K = Sx + A @ A.T if perturb == "missing_factor" else Sx + A @ Sz @ A.T
    Lam = Sz_i + A.T @ (Sx if perturb == "transpose" else Sx_i) @ A  # Sw^-1
    Sw = inv(Lam)
    if perturb == "wrong_sign":
        mu = Sw @ A.T @ Sx_i @ (x + b)
    elif perturb == "sigma_not_inverse":
        mu = Sw @ A.T @ Sx @ (x - b)
    else:
        mu = Sw @ A.T @ Sx_i @ (x - b)
    r = x - A @ z - b
    d = z - mu
    lhs_q = (r.T @ Sx_i @ r)[0, 0] + (z.T @ Sz_i @ z)[0, 0]
    rhs_q = ((x - b).T @ inv(K) @ (x - b))[0, 0] + (d.T @ Lam @ d)[0, 0]
    return lhs_q - rhs_q, det(Sx) * det(Sz) - det(K) * det(Sw)


class _Frac:
    """A fraction num/den of sparse polynomials (sympy ``ring``), kept WITHOUT gcd cancellation.

    Equality is cross-multiplication, so ``x == 0`` iff the numerator polynomial is identically 0: an
    exact test of the rational function (the expansion of the cleared numerator, i.e. ``together``)."""

    __slots__ = ("num", "den")

    def __init__(self, num, den):
        self.num, self.den = num, den

    def _lift(self, o):
        return o if isinstance(o, _Frac) else _Frac(self.num.ring(o), self.num.ring(1))

    def __add__(self, o):
        o = self._lift(o)
        if self.den == o.den:
            return _Frac(self.num + o.num, self.den)
        return _Frac(self.num * o.den + o.num * self.den, self.den * o.den)

    __radd__ = __add__

    def __neg__(self):
        return _Frac(-self.num, self.den)

    def __sub__(self, o):
        return self + (-self._lift(o))

    def __rsub__(self, o):
        return self._lift(o) - self

    def __mul__(self, o):
        o = self._lift(o)
        if self.den == o.num:
            return _Frac(self.num, o.den)
        if o.den == self.num:
            return _Frac(o.num, self.den)
        return _Frac(self.num * o.num, self.den * o.den)

    __rmul__ = __mul__

    def __truediv__(self, o):
        o = self._lift(o)
        if o.num == 0:
            raise ZeroDivisionError
        return self * _Frac(o.den, o.num)

    def __eq__(self, o):
        o = self._lift(o)
        return self.num * o.den == o.num * self.den

    def __ne__(self, o):
        return not self == o

    __hash__ = None


def _adj_inv(M: _FMat) -> _FMat:
    """Inverse by the adjugate (sizes 1 and 2), no pivoting on symbolic entries."""
    n = len(M.r)
    if n == 1:
        e = M.r[0][0]
        return _FMat([[_Frac(e.den, e.num) if isinstance(e, _Frac) else 1 / e]])
    (a, b), (c, d) = M.r
    det = a * d - b * c
    return _FMat([[d / det, -b / det], [-c / det, a / det]])


def _adj_det(M: _FMat):
    if len(M.r) == 1:
        return M.r[0][0]
    (a, b), (c, d) = M.r
    return a * d - b * c



def _symbolic_matrices(S: int, D: int):
    """Symbolic A, b, x, z, Sx, Sz (symmetric covariances) and the polynomial ring of their entries."""
    mats = {
        "A": sym_matrix("a", D, S), "b": sym_matrix("b", D, 1), "x": sym_matrix("x", D, 1),
        "z": sym_matrix("z", S, 1), "Sx": sym_matrix("p", D, symmetric=True),
        "Sz": sym_matrix("q", S, symmetric=True),
    }
    gens = sorted(set().union(*(m.free_symbols for m in mats.values())), key=str)
    ring, *_ = sp.ring(gens, sp.QQ)
    return mats, ring


def claim(perturb: str | None = None, S: int = 2, D: int = 2) -> list[Residual]:
    """Symbolic residuals (exponent, normaliser) for latent dim S <= 2 and output dim D <= 2.

    Entries are independent symbols; the arithmetic is exact over sparse rational polynomials, with
    fractions kept uncancelled (:class:`_Frac`). Each residual is returned as a :class:`_Frac`; it
    vanishes iff its numerator polynomial is identically 0."""
    check_perturb(perturb, PERTURBATIONS)
    if max(S, D) > 2:
        raise ValueError("the symbolic proof is for S, D <= 2; use claim_random for larger dims")
    mats, ring = _symbolic_matrices(S, D)
    one = ring(1)
    f = {
        k: _FMat([[_Frac(ring(e), one) for e in m.row(i)] for i in range(m.rows)])
        for k, m in mats.items()
    }
    e, n = _formulas(f["A"], f["b"], f["x"], f["z"], f["Sx"], f["Sz"], _adj_inv, _adj_det, perturb)
    return [Residual(f"exponent (S={S}, D={D})", e), Residual(f"normaliser (S={S}, D={D})", n)]


def claim_22() -> list[Residual]:
    """S = D = 2, the true formula only, with hand-cleared denominators (faster than :func:`claim`):
    Sx^-1 = adj(Sx)/dx, Sw^-1 = N/(dx dz) with N = dx adj(Sz) + dz A^T adj(Sx) A, Sw = dx dz adj(N)/dN,
    mu = dz adj(N) A^T adj(Sx)(x - b)/dN. The exponent residual times dx dz dK dN^2 and the normaliser
    residual times dN are polynomials; both must expand to 0."""
    S = D = 2
    mats, ring = _symbolic_matrices(S, D)
    A, b, x, z, Sx, Sz = (
        _FMat([[ring(e) for e in mats[k].row(i)] for i in range(mats[k].rows)])
        for k in ("A", "b", "x", "z", "Sx", "Sz")
    )

    def adj(M):
        (p, q), (r, s_) = M.r
        return _FMat([[s_, -q], [-r, p]])

    def sc(c, M):
        return _FMat([[c * e for e in row] for row in M.r])

    dx, dz = _adj_det(Sx), _adj_det(Sz)
    K = Sx + A @ Sz @ A.T
    dK = _adj_det(K)
    N = sc(dx, adj(Sz)) + sc(dz, A.T @ adj(Sx) @ A)
    dN = _adj_det(N)
    m = sc(dz, adj(N) @ A.T @ adj(Sx) @ (x - b))
    r, w, xb = x - A @ z - b, sc(dN, z) - m, x - b
    exponent = (
        dz * dK * dN**2 * (r.T @ adj(Sx) @ r)[0, 0] + dx * dK * dN**2 * (z.T @ adj(Sz) @ z)[0, 0]
        - dx * dz * dN**2 * (xb.T @ adj(K) @ xb)[0, 0] - dK * (w.T @ N @ w)[0, 0]
    )
    normaliser = dx * dz * dN - dK * (dx * dz) ** S
    return [Residual("exponent (S=2, D=2), cleared", exponent), Residual("normaliser (S=2, D=2)", normaliser)]


def prove(perturb: str | None = None) -> Verdict:
    """Symbolic proof for (S, D) in SYMBOLIC_DIMS (any perturbation) and (2, 2) (true formula only:
    every perturbation already fails at a smaller size, which the tests assert)."""
    check_perturb(perturb, PERTURBATIONS)
    for S, D in SYMBOLIC_DIMS:
        for res in claim(perturb, S, D):
            if res.lhs - res.rhs != 0:
                return Verdict(False, "FAILED", f"{res.label}: cleared numerator is not 0")
    for res in claim_22():
        if res.lhs != 0:
            return Verdict(False, "FAILED", f"{res.label}: polynomial is not 0")
    return Verdict(True, "proved", f"dims (S, D) in {list(SYMBOLIC_DIMS) + [(2, 2)]}")


# ------------------------------------------------------------------ exact rational evaluation
class _FMat:
    """Minimal exact matrix over a field (Fraction, or sympy frac_field elements), row-major."""

    def __init__(self, rows):
        self.r = [list(row) for row in rows]

    @property
    def shape(self):
        return len(self.r), len(self.r[0])

    @property
    def T(self):
        return _FMat(list(zip(*self.r)))

    def __add__(self, o):
        return _FMat([[p + q for p, q in zip(a, c)] for a, c in zip(self.r, o.r)])

    def __sub__(self, o):
        return _FMat([[p - q for p, q in zip(a, c)] for a, c in zip(self.r, o.r)])

    def __matmul__(self, o):
        cols = list(zip(*o.r))
        return _FMat([[sum(p * q for p, q in zip(row, col)) for col in cols] for row in self.r])

    def __getitem__(self, ij):
        return self.r[ij[0]][ij[1]]


def _det(M: _FMat) -> Fraction:
    a = [row[:] for row in M.r]
    n = len(a)
    zero = a[0][0] * 0
    det = zero + 1
    for c in range(n):
        p = next((i for i in range(c, n) if a[i][c] != 0), None)
        if p is None:
            return zero
        if p != c:
            a[c], a[p] = a[p], a[c]
            det = -det
        det *= a[c][c]
        for i in range(c + 1, n):
            f = a[i][c] / a[c][c]
            if f:
                a[i] = [vi - f * vc for vi, vc in zip(a[i], a[c])]
    return det


class _Singular(Exception):
    pass


def _inv(M: _FMat) -> _FMat:
    n = len(M.r)
    zero = M.r[0][0] * 0
    a = [row[:] + [zero + int(i == j) for j in range(n)] for i, row in enumerate(M.r)]
    for c in range(n):
        p = next((i for i in range(c, n) if a[i][c] != 0), None)
        if p is None:
            raise _Singular
        a[c], a[p] = a[p], a[c]
        piv = a[c][c]
        a[c] = [v / piv for v in a[c]]
        for i in range(n):
            if i != c and a[i][c] != 0:
                f = a[i][c]
                a[i] = [vi - f * vc for vi, vc in zip(a[i], a[c])]
    return _FMat([row[n:] for row in a])


def degree_bound(S: int, D: int) -> int:
    """Total degree bound of the cleared-denominator polynomials of both residuals (see module doc)."""
    dK, dL = 3 * D, S * (S + D + 1)
    n_mu = S + (S - 1) * (S + D + 1) + D + 1
    w = max(dL + 1, n_mu)
    exponent = max(
        D + 3 + S + dK + 2 * dL,
        S + 1 + D + dK + 2 * dL,
        3 * D - 1 + D + S + 2 * dL,
        2 * w + S + D + 1 + dK,
    )
    normaliser = max(D + S + dL, dK + S * (D + S))
    return max(exponent, normaliser)


def claim_random(perturb: str | None = None, S: int = 3, D: int = 5, M: int = 2**40, seed: int = 0):
    """Both residuals evaluated exactly at one random integer point (redrawn while singular)."""
    check_perturb(perturb, PERTURBATIONS)
    rng = random.Random(seed)

    def draw(rows, cols, symmetric=False):
        m = [[Fraction(rng.randrange(-M // 2, M // 2)) for _ in range(cols)] for _ in range(rows)]
        if symmetric:
            for i in range(rows):
                for j in range(i):
                    m[i][j] = m[j][i]
        return _FMat(m)

    while True:
        A, b, x, z = draw(D, S), draw(D, 1), draw(D, 1), draw(S, 1)
        Sx, Sz = draw(D, D, True), draw(S, S, True)
        try:
            e, n = _formulas(A, b, x, z, Sx, Sz, _inv, _det, perturb)
        except _Singular:
            continue
        return [Residual(f"exponent (S={S}, D={D})", e), Residual(f"normaliser (S={S}, D={D})", n)]


def prove_random(perturb: str | None = None, trials: int = 2, M: int = 2**40) -> Verdict:
    worst = 0.0
    for S, D in RANDOM_DIMS:
        for k in range(trials):
            for res in claim_random(perturb, S, D, M, seed=1000 * S + 10 * D + k):
                if res.lhs - res.rhs != 0:
                    return Verdict(False, "FAILED", f"{res.label} = {float(res.lhs - res.rhs):.3e} != 0")
        worst = max(worst, (degree_bound(S, D) / M) ** trials)
    return Verdict(
        True, "checked",
        f"dims {list(RANDOM_DIMS)}, {trials} trials each, M = 2^{M.bit_length() - 1}; "
        f"P(false identity passes) <= {worst:.1e} per dims (Schwartz-Zippel, deg <= "
        f"{max(degree_bound(S, D) for S, D in RANDOM_DIMS)})",
    )
