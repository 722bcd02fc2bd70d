"""Cancel (``DELETE /v1/tasks/{task_id}``): queued runs leave their queue, running handlers
stop at their next check, a handler that never checks has its result discarded, nothing
live is a 409, and a run ending at the moment of the cancel never overwrites it."""

from __future__ import annotations

import functools
import random
import threading
import time
import uuid

import pytest
import redis
import requests

from gateway import jobs, leases
from gateway.jobguard import GatewayJob
from gateway.queues import get_queues
from gateway.runcontrol import RunControl
from gateway.store import get_redis, get_store
from gateway.tasks import RunCancelled, TaskContext
from gateway.testing.waiting import poll_until
from tests.conftest import Stack, wait_until
from tests.test_progress import running_claim
from tests.test_reuse import create, stage

#: Its own database and a single run worker: what that worker runs next shows it is free.
CANCEL_DB = 13


def cancel_once_running(client, task_id: str, task_name: str, answers: list, **query) -> threading.Thread:
    """A thread that cancels the stage as soon as it is RUNNING (the test's own thread runs
    the in-process worker meanwhile)."""

    def run() -> None:
        def running() -> bool:
            return stage(client, task_id, task_name)["status"] == "RUNNING"

        if poll_until(running, 20, 0.02):
            answers.append(client.delete(f"/v1/tasks/{task_id}", query_string=query))

    thread = threading.Thread(target=run)
    thread.start()
    return thread


# -- in process: the API's answers and the queue -------------------------------------------


def test_cancel_takes_a_queued_run_out_of_its_queue(app, client, work, task_id, run_log):
    create(client, task_id, "testing.count", {"log": run_log.path})
    with app.app_context():
        queue = get_queues().get("testing")
        [job_id] = queue.job_ids
        answer = client.delete(f"/v1/tasks/{task_id}")
        assert answer.status_code == 200
        assert (answer.json["cancelled"], answer.json["was_running"]) == (["testing.count"], [])
        assert queue.job_ids == []
        assert not get_redis().exists(GatewayJob.key_for(job_id))
    work()
    assert run_log.lines() == []
    cancelled = stage(client, task_id, "testing.count")
    assert (cancelled["status"], cancelled["error"]) == ("FAILED", "cancelled")


def test_a_job_a_worker_already_took_is_left_to_find_its_claim_void(app, client, work, task_id, run_log):
    """The cancel cannot take back a job that left the queue: that job does nothing."""
    create(client, task_id, "testing.count", {"log": run_log.path})
    with app.app_context():
        queue = get_queues().get("testing")
        [job_id] = queue.job_ids
        queue.remove(job_id)  # as a worker's dequeue does, just before the cancel
        assert client.delete(f"/v1/tasks/{task_id}").status_code == 200
        assert get_redis().exists(GatewayJob.key_for(job_id))  # not ours to drop any more
        queue.push_job_id(job_id)  # the worker runs it after all
    work()
    assert run_log.lines() == []
    assert stage(client, task_id, "testing.count")["error"] == "cancelled"


def test_cancel_with_task_name_cancels_only_that_stage(client, task_id, run_log):
    create(client, task_id, "testing.count", {"log": run_log.path})
    create(client, task_id, "demo.echo")
    answer = client.delete(f"/v1/tasks/{task_id}?task_name=demo.echo")
    assert answer.status_code == 200
    assert answer.json["cancelled"] == ["demo.echo"]
    assert stage(client, task_id, "testing.count")["status"] == "PENDING"
    assert stage(client, task_id, "demo.echo")["status"] == "FAILED"

    again = client.delete(f"/v1/tasks/{task_id}?task_name=demo.echo")
    assert again.status_code == 409
    assert again.json["error"]["code"] == "nothing_to_cancel"
    assert again.json["error"]["details"] == {"task_id": task_id, "stages": {"demo.echo": "FAILED"}}

    unknown = client.delete(f"/v1/tasks/{task_id}?task_name=demo.sleep")
    assert unknown.status_code == 404
    assert unknown.json["error"]["code"] == "stage_not_found"
    assert client.delete(f"/v1/tasks/{task_id}?stage=demo.echo").status_code == 400
    assert stage(client, task_id, "testing.count")["status"] == "PENDING"


def test_the_openapi_document_shows_cancel_and_progress(client):
    document = client.get("/openapi.json").json
    operation = document["paths"]["/v1/tasks/{task_id}"]["delete"]
    assert "task_name" in [parameter["name"] for parameter in operation["parameters"]]
    assert {"200", "404", "409"} <= set(operation["responses"])
    schemas = document["components"]["schemas"]
    assert {"was_running", "message"} <= set(schemas["Cancelled"]["required"])
    stage_record = next(schema for schema in schemas.values() if "progress" in schema.get("properties", {}))
    assert {"progress", "progress_message"} <= set(stage_record["required"])


def test_cancel_with_nothing_pending_or_running_is_a_conflict_and_writes_nothing(client, work, task_id):
    create(client, task_id, "demo.echo")
    create(client, task_id, "demo.fail")
    work()
    before = client.get(f"/v1/tasks/{task_id}/status").json
    answer = client.delete(f"/v1/tasks/{task_id}")
    assert answer.status_code == 409
    assert answer.json["error"]["code"] == "nothing_to_cancel"
    assert answer.json["error"]["details"]["stages"] == {"demo.echo": "SUCCESS", "demo.fail": "FAILED"}
    assert client.get(f"/v1/tasks/{task_id}/status").json == before
    assert client.delete("/v1/tasks/no-such-task").status_code == 404


@pytest.mark.parametrize("how", ["sleep", "progress", "cancelled"])
def test_a_running_handler_stops_at_its_next_check(client, work, task_id, run_log, how):
    create(client, task_id, "testing.cooperate", {"log": run_log.path, "how": how, "seconds": 30})
    answers: list = []
    canceller = cancel_once_running(client, task_id, "testing.cooperate", answers)
    work()  # returns once the handler stopped
    canceller.join()
    [answer] = answers
    assert answer.status_code == 200
    assert answer.json["was_running"] == ["testing.cooperate"]
    assert "its result is discarded" in answer.json["message"]
    assert run_log.lines() == ["started", f"stopped: {how}"]
    cancelled = stage(client, task_id, "testing.cooperate")
    assert (cancelled["status"], cancelled["error"], cancelled["output"]) == ("FAILED", "cancelled", None)


def test_a_lease_renewal_that_finds_the_claim_gone_tells_the_handler(app, client, task_id):
    """The bound for a handler that checks only between renewals: the refused renewal
    alone sets the flag, without a look of the handler's own."""
    token = running_claim(app, client, task_id)
    looks = []
    with app.app_context():
        store = get_store()
        write = functools.partial(store.report_progress, task_id, "demo.echo", token)
        control = RunControl(lambda progress: looks.append(progress) or write(progress), leases.keeper)
        context = TaskContext(task_id=task_id, task_name="demo.echo", attempt=1, _control=control)
        renew = jobs._renewal(store, task_id, "demo.echo", token, control)
        assert renew() is True
        assert client.delete(f"/v1/tasks/{task_id}").status_code == 200
        assert renew() is False
        assert context.cancelled is True
        with pytest.raises(RunCancelled):
            context.progress(0.5)
    assert looks == []  # the renewal told it: the context never had to look


# -- real gunicorn and a real worker ------------------------------------------------------


@pytest.fixture(scope="module")
def lone_worker(redis_server, tmp_path_factory):
    """gunicorn and ONE ``flask worker`` (one run worker): a run it finishes after another
    shows that the other one ended."""
    redis.Redis(port=redis_server.port, db=CANCEL_DB).flushdb()
    running = Stack(redis_server, tmp_path_factory.mktemp("cancel"), workers=1, db=CANCEL_DB)
    yield running
    running.stop()


def cancel(stack, task_id: str) -> requests.Response:
    return requests.delete(f"{stack.base}/v1/tasks/{task_id}", timeout=10)


def run_worker_is_free(stack) -> None:
    """A run the lone worker completes: every run queued before it has ended."""
    marker = f"free-{uuid.uuid4().hex[:8]}"
    stack.post({"task_name": "demo.echo", "task_id": marker, "input_data": {}})
    ended = stack.wait_ended([marker], "demo.echo", timeout=30)[marker]
    assert ended is not None and ended["status"] == "SUCCESS", f"the run worker is still busy: {ended}"


def wait_running(stack, task_id: str, task_name: str) -> dict:
    def running():
        current = stack.stage(task_id, task_name)
        return current if current and current["status"] == "RUNNING" else None

    return wait_until(running, timeout=30, what=f"{task_name} to run")


def test_demo_sleep_stops_soon_after_a_cancel(lone_worker, task_id):
    """A 60 s demo.sleep, cancelled: the only run worker is free again long before that."""
    lone_worker.post({"task_name": "demo.sleep", "task_id": task_id, "input_data": {"seconds": 60}})
    wait_running(lone_worker, task_id, "demo.sleep")
    answer = cancel(lone_worker, task_id)
    assert answer.status_code == 200
    assert answer.json()["was_running"] == ["demo.sleep"]
    run_worker_is_free(lone_worker)  # within 30 s, so the sleep stopped
    stopped = lone_worker.stage(task_id, "demo.sleep")
    assert (stopped["status"], stopped["error"]) == ("FAILED", "cancelled")
    assert stopped["progress"] < 1


def test_a_handler_that_never_checks_has_its_result_discarded(lone_worker, task_id, receiver, run_log):
    body = {"log": run_log.path, "seconds": 2}
    callback = receiver.url("/never-checks")
    lone_worker.post({"task_name": "testing.count", "task_id": task_id, "input_data": body, "callback": callback})
    wait_running(lone_worker, task_id, "testing.count")
    answer = cancel(lone_worker, task_id)
    assert answer.status_code == 200
    assert answer.json()["was_running"] == ["testing.count"]
    assert "one that never checks runs to its end and its result is discarded" in answer.json()["message"]
    run_worker_is_free(lone_worker)  # the handler ran to its end meanwhile
    assert len(run_log.lines()) == 1
    discarded = lone_worker.stage(task_id, "testing.count")
    assert (discarded["status"], discarded["error"], discarded["output"]) == ("FAILED", "cancelled", None)
    [told] = receiver.wait_for(1, path="/never-checks")
    assert (told["json"]["status"], told["json"]["result"]["error"]) == ("failed", "cancelled")
    assert len(receiver.requests_for("/never-checks")) == 1


def test_a_run_ending_as_it_is_cancelled_is_either_cancelled_or_ended_never_both(lone_worker, receiver, run_log):
    """Cancels sent while runs are queued, running or just ending: each stage ends in the
    one outcome the cancel's answer said, and its subscriber hears that outcome once."""
    rounds = 30
    answers = {}
    rng = random.Random(11)
    for number in range(rounds):
        task_id = f"race-{number}-{uuid.uuid4().hex[:6]}"
        body = {"log": run_log.path, "seconds": rng.uniform(0, 0.05)}
        callback = receiver.url(f"/race/{task_id}")
        lone_worker.post({"task_name": "testing.count", "task_id": task_id, "input_data": body, "callback": callback})
        time.sleep(rng.uniform(0, 0.08))
        answers[task_id] = cancel(lone_worker, task_id)
    run_worker_is_free(lone_worker)

    outcomes = {"cancelled": 0, "ended first": 0}
    for task_id, answer in answers.items():
        final = lone_worker.stage(task_id, "testing.count")
        [told] = receiver.wait_for(1, path=f"/race/{task_id}")
        if answer.status_code == 200:
            outcomes["cancelled"] += 1
            assert answer.json()["cancelled"] == ["testing.count"]
            assert (final["status"], final["error"], final["output"]) == ("FAILED", "cancelled", None)
            assert told["json"]["status"] == "failed"
        else:
            outcomes["ended first"] += 1
            assert answer.status_code == 409, answer.text
            assert answer.json()["error"]["details"]["stages"] == {"testing.count": "SUCCESS"}
            assert (final["status"], final["error"]) == ("SUCCESS", None)
            assert told["json"]["status"] == "completed"
    for task_id in answers:
        assert len(receiver.delivered(f"/race/{task_id}")) == 1
    print(f"cancel vs end, {rounds} rounds: {outcomes}")
