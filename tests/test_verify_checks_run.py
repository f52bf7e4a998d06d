"""Every deterministic check of the quick suite's plan runs to completion on a cheap case (no ``check-raised``).

A check that raises becomes a FAIL record in the report (``suite.run_item``); this catches such breakage in
the default test profile, where the whole quick suite (a slow test) does not run. The S = 2 case is the
linear decoder (one region), so the mpmath and Monte-Carlo oracles cost little.
"""

from __future__ import annotations

from verify import checks as C
from verify import suite
from verify.cases import build_cases


def test_triangulation_check_runs_and_passes_on_the_linear_s2_case():
    case = next(c for c in build_cases("quick") if c.name == "linear-S2")
    records = C.check_triangulation(case, suite.settings_for("quick", 0))
    assert records and all(r.status == C.PASS for r in records), [(r.id, r.status, r.message) for r in records]
    assert any(r.id.startswith("triangulation-vs-auto-log-p/") for r in records)
