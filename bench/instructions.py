"""Instructions per request of one gunicorn worker, hit against floor: ``python bench/instructions.py``.

wrk's requests/s and even the CPU time per request move by a quarter on a shared VM; the
number of instructions a process executes for a request does not (two runs agree within
0.5 %). This runs the gateway and the floor app (bench/floor_app.py) each under
valgrind's callgrind, as gunicorn with the gateway's config and one gthread worker
(``-w 1 --threads 4``), sends the bench's hit request (completed stage, no callback) over
4 keep-alive connections, and counts the worker's instructions: twice, after
``--few`` and after ``--many`` requests, so that start-up cancels out in the
difference. With ``--miss``, the gateway alone and every request a miss: a new
``task_id`` each, claimed and enqueued (no RQ worker runs; the jobs stay queued).
Everything gunicorn, Flask, redis-py and the gateway do in the worker is counted; the
kernel's work and Redis's are not (bench/profile_hit.py shows Redis's CPU).
Needs valgrind (``apt-get install -y valgrind``); about 4 minutes.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # `python bench/instructions.py`
from bench.toolkit.tasks import HIT_BODY  # noqa: E402 (needs the path above)

BODY = json.dumps(HIT_BODY, separators=(",", ":")).encode()
APPS = {"hit": "wsgi:app", "floor": "bench.floor_app:app"}
#: Task ids of the misses (``--miss``): new in every request of the run.
_MISS_IDS = itertools.count()


def post(connection: http.client.HTTPConnection, miss: bool = False) -> None:
    """One hit request, answered 200; or with ``miss``, one for a new task, answered 202."""
    body = BODY
    if miss:
        body = json.dumps({**HIT_BODY, "task_id": f"miss-{os.getpid()}-{next(_MISS_IDS)}"}).encode()
    connection.request("POST", "/v1/tasks", body, {"Content-Type": "application/json"})
    answer = connection.getresponse()
    text = answer.read()
    if answer.status != (202 if miss else 200):
        raise RuntimeError(f"not a {'miss' if miss else 'hit'}: {answer.status} {text[:200]!r}")


def send(port: int, count: int, connections: int = 4, miss: bool = False) -> None:
    """``count`` requests over ``connections`` keep-alive connections, as wrk sends them."""
    failures: list[BaseException] = []

    def run(share: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        try:
            for _ in range(share):
                post(connection, miss)
        except BaseException as failure:  # noqa: BLE001 (reported by the caller's thread)
            failures.append(failure)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(count // connections,)) for _ in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]


def worker_instructions(app: str, requests: int, env: dict[str, str], folder: Path, miss: bool = False) -> int:
    """Instructions the gunicorn worker executed up to its exit, after ``requests`` hits
    or misses (and 40 warm-up ones). callgrind counts from the master's start: the forked worker
    inherits its counters."""
    from gateway.embedded import free_port

    port = free_port()
    out = folder / f"{app.split(':')[0]}-{requests}"
    out.mkdir()
    command = [
        "valgrind",
        "--tool=callgrind",
        "--cache-sim=no",
        f"--callgrind-out-file={out}/callgrind.%p",
        sys.executable,
        "-m",
        "gunicorn",
        "-c",
        "gunicorn.conf.py",
        "-w",
        "1",
        "--threads",
        "4",
        "--bind",
        f"127.0.0.1:{port}",
        "--no-control-socket",
        app,
    ]
    with open(out / "log", "wb") as log:
        master = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                post(http.client.HTTPConnection("127.0.0.1", port, timeout=120))
                break
            except (OSError, http.client.HTTPException):
                if time.monotonic() > deadline or master.poll() is not None:
                    raise RuntimeError(f"{app} did not start: {(out / 'log').read_text()[-2000:]}") from None
                time.sleep(1)
        send(port, 40, miss=miss)
        send(port, requests, miss=miss)
    finally:
        master.terminate()
        master.wait(timeout=120)
    worker_files = [path for path in out.glob("callgrind.*") if path.name != f"callgrind.{master.pid}"]
    if len(worker_files) != 1:
        raise RuntimeError(f"expected one worker profile in {out}, found {worker_files}")
    for line in worker_files[0].read_text().splitlines():
        if line.startswith("summary:"):
            return int(line.split()[1])
    raise RuntimeError(f"no summary in {worker_files[0]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--few", type=int, default=100, help="requests of the first count (default 100)")
    parser.add_argument("--many", type=int, default=700, help="requests of the second count (default 700)")
    parser.add_argument("--miss", action="store_true", help="count misses (a new task each) of the gateway alone")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        print("valgrind is not installed: apt-get install -y valgrind", file=sys.stderr)
        return 2

    from bench.profile_hit import complete_hit_stage
    from gateway import create_app
    from gateway.embedded import EmbeddedRedis

    with tempfile.TemporaryDirectory(prefix="gw-instructions-") as tmp:
        server = EmbeddedRedis(Path(tmp)).start()
        try:
            complete_hit_stage(create_app({"REDIS_URL": server.url, "DEMO_TASKS": True}))
            env = {
                **os.environ,
                "GATEWAY_REDIS_URL": server.url,
                "GATEWAY_DEMO_TASKS": "true",
                "PYTHONPATH": str(ROOT),
            }
            if args.miss:
                few = worker_instructions(APPS["hit"], args.few, env, Path(tmp), miss=True)
                many = worker_instructions(APPS["hit"], args.many, env, Path(tmp), miss=True)
                print(f"miss : {(many - few) / (args.many - args.few):,.0f} instructions per request")
                return 0
            per_request = {}
            for name, app in APPS.items():
                few = worker_instructions(app, args.few, env, Path(tmp))
                many = worker_instructions(app, args.many, env, Path(tmp))
                per_request[name] = (many - few) / (args.many - args.few)
                print(f"{name:5}: {per_request[name]:,.0f} instructions per request ({app})", flush=True)
            hit, floor = per_request["hit"], per_request["floor"]
            print(f"hit - floor: {hit - floor:,.0f} instructions per request; floor / hit {floor / hit:.3f}")
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
