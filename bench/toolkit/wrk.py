"""wrk: the command of one run, its output parsed, and whether the run was fair."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

WRK_DIR = Path(__file__).resolve().parent.parent / "wrk"
# A wrk run is "fair" when other processes used less CPU than this and no gunicorn
# worker held more than this share of wrk's connections.
CLEAN_OTHER_CORES = 0.2
BALANCED_SHARE = 0.75


@dataclass
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int  # non-2xx/3xx answers plus socket errors: any of them spoils the figure
    app_cpu_us: float = 0.0  # gunicorn workers' CPU per request
    redis_cpu_us: float = 0.0  # Redis server's CPU per request
    # Busy cores of the whole machine during the run. Below what the load asks for (about
    # nproc), the machine was held back (throttled VM, other tenants) and the run is slow.
    busy_cores: float = 0.0
    # Of those, the cores used by processes other than wrk, the workers and Redis.
    other_cores: float = 0.0
    # wrk's keep-alive connections held by each gunicorn worker process, e.g. [16, 0]: they
    # stay where they were accepted, and one process alone is much slower than two.
    split: tuple[int, ...] = ()

    @property
    def fair(self) -> bool:
        balanced = max(self.split, default=0) <= BALANCED_SHARE * sum(self.split)
        return balanced and self.other_cores < CLEAN_OTHER_CORES

    def brief(self) -> str:
        split = "/".join(map(str, self.split))
        return f"{self.rps:,.0f} ({self.busy_cores:.1f}/{self.other_cores:.1f}, {split})"


_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def parse_wrk(text: str) -> WrkResult:
    def latency(percent: str) -> float:
        match = re.search(rf"^\s+{percent}%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.MULTILINE)
        return float(match.group(1)) * _UNIT_MS[match.group(2)]

    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    return WrkResult(
        rps=float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1)),
        p50_ms=latency("50"),
        p99_ms=latency("99"),
        requests=int(re.search(r"(\d+) requests in", text).group(1)),
        errors=(int(non_2xx.group(1)) if non_2xx else 0) + (sum(map(int, sockets.groups())) if sockets else 0),
    )


def wrk_command(threads: int, connections: int, url: str, script: str, script_arg: str, seconds: int) -> list[str]:
    return [
        "wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "5s",
        "-s", str(WRK_DIR / script), url, "--", script_arg,
    ]  # fmt: skip


def unfair_notes(runs: list[WrkResult]) -> list[str]:
    """Why some wrk runs are not fair, so that nobody reads their req/s as the gateway's."""
    found = []
    disturbed = sum(r.other_cores >= CLEAN_OTHER_CORES for r in runs)
    if disturbed:
        found.append(
            f"other processes took >= {CLEAN_OTHER_CORES} cores during {disturbed} of {len(runs)} wrk runs: "
            "their req/s are low; rerun on a quiet machine"
        )
    lopsided = sum(max(r.split, default=0) > BALANCED_SHARE * sum(r.split) for r in runs)
    if lopsided:
        found.append(
            f"in {lopsided} of {len(runs)} wrk runs one gunicorn worker held most keep-alive connections; "
            "one worker process serves far fewer requests than two (docs/PERFORMANCE.md)"
        )
    return found
