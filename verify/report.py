"""Readable table and JSON report of a verification run (timings kept apart from the results)."""

from __future__ import annotations

from collections import Counter

from .statistics import FAIL, INCONCLUSIVE, PASS, SKIPPED


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.2e}"
    return str(v)


def summary(records) -> dict:
    c = Counter(r.status for r in records)
    return {s: c.get(s, 0) for s in (PASS, FAIL, INCONCLUSIVE, SKIPPED)}


def exit_code(records) -> int:
    return 1 if any(r.status == FAIL for r in records) else 0


def text_table(records, meta: dict) -> str:
    lines = [
        f"dgnexact verification  profile={meta.get('profile')}  seed={meta.get('seed')}  "
        f"MC family false-fail budget={meta.get('family_false_fail_budget'):.0e} "
        f"({meta.get('false_fail_per_monte_carlo_check', 0):.1e} per MC check)",
        "",
    ]
    head = f"{'status':<13} {'check':<52} {'claim':<34} {'tol':>9} {'abs err':>9} {'rel err':>9}"
    lines += [head, "-" * len(head)]
    for r in records:
        lines.append(
            f"{r.status:<13} {r.id[:52]:<52} {r.claim[:34]:<34} {_fmt(r.tolerance):>9} "
            f"{_fmt(r.abs_err):>9} {_fmt(r.rel_err):>9}"
        )
        if r.status in (FAIL, INCONCLUSIVE, SKIPPED) and r.message:
            lines.append(f"{'':<14}{r.message}")
        if r.status == FAIL and r.worst:
            lines.append(f"{'':<14}worst points: " + "; ".join(_worst(w) for w in r.worst[:5]))
    s = summary(records)
    lines += ["", "  ".join(f"{k}: {v}" for k, v in s.items())]
    return "\n".join(lines)


def _worst(w: dict) -> str:
    if "problem" in w:
        return f"{w['at']}: {w['problem']} ({w.get('got')}; MC interval {w.get('interval')})"
    if "wanted" in w:
        return f"{w['at']}: {w['got']!r} != {w['wanted']!r} ({w['rel_err']:.2e} rel)"
    return f"{w.get('at')}: {w.get('got')} not in {w.get('interval')}"


def json_report(records, meta: dict, timings: dict | None = None) -> dict:
    out = {
        "format": "dgnexact-verify-report",
        "version": 1,
        "meta": meta,
        "summary": summary(records),
        "exit_code": exit_code(records),
        "checks": [r.to_dict() for r in records],
    }
    if timings is not None:
        out["timings_s"] = timings  # the only field that differs between runs with the same seed
    return out
