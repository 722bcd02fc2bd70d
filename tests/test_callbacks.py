"""Callback delivery (SPEC §4): who is pushed what and when, headers, signatures, retries."""

from __future__ import annotations

import json

from standardwebhooks import Webhook

from tests.conftest import SECRET
from tests.test_reuse import create, stage

ECHO = "demo.echo"


def test_miss_callback_arrives_when_run_ends_with_null_reuse_info(client, work, task_id, receiver):
    response = create(client, task_id, ECHO, {"a": 1}, callback=receiver.url())
    assert response.json["callback_status"] == "queued"
    assert receiver.requests == []
    work()
    [delivered] = receiver.wait_for(1)
    body = delivered["json"]
    assert body["task_id"] == task_id
    assert body["task_name"] == ECHO
    assert body["status"] == "completed"
    assert body["reuse_info"] is None
    assert body["result"] == {
        "task_name": ECHO, "status": "SUCCESS", "input_params": {"a": 1}, "output": {"a": 1},
        "error": None, "duration": body["result"]["duration"],
    }  # fmt: skip
    assert body["timestamp"].endswith("Z")
    document = client.get(f"/v1/tasks/{task_id}/status").json
    assert document["callback_status"] == "sent"
    [record] = document["stages"][ECHO]["callbacks"]
    assert record["url"] == receiver.url()
    assert record["status"] == "sent"
    assert record["attempts"] == 1
    assert record["last_status_code"] == 200
    assert record["reuse"] is False
    assert record["delivery_id"] == delivered["headers"]["webhook-id"]


def test_callback_headers_verify_with_standardwebhooks(client, work, task_id, receiver):
    create(client, task_id, ECHO, {"a": "ü"}, callback=receiver.url())
    work()
    [delivered] = receiver.wait_for(1)
    headers = delivered["headers"]
    assert headers["content-type"] == "application/json"
    assert headers["user-agent"].startswith("SingleTaskGateway/")
    verified = Webhook(SECRET).verify(delivered["raw"], headers)
    assert verified["task_id"] == task_id


def test_rotated_secrets_both_verify(make_app, task_id, receiver):
    other = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo="
    app = make_app(CALLBACK_SIGNING_SECRET=[SECRET, other])
    client = app.test_client()
    create(client, task_id, ECHO, callback=receiver.url())
    from gateway.worker import build_worker

    with app.app_context():
        build_worker().work(burst=True, logging_level="WARNING")
    [delivered] = receiver.wait_for(1)
    assert len(delivered["headers"]["webhook-signature"].split(" ")) == 2
    for secret in (SECRET, other):
        Webhook(secret).verify(delivered["raw"], delivered["headers"])


def test_completed_hit_pushes_only_to_the_new_url(client, work, task_id, receiver):
    create(client, task_id, ECHO, callback=receiver.url("/old"))
    work()
    receiver.wait_for(1)
    response = create(client, task_id, ECHO, callback=receiver.url("/new"))
    assert response.status_code == 200
    assert response.json["callback_status"] == "queued"
    work()
    requests = receiver.wait_for(2)
    assert [r["path"] for r in requests] == ["/old", "/new"]
    pushed = requests[1]["json"]
    assert pushed["reuse_info"] == response.json["reuse_info"]
    assert pushed["result"] == response.json["result"]
    records = stage(client, task_id)["callbacks"]
    assert [(r["url"].rsplit("/", 1)[1], r["reuse"], r["status"]) for r in records] == [
        ("old", False, "sent"), ("new", True, "sent"),
    ]  # fmt: skip


def test_pending_hit_subscriber_gets_result_only_after_run_ends(client, work, task_id, receiver, run_log):
    data = {"log": run_log.path}
    create(client, task_id, "testing.count", data, callback=receiver.url("/starter"))
    hit = create(client, task_id, "testing.count", data, callback=receiver.url("/waiter"))
    assert hit.json["reuse_info"]["state"] == "pending"
    assert hit.json["callback_status"] == "queued"
    # Nothing is pushed early: the run has not happened yet.
    assert receiver.requests == []
    assert stage(client, task_id, "testing.count")["status"] == "PENDING"
    work()
    requests = receiver.wait_for(2)
    by_path = {r["path"]: r["json"] for r in requests}
    assert by_path["/starter"]["reuse_info"] is None
    assert by_path["/waiter"]["reuse_info"] == hit.json["reuse_info"]
    assert by_path["/waiter"]["result"]["status"] == "SUCCESS"
    assert len(run_log.lines()) == 1


def test_same_url_subscribes_once(client, work, task_id, receiver, run_log):
    data = {"log": run_log.path}
    for _ in range(3):
        create(client, task_id, "testing.count", data, callback=receiver.url())
    work()
    receiver.wait_for(1)
    assert len(stage(client, task_id, "testing.count")["callbacks"]) == 1
    assert len(receiver.requests) == 1


def test_failed_run_pushes_failed_status(client, work, task_id, receiver):
    create(client, task_id, "demo.fail", {"message": "nope"}, callback=receiver.url())
    work()
    [delivered] = receiver.wait_for(1)
    assert delivered["json"]["status"] == "failed"
    assert delivered["json"]["result"]["error"] == "RuntimeError: nope"
    assert delivered["json"]["result"]["output"] is None


def test_receiver_errors_are_retried_with_the_same_webhook_id(client, work, task_id, receiver):
    receiver.responses = [(500, {}), (409, {})]
    create(client, task_id, ECHO, callback=receiver.url())
    work()
    requests = receiver.wait_for(3)
    assert len({r["headers"]["webhook-id"] for r in requests}) == 1
    [record] = stage(client, task_id)["callbacks"]
    assert record["status"] == "sent"
    assert record["attempts"] == 3
    assert record["last_status_code"] == 200
    assert record["last_error"] is None
    assert [(t["status_code"], t["error"]) for t in record["tries"]] == [
        (500, "HTTP 500"),
        (409, "HTTP 409"),
        (200, None),
    ]


def test_gone_ends_delivery_at_once(client, work, task_id, receiver):
    receiver.responses = [(410, {})]
    create(client, task_id, ECHO, callback=receiver.url())
    work()
    receiver.wait_for(1)
    [record] = stage(client, task_id)["callbacks"]
    assert record["status"] == "failed"
    assert record["attempts"] == 1
    assert record["last_status_code"] == 410
    assert len(receiver.requests) == 1
    assert client.get(f"/v1/tasks/{task_id}/status").json["callback_status"] == "failed"


def test_redirect_is_a_failure_and_not_followed(client, work, task_id, receiver):
    receiver.responses = [(302, {"Location": receiver.url("/elsewhere")})] * 4
    create(client, task_id, ECHO, callback=receiver.url())
    work()
    requests = receiver.wait_for(4)
    assert {r["path"] for r in requests} == {"/hook"}
    [record] = stage(client, task_id)["callbacks"]
    assert record["status"] == "failed"
    assert record["attempts"] == 4  # one try and three retries
    assert record["last_status_code"] == 302


def test_unreachable_receiver_fails_after_all_retries(client, work, task_id):
    from gateway.embedded import free_port

    url = f"http://127.0.0.1:{free_port()}/hook"
    create(client, task_id, ECHO, callback=url)
    work()
    [record] = stage(client, task_id)["callbacks"]
    assert record["status"] == "failed"
    assert record["attempts"] == 4
    assert record["last_status_code"] is None
    assert "ConnectionError" in record["last_error"]


def test_retry_after_is_honoured(make_app, task_id, receiver):
    """Retry-After: 2 beats a retry interval of 0; the scheduler releases the retry."""
    import time

    from gateway.worker import build_worker

    app = make_app(CALLBACK_RETRY_INTERVALS=[0])
    client = app.test_client()
    receiver.responses = [(503, {"Retry-After": "2"})]
    create(client, task_id, ECHO, callback=receiver.url())
    with app.app_context():
        build_worker().work(burst=True, logging_level="WARNING")
        assert len(receiver.requests) == 1
        [record] = stage(client, task_id)["callbacks"]
        assert record["status"] == "queued"
        assert record["last_status_code"] == 503
        deadline = time.monotonic() + 10
        while len(receiver.requests) < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
            build_worker().work(burst=True, with_scheduler=True, logging_level="WARNING")
    first, second = receiver.wait_for(2)
    assert second["received"] - first["received"] >= 1.9
    assert stage(client, task_id)["callbacks"][0]["status"] == "sent"


def test_payload_is_plain_json_with_exact_user_data(client, work, task_id, receiver):
    value = {"big": 2**63 + 7, "f": 0.1 + 0.2, "e": {}, "l": [], "s": "😀"}
    create(client, task_id, ECHO, value, callback=receiver.url())
    work()
    [delivered] = receiver.wait_for(1)
    assert json.loads(delivered["raw"])["result"]["output"] == value


def test_due_delivery_keeps_its_result_when_a_rerun_starts_first(client, work, task_id, receiver):
    """A delivery made after the stage moved on still reports the run it was due for."""
    from gateway.worker import build_worker

    create(client, task_id, "testing.empty", callback=receiver.url("/first"))
    with client.application.app_context():
        build_worker(["testing"]).work(burst=True, logging_level="WARNING")  # run only; delivery waits
    rerun = create(client, task_id, "testing.empty")  # empty output: the stage runs again
    assert rerun.json["reuse_info"]["state"] == "empty_output"
    assert stage(client, task_id, "testing.empty")["status"] == "PENDING"
    with client.application.app_context():
        build_worker(["callbacks"]).work(burst=True, logging_level="WARNING")
    [delivered] = receiver.wait_for(1)
    assert delivered["json"]["status"] == "completed"
    assert delivered["json"]["result"]["status"] == "SUCCESS"
    assert delivered["json"]["result"]["output"] == {}


def test_handler_error_with_a_lone_surrogate_still_fails_the_stage(client, work, task_id, receiver):
    create(client, task_id, "demo.fail", {"message": "bad \ud800 news"}, callback=receiver.url())
    work()
    failed = stage(client, task_id, "demo.fail")
    assert failed["status"] == "FAILED"
    assert failed["error"] == "RuntimeError: bad \\ud800 news"
    [delivered] = receiver.wait_for(1)
    assert delivered["json"]["status"] == "failed"
