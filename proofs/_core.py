"""Shared machinery of the proofs: the claim record, the verdict and the exact zero-tests.

Zero-tests never rely on ``simplify``. Rational functions are tested with ``together``/``cancel``;
expressions that also contain ``exp``, ``erf`` and square roots are first put in a *formal* normal
form (:func:`formal_zero`): every ``sqrt(p)`` becomes a new symbol ``r`` with the relation ``r**2 = p``,
the ``exp`` factors of each term are merged into one exponential whose exponent is cancelled, and every
``erf`` argument is cancelled and sign-normalised (``erf`` is odd). The result is a rational function in
the original symbols and these new atoms; it is reduced modulo the relations ``r**2 = p`` and tested
with ``cancel``. The map from the formal ring to functions is a ring homomorphism, so a formal zero is
a true zero: the test can fail to recognise a true identity (it would then report FAILED), but it can
never pass a false one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import sympy as sp

__all__ = [
    "Claim",
    "ClaimResult",
    "Residual",
    "Verdict",
    "check_perturb",
    "formal_zero",
    "is_zero_rational",
    "matrix_is_zero",
    "run_claim",
    "sym_matrix",
]


@dataclass(frozen=True)
class Residual:
    """One equality to establish: ``lhs == rhs`` (``rhs`` is 0 when the claim is 'this vanishes')."""

    label: str
    lhs: object
    rhs: object = 0


@dataclass(frozen=True)
class Verdict:
    """Outcome of one proof: ``ok``; ``status`` is 'proved' (symbolic identity), 'checked' (exact
    evaluation with a stated bound, or an exhaustive finite enumeration) or 'FAILED'."""

    ok: bool
    status: str
    detail: str = ""


@dataclass(frozen=True)
class Claim:
    """A registered claim: ``prove(perturb)`` returns a :class:`Verdict`; ``perturbations`` names the
    deliberately wrong variants (name -> description) under which the proof must FAIL."""

    key: str
    title: str
    equation: str
    method: str
    prove: Callable[[str | None], Verdict]
    perturbations: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ClaimResult:
    key: str
    title: str
    equation: str
    method: str
    status: str
    ok: bool
    seconds: float
    detail: str

    def as_dict(self) -> dict:
        return {
            "claim": self.key,
            "title": self.title,
            "equation": self.equation,
            "method": self.method,
            "status": self.status,
            "ok": self.ok,
            "seconds": round(self.seconds, 3),
            "detail": self.detail,
        }


def run_claim(claim: Claim, perturb: str | None = None) -> ClaimResult:
    """Run one claim, timing it; an exception is a failure (status 'ERROR')."""
    t0 = time.perf_counter()
    try:
        verdict = claim.prove(perturb)
    except Exception as exc:  # a crash in a proof must show up as a failure, never as a pass
        verdict = Verdict(False, "ERROR", f"{type(exc).__name__}: {exc}")
    seconds = time.perf_counter() - t0
    return ClaimResult(
        claim.key, claim.title, claim.equation, claim.method, verdict.status, verdict.ok, seconds,
        verdict.detail,
    )


def check_perturb(perturb: str | None, allowed: dict[str, str]) -> None:
    """Reject unknown perturbation names (a typo must not silently test the true formula)."""
    if perturb is not None and perturb not in allowed:
        raise ValueError(f"unknown perturbation {perturb!r}; known: {sorted(allowed)}")


def sym_matrix(name: str, rows: int, cols: int | None = None, symmetric: bool = False, **assumptions):
    """A matrix of fresh symbols ``name_ij``; ``symmetric=True`` shares ``name_ij`` and ``name_ji``."""
    cols = rows if cols is None else cols
    entries = {}
    for i in range(rows):
        for j in range(cols):
            key = (min(i, j), max(i, j)) if symmetric else (i, j)
            if key not in entries:
                entries[key] = sp.Symbol(f"{name}_{key[0] + 1}{key[1] + 1}", **assumptions)
    return sp.Matrix(
        rows, cols, lambda i, j: entries[(min(i, j), max(i, j)) if symmetric else (i, j)]
    )


def is_zero_rational(expr) -> bool:
    """Exact zero-test of a rational function: ``together`` then ``cancel`` must give 0."""
    expr = sp.sympify(expr)
    num, _ = sp.fraction(sp.together(expr))
    return sp.expand(num) == 0 or sp.cancel(expr) == 0


def matrix_is_zero(m) -> bool:
    return all(is_zero_rational(e) for e in sp.Matrix(m))


# ---------------------------------------------------------------- formal normal form (exp, erf, sqrt)


class _Formal:
    """Formal normal form of expressions built from rational functions, sqrt, exp and erf."""

    def __init__(self) -> None:
        self.rad: dict[sp.Expr, sp.Symbol] = {}  # base -> r with r**2 = base
        self.exps: list[tuple[sp.Expr, sp.Symbol]] = []  # canonical exponent -> symbol
        self.erfs: list[tuple[sp.Expr, sp.Symbol]] = []  # canonical argument -> symbol

    # -- radicals
    def _radical_symbol(self, base):
        for b, r in self.rad.items():
            if sp.expand(b - base) == 0:
                return r
        r = sp.Dummy(f"r{len(self.rad)}", positive=True)
        self.rad[base] = r
        return r

    def radicals(self, expr):
        expr = sp.sympify(expr)

        def split_half(p):
            base, e = p.base, p.exp
            n = int(e * 2)  # odd
            base_f = sp.factor(base)
            factors = [
                (f.base, f.exp) if (f.is_Pow and f.exp.is_Integer) else (f, sp.Integer(1))
                for f in sp.Mul.make_args(base_f)
            ]
            if not all(fb.is_positive is True for fb, _ in factors):
                # sqrt(f1*f2) = sqrt(f1)*sqrt(f2) needs positive factors: keep the base whole
                factors = [(sp.expand(base), sp.Integer(1))]
            out = sp.Integer(1)
            for fb, fe in factors:
                total = fe * n  # the exponent of fb is total/2
                q, rem = divmod(int(total), 2)
                out *= fb**q
                if rem:
                    out *= self._radical_symbol(sp.expand(fb))
            return out

        def is_half(p):
            return p.is_Pow and p.exp.is_Rational and p.exp.q == 2

        return expr.replace(is_half, split_half)

    def reduce(self, expr):
        """Reduce modulo r**2 = base and cancel (r never occurs in a denominator here)."""
        num, den = sp.fraction(sp.together(expr))
        num = self._reduce_poly(sp.expand(num))
        den = self._reduce_poly(sp.expand(den))
        return sp.cancel(num / den)

    def _reduce_poly(self, poly_expr):
        if not self.rad:
            return poly_expr
        rs = list(self.rad.values())
        bases = {r: b for b, r in self.rad.items()}
        changed = True
        while changed:
            changed = False
            terms = []
            for term in sp.Add.make_args(poly_expr):
                new = term
                for r in rs:
                    k = sp.degree(new, r) if new.has(r) else 0
                    if k >= 2:
                        new = sp.expand(new / r**k * r ** (k % 2) * bases[r] ** (k // 2))
                        changed = True
                terms.append(new)
            poly_expr = sp.expand(sp.Add(*terms))
        return poly_expr

    # -- atoms
    def _atom(self, table, arg, odd: bool, prefix: str):
        arg = self.reduce(self.radicals(arg))
        for key, sym in table:
            if self.reduce(arg - key) == 0:
                return sym
            if odd and self.reduce(arg + key) == 0:
                return -sym
        sym = sp.Dummy(f"{prefix}{len(table)}")
        table.append((arg, sym))
        return sym

    def normal(self, expr):
        """Rational function in symbols, radical symbols, exp symbols and erf symbols."""
        expr = sp.sympify(expr)
        erf_map = {}
        for e in expr.atoms(sp.erf):
            erf_map[e] = self._atom(self.erfs, e.args[0], True, "F")
        expr = expr.xreplace(erf_map)
        holders: dict[sp.Expr, sp.Symbol] = {}
        for e in expr.atoms(sp.exp):
            holders[e] = sp.Dummy("Z")
        exponent_of = {z: e.args[0] for e, z in holders.items()}
        expr = self.radicals(expr.xreplace(holders))
        num, den = sp.fraction(sp.together(expr))
        den_poly = sp.Poly(den, *exponent_of) if exponent_of else None
        den_shift = sp.Integer(0)
        if den_poly is not None:
            if len(den_poly.terms()) != 1:
                raise ValueError("a sum of exponentials in a denominator is not supported")
            (powers, coeff), = den_poly.terms()
            den_shift = sum(k * exponent_of[z] for k, z in zip(powers, den_poly.gens))
            den = coeff
        out = []
        for term in sp.Add.make_args(sp.expand(num)):
            exponent = -den_shift
            rest = sp.Integer(1)
            for f in sp.Mul.make_args(term):
                base, k = (f.base, f.exp) if f.is_Pow else (f, sp.Integer(1))
                if base in exponent_of:
                    exponent += k * exponent_of[base]
                else:
                    rest *= f
            if exponent != 0:
                rest *= self._atom(self.exps, exponent, False, "E")
            out.append(rest)
        return self.reduce(sp.Add(*out) / den)


def formal_zero(expr) -> bool:
    """Sound zero-test for expressions in rational functions, sqrt, exp and erf (see module doc)."""
    return _Formal().normal(expr) == 0


def formal_zero_all(exprs) -> bool:
    """All expressions vanish, with one shared table of atoms."""
    f = _Formal()
    return all(f.normal(e) == 0 for e in exprs)
