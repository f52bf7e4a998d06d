"""Cross-check another implementation's claimed numbers against the exact engine (Theorem 1, Prop. 2).

``crosscheck(net, X, claims)`` recomputes every claimed field exactly with :func:`engine.evaluate`
(itself verified by ``python -m verify`` against 30-digit quadrature) and compares:

* ``log_marginal``: ``|claimed - exact| <= tol_logp`` nats (default 1e-8),
* ``posterior_mean`` / ``posterior_cov``: ``|claimed - exact| <= tol_moments * max(1, |exact|)`` (1e-7),
* ``n_regions``: exact equality.

Wrong answers this catches (tests show each): a constant offset in log p, a missing or duplicated
region term, variance/standard-deviation confusion, moments that ignore truncation, a mixture
covariance without its between-region term, unbounded regions clipped to a box.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from engine.errors import DGNInputError

from .checks import compare
from .foreign import CLAIM_FIELDS, validate_claims


@dataclass
class FieldResult:
    name: str
    tolerance: float
    max_abs_err: float
    max_rel_err: float
    n_values: int
    n_bad: int
    worst: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.n_bad == 0

    def line(self) -> str:
        status = "PASS" if self.ok else "FAIL"
        out = (
            f"{status:<5} {self.name:<15} tol {self.tolerance:.1e}  max abs err {self.max_abs_err:.3e}  "
            f"max rel err {self.max_rel_err:.3e}  {self.n_bad} of {self.n_values} bad"
        )
        if not self.ok:
            out += "\n      worst points: " + "; ".join(
                f"{w['at']}: {w['got']!r} != {w['wanted']!r} ({w['rel_err']:.2e} rel)" for w in self.worst
            )
        return out


@dataclass
class CrosscheckResult:
    fields: dict[str, FieldResult]
    n_points: int

    @property
    def ok(self) -> bool:
        return all(f.ok for f in self.fields.values())

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1

    def text(self) -> str:
        head = f"crosscheck of {len(self.fields)} claimed field(s) on {self.n_points} point(s): " + (
            "all agree" if self.ok else "DISAGREEMENT"
        )
        return "\n".join([head] + [f.line() for f in self.fields.values()])

    def to_dict(self) -> dict:
        from .checks import _jsonable

        return _jsonable(
            {
                "ok": self.ok,
                "n_points": self.n_points,
                "fields": {k: {**vars(v), "ok": v.ok} for k, v in self.fields.items()},
            }
        )


def crosscheck(
    net,
    X,
    claims: dict,
    tol_logp: float = 1e-8,
    tol_moments: float = 1e-7,
    *,
    evaluation=None,
    max_regions: int | None = None,
) -> CrosscheckResult:
    """Recompute each claimed quantity exactly and compare (raises DGNInputError on malformed input)."""
    from engine.distributions import _check_data, evaluate

    for name, tol in (("tol_logp", tol_logp), ("tol_moments", tol_moments)):
        if not (isinstance(tol, int | float) and np.isfinite(tol) and tol > 0):
            raise DGNInputError(name, f"must be a positive number, got {tol!r}")
    X = _check_data(net, X)
    claims = validate_claims(claims, net, len(X))
    if evaluation is None:
        kw = {} if max_regions is None else {"max_regions": max_regions}
        evaluation = evaluate(net, X, **kw)
    labels = [f"x[{i}]" for i in range(len(X))]
    out: dict[str, FieldResult] = {}
    for name in CLAIM_FIELDS:
        if name not in claims:
            continue
        got = claims[name]
        if name == "n_regions":
            bad = int(got != evaluation.n_regions)
            err = float(abs(got - evaluation.n_regions))
            out[name] = FieldResult(
                name,
                0.0,
                err,
                err / evaluation.n_regions,
                1,
                bad,
                [
                    {
                        "at": "partition",
                        "got": got,
                        "wanted": evaluation.n_regions,
                        "abs_err": err,
                        "rel_err": err / evaluation.n_regions,
                    }
                ],
            )
            continue
        want = getattr(evaluation, name)
        if name == "log_marginal":
            tol, atol = tol_logp, tol_logp
        else:
            tol, atol = tol_moments, tol_moments * np.maximum(1.0, np.abs(want))
        ae, re_, bad, worst = compare(got, want, atol)
        for w in worst:
            if isinstance(w["at"], list):
                w["at"] = f"x[{w['at'][0]}]" + (f"{w['at'][1:]}" if len(w["at"]) > 1 else "")
        out[name] = FieldResult(name, tol, ae, re_, int(bad.size), int(bad.sum()), worst[:5])
    del labels
    return CrosscheckResult(out, len(X))
