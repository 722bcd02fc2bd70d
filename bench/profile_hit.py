"""Where a reuse hit's time goes, in process: ``python bench/profile_hit.py [-n 20000]``.

The gateway app and the floor app (bench/floor_app.py) are called as WSGI apps directly,
without gunicorn or sockets, on an embedded Redis: the same hit request as bench/hit.py
(POST /v1/tasks, completed stage, no callback). Printed:

* CPU per request of this process and of Redis (``INFO cpu``) for hit and floor, in
  alternating rounds, and their difference: the extra work of a hit;
* Python function calls per request of both (cProfile), which unlike CPU time do not
  move with the machine's load;
* a cProfile of the hit, by own time, and the calls the hit makes that the floor does
  not (the gateway's own modules, Lua scripts by their Redis time).

No HTTP parsing or socket I/O is measured: both sides would pay the same for it, so the
ratio here is lower than bench/hit.py's, but the difference in microseconds is the same
work that bench/hit.py's "CPU per request" rows show.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # `python bench/profile_hit.py`
from bench.toolkit.tasks import HIT_BODY, HIT_ID  # noqa: E402 (needs the path above)

BODY = json.dumps(HIT_BODY, separators=(",", ":")).encode()


def _environ() -> dict:
    return {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/v1/tasks",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(BODY)),
        "wsgi.url_scheme": "http",
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }


def call(app, count: int) -> bytes:
    """``count`` hit requests through ``app``; the last answer's body."""
    template, statuses = _environ(), []

    def start_response(status, headers, exc_info=None):
        statuses.append(status)

    body = b""
    for _ in range(count):
        environ = dict(template)
        environ["wsgi.input"] = io.BytesIO(BODY)
        statuses.clear()
        answer = app(environ, start_response)
        body = b"".join(answer)
        if hasattr(answer, "close"):
            answer.close()
        if not statuses or not statuses[0].startswith("200"):
            raise RuntimeError(f"not a hit: {statuses} {body[:200]!r}")
    return body


def redis_cpu(client) -> float:
    info = client.info("cpu")
    return info["used_cpu_user"] + info["used_cpu_sys"]


def measure(app, client, count: int) -> tuple[float, float]:
    """CPU per request (us) of this process and of Redis over ``count`` requests."""
    redis_before, before = redis_cpu(client), time.process_time()
    call(app, count)
    return (time.process_time() - before) / count * 1e6, (redis_cpu(client) - redis_before) / count * 1e6


def complete_hit_stage(app) -> None:
    """The bench's hit stage, completed with its input as output (what demo.echo does)."""
    from gateway import documents
    from gateway.store import get_store

    with app.app_context():
        store = get_store()
        verdict = store.claim(HIT_ID, HIT_BODY["task_name"], HIT_BODY["input_data"], None)
        if verdict.hit:
            return
        store.start(HIT_ID, HIT_BODY["task_name"], verdict.token)
        output = documents.canonical_json(HIT_BODY["input_data"])
        store.finish(HIT_ID, HIT_BODY["task_name"], verdict.token, output_json=output, error=None, duration=0.001)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--requests", type=int, default=20000, help="requests per round (default 20000)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of hit and floor (default 3)")
    parser.add_argument("--top", type=int, default=30, help="profile lines to print (default 30)")
    args = parser.parse_args()

    import redis

    from gateway.embedded import EmbeddedRedis

    with tempfile.TemporaryDirectory(prefix="gw-profile-") as tmp:
        server = EmbeddedRedis(Path(tmp)).start()
        try:
            os.environ["GATEWAY_REDIS_URL"] = server.url
            from bench import floor_app
            from gateway import create_app

            gateway = create_app({"REDIS_URL": server.url, "DEMO_TASKS": True})
            client = redis.Redis.from_url(server.url)
            complete_hit_stage(gateway)
            print(call(gateway, 1).decode().strip())
            warm = max(1, args.requests // 10)
            call(gateway, warm)
            call(floor_app.app, warm)
            results: dict[str, list[tuple[float, float]]] = {"hit": [], "floor": []}
            for number in range(1, args.rounds + 1):
                for name, app in (("hit", gateway), ("floor", floor_app.app)):
                    results[name].append(measure(app, client, args.requests))
                    python_us, redis_us = results[name][-1]
                    print(f"round {number} {name:5}: {python_us:6.1f} us Python + {redis_us:5.1f} us Redis per request")
            medians = {
                name: (statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs))
                for name, runs in results.items()
            }
            (hit_py, hit_redis), (floor_py, floor_redis) = medians["hit"], medians["floor"]
            print(
                f"\nmedians, CPU per request: hit {hit_py:.1f} + {hit_redis:.1f} us, floor {floor_py:.1f} + "
                f"{floor_redis:.1f} us; extra {hit_py - floor_py:.1f} us Python + {hit_redis - floor_redis:.1f} us "
                f"Redis; floor/hit {(floor_py + floor_redis) / (hit_py + hit_redis):.2f}"
            )
            calls = {}
            for name, app in (("floor", floor_app.app), ("hit", gateway)):
                profile = cProfile.Profile()
                profile.runcall(call, app, args.requests)
                calls[name] = pstats.Stats(profile).total_calls / args.requests
            print(
                f"Python function calls per request (this loop's included): hit {calls['hit']:.0f}, "
                f"floor {calls['floor']:.0f}"
            )
            out = io.StringIO()
            stats = pstats.Stats(profile, stream=out)
            stats.sort_stats("tottime").print_stats(args.top)
            print(f"\ncProfile of {args.requests} hits, by own time (times are inflated by the profiler):")
            print(out.getvalue())
            out = io.StringIO()
            stats = pstats.Stats(profile, stream=out)
            stats.sort_stats("cumulative").print_stats(r"gateway/", args.top)
            print("the gateway's own functions, by cumulative time:")
            print(out.getvalue())
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
