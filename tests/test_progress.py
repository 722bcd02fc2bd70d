"""Progress reports (``ctx.progress``): checked, coalesced, shown on ``/status`` while the
stage runs, kept as last reported after it ends, and ignored once the run's claim is gone."""

from __future__ import annotations

import functools
import json
import math
import time

import pytest

from gateway import keys, leases
from gateway.runcontrol import MAX_PROGRESS_MESSAGE_CHARS, WRITE_INTERVAL_SECONDS, RunControl
from gateway.store import get_redis, get_store
from gateway.tasks import RunCancelled, TaskContext
from tests.conftest import wait_until
from tests.test_reuse import create, stage


def bare_context() -> TaskContext:
    return TaskContext(task_id="t-1", task_name="testing.progress_burst", attempt=1)


def running_claim(app, client, task_id: str, task_name: str = "demo.echo") -> str:
    """Claim a run through the API and start it as a worker would; its claim token."""
    create(client, task_id, task_name)
    with app.app_context():
        raw = get_redis().hget(keys.task_document(task_id), f"s:{task_name}")
        token = json.loads(raw)["token"]
        get_store().start(task_id, task_name, token)
    return token


@pytest.mark.parametrize(
    ("fraction", "message", "error"),
    [
        (1.5, None, ValueError),
        (-0.01, None, ValueError),
        (math.nan, None, ValueError),
        (True, None, TypeError),
        ("0.5", None, TypeError),
        (0.5, 7, TypeError),
        (0.5, "x" * (MAX_PROGRESS_MESSAGE_CHARS + 1), ValueError),
    ],
    ids=["above-1", "below-0", "nan", "bool", "string", "message-not-text", "message-too-long"],
)
def test_a_report_out_of_range_is_refused(fraction, message, error):
    with pytest.raises(error):
        bare_context().progress(fraction, message)


def test_reports_within_the_limits_are_taken():
    context = bare_context()
    context.progress(0)
    context.progress(1, "x" * MAX_PROGRESS_MESSAGE_CHARS)
    context.progress(0.5, "\ud800 lone surrogate")


def test_a_context_without_a_worker_sleeps_and_is_never_cancelled():
    context = bare_context()
    context.sleep(0.01)
    assert context.cancelled is False
    with pytest.raises(ValueError):
        context.sleep(-1)


def test_a_handler_reporting_out_of_range_fails_its_stage(client, work, task_id):
    create(client, task_id, "testing.progress_burst", {"reports": 1, "last": [2, "too far"]})
    work()
    failed = stage(client, task_id, "testing.progress_burst")
    assert failed["status"] == "FAILED"
    assert failed["error"] == "ValueError: progress must be a number from 0 to 1, got 2"


def test_the_last_report_of_a_burst_is_kept_after_the_run(client, work, task_id):
    """100 000 reports in a tight loop, the last one a moment after a write: it is still
    the one /status shows once the run ended."""
    create(client, task_id, "testing.progress_burst", {"reports": 100_000, "last": [0.75, "three quarters"]})
    assert stage(client, task_id, "testing.progress_burst")["progress"] is None  # nothing reported yet
    work()
    ended = stage(client, task_id, "testing.progress_burst")
    assert ended["status"] == "SUCCESS"
    assert (ended["progress"], ended["progress_message"]) == (0.75, "three quarters")


def test_a_tight_loop_of_reports_writes_at_most_twice_a_second(app, client, task_id):
    token = running_claim(app, client, task_id)
    writes = []

    with app.app_context():
        store = get_store()
        write = functools.partial(store.report_progress, task_id, "demo.echo", token)

        def counted(progress):
            writes.append(progress)
            return write(progress)

        control = RunControl(counted, leases.keeper)
        context = TaskContext(task_id=task_id, task_name="demo.echo", attempt=1, _control=control)
        started = time.monotonic()
        reports = 0
        while time.monotonic() - started < 1.2:
            for _ in range(1000):
                reports += 1
                context.progress(min(reports / 1e7, 1.0), f"report {reports}")
        elapsed = time.monotonic() - started
        control.close()

    assert reports > 10_000
    # One write at once, then one per interval at most, and the last one at the end.
    assert 1 <= len(writes) <= elapsed / WRITE_INTERVAL_SECONDS + 2
    assert writes[-1] == (min(reports / 1e7, 1.0), f"report {reports}")
    shown = stage(client, task_id)
    assert (shown["status"], shown["progress_message"]) == ("RUNNING", f"report {reports}")


def test_progress_of_a_cancelled_run_is_ignored_and_the_handler_told(app, client, task_id):
    token = running_claim(app, client, task_id)
    with app.app_context():
        store = get_store()
        assert store.report_progress(task_id, "demo.echo", token, (0.25, "a quarter")) is True
        assert client.delete(f"/v1/tasks/{task_id}").status_code == 200
        assert store.report_progress(task_id, "demo.echo", token, (0.5, "late")) is False
        assert store.report_progress(task_id, "demo.echo", token, None) is False

        control = RunControl(functools.partial(store.report_progress, task_id, "demo.echo", token), leases.keeper)
        context = TaskContext(task_id=task_id, task_name="demo.echo", attempt=1, _control=control)

        def told() -> bool:
            try:
                context.progress(0.9, "still going")  # the write that finds the claim gone sets the flag
            except RunCancelled:
                return True
            return False

        wait_until(told, timeout=5, what="ctx.progress to raise RunCancelled")
        assert context.cancelled
        with pytest.raises(RunCancelled):
            context.sleep(10)
        control.close()

    cancelled = stage(client, task_id)
    assert (cancelled["status"], cancelled["error"]) == ("FAILED", "cancelled")
    assert (cancelled["progress"], cancelled["progress_message"]) == (0.25, "a quarter")


def test_progress_is_kept_after_a_failure_and_a_new_attempt_starts_without(client, work, task_id):
    create(client, task_id, "testing.progress_burst", {"reports": 1, "last": [2, "too far"]})
    work()
    failed = stage(client, task_id, "testing.progress_burst")
    assert failed["status"] == "FAILED"
    assert (failed["progress"], failed["progress_message"]) == (0.0, "report 0")  # its last valid report
    assert client.post(f"/v1/tasks/{task_id}/retry").status_code == 200
    again = stage(client, task_id, "testing.progress_burst")
    assert (again["status"], again["attempt"]) == ("PENDING", 2)
    assert (again["progress"], again["progress_message"]) == (None, None)


def test_status_shows_progress_while_demo_sleep_runs_and_keeps_the_last(stack, task_id):
    """Real gunicorn and workers: /status follows a running demo.sleep."""
    assert stack.post({"task_name": "demo.sleep", "task_id": task_id, "input_data": {"seconds": 4}}).status_code == 202

    def midway() -> dict | None:
        current = stack.stage(task_id, "demo.sleep")
        progress = current and current["progress"]
        return current if current["status"] == "RUNNING" and progress and 0 < progress < 1 else None

    running = wait_until(midway, timeout=30, what="demo.sleep to report progress while it runs")
    assert running["progress_message"].startswith("slept ")
    ended = stack.wait_ended([task_id], "demo.sleep", timeout=30)[task_id]
    assert ended["status"] == "SUCCESS"
    assert (ended["progress"], ended["progress_message"]) == (1.0, "slept 4 s")
