"""What requests that wait (``?wait=``) cost: ``python bench/wait.py``.

With the gateway's gunicorn.conf.py, alternately: the reuse hit under wrk alone, then the
same wrk run while 200 requests wait (``GET /status?wait=30`` on a task whose run is
queued, no worker running). Reported: req/s and latency of that ordinary traffic with and
without the waiters, the web workers' memory (RSS) per waiter, and how long after the
run ends (a cancel, which ends it FAILED) the last of the 200 has its answer.
"""

from __future__ import annotations

import http.client
import json
import shlex
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `python bench/wait.py`
from bench.hit import HIT_JSON  # noqa: E402 (needs the path above)
from bench.toolkit.cpu import child_pids, connections_per_process  # noqa: E402
from bench.toolkit.servers import Bench, run_alone  # noqa: E402
from bench.toolkit.wrk import WrkResult  # noqa: E402
from gateway.testing.waiting import wait_until  # noqa: E402

WAITERS = 200
#: GATEWAY_MAX_WAIT_SECONDS's default: longer than a round holds them.
WAIT_SECONDS = 30


class Waiter(threading.Thread):
    """One waiting GET on its own connection; records its status and when it was answered."""

    def __init__(self, port: int, path: str) -> None:
        super().__init__(daemon=True)
        self.port, self.path = port, path
        self.status: int | None = None
        self.stage_status: str | None = None
        self.answered_at: float | None = None

    def run(self) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=WAIT_SECONDS + 30)
        try:
            connection.request("GET", self.path, headers={"Connection": "close"})
            response = connection.getresponse()
            body = json.loads(response.read())
            self.answered_at = time.monotonic()
            self.status = response.status
            self.stage_status = body["stages"]["demo.echo"]["status"]
        except (OSError, ValueError, KeyError):
            self.answered_at = time.monotonic()
        finally:
            connection.close()


def rss_bytes(pids: list[int]) -> int:
    """Resident memory of these processes (VmRSS), summed."""
    total = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024
    return total


def hold_waiters(bench: Bench, task_id: str) -> list[Waiter]:
    """Create a task whose run stays queued and start 200 requests waiting for it; return
    once the gateway holds their 200 connections."""
    answer = bench.http.post(bench.urls["gateway"] + "/v1/tasks", json=wait_body(task_id), timeout=10)
    if answer.status_code != 202:
        raise RuntimeError(f"{task_id}: {answer.status_code} {answer.text}")
    port = int(bench.urls["gateway"].rsplit(":", 1)[1])
    waiters = [Waiter(port, f"/v1/tasks/{task_id}/status?wait={WAIT_SECONDS}") for _ in range(WAITERS)]
    for waiter in waiters:
        waiter.start()
    workers = child_pids(bench.running["gateway"].pid)
    wait_until(lambda: sum(connections_per_process(port, workers)) >= WAITERS, 30, what="200 waiting connections")
    time.sleep(1.0)  # their requests read and registered (no CPU is left to them after)
    return waiters


def wait_body(task_id: str) -> dict:
    return {"task_name": "demo.echo", "task_id": task_id, "input_data": {"wait": task_id}}


def release(bench: Bench, task_id: str, waiters: list[Waiter]) -> float:
    """End the run (cancel) and return the seconds until the last waiter had its answer."""
    early = sum(waiter.status is not None for waiter in waiters)
    if early:
        raise RuntimeError(f"{early} waiters were answered before their run ended")
    started = time.monotonic()
    answer = bench.http.delete(f"{bench.urls['gateway']}/v1/tasks/{task_id}", timeout=10)
    if answer.status_code != 200:
        raise RuntimeError(f"cancel {task_id}: {answer.status_code} {answer.text}")
    for waiter in waiters:
        waiter.join(WAIT_SECONDS + 30)
    wrong = [(w.status, w.stage_status) for w in waiters if (w.status, w.stage_status) != (200, "FAILED")]
    if wrong:
        raise RuntimeError(f"{len(wrong)} waiters had no FAILED (cancelled) stage: {wrong[:5]}")
    return max(waiter.answered_at for waiter in waiters) - started


def measure(bench: Bench) -> None:
    args = bench.args
    bench.stop_workers()  # the waited runs stay queued until cancelled
    bench.load("gateway", "hit.lua", HIT_JSON, args.warmup)
    workers = child_pids(bench.running["gateway"].pid)
    plain: list[WrkResult] = []
    waited: list[WrkResult] = []
    wakeups: list[float] = []
    memory_per_waiter: list[float] = []
    splits: list[str] = []
    for number in range(1, args.rounds + 1):
        plain.append(bench.load("gateway", "hit.lua", HIT_JSON, args.duration))
        task_id = f"bench-wait-{number}"
        before = rss_bytes(workers)
        waiters = hold_waiters(bench, task_id)
        memory_per_waiter.append((rss_bytes(workers) - before) / WAITERS)
        port = int(bench.urls["gateway"].rsplit(":", 1)[1])
        splits.append("/".join(map(str, connections_per_process(port, workers))))
        waited.append(bench.load("gateway", "hit.lua", HIT_JSON, args.duration))
        wakeups.append(release(bench, task_id, waiters))
        print(
            f"  round {number}: hit req/s alone {plain[-1].rps:,.0f}, with {WAITERS} waiting {waited[-1].rps:,.0f};"
            f" waiters' connections per worker {splits[-1]}; all answered {wakeups[-1] * 1000:.0f} ms after the end",
            flush=True,
        )
    median_plain = statistics.median(r.rps for r in plain)
    median_waited = statistics.median(r.rps for r in waited)
    bench.row(
        f"hit req/s alone (median of {len(plain)})",
        f"{median_plain:,.0f}",
        " / ".join(f"{r.rps:,.0f}" for r in plain),
    )
    bench.row(
        f"hit req/s while {WAITERS} wait",
        f"{median_waited:,.0f}",
        " / ".join(f"{r.rps:,.0f}" for r in waited) + f"; waiters per worker: {' '.join(splits)}",
    )
    bench.row("with / without waiters req/s", f"{median_waited / median_plain:.2f}", "medians")
    bench.row(
        "hit p50 / p99 alone; while waiting",
        f"{statistics.median(r.p50_ms for r in plain):.2f} / {statistics.median(r.p99_ms for r in plain):.2f} ms; "
        f"{statistics.median(r.p50_ms for r in waited):.2f} / {statistics.median(r.p99_ms for r in waited):.2f} ms",
        f"medians over rounds, {args.connections} wrk connections",
    )
    bench.row(
        "web memory per waiter (RSS)",
        f"{memory_per_waiter[0] / 1024:,.0f} KiB",
        "first round: the threads are new; later rounds reuse them: "
        + " / ".join(f"{m / 1024:,.0f}" for m in memory_per_waiter[1:])
        + " KiB",
    )
    print("  wrk: " + shlex.join(bench.wrk_command("gateway", "hit.lua", HIT_JSON, args.duration)), flush=True)
    bench.row(
        f"end → last of {WAITERS} answered",
        f"{statistics.median(wakeups) * 1000:,.0f} ms",
        "median; rounds: " + " / ".join(f"{w * 1000:,.0f}" for w in wakeups) + " ms",
    )


if __name__ == "__main__":
    sys.exit(run_alone(measure, __doc__.split("\n\n")[0], needs_wrk=True))
