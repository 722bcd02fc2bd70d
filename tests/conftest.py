"""Test fixtures: a real Redis server for the session, real RQ workers, a real HTTP
receiver on loopback, and (for end-to-end tests) real gunicorn and worker processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import redis
import requests

from gateway import create_app
from gateway.embedded import EmbeddedRedis, free_port
from gateway.worker import build_worker
from tests.faults.harness import wait_for

ROOT = Path(__file__).resolve().parent.parent
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
IN_PROCESS_DB = 0
STACK_DB = 1


_redis: EmbeddedRedis | None = None


def pytest_configure(config):
    # Started before collection, so that a test module may build an app at import time
    # (schemathesis needs its app when the module is read).
    global _redis
    _redis = EmbeddedRedis(tempfile.mkdtemp(prefix="gateway-test-redis-")).start()


def pytest_unconfigure(config):
    if _redis is not None:
        _redis.stop()


def session_redis() -> EmbeddedRedis:
    assert _redis is not None, "the test Redis starts in pytest_configure"
    return _redis


@pytest.fixture(scope="session")
def redis_server():
    return session_redis()


def base_config(redis_server, db: int) -> dict:
    return {
        "REDIS_URL": f"redis://127.0.0.1:{redis_server.port}/{db}",
        "CALLBACK_ALLOW_PRIVATE_NETWORKS": True,
        "CALLBACK_SIGNING_SECRET": SECRET,
        "CALLBACK_RETRY_INTERVALS": [0, 0, 0],
        "CALLBACK_TIMEOUT_SECONDS": 2,
        "TASK_MODULES": "tests.plugin_tasks",
        "DEMO_TASKS": True,
    }


@pytest.fixture
def make_app(redis_server):
    """An app on a flushed database; keyword arguments override the config."""

    def factory(**overrides):
        app = create_app({**base_config(redis_server, IN_PROCESS_DB), **overrides})
        return app

    redis.Redis(port=redis_server.port, db=IN_PROCESS_DB).flushdb()
    return factory


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def work(app):
    """Run an in-process burst worker over every queue until they are empty."""

    def run(target_app=None):
        target = target_app or app
        with target.app_context():
            build_worker().work(burst=True, logging_level="WARNING")

    return run


@pytest.fixture
def task_id():
    return f"t-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def run_log(tmp_path):
    """A file the ``testing.count`` task appends one line to per run."""
    path = tmp_path / "runs.log"
    path.touch()

    class RunLog:
        def __init__(self):
            self.path = str(path)

        def lines(self):
            return path.read_text().splitlines()

    return RunLog()


class Receiver:
    """A real HTTP server on loopback that records callbacks and answers from a script."""

    def __init__(self):
        self.requests: list[dict] = []
        self.responses: list[tuple[int, dict]] = []  # consumed in order, then 200
        self.condition = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver.condition:
                    receiver.requests.append(
                        {
                            "path": self.path,
                            "headers": {k.lower(): v for k, v in self.headers.items()},
                            "raw": body,
                            "json": json.loads(body),
                            "received": time.monotonic(),
                        }
                    )
                    status, headers = receiver.responses.pop(0) if receiver.responses else (200, {})
                    receiver.condition.notify_all()
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.server.server_port}{path}"

    def wait_for(self, count: int, timeout: float = 10.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        with self.condition:
            while len(self.requests) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"expected {count} callbacks, got {len(self.requests)}")
                self.condition.wait(left)
            return list(self.requests)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.close()


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.05):
    """The predicate's first truthy value; fails the test once ``timeout`` is over."""
    value = wait_for(predicate, timeout, interval)
    if not value:
        raise AssertionError("condition not met in time")
    return value


class Stack:
    """gunicorn and RQ worker processes, as an operator runs them."""

    def __init__(self, redis_server, tmp_path: Path, workers: int = 2, db: int = STACK_DB, env: dict | None = None):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        config = base_config(redis_server, db)
        self.env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "GATEWAY_REDIS_URL": config["REDIS_URL"],
            "GATEWAY_CALLBACK_ALLOW_PRIVATE_NETWORKS": "true",
            "GATEWAY_CALLBACK_SIGNING_SECRET": SECRET,
            "GATEWAY_CALLBACK_RETRY_INTERVALS": "[1, 1, 1]",
            "GATEWAY_TASK_MODULES": "tests.plugin_tasks",
            "GATEWAY_DEMO_TASKS": "true",
            **(env or {}),
        }
        self.logs = tmp_path
        self.processes: list[subprocess.Popen] = []
        self._spawn(
            "gunicorn",
            [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "gunicorn.conf.py"),
             "--bind", f"127.0.0.1:{self.port}", "wsgi:app"],
        )  # fmt: skip
        for number in range(workers):
            self._spawn(f"worker{number}", [sys.executable, "-m", "flask", "--app", "wsgi", "worker"])
        wait_until(self._healthy, timeout=20)

    def _spawn(self, name: str, command: list[str]) -> None:
        log = open(self.logs / f"{name}.log", "w")  # noqa: SIM115 (closed with the process)
        self.processes.append(subprocess.Popen(command, cwd=ROOT, env=self.env, stdout=log, stderr=log))

    def _healthy(self) -> bool:
        try:
            return requests.get(self.base + "/v1/tasks/health", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def post(self, body: dict) -> requests.Response:
        return requests.post(self.base + "/v1/tasks", json=body, timeout=10)

    def status(self, task_id: str) -> dict:
        return requests.get(f"{self.base}/v1/tasks/{task_id}/status", timeout=10).json()

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()


@pytest.fixture(scope="session")
def stack(redis_server, tmp_path_factory):
    running = Stack(redis_server, tmp_path_factory.mktemp("stack"))
    yield running
    running.stop()
