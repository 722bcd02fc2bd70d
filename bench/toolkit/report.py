"""The summary table the benchmarks print, and what it was measured on."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
from pathlib import Path

from bench.toolkit.wrk import WrkResult

ROOT = Path(__file__).resolve().parents[2]


def cpu_text(runs: list[WrkResult]) -> tuple[str, str]:
    """The value and how of a "CPU per request" row: medians over ``runs``."""
    app = statistics.median(r.app_cpu_us for r in runs)
    store = statistics.median(r.redis_cpu_us for r in runs)
    return f"{app:,.0f} + {store:,.0f} us", "gunicorn workers + Redis, from /proc/<pid>/stat"


def revision() -> str:
    """The commit measured, marked dirty when the code under test differs from it."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    try:
        dirty = git("status", "--porcelain", "--", "gateway", "lua", "wsgi.py", "gunicorn.conf.py")
        return git("rev-parse", "--short", "HEAD") + (" (dirty)" if dirty else "")
    except OSError:
        return "unknown"


def machine() -> str:
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return f"nproc {os.cpu_count()}, {model}, Python {sys.version.split()[0]}"


def print_table(rows: list[tuple[str, str, str]], header: str, notes: list[str], commands: list[str]) -> None:
    width = max(len(measure) for measure, _, _ in rows)
    value_width = max(len(value) for _, value, _ in rows)
    print(f"\n{header}")
    print(f"{'measure':<{width}}  {'value':>{value_width}}  how")
    print(f"{'-' * width}  {'-' * value_width}  ---")
    for measure, value, how in rows:
        print(f"{measure:<{width}}  {value:>{value_width}}  {how}")
    for note in notes:
        print(f"note: {note}")
    if commands:
        print("\ncommands (run from the repository root):")
        for command in commands:
            print(f"  {command}")
