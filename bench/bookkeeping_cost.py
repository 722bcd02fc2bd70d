"""What a request's bookkeeping costs a reuse hit, in process: ``python bench/bookkeeping_cost.py``.

The bookkeeping is ``gateway/api/bookkeeping.py``: the request id (and its ``X-Request-ID``
echo), the JSON log line and the metrics tally (requests, latency, verdict; in
prometheus_client's multiprocess mode as under gunicorn). The same hit request as
bench/profile_hit.py is called as WSGI on an embedded Redis, in alternating rounds with
the bookkeeping on and off (the same app with its middleware taken out), the log lines
going to a file as under gunicorn. Printed: the pieces timed alone (``timeit``, best of 7:
the machine's noise only ever adds), then CPU per request for whole hits with and
without it (best and median of the rounds; on a shared machine only the first is worth much).
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
sys.path.insert(0, str(ROOT))  # `python bench/bookkeeping_cost.py`


def alone(bookkeeping) -> dict[str, float]:
    """Microseconds of the bookkeeping's pieces, each timed alone (best of 7)."""
    import timeit

    from gateway import metrics
    from gateway.api import requestlog

    number = 100_000

    def best(function) -> float:
        return min(timeit.repeat(function, number=number, repeat=7)) / number * 1e6

    line = requestlog.begin(None)
    line.task_id, line.task_name, line.verdict = "bench-hit", "demo.echo", "completed"
    render = bookkeeping._render
    pieces = {
        "request id and line begun, and ended": lambda: (requestlog.begin(None), requestlog.end()),
        "metrics tally (request, latency, verdict)": lambda: metrics.TALLY.answered(
            "/v1/tasks", 200, 0.0003, "completed"
        ),
        "the line rendered": lambda: render(line, "POST", "/v1/tasks", 200, None, "127.0.0.1", 0.312),
        "the line written (to a file)": lambda: bookkeeping._write_line("x" * 300 + "\n"),
    }
    return {name: best(piece) for name, piece in pieces.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--requests", type=int, default=20000, help="requests per round (default 20000)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds, on and off (default 5)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="gw-bookkeeping-cost-") as tmp:
        # As gunicorn.conf.py does, before prometheus_client is imported.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(Path(tmp) / "metrics")
        (Path(tmp) / "metrics").mkdir()
        from bench.profile_hit import call, complete_hit_stage
        from gateway import create_app
        from gateway.embedded import EmbeddedRedis

        server = EmbeddedRedis(Path(tmp) / "redis").start()
        log = open(Path(tmp) / "requests.log", "w")  # noqa: SIM115 (closed below)
        real_stderr, sys.stderr = sys.stderr, log  # the lines' stream, as gunicorn's log file
        try:
            app = create_app({"REDIS_URL": server.url, "DEMO_TASKS": True})
            complete_hit_stage(app)
            bookkeeping = app.wsgi_app
            call(app, max(1, args.requests // 10))  # warm up
            pieces = alone(bookkeeping)
            for name, us in pieces.items():
                print(f"{name:45} {us:5.2f} us", file=real_stderr)
            print(f"{'sum: what the bookkeeping adds to a hit':45} {sum(pieces.values()):5.2f} us\n", file=real_stderr)
            results: dict[str, list[float]] = {"on": [], "off": []}
            for number in range(1, args.rounds + 1):
                for name in ("on", "off"):
                    app.wsgi_app = bookkeeping if name == "on" else bookkeeping.wsgi_app
                    before = time.process_time()
                    call(app, args.requests)
                    results[name].append((time.process_time() - before) / args.requests * 1e6)
                    print(f"round {number} bookkeeping {name:3}: {results[name][-1]:6.1f} us per hit", file=real_stderr)
            for name, pick in (("best", min), ("median", statistics.median)):
                on, off = pick(results["on"]), pick(results["off"])
                print(f"{name}: on {on:.1f} us, off {off:.1f} us per hit: difference {on - off:.1f} us "
                      f"({(on - off) / off * 100:.1f} %)", file=real_stderr)  # fmt: skip
        finally:
            sys.stderr = real_stderr
            log.close()
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
