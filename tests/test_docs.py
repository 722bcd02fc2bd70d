"""The examples of docs/SINGLE_TASK_API_REFERENCE.md, reproduced with the real app.

An example is a ```json block right after a line ``<!-- example: NAME -->``. Request
examples are sent as written; response, callback and header examples must equal what the
gateway produces, once the volatile values that the reference marks as placeholders
(``"<timestamp>"`` and friends, any number under ``"duration"``) are accepted as they are.
The reference's callback URLs (``https://client.example.com/...``) stand for the test's
loopback receiver. Each test declares the examples it shows with ``@shows(...)``, and
``test_every_example_is_checked_by_a_test`` keeps the document and the tests in step.
"""

from __future__ import annotations

import functools
import json
import re
import threading
from pathlib import Path

import pytest
from standardwebhooks import Webhook

from gateway import create_app, scripts, tasks
from gateway.embedded import free_port
from gateway.store import get_redis
from gateway.testing.waiting import poll_until
from tests.conftest import SECRET

DOC = Path(__file__).resolve().parent.parent / "docs" / "SINGLE_TASK_API_REFERENCE.md"
EXAMPLE = re.compile(r"^<!-- example: ([a-z0-9-]+) -->\n```json\n(.*?)\n```$", re.MULTILINE | re.DOTALL)
DOC_CALLBACK_BASE = "https://client.example.com"

#: Placeholder → what the real value must look like.
PLACEHOLDERS = {
    "<timestamp>": r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z",
    "<task_id>": r"task-[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}",
    "<delivery_id>": r"[0-9a-f]{32}",
    "<unix_seconds>": r"\d{10}",
    "<signature>": r"v1,[A-Za-z0-9+/]{43}=",
}

#: Example names that some test checks, filled by ``@shows`` at import.
COVERED: set[str] = set()


@functools.cache
def examples() -> dict[str, object]:
    text = DOC.read_text()
    found: dict[str, object] = {}
    for name, body in EXAMPLE.findall(text):
        assert name not in found, f"example {name!r} appears twice"
        found[name] = json.loads(body)
    return found


def shows(*names: str):
    """Mark a test as the one that reproduces these examples."""

    def mark(test):
        COVERED.update(names)
        test.examples = frozenset(names)
        return test

    return mark


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def accept_placeholders(expected: object, actual: object, key: str | None = None) -> object:
    """``actual`` with every value that ``expected`` marks as volatile replaced by its mark."""
    if isinstance(expected, str) and expected in PLACEHOLDERS:
        if isinstance(actual, str) and re.fullmatch(PLACEHOLDERS[expected], actual):
            return expected
        return actual
    if key == "duration" and _is_number(expected) and _is_number(actual):
        return expected
    if isinstance(expected, dict) and isinstance(actual, dict):
        return {k: accept_placeholders(expected.get(k), v, k) for k, v in actual.items()}
    if isinstance(expected, list) and isinstance(actual, list):
        return [accept_placeholders(expected[i] if i < len(expected) else None, v) for i, v in enumerate(actual)]
    return actual


def _map_strings(value: object, old: str, new: str) -> object:
    if isinstance(value, str):
        return new + value[len(old) :] if value.startswith(old) else value
    if isinstance(value, dict):
        return {k: _map_strings(v, old, new) for k, v in value.items()}
    if isinstance(value, list):
        return [_map_strings(v, old, new) for v in value]
    return value


class Docs:
    """The reference's examples, bound to one test and its receiver."""

    def __init__(self, declared: frozenset[str], receiver) -> None:
        self.declared = declared
        self.used: set[str] = set()
        self.receiver_base = receiver.url("")

    def _example(self, name: str) -> object:
        assert name in self.declared, f"example {name!r} is used but not declared in @shows"
        self.used.add(name)
        return examples()[name]

    def request(self, name: str) -> dict:
        """A request example as it is sent here: callback URLs point at the receiver."""
        return _map_strings(self._example(name), DOC_CALLBACK_BASE, self.receiver_base)

    def check(self, name: str, actual: object) -> None:
        expected = self._example(name)
        as_documented = _map_strings(actual, self.receiver_base, DOC_CALLBACK_BASE)
        assert accept_placeholders(expected, as_documented) == expected


@pytest.fixture
def docs(request, receiver):
    helper = Docs(getattr(request.function, "examples", frozenset()), receiver)
    failed_before = request.session.testsfailed
    yield helper
    if request.session.testsfailed == failed_before:  # a failed test already told its story
        assert helper.used == helper.declared, f"declared but not reproduced: {sorted(helper.declared - helper.used)}"


def delivered_to(receiver, path: str, count: int) -> dict:
    [delivery] = [r for r in receiver.wait_for(count) if r["path"] == path]
    return delivery


# -- the document itself -------------------------------------------------------------


def test_every_example_is_checked_by_a_test():
    assert set(examples()) == COVERED


def test_every_json_block_is_a_named_example():
    assert DOC.read_text().count("```json") == len(examples())


def test_examples_use_only_the_placeholders_the_reference_defines():
    text = DOC.read_text()
    preamble = text[: text.index("<!-- example:")]
    for placeholder in PLACEHOLDERS:
        assert f"`{placeholder}`" in preamble, f"{placeholder} is not explained before the first example"
    used = set(re.findall(r'"(<[^">]*>)"', "\n".join(body for _, body in EXAMPLE.findall(text))))
    assert used <= set(PLACEHOLDERS)


# -- POST /v1/tasks: the verdicts ----------------------------------------------------


@shows("create-request", "create-response-miss")
def test_first_request_is_a_miss_answered_202(client, docs):
    response = client.post("/v1/tasks", json=docs.request("create-request"))
    assert response.status_code == 202
    docs.check("create-response-miss", response.json)


@shows("create-request-minimal", "create-response-generated-task-id")
def test_request_without_task_id_gets_a_generated_one(client, docs):
    response = client.post("/v1/tasks", json=docs.request("create-request-minimal"))
    assert response.status_code == 202
    docs.check("create-response-generated-task-id", response.json)
    assert client.get(f"/v1/tasks/{response.json['task_id']}/status").status_code == 200


@shows("create-request", "create-request-repeat", "create-response-completed-hit", "callback-completed-hit")
def test_completed_stage_is_answered_200_and_pushed_to_the_new_url(client, work, receiver, docs):
    client.post("/v1/tasks", json=docs.request("create-request"))
    work()
    receiver.wait_for(1)
    response = client.post("/v1/tasks", json=docs.request("create-request-repeat"))
    assert response.status_code == 200
    docs.check("create-response-completed-hit", response.json)
    work()
    pushed = delivered_to(receiver, "/hooks/2", 2)["json"]
    docs.check("callback-completed-hit", pushed)
    assert pushed["result"] == response.json["result"]


@shows("create-request", "create-request-repeat", "create-response-pending-hit", "callback-pending-hit")
def test_pending_stage_subscribes_the_new_url_and_pushes_when_the_run_ends(client, work, receiver, docs):
    client.post("/v1/tasks", json=docs.request("create-request"))
    response = client.post("/v1/tasks", json=docs.request("create-request-repeat"))
    assert response.status_code == 202
    docs.check("create-response-pending-hit", response.json)
    assert receiver.requests == []  # nothing is pushed before the run ends
    work()
    docs.check("callback-pending-hit", delivered_to(receiver, "/hooks/2", 2)["json"])


@shows("create-request-fail", "callback-failed", "create-response-failed-rerun")
def test_failed_stage_pushes_the_failure_and_runs_again_on_request(client, work, receiver, docs):
    client.post("/v1/tasks", json=docs.request("create-request-fail"))
    work()
    docs.check("callback-failed", delivered_to(receiver, "/hooks/1", 1)["json"])
    response = client.post("/v1/tasks", json=docs.request("create-request-fail"))
    assert response.status_code == 202
    docs.check("create-response-failed-rerun", response.json)
    rerun = client.get("/v1/tasks/task-demo-001/status").json["stages"]["demo.fail"]
    assert (rerun["status"], rerun["attempt"]) == ("PENDING", 2)


# -- callbacks -----------------------------------------------------------------------


@shows("create-request", "callback-miss", "callback-headers")
def test_run_end_pushes_a_signed_result_to_the_starting_request(client, work, receiver, docs):
    client.post("/v1/tasks", json=docs.request("create-request"))
    work()
    delivery = delivered_to(receiver, "/hooks/1", 1)
    docs.check("callback-miss", delivery["json"])
    headers = {name: delivery["headers"].get(name.lower()) for name in examples()["callback-headers"]}
    docs.check("callback-headers", headers)
    assert Webhook(SECRET).verify(delivery["raw"], delivery["headers"]) == delivery["json"]
    [record] = client.get("/v1/tasks/task-demo-001/status").json["stages"]["demo.echo"]["callbacks"]
    assert record["delivery_id"] == headers["webhook-id"]


# -- reading -------------------------------------------------------------------------


@shows("create-request", "status-document")
def test_status_shows_the_whole_document_after_a_run_with_a_callback(client, work, receiver, docs):
    client.post("/v1/tasks", json=docs.request("create-request"))
    work()
    receiver.wait_for(1)
    response = client.get("/v1/tasks/task-demo-001/status")
    assert response.status_code == 200
    docs.check("status-document", response.json)


@shows("create-request", "result-stage-view")
def test_result_with_task_name_is_the_single_stage_view(client, work, docs):
    client.post("/v1/tasks", json=docs.request("create-request"))
    work()
    response = client.get("/v1/tasks/task-demo-001/result?task_name=demo.echo")
    assert response.status_code == 200
    docs.check("result-stage-view", response.json)
    whole = client.get("/v1/tasks/task-demo-001/result").json
    assert whole == client.get("/v1/tasks/task-demo-001/status").json


# -- other endpoints -----------------------------------------------------------------


@shows("supported-tasks")
def test_supported_tasks_groups_the_registry_by_node(client, docs, monkeypatch):
    builtin_only = {name: handler for name, handler in tasks._registry.items() if name.startswith("demo.")}
    monkeypatch.setattr(tasks, "_registry", builtin_only)
    response = client.get("/v1/tasks/supported-tasks")
    assert response.status_code == 200
    docs.check("supported-tasks", response.json)


@shows("health")
def test_health_is_ok_once_the_scripts_are_loaded(app, client, docs):
    with app.app_context():
        scripts.load_all(get_redis())
    response = client.get("/v1/tasks/health")
    assert response.status_code == 200
    docs.check("health", response.json)


@shows("healthz", "readyz")
def test_healthz_answers_and_readyz_is_ready_with_a_worker_for_every_queue(app, client, docs):
    from gateway.worker import build_worker

    docs.check("healthz", client.get("/healthz").json)
    assert client.get("/readyz").status_code == 503  # no worker yet
    with app.app_context():
        worker = build_worker()
        worker.register_birth()  # as a worker does at its start
    try:
        response = client.get("/readyz")
        assert response.status_code == 200
        docs.check("readyz", response.json)
    finally:
        worker.register_death()


@shows("create-request", "error-task-busy", "delete-request", "delete-response")
def test_delete_refuses_a_live_task_unless_forced(client, docs):
    client.post("/v1/tasks", json=docs.request("create-request"))
    refused = client.post("/v1/tasks/task-demo-001/delete")
    assert refused.status_code == 409
    docs.check("error-task-busy", refused.json)
    deleted = client.post("/v1/tasks/task-demo-001/delete", json=docs.request("delete-request"))
    assert deleted.status_code == 200
    docs.check("delete-response", deleted.json)
    assert client.get("/v1/tasks/task-demo-001/status").status_code == 404


@shows("create-request", "callback-cancelled")
def test_cancel_fails_live_stages_and_tells_their_subscribers(client, work, receiver, docs):
    client.post("/v1/tasks", json=docs.request("create-request"))
    response = client.delete("/v1/tasks/task-demo-001")
    assert response.status_code == 200
    assert response.json["cancelled"] == ["demo.echo"]
    work()
    docs.check("callback-cancelled", delivered_to(receiver, "/hooks/1", 1)["json"])


@shows("cancel-response")
def test_cancel_of_a_running_stage_says_what_becomes_of_its_handler(client, work, docs):
    body = {"task_name": "demo.sleep", "task_id": "task-demo-001", "input_data": {"seconds": 30}}
    client.post("/v1/tasks", json=body)
    answers = []

    def cancel_once_running():
        def running() -> bool:
            return client.get("/v1/tasks/task-demo-001/status").json["status"] == "running"

        assert poll_until(running, 20, 0.05)
        answers.append(client.delete("/v1/tasks/task-demo-001"))

    canceller = threading.Thread(target=cancel_once_running)
    canceller.start()
    work()  # runs demo.sleep until the cancel stops it
    canceller.join()
    assert answers[0].status_code == 200
    docs.check("cancel-response", answers[0].json)
    stage = client.get("/v1/tasks/task-demo-001/status").json["stages"]["demo.sleep"]
    assert (stage["status"], stage["error"], stage["output"]) == ("FAILED", "cancelled", None)
    assert stage["progress"] < 1  # it stopped before the end of its sleep


@shows("create-request", "error-nothing-to-cancel")
def test_cancel_when_nothing_is_pending_or_running_is_a_conflict(client, work, receiver, docs):
    client.post("/v1/tasks", json=docs.request("create-request"))
    work()
    response = client.delete("/v1/tasks/task-demo-001")
    assert response.status_code == 409
    docs.check("error-nothing-to-cancel", response.json)


@shows("create-request-fail", "retry-request", "retry-response", "callback-failed")
def test_retry_reruns_failed_stages_in_place_and_tells_its_callback(client, work, receiver, docs):
    client.post("/v1/tasks", json=docs.request("create-request-fail"))
    work()
    receiver.wait_for(1)
    response = client.post("/v1/tasks/task-demo-001/retry", json=docs.request("retry-request"))
    assert response.status_code == 200
    docs.check("retry-response", response.json)
    work()
    # The retried run failed again: its callback is told so, as the first run's was.
    retried = delivered_to(receiver, "/hooks/retried", 2)
    docs.check("callback-failed", retried["json"])


@shows(
    "create-request",
    "create-request-reuse-false",
    "create-response-rerun",
    "create-request-reject",
    "error-input-mismatch",
)
def test_reuse_false_runs_again_and_reject_refuses_another_input(client, work, receiver, docs):
    client.post("/v1/tasks", json=docs.request("create-request"))
    work()
    response = client.post("/v1/tasks", json=docs.request("create-request-reuse-false"))
    assert response.status_code == 202
    docs.check("create-response-rerun", response.json)
    work()
    refused = client.post("/v1/tasks", json=docs.request("create-request-reject"))
    assert refused.status_code == 409
    docs.check("error-input-mismatch", refused.json)


@shows("create-request", "resend-response", "error-delivery-queued")
def test_resend_sends_a_delivery_again_and_refuses_a_queued_one(client, work, receiver, docs):
    client.post("/v1/tasks", json=docs.request("create-request"))
    status = client.get("/v1/tasks/task-demo-001/status").json
    (record,) = status["stages"]["demo.echo"]["callbacks"]
    url = f"/v1/tasks/task-demo-001/deliveries/{record['delivery_id']}/resend"
    refused = client.post(url)
    assert refused.status_code == 409
    docs.check("error-delivery-queued", refused.json)
    work()
    receiver.wait_for(1)
    response = client.post(url)
    assert response.status_code == 202
    docs.check("resend-response", response.json)
    work()
    first, again = receiver.wait_for(2)
    assert again["webhook_id"] == first["webhook_id"] == record["delivery_id"]


# -- errors --------------------------------------------------------------------------


@shows("error-validation-request", "error-validation")
def test_schema_violations_are_listed_per_field(client, docs):
    response = client.post("/v1/tasks", json=docs.request("error-validation-request"))
    assert response.status_code == 400
    docs.check("error-validation", response.json)


@shows("error-task-not-found")
def test_unknown_task_is_404(client, docs):
    response = client.get("/v1/tasks/task-unknown/status")
    assert response.status_code == 404
    docs.check("error-task-not-found", response.json)


@shows("create-request", "error-stage-not-found")
def test_unknown_stage_of_a_known_task_is_404(client, docs):
    client.post("/v1/tasks", json=docs.request("create-request"))
    response = client.get("/v1/tasks/task-demo-001/result?task_name=demo.sleep")
    assert response.status_code == 404
    docs.check("error-stage-not-found", response.json)


@shows("error-unauthorized")
def test_missing_token_is_401_when_the_operator_set_tokens(make_app, docs):
    client = make_app(API_TOKENS={"a-token-of-sixteen-chars-or-more": "acme"}).test_client()
    response = client.get("/v1/tasks/task-demo-001/status")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="gateway"'
    docs.check("error-unauthorized", response.json)
    assert client.get("/v1/tasks/health").status_code == 200  # health stays open


@shows("error-unsupported-media-type")
def test_body_that_is_not_json_is_415(client, docs):
    response = client.post("/v1/tasks", data="task_name=demo.echo", content_type="text/plain")
    assert response.status_code == 415
    docs.check("error-unsupported-media-type", response.json)


@shows("error-payload-too-large")
def test_body_over_the_limit_is_413(make_app, docs):
    client = make_app().test_client()  # the default limit, 1 MiB
    response = client.post("/v1/tasks", json={"task_name": "demo.echo", "input_data": {"blob": "x" * 1_100_000}})
    assert response.status_code == 413
    docs.check("error-payload-too-large", response.json)


@shows("error-method-not-allowed")
def test_wrong_method_is_405_with_allow(client, docs):
    response = client.put("/v1/tasks")
    assert response.status_code == 405
    assert "POST" in response.headers["Allow"]
    docs.check("error-method-not-allowed", response.json)


@shows("create-request-minimal", "error-store-unavailable")
def test_unreachable_redis_is_503(redis_server, docs):
    client = create_app({"REDIS_URL": f"redis://127.0.0.1:{free_port()}/0", "DEMO_TASKS": True}).test_client()
    response = client.post("/v1/tasks", json=docs.request("create-request-minimal"))
    assert response.status_code == 503
    docs.check("error-store-unavailable", response.json)
