"""Two latencies of the performance issue: ``python bench/latency.py`` (from the repository root).

(c) GET /v1/tasks/{id}/status with an empty keyspace versus with 1,000,000 unrelated keys. Two
    sides run at once, each with its own embedded Redis, gateway (gunicorn) and RQ worker, and the
    same completed task; one Redis then gets ``DEBUG POPULATE 1000000 unrelated``. After a warm-up
    the client reads the task from the two gateways in alternating blocks (ROUNDS rounds of READS
    sequential reads per side, the order swapped every round), so that the machine's drift falls on
    both sides alike. Reported: each side's median over all its reads, their ratio, and the
    min/median/max of the per-round ratios, which show how much of a difference is noise.
(d) callback latency of a reuse hit, against the empty side: from the HTTP answer received to the
    loopback receiver having read the whole request, p50 and p99.

Choices: each gateway runs one gunicorn process (``GATEWAY_WEB_WORKERS=1``, default threads). A
sequential client uses one keep-alive connection, which stays with the process that accepted it, so
more processes would only idle on the two cores. The RQ workers are needed to complete the tasks
and to deliver the callbacks of (d); they are stopped before (c), since their sweeper and RQ's
scheduler poll Redis in the background. (d) uses its own task, so that its callback records do not
enlarge the document that (c) reads on one side only.

``measure()`` returns table rows for bench/run.py; everything binds 127.0.0.1 and is stopped at the
end, also on an error.
"""

from __future__ import annotations

import math
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import redis
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # `python bench/latency.py`
from bench.toolkit import report  # noqa: E402 (needs the path above)
from bench.toolkit.servers import prepare  # noqa: E402
from gateway.testing.receiver import Receiver  # noqa: E402
from gateway.testing.redis_server import RedisServer  # noqa: E402
from gateway.testing.stack import GatewayStack  # noqa: E402
from gateway.testing.waiting import wait_until  # noqa: E402

READS = 200  # sequential status reads per block
ROUNDS = 10  # blocks per side, alternated with the other side
HITS = 300
UNRELATED_KEYS = 1_000_000
STATUS_TASK = {"task_name": "demo.echo", "task_id": "latency-status", "input_data": {"text": "hi"}}
HIT_TASK = {**STATUS_TASK, "task_id": "latency-hit"}
SIDE_ENV = {"GATEWAY_WEB_WORKERS": "1", "GATEWAY_CALLBACK_ALLOW_PRIVATE_NETWORKS": "true", "GATEWAY_DEMO_TASKS": "true"}


def percentile(values: list[float], share: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


class Side:
    """One private Redis with its own gateway and RQ worker, all stopped by ``stack``."""

    def __init__(self, folder: Path, stack: ExitStack) -> None:
        self.server = RedisServer(folder / "redis", debug_command=True).start()
        stack.callback(self.server.stop)  # registered first, so stopped after the processes
        self.processes = GatewayStack(self.server.url, folder, SIDE_ENV)
        stack.callback(self.processes.stop)
        self.gateway = self.processes.start_web(extra_args=("--no-control-socket",))
        self.worker = self.processes.start_worker()
        self.base = f"{self.processes.base}/v1/tasks"
        self.http = requests.Session()
        stack.callback(self.http.close)  # before gunicorn stops: no idle keep-alive connection left

    def wait_ready(self) -> None:
        self.processes.wait_ready(30)

    def status(self, task_id: str) -> requests.Response:
        return self.http.get(f"{self.base}/{task_id}/status", timeout=5)

    def create_completed(self, body: dict) -> None:
        self.http.post(self.base, json=body, timeout=5).raise_for_status()
        completed = lambda: self.status(body["task_id"]).json()["status"] == "completed"  # noqa: E731
        wait_until(completed, 30, what="the task to complete")

    def read_block(self) -> list[float]:
        """Seconds each of READS sequential status reads of the completed task took."""
        times = []
        for _ in range(READS):
            started = time.perf_counter()
            response = self.status(STATUS_TASK["task_id"])
            times.append(time.perf_counter() - started)
            if response.status_code != 200:
                raise RuntimeError(f"status read answered {response.status_code}: {response.text[:200]}")
        return times


def populate(side: Side) -> int:
    with redis.Redis.from_url(side.server.url) as client:
        client.execute_command("DEBUG", "POPULATE", UNRELATED_KEYS, "unrelated")
        # A server that has held a million keys for a while is not growing its key table; wait until
        # every key is in the grown table (DEBUG POPULATE's own inserts usually finish the rehash).
        rehashed = lambda: b"rehashing target" not in client.execute_command("DEBUG", "HTSTATS", 0)  # noqa: E731
        wait_until(rehashed, 30, what="rehashing")
        return client.dbsize()


def callback_latencies(side: Side) -> list[float]:
    """Seconds from a completed hit's HTTP answer to its callback request being read, HITS times."""
    with Receiver() as receiver:
        latencies = []
        for number in range(HITS):
            path = f"/hook/{number}"  # a new callback URL makes the hit queue a delivery; the path tells them apart
            response = side.http.post(side.base, json={**HIT_TASK, "callback": receiver.url(path)}, timeout=5)
            answered = time.monotonic()
            if response.status_code != 200:
                raise RuntimeError(f"hit answered {response.status_code}: {response.text[:200]}")
            [arrival] = receiver.wait_for(1, 10, path=path)
            latencies.append(arrival["received"] - answered)  # stamped once the whole request is in
        return latencies


def measure() -> list[tuple[str, str, str]]:
    """Rows ``(measure, value, how)`` of (c) and (d), the shape of bench/run.py's table."""
    with ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="gw-latency-")))
        empty, full = Side(folder / "empty", stack), Side(folder / "full", stack)
        for side in (empty, full):
            side.wait_ready()
            side.create_completed(STATUS_TASK)

        # (d) on the empty side, while its worker runs.
        empty.create_completed(HIT_TASK)
        hits = callback_latencies(empty)
        for side in (empty, full):
            side.worker.stop()

        # (c) the same reads against both sides, in alternating blocks.
        keys = populate(full)
        with redis.Redis.from_url(empty.server.url) as client:
            empty_keys = client.dbsize()
        for side in (empty, full):
            side.read_block()  # warm-up: connections, caches
        times: dict[Side, list[float]] = {empty: [], full: []}
        ratios = []
        for number in range(ROUNDS):
            medians = {}
            for side in (empty, full) if number % 2 == 0 else (full, empty):
                block = side.read_block()
                times[side].extend(block)
                medians[side] = statistics.median(block)
            ratios.append(medians[full] / medians[empty])

    empty_p50, full_p50 = statistics.median(times[empty]) * 1000, statistics.median(times[full]) * 1000
    spread = " / ".join(f"{ratio:.2f}" for ratio in (min(ratios), statistics.median(ratios), max(ratios)))
    blocks = f"{ROUNDS} blocks of {READS} sequential reads, one keep-alive connection, 1 gunicorn process"
    return [
        ("status p50, empty keyspace", f"{empty_p50:.3f} ms", f"{blocks}; {empty_keys} keys"),
        (f"status p50, {UNRELATED_KEYS:,} unrelated keys", f"{full_p50:.3f} ms",
         f"second Redis + gateway, DEBUG POPULATE; blocks alternated with the empty side; {keys:,} keys"),
        ("status p50 ratio, populated / empty", f"{full_p50 / empty_p50:.3f}",
         f"target <= 1.1; per-round ratios min / median / max {spread}: "
         + " ".join(f"{ratio:.2f}" for ratio in ratios)),
        ("callback latency of a hit, p50 / p99",
         f"{statistics.median(hits) * 1000:.2f} / {percentile(hits, 0.99) * 1000:.2f} ms",
         f"targets 5 / 25 ms; {HITS} sequential completed hits with a new callback URL each: "
         "answer received -> loopback receiver has read the request"),
    ]  # fmt: skip


def main() -> int:
    prepare(needs_wrk=False)
    rows = measure()
    report.print_table(rows, f"gateway {report.revision()}; machine: {report.machine()}", [], [])
    return 0


if __name__ == "__main__":
    sys.exit(main())
