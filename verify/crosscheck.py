"""Cross-check another implementation's claimed numbers against the exact engine (Theorem 1, Prop. 2).

``crosscheck(net, X, claims)`` recomputes every claimed field exactly (``engine.evaluate``, itself
verified by ``python -m verify`` against 30-digit quadrature) and gives one verdict PER FIELD:

* ``log_marginal`` (eq. 5): ``|claimed - exact| <= tol_logp`` nats (default 1e-8),
* ``posterior_mean`` / ``posterior_cov`` (eq. 6-7, Prop. 2): ``|claimed - exact| <= tol_moments *
  max(1, |exact|)`` (default 1e-7),
* ``n_regions`` (Lemma 3): exact equality.

Each field's verdict states its tolerance, errors, how many values are bad and the worst points. A NaN
or +-inf claim is a FAIL of that field naming the points (``x[7]: log_marginal = nan, exact -3.21``).
``fields`` chooses what is judged (a field asked for but not claimed fails); the others are reported
as not judged. The result is ok (exit 0) iff every judged field passes and, for a foreign command
(``--cmd``), the command ran cleanly; otherwise exit 1.

Wrong answers this catches (tests and ``python -m verify demo`` show each): a constant offset in
log p, a missing or duplicated region term, variance/standard-deviation confusion, moments that ignore
truncation, a mixture covariance without its between-region term, unbounded regions clipped to a box.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from engine.errors import DGNInputError

from .checks import _jsonable, compare
from .foreign import CLAIM_FIELDS, validate_claims

PASS, FAIL, NOT_JUDGED = "PASS", "FAIL", "NOT JUDGED"


@dataclass
class FieldResult:
    name: str
    tolerance: float
    max_abs_err: float
    max_rel_err: float
    n_values: int
    n_bad: int
    worst: list = field(default_factory=list)
    nonfinite: list = field(default_factory=list)  # points whose claim is NaN or +-inf
    judged: bool = True
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.n_bad == 0 and not self.message

    @property
    def status(self) -> str:
        return NOT_JUDGED if not self.judged else (PASS if self.ok else FAIL)

    def line(self) -> str:
        if self.message:
            return f"{self.status:<10} {self.name:<15} {self.message}"
        out = (
            f"{self.status:<10} {self.name:<15} tol {self.tolerance:.1e}  max abs err {self.max_abs_err:.3e}  "
            f"max rel err {self.max_rel_err:.3e}  {self.n_bad} of {self.n_values} bad"
        )
        if self.nonfinite:
            out += "\n           non-finite claims: " + "; ".join(
                f"{w['at']}: {self.name} = {w['got']}, exact {w['wanted']:.6g}" for w in self.nonfinite[:5]
            ) + (f" (+{len(self.nonfinite) - 5} more)" if len(self.nonfinite) > 5 else "")
        if self.n_bad:
            out += "\n           worst points: " + "; ".join(
                f"{w['at']}: {w['got']!r} != {w['wanted']!r} ({w['rel_err']:.2e} rel)" for w in self.worst
            )
        return out

    def to_dict(self) -> dict:
        return {**vars(self), "ok": self.ok, "status": self.status}


@dataclass
class CrosscheckResult:
    fields: dict[str, FieldResult]
    n_points: int
    foreign: object | None = None  # verify.command.ForeignRun for --cmd
    n_judged_points: int | None = None  # < n_points when the time limit stopped the exact evaluation

    @property
    def judged(self) -> list[FieldResult]:
        return [f for f in self.fields.values() if f.judged]

    @property
    def failed_fields(self) -> list[str]:
        return [f.name for f in self.judged if not f.ok]

    @property
    def complete(self) -> bool:
        return self.n_judged_points is None or self.n_judged_points == self.n_points

    @property
    def ok(self) -> bool:
        return (self.foreign is None or self.foreign.ok) and not self.failed_fields and self.complete

    @property
    def exit_code(self) -> int:
        """0 all judged fields agree; 1 a field fails or the foreign command failed; 2 time limit hit."""
        if (self.foreign is not None and not self.foreign.ok) or self.failed_fields:
            return 1
        return 0 if self.complete else 2

    def text(self) -> str:
        lines = []
        if self.foreign is not None:
            run = self.foreign
            lines.append(f"foreign command: {'ran' if run.ok else 'FAIL'} in {run.seconds:.2f} s, exit status "
                         f"{run.returncode}" + (f": {run.problem}" if run.problem else "")
                         + f" ({len(run.stdout)} chars stdout, {len(run.stderr)} chars stderr kept in the JSON report)")
            if not run.ok:
                lines += [f"  | {ln}" for ln in run.stderr_tail()]
        verdict = "all judged fields agree" if not self.failed_fields else (
            "DISAGREEMENT in " + ", ".join(self.failed_fields))
        if self.foreign is not None and not self.foreign.ok:
            verdict = "FAIL: the foreign command produced no usable claims"
        head = f"crosscheck of {len(self.judged)} judged field(s) on {self.n_points} point(s): {verdict}"
        if not self.complete:
            head += f" [time limit: only {self.n_judged_points} of {self.n_points} points judged]"
        return "\n".join(lines + [head] + [f.line() for f in self.fields.values()])

    def to_dict(self) -> dict:
        return _jsonable({
            "ok": self.ok,
            "exit_code": self.exit_code,
            "n_points": self.n_points,
            "n_judged_points": self.n_points if self.n_judged_points is None else self.n_judged_points,
            "failed_fields": self.failed_fields,
            "fields": {k: v.to_dict() for k, v in self.fields.items()},
            "foreign": None if self.foreign is None else self.foreign.to_dict(),
        })


def parse_fields(spec) -> tuple[str, ...] | None:
    """``"log_marginal,n_regions"`` -> a tuple of claim fields (None: judge every claimed field)."""
    if spec is None:
        return None
    names = tuple(dict.fromkeys(n.strip() for n in str(spec).split(",") if n.strip()))
    bad = [n for n in names if n not in CLAIM_FIELDS]
    if bad or not names:
        raise DGNInputError("fields", f"{bad[0]!r} is not a claim field" if bad else "is empty",
                            f"choose from {', '.join(CLAIM_FIELDS)}")
    return names


def foreign_failure(net, X, run, fields=None) -> CrosscheckResult:
    """The result when a foreign command gave no usable claims: every judged field fails with the reason."""
    names = fields or CLAIM_FIELDS
    out = {n: FieldResult(n, 0.0, float("nan"), float("nan"), 0, 0, message=f"no claim: {run.problem}")
           for n in names}
    return CrosscheckResult(out, len(X), run)


def crosscheck(
    net,
    X,
    claims: dict,
    tol_logp: float = 1e-8,
    tol_moments: float = 1e-7,
    *,
    evaluation=None,
    max_regions: int | None = None,
    fields=None,
    progress: bool = False,
    time_limit: float | None = None,
    foreign=None,
) -> CrosscheckResult:
    """Recompute each claimed quantity exactly and judge it field by field (DGNInputError if malformed)."""
    from .data import check_points
    from .progress import exact_values

    for name, tol in (("tol_logp", tol_logp), ("tol_moments", tol_moments)):
        if not (isinstance(tol, int | float) and np.isfinite(tol) and tol > 0):
            raise DGNInputError(name, f"must be a positive number, got {tol!r}")
    fields = parse_fields(",".join(fields)) if isinstance(fields, list | tuple) else parse_fields(fields)
    X = check_points(X, net.data_dim)
    claims = validate_claims(claims, net, len(X))
    if evaluation is None:
        evaluation = exact_values(net, X, progress=progress, time_limit=time_limit, max_regions=max_regions,
                                  desc="crosscheck")
    n_done = getattr(evaluation, "n_done", len(X))
    out: dict[str, FieldResult] = {}
    for name in CLAIM_FIELDS:
        judged = fields is None or name in fields
        if name not in claims:
            if judged and fields is not None:
                out[name] = FieldResult(name, 0.0, float("nan"), float("nan"), 0, 0,
                                        message="asked for with --fields but not claimed")
            continue
        res = _judge(name, claims[name], evaluation, n_done, tol_logp, tol_moments)
        res.judged = judged
        out[name] = res
    return CrosscheckResult(out, len(X), foreign, n_done)


def _judge(name, got, evaluation, n_done, tol_logp, tol_moments) -> FieldResult:
    if name == "n_regions":
        want = int(evaluation.n_regions)
        err = float(abs(got - want))
        worst = [{"at": "partition", "got": got, "wanted": want, "abs_err": err, "rel_err": err / want}]
        return FieldResult(name, 0.0, err, err / want, 1, int(got != want), worst)
    want = np.asarray(getattr(evaluation, name))[:n_done]
    got = np.asarray(got)[:n_done]
    if name == "log_marginal":
        tol, atol = tol_logp, tol_logp
    else:
        tol, atol = tol_moments, tol_moments * np.maximum(1.0, np.abs(want))
    ae, re_, bad, worst = compare(got, want, atol)
    for w in worst:
        w["at"] = _label(w["at"])
    nonfinite = []
    for idx in zip(*np.nonzero(~np.isfinite(got)), strict=True):
        nonfinite.append({"at": _label([int(k) for k in idx]), "got": float(got[idx]), "wanted": float(want[idx])})
    n_bad = int(bad.sum())  # worst is sorted by error / bound: its first n_bad entries are the bad ones
    return FieldResult(name, tol, ae, re_, int(bad.size), n_bad, worst[: min(5, n_bad) or 1], nonfinite)


def _label(at) -> str:
    if not isinstance(at, list):
        return str(at)
    return f"x[{at[0]}]" + ("" if len(at) == 1 else f"[{', '.join(map(str, at[1:]))}]")
