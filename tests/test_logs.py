"""Logs (issue 12 item 2): one JSON line per request with its X-Request-ID, run and
delivery-try lines carrying the id of the request that queued them, failures at WARNING,
and nothing secret or user-given in any line. The end-to-end run behind nginx is in
tests/test_deploy.py."""

from __future__ import annotations

import io
import json
import logging
import sys

import pytest

from gateway import tasks
from gateway.exceptions import ConfigError
from gateway.queues import get_queues
from gateway.worker import build_worker
from tests.conftest import SECRET, wait_until

ECHO = "demo.echo"


def json_lines(text: str) -> list[dict]:
    """Every line of ``text`` that is a JSON object (the test's other output skipped)."""
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def request_lines(text: str) -> list[dict]:
    return [line for line in json_lines(text) if line["logger"] == "gateway.request"]


def run_worker(app, level: str = "WARNING") -> None:
    with app.app_context():
        build_worker().work(burst=True, logging_level=level)


def create(client, task_id: str, task_name: str = ECHO, input_data=None, *, callback=None, headers=None):
    body = {"task_name": task_name, "task_id": task_id, "input_data": input_data or {"a": 1}}
    if callback:
        body["callback"] = callback
    return client.post("/v1/tasks", json=body, headers=headers or {})


def test_one_json_line_per_request_with_its_request_id_echoed(client, task_id, capsys):
    response = create(client, task_id, headers={"X-Request-ID": "req-0001"})
    assert response.status_code == 202
    assert response.headers["X-Request-ID"] == "req-0001"
    [line] = request_lines(capsys.readouterr().err)
    assert line == {
        "time": line["time"], "level": "INFO", "logger": "gateway.request", "message": "request",
        "request_id": "req-0001", "method": "POST", "path": "/v1/tasks", "status": 202, "verdict": "miss",
        "task_id": task_id, "task_name": ECHO, "tenant": None, "duration_ms": line["duration_ms"],
        "client": "127.0.0.1",
    }  # fmt: skip
    assert line["time"].endswith("Z") and "T" in line["time"]
    assert isinstance(line["duration_ms"], float)


def test_reuse_hit_status_and_errors_are_logged_with_their_task(client, work, task_id, capsys):
    create(client, task_id)
    work()
    assert create(client, task_id).status_code == 200
    assert client.get(f"/v1/tasks/{task_id}/result?task_name={ECHO}").status_code == 200
    assert client.get("/v1/tasks/no-such-task/status?secret=x").status_code == 400  # unknown parameter
    miss, hit, result, unknown = request_lines(capsys.readouterr().err)
    assert (miss["verdict"], miss["status"]) == ("miss", 202)
    assert (hit["verdict"], hit["status"], hit["task_id"]) == ("completed", 200, task_id)
    assert (result["path"], result["task_id"], result["task_name"], result["verdict"]) == (
        f"/v1/tasks/{task_id}/result",
        task_id,
        ECHO,
        None,
    )
    # The path is logged without its query string.
    assert (unknown["path"], unknown["status"], unknown["task_id"]) == (
        "/v1/tasks/no-such-task/status",
        400,
        "no-such-task",
    )
    assert len({miss["request_id"], hit["request_id"], result["request_id"]}) == 3


def test_a_request_no_route_matched_is_logged_and_echoed_and_keeps_nothing(client, capsys):
    response = client.get("/v1/nowhere", headers={"X-Request-ID": "req-404"})
    assert (response.status_code, response.headers["X-Request-ID"]) == (404, "req-404")
    [line] = request_lines(capsys.readouterr().err)
    assert (line["request_id"], line["path"], line["status"], line["task_id"]) == ("req-404", "/v1/nowhere", 404, None)
    # The request object the bookkeeping read is taken out of the environ again: nothing
    # holds the request after its answer (no reference cycle left for the GC).
    assert "gateway.request" not in response.request.environ


@pytest.mark.parametrize(
    "given",
    ["a" * 129, "two words", 'quote"d', "semi;colon", "", "tab\there"],
)
def test_an_unfit_request_id_is_replaced_by_a_generated_one(client, given, capsys):
    response = client.get("/v1/tasks/health", headers={"X-Request-ID": given})
    generated = response.headers["X-Request-ID"]
    prefix, _, number = generated.partition("-")
    assert generated != given and len(prefix) == 12 and int(prefix, 16) >= 0 and int(number, 16) > 0
    [line] = request_lines(capsys.readouterr().err)
    assert line["request_id"] == generated


@pytest.mark.parametrize("given", ["a" * 128, "0f8fad5b-d9cb-469f-a165-70867728950e", "YWJj+/=", "Root=1-67:ab@x"])
def test_a_sane_request_id_is_kept(client, given):
    assert client.get("/v1/tasks/health", headers={"X-Request-ID": given}).headers["X-Request-ID"] == given


def test_text_format_is_one_readable_line(make_app, task_id, capsys):
    client = make_app(LOG_FORMAT="text").test_client()
    create(client, task_id, headers={"X-Request-ID": "req-text"})
    [line] = [line for line in capsys.readouterr().err.splitlines() if "gateway.request" in line]
    assert " INFO gateway.request: POST /v1/tasks 202 " in line
    assert f"verdict=miss task_id={task_id} task_name={ECHO} tenant=- client=127.0.0.1 request_id=req-text" in line


def test_log_level_warning_leaves_out_the_request_lines(make_app, task_id, capsys):
    client = make_app(LOG_LEVEL="WARNING").test_client()
    response = create(client, task_id)
    assert response.headers["X-Request-ID"]  # still answered
    assert request_lines(capsys.readouterr().err) == []


def test_runs_and_delivery_tries_carry_the_id_of_the_request_that_queued_them(app, client, task_id, receiver, capsys):
    create(client, task_id, callback=receiver.url(), headers={"X-Request-ID": "req-link-1"})
    with app.app_context():
        [job] = get_queues().get(tasks.node_of(ECHO)).get_jobs()
    assert job.meta["request_id"] == "req-link-1"
    assert job.description == f"run {task_id} {ECHO}"  # RQ's default would show the call with its arguments
    run_worker(app)
    receiver.wait_for(1)
    lines = {line["message"]: line for line in json_lines(capsys.readouterr().err) if line["logger"] == "gateway.jobs"}
    assert set(lines) == {"run started", "run ended", "delivery sent"}
    for line in lines.values():
        assert line["request_id"] == "req-link-1"
        assert (line["task_id"], line["task_name"], line["tenant"]) == (task_id, ECHO, None)
    assert lines["run started"]["attempt"] == 1
    assert lines["run ended"]["status"] == "SUCCESS" and lines["run ended"]["level"] == "INFO"
    sent = lines["delivery sent"]
    assert (sent["outcome"], sent["status_code"], sent["try"]) == ("sent", 200, 1)
    assert sent["callback"] == receiver.url()
    assert sent["delivery_id"] == receiver.requests[0]["headers"]["webhook-id"]


def test_a_failed_run_and_a_callback_refused_three_times_are_warnings(make_app, task_id, receiver, capsys):
    app = make_app(CALLBACK_RETRY_INTERVALS=[0, 0])  # three tries
    receiver.responses.extend([500, 500, 500])
    create(app.test_client(), task_id, "demo.fail", {"message": "the handler broke"}, callback=receiver.url())
    run_worker(app, level="INFO")
    receiver.wait_for(3)
    lines = [line for line in json_lines(capsys.readouterr().err) if line["logger"] == "gateway.jobs"]
    failed = [line for line in lines if line["level"] == "WARNING"]
    assert [line["message"] for line in failed] == [
        "run failed",
        "delivery try failed, will retry",
        "delivery try failed, will retry",
        "delivery failed, given up",
    ]
    assert failed[0]["error"] == "RuntimeError: the handler broke" and failed[0]["status"] == "FAILED"
    assert [(line["try"], line["status_code"], line["error"]) for line in failed[1:]] == [
        (1, 500, "HTTP 500"),
        (2, 500, "HTTP 500"),
        (3, 500, "HTTP 500"),
    ]
    assert [line["outcome"] for line in failed[1:]] == ["retry", "retry", "failed"]


def test_nothing_secret_or_user_given_is_logged(make_app, task_id, receiver, capsys, caplog):
    token = "token-secret-0123456789abcdef"
    marker = "INPUT-MARKER-7f3a"
    app = make_app(API_TOKENS={token: "acme"}, CALLBACK_RETRY_INTERVALS=[0])
    client = app.test_client()
    auth = {"Authorization": f"Bearer {token}"}
    callback = receiver.url("/hook") + "?sig=QUERY-SECRET-91b2"
    receiver.responses.append(500)  # a failed try's error is logged too
    with caplog.at_level(logging.DEBUG):
        response = create(client, task_id, ECHO, {"text": marker}, callback=callback, headers=auth)
        assert response.status_code == 202
        run_worker(app, level="DEBUG")  # RQ's most talkative
        receiver.wait_for(2)
        assert client.get(f"/v1/tasks/{task_id}/status", headers=auth).status_code == 200
        client.get("/v1/tasks/health", headers={"Authorization": "Bearer wrong-token-value-456"})
    captured = capsys.readouterr()
    logged = captured.err + captured.out + caplog.text
    assert marker in receiver.requests[0]["raw"].decode()  # it was there to leak
    assert "gateway.jobs" in logged and "rq.worker" in logged  # and the lines were written
    for secret in (token, "wrong-token-value-456", SECRET, SECRET.removeprefix("whsec_"), marker, "QUERY-SECRET"):
        assert secret not in logged, secret
    create_line, status_line, health_line = request_lines(captured.err)
    assert (create_line["tenant"], status_line["tenant"]) == ("acme", "acme")
    assert (health_line["tenant"], health_line["status"]) == (None, 200)  # open: the token is not even read


@pytest.mark.parametrize(
    ("setting", "value"),
    [("LOG_FORMAT", "xml"), ("LOG_LEVEL", "loud"), ("TRUSTED_PROXIES", -1), ("TRUSTED_PROXIES", "one")],
)
def test_bad_log_and_proxy_settings_are_refused_by_name(make_app, setting, value):
    with pytest.raises(ConfigError, match=f"GATEWAY_{setting}"):
        make_app(**{setting: value})


@pytest.mark.parametrize(("access_log", "expected"), [(None, False), ("-", True)])
def test_gunicorns_access_line_only_with_gateway_access_log(redis_server, tmp_path, access_log, expected):
    # gunicorn.conf.py's logger: gunicorn 27 would build the access line's fields for every
    # request whenever a logconfig_dict is set; the gateway's own request line is written
    # either way.
    import requests

    from tests.conftest import Stack

    env = {"GATEWAY_ACCESS_LOG": access_log} if access_log else {}
    stack = Stack(redis_server, tmp_path, workers=0, db=13, env=env)  # no worker, nothing written: any db
    try:
        assert requests.get(stack.base + "/v1/tasks/health", headers={"X-Request-ID": "access-1"}, timeout=5).ok
        assert wait_until(lambda: "access-1" in stack.web.log_tail(20000), 10, what="the request line")
        lines = [json.loads(line) for line in stack.web.log_tail(20000).splitlines() if line.startswith("{")]
        assert any(line["logger"] == "gunicorn.access" for line in lines) is expected
    finally:
        stack.stop()


# -- request lines in batches (GATEWAY_LOG_FLUSH_SECONDS, the default 0.2 s) ------------------


def test_request_lines_wait_for_their_batch_and_come_in_the_order_of_their_requests(make_app, task_id, monkeypatch):
    client = make_app(LOG_FLUSH_SECONDS=3).test_client()
    # A stream of the test's own, read without emptying it (capsys's reads can miss what a
    # thread writes meanwhile); the handler writes to the sys.stderr of the moment.
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    for number in range(3):
        create(client, task_id, headers={"X-Request-ID": f"batched-{number}"})
    assert request_lines(stream.getvalue()) == []  # none written yet: they wait for their batch
    written = wait_until(lambda: len(request_lines(stream.getvalue())) >= 3 and request_lines(stream.getvalue()), 10)
    assert [line["request_id"] for line in written] == ["batched-0", "batched-1", "batched-2"]


def test_any_other_record_is_written_after_the_request_lines_still_waiting(make_app, task_id, capsys):
    client = make_app(LOG_FLUSH_SECONDS=5).test_client()  # longer than the test takes
    capsys.readouterr()
    create(client, task_id, headers={"X-Request-ID": "before-the-warning"})
    logging.getLogger("gateway.test").warning("after the request")
    lines = json_lines(capsys.readouterr().err)
    assert [line.get("request_id") or line["message"] for line in lines] == ["before-the-warning", "after the request"]


def test_lines_from_many_threads_at_once_are_each_written_once(make_app, capsys):
    import threading

    handler = make_app(LOG_FLUSH_SECONDS=0.01).extensions["gateway.log_handler"]
    capsys.readouterr()
    start = threading.Barrier(8)

    def write(thread: int) -> None:
        start.wait()
        for number in range(500):
            handler.write_line(f"line {thread} {number}\n")

    threads = [threading.Thread(target=write, args=(thread,)) for thread in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    handler.flush()  # takes the lock the writer thread writes under: after it, every line is out
    written = capsys.readouterr().err.splitlines()
    assert sorted(written) == sorted(f"line {thread} {number}" for thread in range(8) for number in range(500))
    for thread in range(8):  # each thread's lines in its own order
        assert [line for line in written if line.startswith(f"line {thread} ")] == [
            f"line {thread} {number}" for number in range(500)
        ]


def test_a_gunicorn_worker_stopped_gracefully_writes_the_lines_still_waiting(redis_server, tmp_path):
    import requests

    from tests.conftest import Stack

    # Far longer than the test: only the stop can write these lines.
    stack = Stack(redis_server, tmp_path, workers=0, db=13, env={"GATEWAY_LOG_FLUSH_SECONDS": "600"})
    try:
        for number in range(3):
            answer = requests.get(
                stack.base + "/v1/tasks/health", headers={"X-Request-ID": f"stop-{number}"}, timeout=5
            )
            assert answer.ok
        assert "stop-0" not in stack.web.log_tail(20000)
        stack.web.terminate()
        assert stack.web.wait(30)
        written = [json.loads(line) for line in stack.web.log_tail(20000).splitlines() if line.startswith("{")]
        # Each web process writes its own batches: three processes may have answered them.
        logged = {line["request_id"] for line in written if line["logger"] == "gateway.request"}
        assert {"stop-0", "stop-1", "stop-2"} <= logged
    finally:
        stack.stop()
