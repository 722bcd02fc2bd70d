"""API tokens and sealed tenants: every endpoint, across two tenants."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import pytest
import requests

from gateway import create_app
from gateway.embedded import free_port
from tests.conftest import ROOT, base_config, wait_until

TOKEN_A = "token-of-tenant-a-0123456789"
TOKEN_B = "token-of-tenant-b-9876543210"


@pytest.fixture
def tenant_app(make_app):
    return make_app(API_TOKENS={TOKEN_A: "alpha", TOKEN_B: "beta"})


def call(client, method, path, token, **kwargs):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return client.open(path, method=method, headers=headers, **kwargs)


def create(client, token, task_id, task_name="demo.echo", input_data=None, callback=None):
    body = {"task_name": task_name, "task_id": task_id, "input_data": input_data or {"who": token[:14]}}
    if callback:
        body["callback"] = callback
    return call(client, "POST", "/v1/tasks", token, json=body)


ENDPOINTS = [
    ("POST", "/v1/tasks", {"json": {"task_name": "demo.echo", "input_data": {}}}),
    ("GET", "/v1/tasks/shared/status", {}),
    ("GET", "/v1/tasks/shared/result", {}),
    ("GET", "/v1/tasks/supported-tasks", {}),
    ("POST", "/v1/tasks/shared/delete", {"json": {}}),
    ("DELETE", "/v1/tasks/shared", {}),
    ("POST", "/v1/tasks/shared/retry", {}),
]


@pytest.mark.parametrize(("method", "path", "kwargs"), ENDPOINTS)
@pytest.mark.parametrize("token", [None, "wrong-token-wrong-token", ""])
def test_every_endpoint_needs_a_valid_token(tenant_app, method, path, kwargs, token):
    client = tenant_app.test_client()
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    response = client.open(path, method=method, headers=headers, **kwargs)
    assert response.status_code == 401
    assert response.json["error"]["code"] == "unauthorized"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_basic_auth_scheme_is_refused(tenant_app):
    response = tenant_app.test_client().get("/v1/tasks/x/status", headers={"Authorization": f"Basic {TOKEN_A}"})
    assert response.status_code == 401


def test_health_stays_open(tenant_app):
    assert tenant_app.test_client().get("/v1/tasks/health").status_code == 200


def test_same_task_id_is_a_separate_document_per_tenant(tenant_app, work):
    client = tenant_app.test_client()
    assert create(client, TOKEN_A, "shared", input_data={"owner": "a"}).status_code == 202
    work(tenant_app)
    # B's first request with the same id is a miss, not a hit on A's stage.
    response = create(client, TOKEN_B, "shared", input_data={"owner": "b"})
    assert response.status_code == 202
    assert response.json["reuse_info"]["state"] == "miss"
    assert response.json["task_id"] == "shared"
    work(tenant_app)
    a = call(client, "GET", "/v1/tasks/shared/status", TOKEN_A).json
    b = call(client, "GET", "/v1/tasks/shared/status", TOKEN_B).json
    assert a["task_id"] == b["task_id"] == "shared"
    assert a["stages"]["demo.echo"]["output"] == {"owner": "a"}
    assert b["stages"]["demo.echo"]["output"] == {"owner": "b"}
    hit = create(client, TOKEN_A, "shared", input_data={"owner": "a"})
    assert hit.json["result"]["output"] == {"owner": "a"}


def test_a_tenant_cannot_read_cancel_retry_or_delete_anothers_task(tenant_app, work):
    client = tenant_app.test_client()
    create(client, TOKEN_A, "private-a", "demo.fail")
    for method, path, kwargs in [
        ("GET", "/v1/tasks/private-a/status", {}),
        ("GET", "/v1/tasks/private-a/result", {}),
        ("GET", "/v1/tasks/private-a/result?task_name=demo.fail", {}),
        ("DELETE", "/v1/tasks/private-a", {}),
        ("POST", "/v1/tasks/private-a/retry", {}),
        ("POST", "/v1/tasks/private-a/delete", {"json": {"force": True}}),
    ]:
        response = call(client, method, path, TOKEN_B, **kwargs)
        assert response.status_code == 404, (method, path)
        assert response.json["error"]["code"] == "task_not_found"
        assert "alpha" not in json.dumps(response.json)
    assert call(client, "GET", "/v1/tasks/private-a/status", TOKEN_A).json["stages"]["demo.fail"]["status"] == "PENDING"


def test_callbacks_carry_the_callers_task_id_and_stay_in_the_tenant(tenant_app, work, receiver):
    client = tenant_app.test_client()
    create(client, TOKEN_A, "cb", callback=receiver.url("/a"))
    create(client, TOKEN_B, "cb", callback=receiver.url("/b"))
    work(tenant_app)
    delivered = {r["path"]: r["json"] for r in receiver.wait_for(2)}
    assert delivered["/a"]["task_id"] == delivered["/b"]["task_id"] == "cb"
    assert delivered["/a"]["result"]["input_params"] == {"who": TOKEN_A[:14]}
    assert delivered["/b"]["result"]["input_params"] == {"who": TOKEN_B[:14]}


def test_tokens_from_a_file(redis_server, tmp_path):
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps({TOKEN_A: "alpha"}))
    app = create_app({**base_config(redis_server, 0), "API_TOKENS": f"@{path}"})
    client = app.test_client()
    assert call(client, "GET", "/v1/tasks/supported-tasks", TOKEN_A).status_code == 200
    assert call(client, "GET", "/v1/tasks/supported-tasks", TOKEN_B).status_code == 401


@pytest.mark.parametrize(
    "tokens", [{"short": "alpha"}, {TOKEN_A: "has space"}, {TOKEN_A: ""}, ["not", "an", "object"]], ids=str
)
def test_bad_token_configuration_is_refused_at_start(redis_server, tokens):
    with pytest.raises(ValueError):
        create_app({**base_config(redis_server, 0), "API_TOKENS": tokens})


def gunicorn_output(redis_server, tmp_path, **env) -> str:
    """What real gunicorn (3 web processes) writes from its start to its stop."""
    port = free_port()
    command = [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "gunicorn.conf.py"),
               "--bind", f"127.0.0.1:{port}", "wsgi:app"]  # fmt: skip
    environ = {
        **{name: value for name, value in os.environ.items() if not name.startswith("GATEWAY_")},
        "PYTHONPATH": str(ROOT),
        "GATEWAY_REDIS_URL": base_config(redis_server, 0)["REDIS_URL"],
        "GATEWAY_WEB_WORKERS": "3",
        **env,
    }
    log = tmp_path / "gunicorn.log"
    with open(log, "w") as output:
        process = subprocess.Popen(command, cwd=ROOT, env=environ, stdout=output, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: log.read_text().count("Booting worker") == 3, timeout=30)
        wait_until(lambda: requests.get(f"http://127.0.0.1:{port}/v1/tasks/health", timeout=1).ok, timeout=30)
    finally:
        process.terminate()
        process.wait(30)
    return log.read_text()


def test_open_api_is_warned_of_once_by_gunicorn_not_by_each_process(redis_server, tmp_path):
    assert gunicorn_output(redis_server, tmp_path).count("GATEWAY_API_TOKENS is not set") == 1


def test_no_open_api_warning_with_tokens(redis_server, tmp_path):
    tokens = json.dumps({TOKEN_A: "alpha"})
    assert "GATEWAY_API_TOKENS is not set" not in gunicorn_output(redis_server, tmp_path, GATEWAY_API_TOKENS=tokens)


def test_tokens_are_never_logged(tenant_app, caplog):
    client = tenant_app.test_client()
    with caplog.at_level(logging.DEBUG):
        call(client, "GET", "/v1/tasks/x/status", TOKEN_A)
        call(client, "GET", "/v1/tasks/x/status", "some-bad-token-value-123")
    assert TOKEN_A not in caplog.text
    assert "some-bad-token-value-123" not in caplog.text


def test_a_handler_sees_the_callers_task_id_and_its_tenant(tenant_app, work):
    client = tenant_app.test_client()
    create(client, TOKEN_A, "ctx", "testing.context")
    create(client, TOKEN_B, "ctx", "testing.context")
    work(tenant_app)
    for token, tenant in [(TOKEN_A, "alpha"), (TOKEN_B, "beta")]:
        stage = call(client, "GET", "/v1/tasks/ctx/status", token).json["stages"]["testing.context"]
        assert stage["status"] == "SUCCESS"
        assert stage["output"] == {"task_id": "ctx", "tenant": tenant, "task_name": "testing.context", "attempt": 1}


def test_without_tokens_a_handler_has_no_tenant(client, work):
    client.post("/v1/tasks", json={"task_name": "testing.context", "task_id": "ctx", "input_data": {}})
    work()
    output = client.get("/v1/tasks/ctx/status").json["stages"]["testing.context"]["output"]
    assert output == {"task_id": "ctx", "tenant": None, "task_name": "testing.context", "attempt": 1}
