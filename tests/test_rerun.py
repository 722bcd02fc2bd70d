"""Forcing a new run ("reuse": false) and what a changed input means ("if_input_differs"),
through the real app, Redis and RQ; the race against concurrent creates on real gunicorn
and worker processes."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from gateway.store import get_redis
from gateway.testing.waiting import wait_until

ECHO = "demo.echo"


def create(client, task_id, input_data=None, task_name=ECHO, **options):
    body = {"task_name": task_name, "task_id": task_id, "input_data": input_data or {"x": 1}, **options}
    return client.post("/v1/tasks", json=body)


def stage(client, task_id, task_name=ECHO):
    return client.get(f"/v1/tasks/{task_id}/status").json["stages"][task_name]


def test_reuse_false_runs_a_completed_stage_again(client, work, task_id):
    create(client, task_id)
    work()
    response = create(client, task_id, reuse=False)
    assert response.status_code == 202
    assert response.json["status"] == "pending"
    assert response.json["message"] == "Accepted: a new run of the completed stage was asked for; it runs again."
    assert response.json["reuse_info"] == {
        "reuse_hit": False, "state": "rerun", "task_name": ECHO, "input_matches": True,
    }  # fmt: skip
    assert stage(client, task_id)["status"] == "PENDING"
    assert stage(client, task_id)["attempt"] == 2
    assert stage(client, task_id)["output"] is None
    work()
    assert stage(client, task_id)["status"] == "SUCCESS"
    # Without the field, the new result is reused again.
    again = create(client, task_id)
    assert again.status_code == 200
    assert again.json["reuse_info"]["state"] == "completed"
    assert stage(client, task_id)["attempt"] == 2


def test_reuse_false_on_a_live_stage_is_a_pending_hit(client, work, task_id):
    create(client, task_id)
    response = create(client, task_id, reuse=False)
    assert response.status_code == 202
    assert response.json["reuse_info"]["state"] == "pending"
    assert response.json["reuse_info"]["reuse_hit"] is True
    assert stage(client, task_id)["attempt"] == 1


def test_reuse_false_on_a_failed_stage_runs_it_again(client, work, task_id):
    create(client, task_id, {"message": "no"}, task_name="demo.fail")
    work()
    response = create(client, task_id, {"message": "no"}, task_name="demo.fail", reuse=False)
    assert response.json["reuse_info"]["state"] == "failed"
    assert stage(client, task_id, "demo.fail")["attempt"] == 2


def test_reuse_false_run_pushes_its_callback_when_it_ends(client, work, task_id, receiver):
    create(client, task_id)
    work()
    create(client, task_id, {"x": 2}, reuse=False, callback=receiver.url("/rerun"))
    work()
    (delivery,) = receiver.wait_for(1)
    assert delivery["json"]["reuse_info"] is None  # this request started the run
    assert delivery["json"]["result"]["output"] == {"x": 2}


def test_if_input_differs_rerun_runs_a_different_input(client, work, task_id):
    create(client, task_id, {"x": 1})
    work()
    same = create(client, task_id, {"x": 1}, if_input_differs="rerun")
    assert same.status_code == 200
    assert same.json["reuse_info"]["state"] == "completed"

    other = create(client, task_id, {"x": 2}, if_input_differs="rerun")
    assert other.status_code == 202
    assert other.json["reuse_info"] == {
        "reuse_hit": False, "state": "rerun", "task_name": ECHO, "input_matches": False,
    }  # fmt: skip
    work()
    assert stage(client, task_id)["output"] == {"x": 2}
    assert stage(client, task_id)["attempt"] == 2


def test_if_input_differs_rerun_never_starts_a_second_live_run(client, work, task_id):
    create(client, task_id, {"x": 1})
    response = create(client, task_id, {"x": 2}, if_input_differs="rerun")
    assert response.json["reuse_info"]["state"] == "pending"
    assert response.json["reuse_info"]["input_matches"] is False
    assert stage(client, task_id)["attempt"] == 1


@pytest.mark.parametrize("run_first", [True, False], ids=["completed", "pending"])
def test_if_input_differs_reject_refuses_and_writes_nothing(client, work, task_id, run_first):
    create(client, task_id, {"x": 1}, callback="https://client.example.com/first")
    if run_first:
        work()
    redis = get_redis(client.application)
    before = redis.hgetall(_document_key(client, task_id))
    assert before
    ttl_before = redis.pttl(_document_key(client, task_id))

    response = create(client, task_id, {"x": 2}, if_input_differs="reject", callback="https://client.example.com/2")
    assert response.status_code == 409
    assert response.json["error"]["code"] == "input_mismatch"
    assert response.json["error"]["details"] == {"task_id": task_id, "task_name": ECHO}
    assert redis.hgetall(_document_key(client, task_id)) == before
    assert redis.pttl(_document_key(client, task_id)) <= ttl_before

    same = create(client, task_id, {"x": 1}, if_input_differs="reject")
    assert same.status_code == (200 if run_first else 202)


def test_if_input_differs_reuse_is_the_default(client, work, task_id):
    create(client, task_id, {"x": 1})
    work()
    response = create(client, task_id, {"x": 2}, if_input_differs="reuse")
    assert response.status_code == 200
    assert response.json["reuse_info"]["input_matches"] is False
    assert response.json["result"]["input_params"] == {"x": 1}


@pytest.mark.parametrize(
    ("field", "value"),
    [("reuse", "no"), ("reuse", 0), ("reuse", None), ("if_input_differs", "maybe"), ("if_input_differs", None)],
)
def test_bad_policy_fields_are_validation_errors(client, task_id, field, value):
    response = create(client, task_id, **{field: value})
    assert response.status_code == 400
    assert response.json["error"]["code"] == "validation_error"
    assert field in response.json["error"]["details"]


def _document_key(client, task_id):
    from gateway import keys, tenancy

    with client.application.test_request_context():
        return keys.task_document(tenancy.scoped(task_id))


# -- the race: "reuse": false against concurrent creates, on real processes ------------

CONCURRENCY = 40


def test_concurrent_reuse_false_requests_start_one_run(stack, run_log):
    """Forty requests at once for a new run of a completed stage (half of them plain
    requests): exactly one starts it, the others are hits on that run; the handler runs
    once more, never twice at the same time."""
    task_id = f"r-{uuid.uuid4().hex[:10]}"
    body = {"task_name": "testing.count", "task_id": task_id, "input_data": {"log": run_log.path, "seconds": 5}}
    assert stack.post(body).status_code == 202
    wait_until(lambda: stack.stage(task_id, "testing.count")["status"] == "SUCCESS", timeout=30)

    bodies = [{**body, "reuse": False} if i % 2 == 0 else body for i in range(CONCURRENCY)]
    with ThreadPoolExecutor(max_workers=CONCURRENCY) as pool:
        responses = list(pool.map(stack.post, bodies))
    states = [r.json()["reuse_info"]["state"] for r in responses]
    assert states.count("rerun") == 1, states
    # Requests before the rerun are completed hits; after it, pending or running hits.
    assert set(states) <= {"rerun", "completed", "pending", "running"}
    forced = [s for b, s in zip(bodies, states, strict=True) if b.get("reuse") is False]
    assert "completed" not in forced  # a forced request never gets the old result

    wait_until(lambda: stack.stage(task_id, "testing.count")["status"] == "SUCCESS", timeout=30)
    assert stack.stage(task_id, "testing.count")["attempt"] == 2
    assert [line.split()[2] for line in run_log.lines()] == ["1", "2"]
