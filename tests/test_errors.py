"""Bad input gets a clear error in one shape, never a 500 (SPEC §8)."""

from __future__ import annotations

import time

import pytest

from gateway.embedded import free_port

VALID = {"task_name": "demo.echo", "task_id": "t-1", "input_data": {}}


def assert_error(response, status, code, field=None):
    assert response.status_code == status, response.get_data(as_text=True)
    error = response.json["error"]
    assert error["code"] == code
    assert error["message"]
    assert isinstance(error["details"], dict)
    if field is not None:
        assert field in error["details"], error["details"]
    return error


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"surprise": 1}, "surprise"),
        ({"task_id": ""}, "task_id"),
        ({"task_id": "-starts-with-dash"}, "task_id"),
        ({"task_id": "has space"}, "task_id"),
        ({"task_id": "x" * 129}, "task_id"),
        ({"task_id": "ends-with-newline\n"}, "task_id"),
        ({"task_id": 42}, "task_id"),
        ({"task_name": "Demo.Echo"}, "task_name"),
        ({"task_name": "demo"}, "task_name"),
        ({"task_name": "demo.missing"}, "task_name"),
        ({"task_name": None}, "task_name"),
        ({"input_data": [1, 2]}, "input_data"),
        ({"input_data": "text"}, "input_data"),
        ({"input_data": None}, "input_data"),
        ({"callback": "ftp://example.org/hook"}, "callback"),
        ({"callback": "https://example.org/" + "a" * 2048}, "callback"),
        ({"callback": "https://user:pass@example.org/hook"}, "callback"),
        ({"callback": "not a url"}, "callback"),
        ({"callback": 12}, "callback"),
    ],
)
def test_schema_violations_are_400_with_the_field(make_app, change, field):
    client = make_app(CALLBACK_ALLOW_PRIVATE_NETWORKS=False).test_client()
    assert_error(client.post("/v1/tasks", json={**VALID, **change}), 400, "validation_error", field)


@pytest.mark.parametrize("missing", ["task_name", "input_data"])
def test_required_fields(client, missing):
    body = {key: value for key, value in VALID.items() if key != missing}
    assert_error(client.post("/v1/tasks", json=body), 400, "validation_error", missing)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/hook",
        "http://localhost:8080/hook",
        "http://api.localhost/hook",
        "http://10.0.0.8/hook",
        "http://192.168.1.1/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://100.64.0.1/hook",
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://[fe80::1]/hook",
        "http://2130706433/hook",
        "http://0x7f.0.0.1/hook",
        "http://0177.0.0.1/hook",
        "http://0.0.0.0/hook",
        "http://224.0.0.1/hook",
    ],
)
def test_non_public_callback_address_is_refused_unless_allowed(make_app, url):
    refusing = make_app(CALLBACK_ALLOW_PRIVATE_NETWORKS=False).test_client()
    error = assert_error(refusing.post("/v1/tasks", json={**VALID, "callback": url}), 400, "validation_error")
    assert "not allowed" in error["details"]["callback"][0]
    allowing = make_app(CALLBACK_ALLOW_PRIVATE_NETWORKS=True).test_client()
    assert allowing.post("/v1/tasks", json={**VALID, "callback": url}).status_code == 202


def test_public_callback_name_is_accepted(make_app):
    client = make_app(CALLBACK_ALLOW_PRIVATE_NETWORKS=False).test_client()
    response = client.post("/v1/tasks", json={**VALID, "callback": "https://example.org/hook"})
    assert response.status_code == 202


@pytest.mark.parametrize(
    "raw",
    [b"{", b"", b"[1, 2]", b'"text"', b'{"input_data": NaN}', b"\xff\xfe", b'{"a": Infinity}'],
    ids=["truncated", "empty", "array", "string", "nan", "not-utf8", "infinity"],
)
def test_malformed_json_is_400(client, raw):
    response = client.post("/v1/tasks", data=raw, content_type="application/json")
    assert_error(response, 400, "validation_error", "body")


def test_deep_nesting_is_400(client):
    deep = "[" * 100_000 + "]" * 100_000
    raw = '{"task_name": "demo.echo", "input_data": {"a": ' + deep + "}}"
    assert_error(client.post("/v1/tasks", data=raw, content_type="application/json"), 400, "validation_error")


def test_nesting_over_the_limit_is_400_and_at_the_limit_is_accepted(make_app):
    client = make_app(MAX_JSON_DEPTH=10).test_client()

    def nested(levels):
        value = {}
        for _ in range(levels):
            value = {"a": value}
        return value

    # The body object is level 1 and input_data level 2.
    assert client.post("/v1/tasks", json={**VALID, "input_data": nested(8)}).status_code == 202
    response = client.post("/v1/tasks", json={**VALID, "input_data": nested(9)})
    assert_error(response, 400, "validation_error", "body")


def test_body_over_the_limit_is_413(make_app):
    client = make_app(MAX_INPUT_BYTES=1000).test_client()
    body = {**VALID, "input_data": {"blob": "x" * 1000}}
    assert_error(client.post("/v1/tasks", json=body), 413, "payload_too_large")
    assert client.post("/v1/tasks", json={**VALID, "input_data": {"blob": "x" * 800}}).status_code == 202


def test_non_json_content_type_is_415(client):
    response = client.post("/v1/tasks", data="task_name=demo.echo", content_type="application/x-www-form-urlencoded")
    assert_error(response, 415, "unsupported_media_type")


def test_unknown_task_is_404(client):
    assert_error(client.get("/v1/tasks/nothing-here/status"), 404, "task_not_found")
    assert_error(client.get("/v1/tasks/nothing-here/result"), 404, "task_not_found")
    assert_error(client.delete("/v1/tasks/nothing-here"), 404, "task_not_found")
    assert_error(client.post("/v1/tasks/nothing-here/retry"), 404, "task_not_found")
    assert_error(client.post("/v1/tasks/nothing-here/delete", json={}), 404, "task_not_found")


def test_unknown_stage_is_404(client):
    client.post("/v1/tasks", json=VALID)
    assert_error(client.get("/v1/tasks/t-1/result?task_name=demo.fail"), 404, "stage_not_found")


def test_bad_task_id_in_path_is_400(client):
    assert_error(client.get("/v1/tasks/-bad/status"), 400, "validation_error", "task_id")


def test_unknown_route_and_method_use_the_error_shape(client):
    assert_error(client.get("/v1/nothing"), 404, "not_found")
    response = client.put("/v1/tasks")
    assert_error(response, 405, "method_not_allowed")
    assert "POST" in response.headers["Allow"]


@pytest.mark.parametrize(
    "path",
    [
        "/v1//tasks/health",
        "//v1/tasks/health",
        "/v1/tasks//t-1/status",
        "/v1/tasks/t-1//status",
        "/v1/tasks/health/",
        "/v1/tasks/",
        "/v1//tasks",
    ],
)
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_odd_slashes_are_a_json_404_never_a_redirect(client, path, method):
    # A redirect would be HTML, and a 308 makes clients send a POST body twice.
    response = client.open(path, method=method, json=VALID if method == "POST" else None)
    assert response.content_type == "application/json"
    assert_error(response, 404, "not_found")


def test_no_route_ends_in_a_slash(app):
    """Werkzeug redirects "/x" to a rule "/x/" (strict slashes) with an HTML 308."""
    assert [rule.rule for rule in app.url_map.iter_rules() if rule.rule.endswith("/")] == []


def test_redis_unreachable_is_a_fast_503(redis_server):
    from gateway import create_app

    app = create_app({"REDIS_URL": f"redis://127.0.0.1:{free_port()}/0", "DEMO_TASKS": True})
    client = app.test_client()
    started = time.monotonic()
    response = client.post("/v1/tasks", json=VALID)
    assert_error(response, 503, "store_unavailable")
    assert response.headers["Retry-After"] == "1"
    assert_error(client.get("/v1/tasks/t-1/status"), 503, "store_unavailable")
    assert_error(client.get("/v1/tasks/health"), 503, "store_unavailable")
    assert time.monotonic() - started < 10  # a bound, not a benchmark: it must not hang


def test_too_many_stages_is_409(make_app):
    client = make_app(MAX_STAGES_PER_TASK=2).test_client()
    assert client.post("/v1/tasks", json={**VALID, "task_name": "demo.echo"}).status_code == 202
    assert client.post("/v1/tasks", json={**VALID, "task_name": "demo.fail"}).status_code == 202
    response = client.post("/v1/tasks", json={**VALID, "task_name": "demo.sleep"})
    assert_error(response, 409, "too_many_stages")
    # Existing stages are still reachable.
    assert client.post("/v1/tasks", json={**VALID, "task_name": "demo.echo"}).status_code == 202
    assert set(client.get("/v1/tasks/t-1/status").json["stages"]) == {"demo.echo", "demo.fail"}


def test_too_many_waiting_callbacks_is_409(make_app):
    client = make_app(MAX_CALLBACKS_PER_STAGE=2).test_client()
    for number in range(2):
        body = {**VALID, "callback": f"http://127.0.0.1:9/{number}"}
        assert client.post("/v1/tasks", json=body).status_code == 202
    response = client.post("/v1/tasks", json={**VALID, "callback": "http://127.0.0.1:9/2"})
    assert_error(response, 409, "too_many_callbacks")


@pytest.mark.parametrize("number", ["1e400", "-1e400"])
def test_number_beyond_a_double_is_400(client, number):
    raw = '{"task_name": "demo.echo", "input_data": {"x": ' + number + "}}"
    error = assert_error(client.post("/v1/tasks", data=raw, content_type="application/json"), 400, "validation_error")
    assert "out of range" in error["details"]["body"][0]


@pytest.mark.parametrize("url", ["https://example.org/\ud800", "https://example.org/a\nb"])
def test_callback_with_unencodable_or_control_characters_is_400(client, url):
    assert_error(client.post("/v1/tasks", json={**VALID, "callback": url}), 400, "validation_error", "callback")


@pytest.mark.parametrize("reserved", ["health", "supported-tasks"])
def test_route_names_are_not_task_ids(client, reserved):
    """DELETE /v1/tasks/health must not cancel a task called "health"."""
    error = assert_error(client.post("/v1/tasks", json={**VALID, "task_id": reserved}), 400, "validation_error")
    assert "reserved" in error["details"]["task_id"][0]
    response = client.delete(f"/v1/tasks/{reserved}")
    assert_error(response, 405, "method_not_allowed")
    assert "DELETE" not in response.headers["Allow"]


def test_redis_refusing_writes_is_a_503_not_a_500(client, redis_server):
    """A full Redis (maxmemory with noeviction) refuses writes: callers are told to retry."""
    import redis

    admin = redis.Redis(port=redis_server.port)
    admin.config_set("maxmemory-policy", "noeviction")
    admin.config_set("maxmemory", "1")
    try:
        response = client.post("/v1/tasks", json=VALID)
        assert_error(response, 503, "store_unavailable")
        assert response.headers["Retry-After"] == "1"
    finally:
        admin.config_set("maxmemory", "0")
    assert client.post("/v1/tasks", json=VALID).status_code == 202


SHORTCUT_CASES = [
    VALID,
    {"task_name": "demo.echo", "input_data": {"a": [1, {}]}},
    {"task_name": "demo.echo", "input_data": {}, "callback": None},
    {"task_name": "demo.echo", "input_data": {}, "callback": "http://127.0.0.1:9/hook"},
    {"task_name": "demo.echo", "input_data": {}, "callback": "ftp://127.0.0.1/hook"},
    {"task_name": "demo.echo", "input_data": {}, "callback": 5},
    {"task_name": "demo.echo", "input_data": {}, "task_id": None},
    {"task_name": "demo.echo", "input_data": {}, "task_id": "health"},
    {"task_name": "demo.echo", "input_data": {}, "task_id": "a" * 129},
    {"task_name": "demo.echo", "input_data": {}, "task_id": "a\nb"},
    {"task_name": "demo.echo", "input_data": {}, "task_id": "ab\n"},
    {"task_name": "demo.echo", "input_data": {}, "task_id": 7},
    {"task_name": "demo.nope", "input_data": {}},
    {"task_name": "Demo.echo", "input_data": {}},
    {"task_name": ["demo.echo"], "input_data": {}},
    {"task_name": "demo.echo", "input_data": []},
    {"task_name": "demo.echo", "input_data": None},
    {"task_name": "demo.echo"},
    {"input_data": {}},
    {"task_name": "demo.echo", "input_data": {}, "priority": 1},
    {},
]


@pytest.mark.parametrize("body", SHORTCUT_CASES)
def test_create_shortcut_accepts_and_refuses_what_the_schema_does(app, body):
    from marshmallow import ValidationError

    from gateway.api.schemas import create_task_schema, load_create_request

    def outcome(load):
        try:
            data = load(dict(body))
        except ValidationError as error:
            return "refused", error.messages
        if "task_id" not in body:
            assert data.pop("task_id").startswith("task-")  # generated, so it differs between calls
        return "accepted", data

    with app.app_context():
        assert outcome(load_create_request) == outcome(create_task_schema.load)
