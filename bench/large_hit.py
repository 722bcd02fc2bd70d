"""A hit with a large payload: ``python bench/large_hit.py`` (also a phase of bench/run.py).

Sequential completed hits on a stage with ~125 KB of input and of output: the part of a
hit that grows with the payload (parsing, canonical JSON, the answer).
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `python bench/large_hit.py`
from bench.toolkit.servers import Bench, run_alone  # noqa: E402 (needs the path above)

LARGE_ID = "bench-large"
LARGE_HITS = 100


def measure(bench: Bench) -> None:
    items = [{"id": n, "name": f"item-{n}", "score": n / 2} for n in range(2500)]
    data = json.dumps({"task_name": "demo.echo", "task_id": LARGE_ID, "input_data": {"items": items}})
    url = bench.urls["gateway"] + "/v1/tasks"
    headers = {"Content-Type": "application/json"}
    bench.http.post(url, data=data, headers=headers, timeout=10)
    bench.wait_success([LARGE_ID], timeout=30)
    times = []
    with requests.Session() as session:  # closed after: no idle connection left in a worker
        for _ in range(LARGE_HITS):
            started = time.perf_counter()
            answer = session.post(url, data=data, headers=headers, timeout=10)
            times.append((time.perf_counter() - started) * 1000)
            if answer.status_code != 200:
                raise RuntimeError(f"large hit: {answer.status_code} {answer.text[:200]}")
    times.sort()
    bench.row(
        f"hit latency, {len(data) / 1000:,.0f} KB input",
        f"{statistics.median(times):.2f} / {times[int(0.99 * (len(times) - 1))]:.2f} ms",
        f"p50 / p99 of {LARGE_HITS} sequential completed hits, one connection; answer "
        f"{len(answer.content) / 1000:,.0f} KB",
    )


if __name__ == "__main__":
    sys.exit(run_alone(measure, __doc__.split("\n\n")[0]))
