"""Two latencies of the performance issue, measured side by side in one run:

(c) GET /v1/tasks/{id}/status with an empty keyspace versus with 1,000,000 unrelated keys
    (DEBUG POPULATE), as a ratio of medians;
(d) callback latency of a reuse hit: from the HTTP answer to the receiver having the
    request, p50 and p99.

``.venv/bin/python bench/latency.py`` (from the repository root; everything on 127.0.0.1).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import redis
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from gateway.embedded import EmbeddedRedis, free_port  # noqa: E402 (needs the path above)

READS = 2000
HITS = 300


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def timed_reads(session: requests.Session, url: str) -> list[float]:
    times = []
    for _ in range(READS):
        started = time.perf_counter()
        assert session.get(url, timeout=5).status_code == 200
        times.append(time.perf_counter() - started)
    return times


def main() -> int:
    server = EmbeddedRedis(tempfile.mkdtemp(prefix="bench-latency-")).start()
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "GATEWAY_REDIS_URL": server.url,
           "GATEWAY_CALLBACK_ALLOW_PRIVATE_NETWORKS": "true"}  # fmt: skip
    processes = [
        subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "--no-control-socket",
                          "--bind", f"127.0.0.1:{port}", "wsgi:app"], cwd=ROOT, env=env),
        subprocess.Popen([sys.executable, "-m", "flask", "--app", "wsgi", "worker"], cwd=ROOT, env=env),
    ]  # fmt: skip
    arrivals: dict[str, float] = {}

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's name)
            arrivals[self.path] = time.perf_counter()
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    receiver = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{port}/v1/tasks"
    try:
        session = requests.Session()
        deadline = time.monotonic() + 20
        while True:
            try:
                if session.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("gateway did not start")
            time.sleep(0.1)
        body = {"task_name": "demo.echo", "task_id": "latency-1", "input_data": {"text": "hi"}}
        session.post(base, json=body, timeout=5)
        while session.get(f"{base}/latency-1/status", timeout=5).json()["status"] != "completed":
            time.sleep(0.05)

        # (d) callback latency of a completed hit: answer received -> receiver has the request.
        latencies = []
        for number in range(HITS):
            path = f"/hook/{number}"  # one path per hit tells the arrivals apart
            hook = f"http://127.0.0.1:{receiver.server_port}{path}"
            response = session.post(base, json={**body, "callback": hook}, timeout=5)
            answered = time.perf_counter()
            assert response.status_code == 200
            while path not in arrivals:
                time.sleep(0.0002)
            latencies.append(arrivals[path] - answered)

        # (c) status reads, empty keyspace vs one million unrelated keys.
        url = f"{base}/latency-1/status"
        timed_reads(session, url)  # warm-up
        empty = timed_reads(session, url)
        redis.Redis(port=server.port).execute_command("DEBUG", "POPULATE", 1_000_000, "unrelated")
        time.sleep(3)  # let Redis finish rehashing its grown key table, as a live server would have
        timed_reads(session, url)  # warm-up again
        populated = timed_reads(session, url)
        keys = redis.Redis(port=server.port).dbsize()

        print(f"status p50, empty keyspace:        {statistics.median(empty) * 1000:.3f} ms ({READS} reads)")
        print(f"status p50, {keys:,} keys:       {statistics.median(populated) * 1000:.3f} ms")
        print(f"ratio (populated / empty):         {statistics.median(populated) / statistics.median(empty):.3f}")
        print(f"callback latency of a hit, p50:    {statistics.median(latencies) * 1000:.2f} ms ({HITS} hits)")
        print(f"callback latency of a hit, p99:    {percentile(latencies, 0.99) * 1000:.2f} ms")
        return 0
    finally:
        receiver.shutdown()
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(30)
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
