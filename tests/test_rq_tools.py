"""RQ's own tools against the queue Redis, with the least-privilege Redis user of
docs/SECURITY.md: ``rq info`` (it also writes: it drops expired entries of RQ's
registries as it counts, so a read-only user is not enough; docs/OPERATIONS.md) and
rq-dashboard (with its JSON serializer, the gateway's)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import redis
import requests

from gateway.embedded import free_port
from gateway.testing.waiting import poll_until
from gateway.worker import build_worker
from tests.conftest import base_config
from tests.test_operations import create_least_privilege_user

DB = 15


@pytest.fixture
def queue_redis(redis_server, make_app):
    """A queue Redis seen through the least-privilege user, holding a queued run and a
    registered worker; its URL."""
    admin = redis.Redis(port=redis_server.port, db=DB)
    admin.flushdb()
    create_least_privilege_user(admin, "gateway-rqtools", "rqtools-pass")
    url = f"redis://gateway-rqtools:rqtools-pass@127.0.0.1:{redis_server.port}/{DB}"
    operator = make_app(**base_config(redis_server, DB))  # the operator's own user loads the scripts
    assert operator.test_cli_runner().invoke(args=["scripts", "load"]).exit_code == 0
    app = make_app(**{**base_config(redis_server, DB), "REDIS_URL": url})
    body = {"task_name": "demo.echo", "task_id": "rq-1", "input_data": {}}
    assert app.test_client().post("/v1/tasks", json=body).status_code == 202
    with app.app_context():
        worker = build_worker()
        worker.register_birth()
    yield url
    worker.register_death()
    admin.acl_deluser("gateway-rqtools")


def test_rq_info_works_with_the_least_privilege_user(queue_redis):
    rq = Path(sys.executable).parent / "rq"
    done = subprocess.run([str(rq), "info", "--url", queue_redis], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "demo" in done.stdout and "1 workers" in done.stdout
    assert "NOPERM" not in done.stderr


def test_rq_dashboard_shows_queues_workers_and_jobs_with_the_least_privilege_user(queue_redis, tmp_path):
    port = free_port()
    command = [str(Path(sys.executable).parent / "rq-dashboard"), "--redis-url", queue_redis, "--bind", "127.0.0.1",
               "--port", str(port), "--json", "--username", "ops", "--password", "ops-pass"]  # fmt: skip
    with open(tmp_path / "dashboard.log", "wb") as log:
        dashboard = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    base, auth = f"http://127.0.0.1:{port}/0/data", ("ops", "ops-pass")

    def answers() -> bool:
        try:
            return requests.get(f"{base}/queues.json", auth=auth, timeout=2).status_code == 200
        except requests.ConnectionError:
            return False

    try:
        assert poll_until(answers, 30, 0.1), (tmp_path / "dashboard.log").read_text()
        assert requests.get(f"{base}/queues.json", timeout=5).status_code == 401  # its own basic auth
        [queue] = requests.get(f"{base}/queues.json", auth=auth, timeout=5).json()["queues"]
        assert (queue["name"], queue["count"]) == ("demo", 1)
        [worker] = requests.get(f"{base}/workers.json", auth=auth, timeout=5).json()["workers"]
        assert "demo" in worker["queues"] and "callbacks" in worker["queues"]
        [job] = requests.get(f"{base}/jobs/demo/queued/8/asc/1.json", auth=auth, timeout=5).json()["jobs"]
        detail = requests.get(f"{base}/job/{job['id']}.json", auth=auth, timeout=5).json()
        # The job's description names ids only, never the input (gateway.queues).
        assert detail["status"] == "queued" and detail["description"] == "run rq-1 demo.echo"
    finally:
        dashboard.terminate()
        dashboard.wait(10)
    assert "NOPERM" not in (tmp_path / "dashboard.log").read_text()
