"""``?wait=<seconds>`` on create, /status and /result: the answer comes when the run ends
(woken by the end's publish, not by polling), or is the no-wait answer when the time
runs out. In-process app and worker; tests/test_wait_gunicorn.py holds 200 waiters on
real gunicorn."""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path

import pytest

from gateway import keys
from gateway.stage_ends import get_stage_ends
from gateway.store import get_store
from gateway.testing.waiting import wait_until

ROOT = Path(__file__).resolve().parent.parent
#: Generous: a woken waiter answers in milliseconds, and every wait below is far longer.
ANSWERED_WITHIN = 15


class Waiter(threading.Thread):
    """One request made on its own thread and test client, so the test can end the run."""

    def __init__(self, app, method: str, url: str, **kwargs) -> None:
        super().__init__(daemon=True)
        self.app, self.method, self.url, self.kwargs = app, method, url, kwargs
        self.response = None

    def run(self) -> None:
        self.response = self.app.test_client().open(self.url, method=self.method, **self.kwargs)

    def answer(self):
        self.join(ANSWERED_WITHIN)
        assert self.response is not None, f"{self.url} was not answered"
        return self.response


def start_waiting(app, method: str, url: str, count: int = 1, **kwargs) -> list[Waiter]:
    """Start ``count`` waiting requests and return once all are registered as waiting."""
    ends = get_stage_ends(app)
    before = ends.waiting()
    waiters = [Waiter(app, method, url, **kwargs) for _ in range(count)]
    for waiter in waiters:
        waiter.start()
    wait_until(lambda: ends.waiting() >= before + count, what="the requests to wait")
    return waiters


def create(client, task_id: str, task_name: str = "demo.echo", input_data: dict | None = None, query: str = ""):
    body = {"task_id": task_id, "task_name": task_name, "input_data": input_data or {"n": 1}}
    return client.post(f"/v1/tasks{query}", json=body)


def test_result_wait_answers_when_the_run_ends(app, client, work, task_id):
    assert create(client, task_id).status_code == 202
    (waiter,) = start_waiting(app, "GET", f"/v1/tasks/{task_id}/result?task_name=demo.echo&wait=60")
    assert waiter.response is None  # still waiting: the run has not started
    work()
    answer = waiter.answer()
    assert answer.status_code == 200
    assert answer.json["status"] == "SUCCESS"
    assert answer.json["output"] == {"n": 1}


def test_create_wait_answers_with_the_result_when_the_run_ends(app, client, work, task_id):
    body = {"task_id": task_id, "task_name": "demo.echo", "input_data": {"n": 2}}
    (waiter,) = start_waiting(app, "POST", "/v1/tasks?wait=60", json=body)
    work()
    answer = waiter.answer()
    assert answer.status_code == 200
    assert answer.json["status"] == "completed"
    assert answer.json["result"]["status"] == "SUCCESS"
    assert answer.json["result"]["output"] == {"n": 2}
    # What this request did: it started the run.
    assert answer.json["reuse_info"]["state"] == "miss"
    assert answer.json["reuse_info"]["reuse_hit"] is False


def test_create_wait_tells_a_failed_run(app, client, work, task_id):
    body = {"task_id": task_id, "task_name": "demo.fail", "input_data": {"message": "no"}}
    (waiter,) = start_waiting(app, "POST", "/v1/tasks?wait=60", json=body)
    work()
    answer = waiter.answer()
    assert answer.status_code == 200
    assert answer.json["status"] == "failed"
    assert answer.json["result"]["status"] == "FAILED"
    assert "no" in answer.json["result"]["error"]


def test_create_wait_on_a_completed_hit_answers_at_once(client, work, task_id):
    create(client, task_id)
    work()
    plain = create(client, task_id)
    waited = create(client, task_id, query="?wait=60")
    assert waited.status_code == plain.status_code == 200
    assert waited.json == plain.json


def test_create_wait_that_runs_out_is_the_answer_without_wait(client, task_id):
    waited = create(client, task_id, query="?wait=0.2")
    plain = create(client, task_id + "-b")
    assert waited.status_code == plain.status_code == 202
    assert {**waited.json, "task_id": None} == {**plain.json, "task_id": None}


def test_status_and_result_wait_that_runs_out_answer_as_without_wait(client, task_id):
    create(client, task_id)
    for path in ("status", "result"):
        plain = client.get(f"/v1/tasks/{task_id}/{path}")
        waited = client.get(f"/v1/tasks/{task_id}/{path}?wait=0.2")
        assert waited.status_code == plain.status_code == 200
        assert waited.json == plain.json
    plain = client.get(f"/v1/tasks/{task_id}/result?task_name=demo.echo")
    waited = client.get(f"/v1/tasks/{task_id}/result?task_name=demo.echo&wait=0.2")
    assert waited.json == plain.json and waited.json["status"] == "PENDING"


def test_status_without_task_name_waits_until_no_stage_is_live(app, client, work, task_id):
    create(client, task_id, "demo.echo")
    create(client, task_id, "demo.fail")
    (waiter,) = start_waiting(app, "GET", f"/v1/tasks/{task_id}/status?wait=60")
    work()
    stages = waiter.answer().json["stages"]
    assert {name: stage["status"] for name, stage in stages.items()} == {"demo.echo": "SUCCESS", "demo.fail": "FAILED"}


def test_status_with_task_name_waits_for_that_stage(app, client, task_id):
    create(client, task_id, "demo.echo")
    create(client, task_id, "demo.fail")
    (waiter,) = start_waiting(app, "GET", f"/v1/tasks/{task_id}/status?task_name=demo.echo&wait=60")
    finish(app, task_id, "demo.echo")
    stages = waiter.answer().json["stages"]
    assert stages["demo.echo"]["status"] == "SUCCESS"
    assert stages["demo.fail"]["status"] == "PENDING"


def finish(app, task_id: str, task_name: str) -> None:
    """End a PENDING run SUCCESS through the store, as its worker would."""
    store = get_store(app)
    token = json.loads(store.read_fields(task_id)[f"s:{task_name}"])["token"]
    store.finish(task_id, task_name, token, output_json='{"done":true}', error=None, duration=0.0)


def test_cancel_wakes_the_waiters(app, client, task_id):
    create(client, task_id)
    waiters = start_waiting(app, "GET", f"/v1/tasks/{task_id}/result?task_name=demo.echo&wait=60", count=3)
    assert client.delete(f"/v1/tasks/{task_id}").status_code == 200
    for waiter in waiters:
        assert waiter.answer().json["status"] == "FAILED"


def test_delete_wakes_the_waiters_who_find_the_task_gone(app, client, task_id):
    create(client, task_id)
    (waiter,) = start_waiting(app, "GET", f"/v1/tasks/{task_id}/status?wait=60")
    assert client.post(f"/v1/tasks/{task_id}/delete", json={"force": True}).status_code == 200
    assert waiter.answer().status_code == 404


def test_an_end_between_the_read_and_the_wait_is_not_missed(app, client, task_id):
    """The end lands after the waiter's read said "live" and before it sleeps: the
    waiter registered first, so the publish sets its event and it reads again."""
    create(client, task_id)
    reads: list[str] = []

    def read():
        view = get_store(app).read_stage(task_id, "demo.echo")
        reads.append(view["status"])
        if len(reads) == 1:
            finish(app, task_id, "demo.echo")  # ends after this read, before the wait
        return view

    answered: list[dict] = []
    with app.app_context():
        ends = get_stage_ends(app)
        thread = threading.Thread(
            target=lambda: answered.append(
                ends.wait(keys.task_document(task_id), read, lambda v: v["status"] == "SUCCESS", 120)
            ),
            daemon=True,
        )
        thread.start()
        thread.join(ANSWERED_WITHIN)
    assert answered and answered[0]["status"] == "SUCCESS"
    assert reads == ["PENDING", "SUCCESS"]


def test_waiters_hear_ends_after_the_listener_lost_its_connection(app, client, task_id):
    create(client, task_id)
    (waiter,) = start_waiting(app, "GET", f"/v1/tasks/{task_id}/result?task_name=demo.echo&wait=60")
    ends = get_stage_ends(app)
    wait_until(lambda: ends.subscribed, what="the listener to subscribe")
    get_store(app).client.client_kill_filter(_type="pubsub")  # every listener on this Redis
    finish(app, task_id, "demo.echo")
    assert waiter.answer().json["status"] == "SUCCESS"
    wait_until(lambda: ends.subscribed, what="the listener to subscribe again")


@pytest.mark.parametrize("value", ["abc", "-1", "nan", "inf", "1e400", ""])
@pytest.mark.parametrize("path", ["status", "result", "result?task_name=demo.echo&", "create"])
def test_a_bad_wait_is_a_validation_error(client, task_id, path, value):
    create(client, task_id)
    if path == "create":
        answer = create(client, task_id, query=f"?wait={value}")
    else:
        separator = "" if path.endswith("&") else "?"
        answer = client.get(f"/v1/tasks/{task_id}/{path}{separator}wait={value}")
    assert answer.status_code == 400
    assert answer.json["error"]["code"] == "validation_error"


def test_wait_is_cut_to_the_configured_longest(make_app, task_id):
    app = make_app(MAX_WAIT_SECONDS=0.2)
    client = app.test_client()
    create(client, task_id)
    (waiter,) = [Waiter(app, "GET", f"/v1/tasks/{task_id}/status?wait=3600")]
    waiter.start()
    assert waiter.answer().json["stages"]["demo.echo"]["status"] == "PENDING"


def test_every_ending_script_publishes_on_the_channel_the_listener_hears():
    channel = keys.stage_ended_channel()
    for name in ("include/end_stage.lua", "delete_task.lua"):
        published = re.findall(r"'PUBLISH', '([^']+)'", (ROOT / "lua" / name).read_text())
        assert published == [channel], name


def test_the_openapi_document_shows_wait_on_the_three_operations(client):
    paths = client.get("/openapi.json").json["paths"]
    for path, method in (
        ("/v1/tasks", "post"),
        ("/v1/tasks/{task_id}/status", "get"),
        ("/v1/tasks/{task_id}/result", "get"),
    ):
        parameters = {p["name"]: p for p in paths[path][method].get("parameters", [])}
        assert parameters["wait"]["in"] == "query"
        assert parameters["wait"]["schema"] == {"type": "number", "minimum": 0}
    assert "task_name" in {p["name"] for p in paths["/v1/tasks/{task_id}/status"]["get"]["parameters"]}
    created = client.get("/openapi.json").json["components"]["schemas"]["TaskCreated"]
    assert "failed" in created["properties"]["status"]["enum"]


def test_a_create_with_a_bad_wait_writes_nothing(client, task_id):
    assert create(client, task_id, query="?wait=soon").status_code == 400
    assert client.get(f"/v1/tasks/{task_id}/status").status_code == 404


@pytest.mark.parametrize("query", ["wiat=5", "=", "wait=1&extra=1"])
def test_an_unknown_query_parameter_is_refused_before_anything_is_written(client, task_id, query):
    """A misspelt ``wait`` must not pass for no wait (found by the OpenAPI fuzzer: the
    document lists every parameter)."""
    body = {"task_name": "demo.echo", "task_id": task_id, "input_data": {"text": "hi"}}
    created = client.post(f"/v1/tasks?{query}", json=body)
    assert created.status_code == 400
    assert created.json["error"]["code"] == "validation_error"
    assert client.get(f"/v1/tasks/{task_id}/status").status_code == 404  # nothing written
    client.post("/v1/tasks", json=body)
    assert client.get(f"/v1/tasks/{task_id}/status?{query}").status_code == 400
