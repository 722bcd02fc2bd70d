"""Callbacks on demand: sending a recorded delivery again, and a retry that tells its
caller the new outcome; through the real app, Redis and RQ, and the race of a resend
against a delivery under way on real gunicorn and worker processes."""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from gateway.testing.receiver import STALL
from gateway.testing.waiting import wait_until
from tests.test_rerun import ECHO, create, stage


def resend(client, task_id, delivery_id):
    return client.post(f"/v1/tasks/{task_id}/deliveries/{delivery_id}/resend")


def only_record(client, task_id, task_name=ECHO):
    (record,) = stage(client, task_id, task_name)["callbacks"]
    return record


# -- resend ------------------------------------------------------------------------


def test_resend_sends_the_same_delivery_again_and_records_the_try(client, work, task_id, receiver):
    create(client, task_id, callback=receiver.url("/a"))
    work()
    (first,) = receiver.wait_for(1)
    delivery_id = only_record(client, task_id)["delivery_id"]

    response = resend(client, task_id, delivery_id)
    assert response.status_code == 202
    assert response.json == {
        "task_id": task_id, "task_name": ECHO, "delivery_id": delivery_id, "callback_status": "queued",
    }  # fmt: skip
    assert only_record(client, task_id)["status"] == "queued"
    work()
    second = receiver.wait_for(2)[1]
    assert second["webhook_id"] == first["webhook_id"] == delivery_id
    assert second["json"]["result"] == first["json"]["result"]
    record = only_record(client, task_id)
    assert record["status"] == "sent"
    assert record["attempts"] == 2
    assert len(record["tries"]) == 2


def test_resend_carries_the_stages_current_result(client, work, task_id, receiver):
    create(client, task_id, {"x": 1}, callback=receiver.url("/a"))
    work()
    delivery_id = only_record(client, task_id)["delivery_id"]
    create(client, task_id, {"x": 2}, reuse=False)
    conflict = resend(client, task_id, delivery_id)
    assert conflict.status_code == 409
    assert conflict.json["error"]["code"] == "stage_live"
    work()

    assert resend(client, task_id, delivery_id).status_code == 202
    work()
    first, second = receiver.wait_for(2)
    assert first["json"]["result"]["output"] == {"x": 1}
    assert second["json"]["result"]["output"] == {"x": 2}
    assert second["webhook_id"] == delivery_id


def test_resend_of_a_failed_delivery_starts_its_tries_again(client, work, task_id, receiver):
    receiver.plan("/gone", [410])
    create(client, task_id, callback=receiver.url("/gone"))
    work()
    record = only_record(client, task_id)
    assert record["status"] == "failed"
    receiver.plan("/gone", [503])  # one failure: the resent delivery is retried, then sent

    assert resend(client, task_id, record["delivery_id"]).status_code == 202
    work()
    receiver.wait_for(3)
    record = only_record(client, task_id)
    assert record["status"] == "sent"
    assert [t["status_code"] for t in record["tries"]] == [410, 503, 200]


def test_resend_while_the_delivery_is_queued_is_a_conflict(client, work, task_id, receiver):
    create(client, task_id, callback=receiver.url("/a"))
    waiting = only_record(client, task_id)["delivery_id"]  # waiting on the run
    response = resend(client, task_id, waiting)
    assert response.status_code == 409
    assert response.json["error"]["code"] == "delivery_queued"
    assert response.json["error"]["details"] == {"task_id": task_id, "task_name": ECHO, "delivery_id": waiting}
    work()
    receiver.wait_for(1)
    assert len(receiver.requests) == 1


def test_resend_of_an_unknown_delivery_or_task_is_not_found(client, work, task_id):
    create(client, task_id)
    work()
    response = resend(client, task_id, "0" * 32)
    assert response.status_code == 404
    assert response.json["error"]["code"] == "delivery_not_found"
    assert resend(client, "no-such-task", "0" * 32).json["error"]["code"] == "task_not_found"


# -- retry with a callback -----------------------------------------------------------


def test_retry_with_a_callback_tells_the_new_outcome(client, work, task_id, receiver):
    create(client, task_id, {"message": "no"}, task_name="demo.fail")
    work()
    response = client.post(f"/v1/tasks/{task_id}/retry", json={"callback": receiver.url("/retried")})
    assert response.status_code == 200
    assert response.json == {"task_id": task_id, "retried": ["demo.fail"], "callback_status": "queued"}
    record = only_record(client, task_id, "demo.fail")
    assert record["status"] == "queued"
    work()
    (delivery,) = receiver.wait_for(1)
    assert delivery["webhook_id"] == record["delivery_id"]
    assert delivery["json"]["status"] == "failed"
    assert delivery["json"]["reuse_info"] is None
    assert delivery["json"]["result"]["error"] == "RuntimeError: no"


def test_retry_of_one_named_stage(client, work, task_id):
    create(client, task_id, {"message": "a"}, task_name="demo.fail")
    create(client, task_id, {"message": "b"}, task_name="testing.not_a_dict")
    work()
    response = client.post(f"/v1/tasks/{task_id}/retry", json={"task_name": "demo.fail"})
    assert response.json == {"task_id": task_id, "retried": ["demo.fail"], "callback_status": None}
    assert stage(client, task_id, "demo.fail")["attempt"] == 2
    assert stage(client, task_id, "testing.not_a_dict")["attempt"] == 1


def test_retry_when_nothing_failed_is_a_conflict(client, work, task_id):
    create(client, task_id)
    work()
    response = client.post(f"/v1/tasks/{task_id}/retry")
    assert response.status_code == 409
    assert response.json["error"]["code"] == "nothing_to_retry"
    assert response.json["error"]["details"] == {"task_id": task_id, "stages": {ECHO: "SUCCESS"}}
    named = client.post(f"/v1/tasks/{task_id}/retry", json={"task_name": ECHO})
    assert named.status_code == 409
    missing = client.post(f"/v1/tasks/{task_id}/retry", json={"task_name": "demo.fail"})
    assert missing.status_code == 404
    assert missing.json["error"]["code"] == "stage_not_found"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"callback": "http://127.0.0.1/hook"}, "callback"),
        ({"callback": "ftp://example.com/"}, "callback"),
        ({"task_name": 5}, "task_name"),
        ({"force": True}, "force"),
    ],
)
def test_retry_body_is_validated_like_a_create(make_app, task_id, body, field):
    client = make_app(CALLBACK_ALLOW_PRIVATE_NETWORKS=False).test_client()
    response = client.post(f"/v1/tasks/{task_id}/retry", json=body)
    assert response.status_code == 400
    assert field in response.json["error"]["details"]


# -- the race: a resend against a delivery under way, on real processes --------------


def test_resend_races_a_running_delivery(stack, receiver):
    """While a delivery's try is under way (the receiver holds it), a resend is refused;
    once it is over, of many resends at once exactly one is accepted and sent."""
    task_id = f"s-{uuid.uuid4().hex[:10]}"
    receiver.plan("/slow", [STALL])
    stack.post({"task_name": ECHO, "task_id": task_id, "input_data": {}, "callback": receiver.url("/slow")})
    wait_until(lambda: len(receiver.requests) == 1, timeout=20)  # the try is under way
    (record,) = stack.stage(task_id, ECHO)["callbacks"]
    url = f"{stack.base}/v1/tasks/{task_id}/deliveries/{record['delivery_id']}/resend"
    refused = requests.post(url, timeout=10)
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "delivery_queued"

    receiver.release()  # the try fails (closed without an answer), is retried and sent
    wait_until(lambda: stack.stage(task_id, ECHO)["callbacks"][0]["status"] == "sent", timeout=30)
    assert len(receiver.requests) == 2

    # Twenty resends at once, while the resent try is held in its turn: exactly one is
    # accepted, the others find the delivery queued.
    receiver.hold_again()
    receiver.plan("/slow", [STALL])
    with ThreadPoolExecutor(max_workers=20) as pool:
        answers = list(pool.map(lambda _: requests.post(url, timeout=10), range(20)))
    assert sorted(a.status_code for a in answers) == [202] + [409] * 19
    assert {a.json()["error"]["code"] for a in answers if a.status_code == 409} == {"delivery_queued"}
    wait_until(lambda: len(receiver.requests) == 3, timeout=20)

    receiver.release()
    wait_until(lambda: stack.stage(task_id, ECHO)["callbacks"][0]["status"] == "sent", timeout=30)
    assert len(receiver.requests) == 4  # the held try, its retry; nothing else
    assert {r["webhook_id"] for r in receiver.requests} == {record["delivery_id"]}
    assert stack.stage(task_id, ECHO)["callbacks"][0]["attempts"] == 4


class DiedBeforeEnqueue(Exception):
    pass


def test_resend_of_a_process_that_died_before_its_enqueue_is_sent_by_the_sweeper(
    make_app, work, task_id, receiver, monkeypatch
):
    from gateway import service
    from gateway.queues import Queues
    from gateway.sweeper import sweep_once

    app = make_app(DELIVERY_GRACE_SECONDS=0, CALLBACK_TIMEOUT_SECONDS=0.1)
    client = app.test_client()
    create(client, task_id, callback=receiver.url("/a"))
    work(app)
    receiver.wait_for(1)
    delivery_id = only_record(client, task_id)["delivery_id"]

    def die(*args, **kwargs):
        raise DiedBeforeEnqueue

    with app.app_context(), monkeypatch.context() as patch:
        patch.setattr(Queues, "enqueue_delivery", die)
        with pytest.raises(DiedBeforeEnqueue):
            service.resend_delivery(task_id, delivery_id)
    assert only_record(client, task_id)["status"] == "queued"
    time.sleep(0.2)
    with app.app_context():
        assert sweep_once().deliveries_requeued == 1  # the resend left its trace first
    work(app)
    assert [r["webhook_id"] for r in receiver.wait_for(2)] == [delivery_id, delivery_id]
    assert only_record(client, task_id)["status"] == "sent"
