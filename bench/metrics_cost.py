"""What counting costs a reuse hit, in process: ``python bench/metrics_cost.py [-n 20000]``.

The same hit request as bench/profile_hit.py, called as WSGI on an embedded Redis, in
alternating rounds with the metrics on (the request hook, its start-time wrapper and the
verdict count, in prometheus_client's multiprocess mode as under gunicorn: each
increment writes to an mmap'd file) and off (those three taken out of the same app).
Printed: the added pieces timed alone (``timeit``, best of 7: the machine's noise only
ever adds), then CPU per request of this process for whole hits with and without them
(best and median of the rounds; on a shared machine only the first is worth much).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # `python bench/metrics_cost.py`


def alone(app, hook, timed) -> dict[str, float]:
    """Microseconds of each piece the metrics add to a hit, timed alone (best of 7)."""
    import timeit

    from flask import Response

    from gateway import metrics

    number = 200_000

    def best(function) -> float:
        return min(timeit.repeat(function, number=number, repeat=7)) / number * 1e6

    environ = {}
    response = Response(status=200)
    inner = timed.__wrapped__
    timed.__wrapped__ = None
    pieces = {}
    with app.test_request_context("/v1/tasks", method="POST"):
        from flask import request

        request.url_rule = next(r for r in app.url_map.iter_rules() if r.rule == "/v1/tasks")
        request.environ[metrics.RequestTally.START_KEY] = time.perf_counter()
        pieces["after_request hook: request and latency tally"] = best(lambda: hook(response))
    pieces["verdict tally (count_verdict)"] = best(lambda: metrics.count_verdict("completed"))
    clock, key = time.perf_counter, metrics.RequestTally.START_KEY

    def start_only():
        environ[key] = clock()

    pieces["WSGI wrapper: start time (without its extra call)"] = best(start_only)
    pieces["Flask calling one more after_request function (about)"] = best(lambda: None)
    timed.__wrapped__ = inner
    return pieces


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--requests", type=int, default=20000, help="requests per round (default 20000)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds, on and off (default 5)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="gw-metrics-cost-") as tmp:
        # As gunicorn.conf.py does, before prometheus_client is imported.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(Path(tmp) / "metrics")
        (Path(tmp) / "metrics").mkdir()
        from bench.profile_hit import call, complete_hit_stage
        from gateway import create_app, metrics
        from gateway.embedded import EmbeddedRedis

        server = EmbeddedRedis(Path(tmp) / "redis").start()
        try:
            app = create_app({"REDIS_URL": server.url, "DEMO_TASKS": True})
            complete_hit_stage(app)
            hook = next(f for f in app.after_request_funcs[None] if f.__name__ == "count_request")
            timed, count_verdict = app.wsgi_app, metrics.count_verdict

            def switch(on: bool) -> None:
                app.wsgi_app = timed if on else timed.__wrapped__
                app.after_request_funcs[None] = [hook] if on else []
                metrics.count_verdict = count_verdict if on else (lambda state: None)

            call(app, max(1, args.requests // 10))  # warm up
            pieces = alone(app, hook, timed)
            for name, us in pieces.items():
                print(f"{name:58} {us:5.2f} us")
            print(f"{'sum: what the metrics add to a hit':58} {sum(pieces.values()):5.2f} us\n")
            results: dict[str, list[float]] = {"on": [], "off": []}
            for number in range(1, args.rounds + 1):
                for name in ("on", "off"):
                    switch(name == "on")
                    before = time.process_time()
                    call(app, args.requests)
                    results[name].append((time.process_time() - before) / args.requests * 1e6)
                    print(f"round {number} metrics {name:3}: {results[name][-1]:6.1f} us per hit")
            for name, pick in (("best", min), ("median", statistics.median)):
                on, off = pick(results["on"]), pick(results["off"])
                print(f"{name}: on {on:.1f} us, off {off:.1f} us per hit: difference {on - off:.1f} us "
                      f"({(on - off) / off * 100:.1f} %)")  # fmt: skip
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
