"""What user data and callback records cost in Redis and in answers (issue 9, item 11):
UTF-8 rather than ASCII escapes, lone surrogates kept exact, callback records bounded."""

from __future__ import annotations

import json

from standardwebhooks import Webhook

from gateway import keys
from gateway.store import MAX_TRY_ERROR_CHARS, get_redis
from tests.conftest import SECRET

ECHO = "demo.echo"
MiB = 1024 * 1024


def post_raw(client, body: dict):
    """POST a body as UTF-8 JSON text, whatever the test client's own JSON settings."""
    raw = json.dumps(body, ensure_ascii=False).encode("utf-8", "surrogatepass")
    return client.post("/v1/tasks", data=raw, content_type="application/json")


def emoji_body(task_id: str) -> tuple[dict, int]:
    """A create body of about 1 MiB of emoji (4 bytes each in UTF-8), just under the limit."""
    envelope = len(json.dumps({"task_name": ECHO, "task_id": task_id, "input_data": {"text": ""}}))
    body = {"task_name": ECHO, "task_id": task_id, "input_data": {"text": "😀" * ((MiB - envelope - 16) // 4)}}
    size = len(json.dumps(body, ensure_ascii=False).encode())
    assert MiB - 32 < size <= MiB
    return body, size


def field_bytes(app, task_id: str, field: str) -> int:
    with app.app_context():
        return get_redis().hstrlen(keys.task_document(task_id), field)


def test_a_mebibyte_of_emoji_is_stored_and_answered_at_its_own_size(app, client, work, task_id):
    body, size = emoji_body(task_id)
    assert post_raw(client, body).status_code == 202
    # Stored as UTF-8: about the body's size, not 3 times it (12 escape bytes per emoji).
    assert field_bytes(app, task_id, f"i:{ECHO}") < size * 1.01
    # /status shows the input twice (the latest request's and the stage's): 2x, not 6x.
    status = client.get(f"/v1/tasks/{task_id}/status")
    assert status.status_code == 200
    assert len(status.data) < size * 2.02
    assert status.json["stages"][ECHO]["input_params"] == body["input_data"]

    work()  # the echo's output is as large, and within GATEWAY_MAX_OUTPUT_BYTES in UTF-8
    result = client.get(f"/v1/tasks/{task_id}/result", query_string={"task_name": ECHO})
    assert result.json["status"] == "SUCCESS"
    assert result.json["output"] == body["input_data"]
    assert field_bytes(app, task_id, f"o:{ECHO}") < size * 1.01
    assert len(result.data) < size * 2.02  # input and output
    hit = post_raw(client, body)
    assert hit.status_code == 200
    assert len(hit.data) < size * 2.02
    assert hit.json["result"]["output"] == body["input_data"]


def test_a_lone_surrogate_round_trips_exactly_to_the_callback(app, client, work, task_id, receiver):
    value = {"lone": "a\ud800b", "low": "\udfff", "emoji": "😀", "é": "ünïcode"}
    # ASCII escapes: a surrogate as \ud800, the only way JSON text carries one.
    raw = json.dumps({"task_name": ECHO, "task_id": task_id, "input_data": value, "callback": receiver.url()})
    assert client.post("/v1/tasks", data=raw, content_type="application/json").status_code == 202
    work()

    with app.app_context():
        stored = get_redis().hget(keys.task_document(task_id), f"i:{ECHO}")
    assert "😀" in stored and "\\ud800" in stored and "\\udfff" in stored
    assert json.loads(stored) == value

    answers = [
        client.get(f"/v1/tasks/{task_id}/status").data,
        client.get(f"/v1/tasks/{task_id}/result", query_string={"task_name": ECHO}).data,
        client.post("/v1/tasks", data=raw, content_type="application/json").data,  # a completed hit
    ]
    work()  # the hit's push
    callbacks = receiver.wait_for(2)
    answers += [callback["raw"] for callback in callbacks]
    for answer in answers:
        text = answer.decode("utf-8")  # strict: valid UTF-8, never a 500
        assert "😀" in text and "ünïcode" in text  # UTF-8, not escapes
        assert "\\ud800" in text and "\\udfff" in text
    document = json.loads(answers[0])
    assert document["input_params"]["input_data"] == value
    assert document["stages"][ECHO]["input_params"] == value
    assert document["stages"][ECHO]["output"] == value
    assert json.loads(answers[1])["output"] == value
    assert json.loads(answers[2])["result"]["input_params"] == value
    for callback in callbacks:
        assert callback["json"]["result"]["input_params"] == value
        assert callback["json"]["result"]["output"] == value
        Webhook(SECRET).verify(callback["raw"], callback["headers"])  # what was signed was sent


def test_a_stage_stored_with_ascii_escapes_still_matches_the_same_input(app, client, work, task_id):
    """A stage written before UTF-8 storage holds its input as ``\\u`` escapes."""
    value = {"text": "héllo 😀", "del": "\x7f"}
    key = keys.task_document(task_id)
    assert post_raw(client, {"task_name": ECHO, "task_id": task_id, "input_data": value}).status_code == 202
    work()
    with app.app_context():
        redis_client = get_redis()
        old_form = json.dumps(value, sort_keys=True, separators=(",", ":"))
        redis_client.hset(key, f"i:{ECHO}", old_form)
    hit = post_raw(client, {"task_name": ECHO, "task_id": task_id, "input_data": value})
    assert hit.json["reuse_info"]["input_matches"] is True
    assert hit.json["result"]["input_params"] == value
    with app.app_context():
        assert redis_client.hget(key, "request_input") is None  # nothing stored twice
    other = post_raw(client, {"task_name": ECHO, "task_id": task_id, "input_data": {"text": "héllo"}})
    assert other.json["reuse_info"]["input_matches"] is False


def long_url(port: int, number: int, length: int = 600) -> str:
    path = f"/hook/{number}/"
    return f"http://127.0.0.1:{port}{path}{'x' * (length - len(path))}"


def test_callback_records_over_the_byte_bound_are_refused_and_nothing_is_written(make_app, task_id):
    limit = 4096
    app = make_app(MAX_CALLBACK_BYTES_PER_STAGE=limit)
    client = app.test_client()
    key = keys.task_document(task_id)
    body = {"task_name": "demo.sleep", "task_id": task_id, "input_data": {"seconds": 0}}
    accepted = 0
    while True:  # no worker: the stage stays PENDING and every record waits for it
        response = client.post("/v1/tasks", json={**body, "callback": long_url(9, accepted)})
        if response.status_code != 202:
            break
        accepted += 1
        assert accepted < 10, "the byte bound never refused a record"
    assert accepted >= 3
    assert response.status_code == 409
    error = response.json["error"]
    assert error["code"] == "callback_records_too_large"
    assert error["details"] == {"limit_bytes": limit}

    with app.app_context():
        redis_client = get_redis()
        before = redis_client.hgetall(key)
        redis_client.expire(key, 1000)
        refused = client.post("/v1/tasks", json={**body, "callback": long_url(9, 100)})
        assert refused.json["error"]["code"] == "callback_records_too_large"
        assert redis_client.hgetall(key) == before  # nothing written, not even the TTL
        assert redis_client.ttl(key) <= 1000
        # The stage (what each claim reads) stays within the bound and its own few fields.
        assert redis_client.hstrlen(key, "s:demo.sleep") <= limit + 200
    callbacks = client.get(f"/v1/tasks/{task_id}/status").json["stages"]["demo.sleep"]["callbacks"]
    assert [entry["url"] for entry in callbacks] == [long_url(9, n) for n in range(accepted)]
    # A URL already waiting for this run adds no record and is still accepted.
    assert client.post("/v1/tasks", json={**body, "callback": long_url(9, 0)}).status_code == 202


def test_finished_callback_records_make_room_within_the_byte_bound(make_app, work, task_id, receiver):
    limit = 4096
    app = make_app(MAX_CALLBACK_BYTES_PER_STAGE=limit)
    client = app.test_client()
    body = {"task_name": ECHO, "task_id": task_id, "input_data": {"x": 1}}
    client.post("/v1/tasks", json=body)
    work(app)
    port = receiver.server.server_port
    for number in range(15):  # about three times what the bound holds
        response = client.post("/v1/tasks", json={**body, "callback": long_url(port, number)})
        assert response.status_code == 200, response.json
        work(app)
        assert field_bytes(app, task_id, f"s:{ECHO}") <= limit + 1000  # + the last record's try
    assert len(receiver.wait_for(15)) == 15
    callbacks = client.get(f"/v1/tasks/{task_id}/status").json["stages"][ECHO]["callbacks"]
    assert 3 <= len(callbacks) < 15
    assert callbacks[-1]["url"] == long_url(port, 14)  # the oldest were forgotten
    assert all(entry["status"] == "sent" for entry in callbacks)


def test_a_failed_try_keeps_a_short_error(client, work, task_id):
    """A record grows by its tries after the claim measured it: each try's error is short."""
    url = long_url(9, 0, length=1000)  # nothing listens on port 9; the error names the URL
    body = {"task_name": ECHO, "task_id": task_id, "input_data": {"x": 1}, "callback": url}
    client.post("/v1/tasks", json=body)
    work()
    record = client.get(f"/v1/tasks/{task_id}/status").json["stages"][ECHO]["callbacks"][0]
    assert record["status"] == "failed"
    assert len(record["tries"]) == 4  # the first try and CALLBACK_RETRY_INTERVALS' 3 retries
    assert all(0 < len(item["error"]) <= MAX_TRY_ERROR_CHARS for item in record["tries"])
    assert 0 < len(record["last_error"]) <= MAX_TRY_ERROR_CHARS
