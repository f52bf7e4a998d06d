"""The issue-19 long campaign, reproducible (not part of ``make test``): ``python -m verify.fuzzing.long_campaign``.

Runs :func:`verify.fuzzing.campaign.run_campaign` on seeds 20261206, 1 and 2 with one worker, and on 20261206
with ``--workers 2``, each for ``--budget`` (default 10 minutes), engine RuntimeWarnings turned into errors; prints
examples per property, findings and time for each, and writes them with the minimal cases as JSON
(``--out``, default ``./fuzz-long``). Seeds and worker counts are arguments, so one campaign can be rerun alone.
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

from .campaign import parse_budget, run_campaign

DEFAULT_RUNS = ((20261206, 1), (1, 1), (2, 1), (20261206, 2))


def _per_property(result) -> dict:
    out: dict[str, dict] = {}
    for c in result.chunks:
        s = out.setdefault(c["property"], {"examples": 0, "chunks": 0, "failed_chunks": 0})
        s["examples"] += c["examples"]
        s["chunks"] += 1
        s["failed_chunks"] += c["status"] == "failed"
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m verify.fuzzing.long_campaign", description=__doc__.splitlines()[0])
    parser.add_argument("--budget", default="10m", help="time per campaign: 90s, 10m, 2h")
    parser.add_argument("--runs", default=",".join(f"{s}x{w}" for s, w in DEFAULT_RUNS),
                        help="comma-separated SEEDxWORKERS (default: the issue's four campaigns)")
    parser.add_argument("--out", default="fuzz-long", help="directory for the summary and minimal cases")
    args = parser.parse_args(argv)
    budget = parse_budget(args.budget)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summary = []
    for run in args.runs.split(","):
        seed, workers = (int(v) for v in run.split("x"))
        with warnings.catch_warnings():
            warnings.filterwarnings("error", category=RuntimeWarning, module=r"engine(\..*)?")
            result = run_campaign(budget, seed=seed, workers=workers)
        paths = result.write_cases(out / f"seed{seed}-w{workers}")
        print(result.summary(paths), flush=True)
        summary.append({"seed": seed, "workers": workers, "seconds": round(result.elapsed, 1),
                        "examples": result.examples, "per_property": _per_property(result),
                        "findings": {p: [str(x) for x in keys] for p, keys in result.finding_keys().items()}})
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return 0 if not any(s["findings"] for s in summary) else 1


if __name__ == "__main__":
    raise SystemExit(main())
