"""The quickstart: Redis (embedded unless GATEWAY_REDIS_URL is set), an RQ worker and
gunicorn, run together until Ctrl-C or SIGTERM. ``python -m gateway.serve``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from gateway.embedded import EmbeddedRedis

ROOT = Path(__file__).resolve().parent.parent
EMBEDDED_PORT = 6390
BIND = "127.0.0.1:8788"


def main() -> int:
    env = dict(os.environ)
    redis_server = None
    if not env.get("GATEWAY_REDIS_URL"):
        redis_server = EmbeddedRedis(ROOT / "var" / "redis", EMBEDDED_PORT).start()
        env["GATEWAY_REDIS_URL"] = redis_server.url
        # The quickstart delivers to receivers on this machine; production refuses them.
        env.setdefault("GATEWAY_CALLBACK_ALLOW_PRIVATE_NETWORKS", "true")
        print(f"embedded Redis on {redis_server.url}, data in var/redis", flush=True)
    env.setdefault("GATEWAY_BIND", BIND)
    env.setdefault("GATEWAY_ACCESS_LOG", "-")  # the quickstart shows each request
    python = sys.executable
    processes = [
        subprocess.Popen([python, "-m", "flask", "--app", "wsgi", "scripts", "load"], cwd=ROOT, env=env),
    ]
    processes[0].wait()
    processes = [
        subprocess.Popen([python, "-m", "flask", "--app", "wsgi", "worker"], cwd=ROOT, env=env),
        subprocess.Popen([python, "-m", "gunicorn", "wsgi:app"], cwd=ROOT, env=env),
    ]
    print(f"gateway on http://{env['GATEWAY_BIND']}  (Ctrl-C stops)", flush=True)

    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        while not stopping and all(p.poll() is None for p in processes):
            time.sleep(0.2)
    finally:
        for process in processes:
            if process.poll() is None:
                process.terminate()
        for process in processes:
            try:
                process.wait(35)
            except subprocess.TimeoutExpired:
                process.kill()
        if redis_server:
            redis_server.stop()
    return 0 if stopping else 1


if __name__ == "__main__":
    sys.exit(main())
