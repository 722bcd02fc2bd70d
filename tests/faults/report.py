"""Fault-injection figures: every scenario of tests/faults/scenarios.py, full variants
(the shipped leases and timeouts, a 60 s receiver outage), printed as a Markdown table.

    .venv/bin/python -m tests.faults.report                 # everything, about 17 minutes
    .venv/bin/python -m tests.faults.report --fast          # the CI variants
    .venv/bin/python -m tests.faults.report --only redis_killed,receiver_outage

Exit status 1 when a scenario lost a stage or a callback, ran a stage twice, or failed
one of its checks (listed under the table). FAULTS_KEEP_LOGS=1 keeps each scenario's
process logs and Redis data in a temporary folder named in its notes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

# The fault suite's own report (it lived in bench/ and was bench's one import of tests/):
# it runs the full variants of the scenarios and prints their figures.
from tests.faults import scenarios  # noqa: E402 (needs the path above)

COLUMNS = ["scenario", "requests", "stages_lost", "callbacks_lost", "duplicate_runs", "recovery_seconds", "notes"]


def cell(value: object) -> str:
    return "—" if value is None else str(value).replace("|", "\\|")


def table(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell(row[c]) for c in COLUMNS) + " |" for row in rows]
    return "\n".join(lines)


def failed(row: dict) -> bool:
    counts = (row["stages_lost"], row["callbacks_lost"], row["duplicate_runs"])
    return bool(row["problems"]) or any(count for count in counts if count is not None)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fast", action="store_true", help="the short CI variants")
    parser.add_argument("--only", help="comma-separated scenario function names")
    parser.add_argument("--json", type=Path, help="also write the rows to this file")
    args = parser.parse_args()

    chosen = scenarios.SCENARIOS
    if args.only:
        names = {name.strip() for name in args.only.split(",")}
        chosen = [s for s in chosen if s.__name__ in names]
    rows = []
    started = time.monotonic()
    for scenario in chosen:
        began = time.monotonic()
        print(f"{scenario.__name__} ...", end=" ", file=sys.stderr, flush=True)
        row = scenario(fast=args.fast)
        rows.append(row)
        print(f"{time.monotonic() - began:.0f} s{'  FAILED' if failed(row) else ''}", file=sys.stderr, flush=True)

    mode = "fast" if args.fast else "full"
    print(f"\nFault scenarios ({mode} variants), {time.monotonic() - started:.0f} s in all:\n")
    print(table(rows))
    problems = [(row["scenario"], problem) for row in rows for problem in row["problems"]]
    if problems:
        print("\nChecks that failed:")
        for scenario, problem in problems:
            print(f"- {scenario}: {problem}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 1 if any(failed(row) for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
