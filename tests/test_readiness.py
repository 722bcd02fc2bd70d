"""GET /healthz (the process answers) and GET /readyz (Redis, Lua scripts, a worker per
queue): what a load balancer sees in each case, without an API token."""

from __future__ import annotations

import time

import redis

from gateway import tasks
from gateway.embedded import free_port
from gateway.worker import build_worker
from tests.conftest import base_config
from tests.test_operations import create_least_privilege_user

API_TOKEN = "an-api-token-of-some-length-0123"


def every_queue() -> list[str]:
    return [*tasks.by_node(), "callbacks"]


def test_healthz_answers_without_redis_and_without_a_token(make_app):
    app = make_app(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0", API_TOKENS={API_TOKEN: "tenant-a"})
    response = app.test_client().get("/healthz")
    assert response.status_code == 200
    assert response.json["status"] == "ok"


def test_readyz_is_503_with_the_reason_when_redis_is_down(make_app):
    app = make_app(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0", REDIS_CONNECT_TIMEOUT_SECONDS=0.2)
    response = app.test_client().get("/readyz")
    assert response.status_code == 503
    error = response.json["error"]
    assert error["code"] == "not_ready"
    assert "ConnectionError" in error["details"]["store_redis"]
    assert "ConnectionError" in error["details"]["queue_redis"]
    assert "store Redis" in error["message"]


def test_readyz_is_503_until_each_queue_has_a_worker_then_200(app):
    client = app.test_client()
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json["error"]["details"]["queues_without_workers"] == every_queue()
    assert "no worker for queues" in response.json["error"]["message"]

    with app.app_context():
        worker = build_worker()  # a real RQ worker for every queue, registered as RQ does at its start
        worker.register_birth()
    try:
        response = client.get("/readyz")
        assert response.status_code == 200, response.json
        assert response.json["status"] == "ready"
        assert response.json["checks"] == {
            "store_redis": "ok",
            "queue_redis": "ok",
            "scripts_missing": [],
            "queues_without_workers": [],
        }
        # A worker whose heartbeats stopped: its hash expires, RQ's set still names it.
        worker.heartbeat(timeout=1)
        time.sleep(1.2)
        response = client.get("/readyz")
        assert response.status_code == 503
        assert response.json["error"]["details"]["queues_without_workers"] == every_queue()
    finally:
        worker.register_death()


def test_readyz_is_503_while_an_evalsha_only_user_lacks_the_scripts(redis_server, make_app):
    admin = redis.Redis(port=redis_server.port)
    create_least_privilege_user(admin, "gateway-ready", "ready-pass")
    restricted_url = f"redis://gateway-ready:ready-pass@127.0.0.1:{redis_server.port}/0"
    app = make_app(REDIS_URL=restricted_url, QUEUE_REDIS_URL=restricted_url)
    try:
        admin.script_flush()
        response = app.test_client().get("/readyz")
        assert response.status_code == 503
        missing = response.json["error"]["details"]["scripts_missing"]
        assert "claim_stage" in missing and "rq:unique_enqueue" in missing
        operator = make_app(**base_config(redis_server, 0))
        assert operator.test_cli_runner().invoke(args=["scripts", "load"]).exit_code == 0
        response = app.test_client().get("/readyz")
        assert response.json["error"]["details"]["scripts_missing"] == []
    finally:
        admin.acl_deluser("gateway-ready")


def test_readyz_loads_missing_scripts_when_the_user_may(app, redis_server):
    redis.Redis(port=redis_server.port).script_flush()
    details = app.test_client().get("/readyz").json["error"]["details"]
    assert details["scripts_missing"] == []  # loaded by the check itself, as a request would
    assert details["queues_without_workers"]  # (no worker in this test)
