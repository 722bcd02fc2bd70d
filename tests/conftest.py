"""Test fixtures: a real Redis server for the session, real RQ workers, a real HTTP
receiver on loopback, and (for end-to-end tests) real gunicorn and worker processes.

The servers and processes come from ``gateway.testing``; the fixtures here only wire
them to pytest (scopes, ``tmp_path``, teardown) and to the tests' settings."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import redis

from gateway import create_app
from gateway.testing.receiver import Receiver
from gateway.testing.redis_cluster import RedisClusterServers
from gateway.testing.redis_server import RedisServer
from gateway.testing.stack import PROJECT_ROOT, GatewayStack
from gateway.testing.waiting import wait_until
from gateway.worker import build_worker

# The ``browser`` fixture (headless chromium), in a module of its own.
pytest_plugins = ["tests.browser_fixtures"]

__all__ = ["ROOT", "SECRET", "IN_PROCESS_DB", "STACK_DB", "Receiver", "Stack", "base_config", "wait_until"]

ROOT = PROJECT_ROOT
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
IN_PROCESS_DB = 0
STACK_DB = 1


_redis: RedisServer | None = None


def pytest_configure(config):
    # Started before collection, so that a test module may build an app at import time
    # (schemathesis needs its app when the module is read).
    global _redis
    _redis = RedisServer().start()


def pytest_unconfigure(config):
    if _redis is not None:
        _redis.stop()


def session_redis() -> RedisServer:
    assert _redis is not None, "the test Redis starts in pytest_configure"
    return _redis


@pytest.fixture(scope="session")
def redis_server():
    return session_redis()


@pytest.fixture(scope="session")
def redis_cluster():
    """A real Redis Cluster: 3 primaries and 3 replicas on loopback (started on first
    use, a few seconds). Tests that kill a node start a cluster of their own."""
    with RedisClusterServers(primaries=3, replicas=1) as servers:
        yield servers


def base_config(redis_server, db: int) -> dict:
    return {
        "REDIS_URL": f"redis://127.0.0.1:{redis_server.port}/{db}",
        "CALLBACK_ALLOW_PRIVATE_NETWORKS": True,
        "CALLBACK_SIGNING_SECRET": SECRET,
        "CALLBACK_RETRY_INTERVALS": [0, 0, 0],
        "CALLBACK_TIMEOUT_SECONDS": 2,
        "TASK_MODULES": "tests.plugin_tasks",
        "DEMO_TASKS": True,
        # Each request line written as it is made, so a test reads it right after its
        # request; tests/test_logs.py checks the batches of the default.
        "LOG_FLUSH_SECONDS": 0,
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


@pytest.fixture
def receiver():
    """A callback receiver on loopback (gateway/testing/receiver.py): ``url()``,
    ``requests``, ``responses`` to script its answers, ``wait_for(count)``."""
    server = Receiver()
    yield server
    server.stop()


#: The settings of a stack's processes, as environment variables.
STACK_ENV = {
    "GATEWAY_CALLBACK_ALLOW_PRIVATE_NETWORKS": "true",
    "GATEWAY_CALLBACK_SIGNING_SECRET": SECRET,
    "GATEWAY_CALLBACK_RETRY_INTERVALS": "[1, 1, 1]",
    "GATEWAY_TASK_MODULES": "tests.plugin_tasks",
    "GATEWAY_DEMO_TASKS": "true",
}


class Stack(GatewayStack):
    """gunicorn and RQ worker processes, as an operator runs them, on database ``db`` of
    the session Redis; started and healthy once built, ``stop()`` when done."""

    def __init__(self, redis_server, tmp_path: Path, workers: int = 2, db: int = STACK_DB, env: dict | None = None):
        super().__init__(redis_server.url_for(db), tmp_path, {**STACK_ENV, **(env or {})})
        self.start(workers, timeout=20)


@pytest.fixture(scope="session")
def stack(redis_server, tmp_path_factory):
    running = Stack(redis_server, tmp_path_factory.mktemp("stack"))
    yield running
    running.stop()
