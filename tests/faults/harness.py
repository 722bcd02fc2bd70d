"""Real processes to break on purpose.

``FaultStack`` runs its own Redis (own port, own data folder: killing it hurts no other
test), gunicorn and ``flask --app wsgi worker`` processes, and can SIGKILL, SIGTERM or
restart any of them. ``Receiver`` is a callback receiver on loopback that can answer
from a script, stall a request, and go down and come back on the same port.

tests/conftest.py's ``Receiver`` binds a fresh port and answers at once, so it cannot
play an outage on the same port or a receiver that hangs; hence a receiver of our own.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import redis
import requests
from rq import Queue

from gateway.embedded import EmbeddedRedis, free_port

ROOT = Path(__file__).resolve().parents[2]

#: Short leases and timeouts, so that each fault is noticed within seconds (CI).
FAST_ENV = {
    "GATEWAY_RUN_LEASE_SECONDS": "2",
    "GATEWAY_SWEEP_INTERVAL_SECONDS": "0.5",
    "GATEWAY_CALLBACK_TIMEOUT_SECONDS": "1",
    "GATEWAY_DELIVERY_GRACE_SECONDS": "1",
    "GATEWAY_CALLBACK_RETRY_INTERVALS": "[1, 1, 1, 1, 1]",
}
#: The shipped defaults (gateway/config.py): the figures an operator gets.
FULL_ENV: dict[str, str] = {}

ENDED = ("SUCCESS", "FAILED")


def wait_for(predicate, timeout: float, interval: float = 0.05):
    """The predicate's first truthy value, or None once ``timeout`` seconds are over."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            return None
        time.sleep(interval)


def new_task_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


class Process:
    """One child process in a session of its own, so that a SIGKILL takes its whole
    group: RQ's scheduler is a forked child of the worker, and a stopped container or a
    crashed machine loses both (a ``kill -9`` of the main pid alone would leave the
    scheduler running as an orphan)."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        with open(self.log_path, "ab") as log:
            self.popen = subprocess.Popen(
                command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill(self) -> None:
        """SIGKILL the process and its children (the worker's scheduler)."""
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.popen.wait(10)

    def terminate(self) -> None:
        """SIGTERM to the process alone, as ``kill PID`` or ``docker stop`` send it."""
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)

    def wait(self, timeout: float) -> bool:
        try:
            self.popen.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            return False

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]


class FaultStack:
    """Redis + gunicorn + RQ workers, all on 127.0.0.1, every one of them killable."""

    def __init__(self, workdir: Path, env: dict[str, str], *, workers: int = 2, queues: str | None = None) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.redis_server = EmbeddedRedis(self.workdir / "redis")
        self.web_port = free_port()
        self.base = f"http://127.0.0.1:{self.web_port}"
        self.env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "GATEWAY_REDIS_URL": self.redis_server.url,
            "GATEWAY_TASK_MODULES": "tests.plugin_tasks",
            "GATEWAY_DEMO_TASKS": "true",
            "GATEWAY_CALLBACK_ALLOW_PRIVATE_NETWORKS": "true",
            "GATEWAY_WEB_WORKERS": "2",
            "FAULTS_FAILPOINT_DIR": str(self.workdir),  # tests/faults/failpoints.py
            **env,
        }
        self.initial_workers = workers
        self.initial_queues = queues
        self.gunicorn: Process | None = None
        self.workers: list[Process] = []
        self._processes: list[Process] = []
        self._count = 0

    # -- lifecycle -----------------------------------------------------------------

    def __enter__(self) -> FaultStack:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def start(self) -> None:
        self.redis_server.start()
        self.start_gunicorn()
        for _ in range(self.initial_workers):
            self.start_worker(self.initial_queues)
        if not wait_for(self.healthy, 30, 0.1):
            raise RuntimeError(f"gunicorn did not become healthy:\n{self.gunicorn.log_tail()}")
        # Tasks are spread over the workers only once every one listens.
        if not wait_for(lambda: self.registered_workers() >= self.initial_workers, 30, 0.1):
            raise RuntimeError(f"workers did not register:\n{self.workers[0].log_tail()}")

    def close(self) -> None:
        # Cleanup only: the scenarios that need a graceful stop send SIGTERM themselves.
        for process in self._processes:
            process.kill()
        self.redis_server.stop()

    def _spawn(self, name: str, command: list[str]) -> Process:
        self._count += 1
        process = Process(f"{self._count:02d}-{name}", command, self.env, self.workdir)
        self._processes.append(process)
        return process

    def start_gunicorn(self) -> Process:
        self.gunicorn = self._spawn(
            "gunicorn",
            [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "--bind", f"127.0.0.1:{self.web_port}",
             "wsgi:app"],
        )  # fmt: skip
        return self.gunicorn

    def start_worker(self, queues: str | None = None) -> Process:
        command = [sys.executable, "-m", "flask", "--app", "wsgi", "worker"]
        worker = self._spawn("worker", command + (["--queues", queues] if queues else []))
        self.workers.append(worker)
        return worker

    def worker_by_pid(self, pid: int) -> Process | None:
        return next((w for w in self.workers if w.pid == pid), None)

    def scheduler_worker(self) -> Process | None:
        """The worker whose RQ scheduler holds the lock of the callbacks queue (one does).
        The scheduler is a forked child: its process group is its worker's pid."""
        with self.redis() as client:
            pid = Queue("callbacks", connection=client).scheduler_pid
        try:
            return self.worker_by_pid(os.getpgid(pid)) if pid else None
        except ProcessLookupError:
            return None

    # -- Redis ---------------------------------------------------------------------

    def redis(self) -> redis.Redis:
        return redis.Redis(port=self.redis_server.port, socket_timeout=2, socket_connect_timeout=1)

    def registered_workers(self) -> int:
        try:
            with self.redis() as client:
                return client.scard("rq:workers")
        except redis.RedisError:
            return 0

    def kill_redis(self) -> None:
        process = self.redis_server.process
        process.kill()
        process.wait(10)
        self.redis_server.process = None

    def restart_redis(self) -> None:
        """Same port, same data folder: Redis replays its AOF."""
        self.redis_server.start()

    # -- API -----------------------------------------------------------------------

    def healthy(self) -> bool:
        try:
            return requests.get(self.base + "/v1/tasks/health", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def post(self, body: dict, timeout: float = 10) -> requests.Response:
        return requests.post(self.base + "/v1/tasks", json=body, timeout=timeout)

    def document(self, task_id: str) -> dict | None:
        try:
            response = requests.get(f"{self.base}/v1/tasks/{task_id}/status", timeout=5)
        except requests.RequestException:
            return None
        return response.json() if response.status_code == 200 else None

    def stage(self, task_id: str, task_name: str) -> dict | None:
        document = self.document(task_id)
        return document["stages"].get(task_name) if document else None

    def wait_ended(self, task_ids: list[str], task_name: str, timeout: float) -> dict[str, dict | None]:
        """Each stage once it is SUCCESS or FAILED; whatever it is at ``timeout`` otherwise."""
        stages: dict[str, dict | None] = dict.fromkeys(task_ids)
        deadline = time.monotonic() + timeout

        def settled(task_id: str) -> bool:
            return stages[task_id] is not None and stages[task_id]["status"] in ENDED

        while True:
            for task_id in task_ids:
                if not settled(task_id):
                    stages[task_id] = self.stage(task_id, task_name)
            if all(settled(t) for t in task_ids) or time.monotonic() > deadline:
                return stages
            time.sleep(0.1)


class Receiver:
    """A callback receiver on 127.0.0.1 that answers from a script.

    ``plan(path, [500, 500, 200])`` answers the next requests on that path in order (then
    200); the word ``"stall"`` holds the request without answering until ``release()`` or
    ``stop()`` — a receiver that hangs while a worker waits on it. ``stop()`` and
    ``start()`` take it down and bring it back on the same port.
    """

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.calls: list[dict] = []
        self._plans: dict[str, list] = {}
        self._condition = threading.Condition()
        self._release = threading.Event()
        self._server: ThreadingHTTPServer | None = None

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def plan(self, path: str, answers: list) -> None:
        with self._condition:
            self._plans[path] = list(answers)

    def release(self) -> None:
        self._release.set()

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                call = {
                    "path": self.path,
                    "webhook_id": self.headers.get("webhook-id"),
                    "json": json.loads(body),
                    "at": time.monotonic(),
                    "answered": None,
                }
                with receiver._condition:
                    plan = receiver._plans.get(self.path) or []
                    answer = plan.pop(0) if plan else 200
                    receiver.calls.append(call)
                    receiver._condition.notify_all()
                if answer == "stall":
                    receiver._release.wait(120)
                    return  # close without an answer: the worker saw nothing come back
                self.send_response(answer)
                self.send_header("Content-Length", "0")
                self.end_headers()
                call["answered"] = answer

            def log_message(self, *args):
                pass

        self._release.clear()
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._release.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def calls_for(self, path: str | None = None) -> list[dict]:
        with self._condition:
            return [c for c in self.calls if path is None or c["path"] == path]

    def delivered(self, path: str | None = None) -> dict[str, dict]:
        """webhook-id → the first call that was answered 2xx."""
        found: dict[str, dict] = {}
        for call in self.calls_for(path):
            if call["answered"] is not None and 200 <= call["answered"] < 300:
                found.setdefault(call["webhook_id"], call)
        return found

    def wait_calls(self, count: int, timeout: float, path: str | None = None) -> bool:
        deadline = time.monotonic() + timeout
        with self._condition:
            while len([c for c in self.calls if path is None or c["path"] == path]) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._condition.wait(left)
        return True


class RunLog:
    """The file ``testing.count`` appends ``<task_id> <task_name> <attempt> <pid>`` to."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.touch()

    def runs(self) -> list[tuple[str, str, int, int]]:
        rows = []
        for line in self.path.read_text().splitlines():
            task_id, task_name, attempt, pid = line.split()
            rows.append((task_id, task_name, int(attempt), int(pid)))
        return rows

    def runs_of(self, task_id: str) -> int:
        return sum(1 for run in self.runs() if run[0] == task_id)
