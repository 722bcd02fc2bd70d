"""The reuse verdicts of POST /v1/tasks (SPEC §2), through the real app, Redis and RQ."""

from __future__ import annotations

import json

import pytest

ECHO = "demo.echo"


def create(client, task_id, task_name=ECHO, input_data=None, callback=None):
    body = {
        "task_name": task_name,
        "task_id": task_id,
        "input_data": input_data if input_data is not None else {"x": 1},
    }
    if callback is not None:
        body["callback"] = callback
    return client.post("/v1/tasks", json=body)


def stage(client, task_id, task_name=ECHO):
    return client.get(f"/v1/tasks/{task_id}/status").json["stages"][task_name]


def test_first_request_is_a_miss_that_runs(client, work, task_id):
    response = create(client, task_id)
    assert response.status_code == 202
    assert response.json["status"] == "pending"
    assert response.json["reuse_info"] == {
        "reuse_hit": False, "state": "miss", "task_name": ECHO, "input_matches": None,
    }  # fmt: skip
    assert stage(client, task_id)["status"] == "PENDING"
    work()
    finished = stage(client, task_id)
    assert finished["status"] == "SUCCESS"
    assert finished["output"] == {"x": 1}
    assert finished["attempt"] == 1


def test_completed_stage_is_answered_at_once(client, work, task_id):
    create(client, task_id)
    work()
    response = create(client, task_id)
    assert response.status_code == 200
    body = response.json
    assert body["status"] == "completed"
    assert body["reuse_info"]["reuse_hit"] is True
    assert body["reuse_info"]["state"] == "completed"
    assert body["reuse_info"]["source"] == "redis"
    assert body["reuse_info"]["input_matches"] is True
    assert body["reuse_info"]["cached_at"] == stage(client, task_id)["finished_at"]
    assert body["result"] == {
        "task_name": ECHO, "status": "SUCCESS", "input_params": {"x": 1}, "output": {"x": 1},
        "error": None, "duration": body["result"]["duration"],
    }  # fmt: skip
    assert stage(client, task_id)["attempt"] == 1


def test_hit_with_different_input_stays_a_hit_with_stored_input(client, work, task_id):
    create(client, task_id, input_data={"x": 1})
    work()
    response = create(client, task_id, input_data={"x": 2})
    assert response.status_code == 200
    assert response.json["reuse_info"]["input_matches"] is False
    assert response.json["result"]["input_params"] == {"x": 1}
    assert response.json["result"]["output"] == {"x": 1}
    # The document's input_params describe the latest request, the stage its own run.
    document = client.get(f"/v1/tasks/{task_id}/status").json
    assert document["input_params"]["input_data"] == {"x": 2}
    assert document["stages"][ECHO]["input_params"] == {"x": 1}
    create(client, task_id, input_data={"x": 1})
    assert client.get(f"/v1/tasks/{task_id}/status").json["input_params"]["input_data"] == {"x": 1}


def test_input_matching_ignores_key_order(client, work, task_id):
    create(client, task_id, input_data={"a": 1, "b": 2})
    work()
    response = create(client, task_id, input_data={"b": 2, "a": 1})
    assert response.json["reuse_info"]["input_matches"] is True


def test_pending_stage_is_a_hit_and_is_not_run_twice(client, work, task_id, run_log):
    data = {"log": run_log.path}
    create(client, task_id, "testing.count", data)
    again = create(client, task_id, "testing.count", data)
    assert again.status_code == 202
    assert again.json["status"] == "pending"
    assert again.json["reuse_info"] == {
        "reuse_hit": True, "state": "pending", "task_name": "testing.count", "input_matches": True,
    }  # fmt: skip
    work()
    assert len(run_log.lines()) == 1
    assert stage(client, task_id, "testing.count")["attempt"] == 1


def test_failed_stage_runs_again(client, work, task_id):
    create(client, task_id, "demo.fail", {"message": "boom"})
    work()
    failed = stage(client, task_id, "demo.fail")
    assert failed["status"] == "FAILED"
    assert failed["error"] == "RuntimeError: boom"
    response = create(client, task_id, "demo.fail", {"message": "boom"})
    assert response.status_code == 202
    assert response.json["reuse_info"]["state"] == "failed"
    assert response.json["reuse_info"]["reuse_hit"] is False
    # The response is sent after the write: the new attempt is already visible.
    rerun = stage(client, task_id, "demo.fail")
    assert rerun["status"] == "PENDING"
    assert rerun["attempt"] == 2
    assert rerun["error"] is None


def test_empty_output_runs_again(client, work, task_id):
    create(client, task_id, "testing.empty")
    work()
    assert stage(client, task_id, "testing.empty")["output"] == {}
    response = create(client, task_id, "testing.empty")
    assert response.status_code == 202
    assert response.json["reuse_info"]["state"] == "empty_output"
    assert stage(client, task_id, "testing.empty")["attempt"] == 2


def test_expired_lease_is_stale_and_runs_again(make_app, task_id, run_log):
    app = make_app(QUEUE_LEASE_SECONDS=0.05)
    client = app.test_client()
    create(client, task_id, "testing.count", {"log": run_log.path})
    import time

    time.sleep(0.1)
    response = create(client, task_id, "testing.count", {"log": run_log.path})
    assert response.status_code == 202
    assert response.json["reuse_info"]["state"] == "stale"
    assert stage(client, task_id, "testing.count")["attempt"] == 2


def test_stale_run_keeps_its_subscribers_and_old_job_cannot_write(make_app, task_id, run_log, receiver):
    app = make_app(QUEUE_LEASE_SECONDS=0.05)
    client = app.test_client()
    first = create(client, task_id, "testing.count", {"log": run_log.path}, callback=receiver.url("/first"))
    assert first.status_code == 202
    import time

    time.sleep(0.1)
    create(client, task_id, "testing.count", {"log": run_log.path}, callback=receiver.url("/second"))
    from gateway.worker import build_worker

    with app.app_context():
        build_worker().work(burst=True, logging_level="WARNING")
    # Two jobs were queued (attempt 1 and 2); only the current claim may run.
    assert len(run_log.lines()) == 1
    assert run_log.lines()[0].split()[2] == "2"
    paths = sorted(request["path"] for request in receiver.wait_for(2))
    assert paths == ["/first", "/second"]


def test_second_task_name_keeps_first_stage(client, work, task_id):
    """The origin's failing scenario: run x, hit x, run y, hit x again."""
    create(client, task_id, ECHO, {"step": "x"})
    work()
    assert create(client, task_id, ECHO, {"step": "x"}).status_code == 200
    assert create(client, task_id, "testing.empty", {"step": "y"}).status_code == 202
    work()
    again = create(client, task_id, ECHO, {"step": "x"})
    assert again.status_code == 200
    assert again.json["result"]["output"] == {"step": "x"}
    document = client.get(f"/v1/tasks/{task_id}/status").json
    assert set(document["stages"]) == {ECHO, "testing.empty"}
    assert document["stages"][ECHO]["output"] == {"step": "x"}
    assert document["stages"][ECHO]["attempt"] == 1


def test_verdict_never_touches_another_stage(client, work, task_id):
    create(client, task_id, ECHO)
    work()
    before = stage(client, task_id, ECHO)
    create(client, task_id, "demo.fail")
    work()
    create(client, task_id, "demo.fail")  # failed rerun
    assert stage(client, task_id, ECHO) == before


@pytest.mark.parametrize(
    "value",
    [
        {"big": 2**64 + 1, "negative": -(2**70)},
        {"float": 0.1 + 0.2, "tiny": 5e-324, "precise": 1.2345678901234567},
        {"text": "héllo 中文 😀 \u0000 \ud800"},
        {"empty_object": {}, "empty_list": [], "nested": {"a": [{}, [], [[]], {"b": {}}]}},
        {},
    ],
    ids=["big-ints", "floats", "unicode", "empties", "empty-input"],
)
def test_user_data_round_trips_exactly(client, work, task_id, value):
    create(client, task_id, ECHO, value)
    work()
    document = client.get(f"/v1/tasks/{task_id}/status").json
    assert document["stages"][ECHO]["input_params"] == value
    assert document["input_params"]["input_data"] == value
    if value:
        assert document["stages"][ECHO]["output"] == value
        hit = create(client, task_id, ECHO, value).json
        assert hit["result"]["output"] == value
        assert hit["result"]["input_params"] == value  # both put in the answer as stored
        assert type(hit["result"]["output"]) is dict


def test_a_second_copy_of_a_running_job_does_not_run(app, client, task_id, run_log):
    """RQ may hand a job out twice; while the first copy's lease is alive the second skips."""
    from gateway.jobs import run_stage
    from gateway.store import get_store

    create(client, task_id, "testing.count", {"log": run_log.path})
    token = stage_state(app, task_id, "testing.count")["token"]
    with app.app_context():
        get_store().start(task_id, "testing.count", token)  # the first copy is running
        assert run_stage(task_id, "testing.count", token).startswith("skipped")
    assert run_log.lines() == []


def stage_state(app, task_id, task_name):
    import json

    from gateway import keys
    from gateway.store import get_redis

    with app.app_context():
        return json.loads(get_redis().hget(keys.task_document(task_id), f"s:{task_name}"))


def test_document_reports_the_latest_request_and_stores_nothing_twice(app, client, work, task_id, receiver):
    from gateway import keys
    from gateway.store import get_redis

    create(client, task_id, input_data={"v": 1}, callback=receiver.url())
    work()
    create(client, task_id, "demo.sleep", {"seconds": 0})  # the latest request: no callback
    document = client.get(f"/v1/tasks/{task_id}/status").json
    assert document["input_params"] == {"task_name": "demo.sleep", "input_data": {"seconds": 0}, "callback_url": None}
    create(client, task_id, input_data={"v": 2}, callback=receiver.url("/again"))  # a hit, other input
    document = client.get(f"/v1/tasks/{task_id}/status").json
    assert document["input_params"] == {
        "task_name": ECHO,
        "input_data": {"v": 2},
        "callback_url": receiver.url("/again"),
    }
    with app.app_context():
        fields = set(get_redis().hkeys(keys.task_document(task_id)))
    # No request record of its own: meta names the latest request, request_input holds its
    # input only because it differs from the stage's; each stage has its facts (f:), and no
    # last_plain, since the latest request had a callback.
    assert fields == {
        "meta",
        "request_input",
        f"s:{ECHO}",
        f"f:{ECHO}",
        f"i:{ECHO}",
        f"o:{ECHO}",
        "s:demo.sleep",
        "f:demo.sleep",
        "i:demo.sleep",
    }
    assert "callbacks" not in stage_state(app, task_id, "demo.sleep")  # none: not stored as {}


def test_a_hit_that_repeats_the_latest_request_writes_nothing(app, client, work, task_id, receiver):
    from gateway import keys
    from gateway.store import get_redis

    key = keys.task_document(task_id)
    create(client, task_id, input_data={"v": 1})
    work()
    with app.app_context():
        redis_client = get_redis()
        redis_client.expire(key, 1000)
        before = redis_client.hgetall(key)
        assert create(client, task_id, input_data={"v": 1}).json["reuse_info"]["state"] == "completed"
        assert redis_client.hgetall(key) == before  # not even the updated time
        assert redis_client.ttl(key) <= 1000  # nor the TTL: a document lives TTL after its last write
        # Anything new is written: another input, or a callback.
        create(client, task_id, input_data={"v": 2})
        assert redis_client.hget(key, "request_input") == '{"v":2}'
        assert redis_client.ttl(key) > 1000
        create(client, task_id, input_data={"v": 1})  # the latest request changed back
        assert redis_client.hget(key, "request_input") is None
        create(client, task_id, input_data={"v": 1}, callback=receiver.url())
        assert len(stage(client, task_id)["callbacks"]) == 1


def test_a_document_written_by_the_previous_layout_reads_right_and_is_converted(app, client, work, task_id):
    from gateway import keys
    from gateway.store import get_redis

    create(client, task_id, input_data={"v": 1})
    work()
    key = keys.task_document(task_id)
    with app.app_context():  # what the version with a `request` field wrote for a request with a callback
        redis_client = get_redis()
        meta = json.loads(redis_client.hget(key, "meta"))
        meta["last_delivery_id"] = ""
        redis_client.hset(key, "meta", json.dumps(meta))
        redis_client.hset(key, "request", json.dumps({"callback_url": "https://example.org/hook", "task_name": ECHO}))
        redis_client.hdel(key, "last_plain", f"f:{ECHO}")  # that version had neither
    assert client.get(f"/v1/tasks/{task_id}/status").json["input_params"]["callback_url"] == "https://example.org/hook"
    create(client, task_id, input_data={"v": 1})  # the next request rewrites the latest request in meta
    with app.app_context():
        assert redis_client.hget(key, "request") is None
    assert client.get(f"/v1/tasks/{task_id}/status").json["input_params"]["callback_url"] is None
