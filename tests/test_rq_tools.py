"""RQ's own tools against the queue Redis: ``rq info`` works with the least-privilege
Redis user of docs/SECURITY.md (it also writes: it drops expired entries of RQ's
registries as it counts, so a read-only user is not enough; docs/OPERATIONS.md)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import redis

from gateway.worker import build_worker
from tests.conftest import base_config
from tests.test_operations import create_least_privilege_user

DB = 15


def test_rq_info_works_with_the_least_privilege_user(redis_server, make_app):
    admin = redis.Redis(port=redis_server.port, db=DB)
    admin.flushdb()
    create_least_privilege_user(admin, "gateway-rqinfo", "rqinfo-pass")
    url = f"redis://gateway-rqinfo:rqinfo-pass@127.0.0.1:{redis_server.port}/{DB}"
    operator = make_app(**base_config(redis_server, DB))  # the operator's own user loads the scripts
    assert operator.test_cli_runner().invoke(args=["scripts", "load"]).exit_code == 0
    app = make_app(**{**base_config(redis_server, DB), "REDIS_URL": url})
    body = {"task_name": "demo.echo", "task_id": "rq-1", "input_data": {}}
    assert app.test_client().post("/v1/tasks", json=body).status_code == 202
    with app.app_context():
        worker = build_worker()
        worker.register_birth()
    try:
        rq = Path(sys.executable).parent / "rq"
        done = subprocess.run([str(rq), "info", "--url", url], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert "demo" in done.stdout and "1 workers" in done.stdout
        assert "NOPERM" not in done.stderr
    finally:
        worker.register_death()
        admin.acl_deluser("gateway-rqinfo")
