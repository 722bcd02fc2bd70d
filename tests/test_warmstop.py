"""SIGTERM to a worker command with a run under way (``gateway.warmstop``): the run ends
within ``GATEWAY_WORKER_STOP_SECONDS`` and the worker exits, or it is handed back to its
queue and another worker runs it; either way the stage ends SUCCESS and its callback
arrives once."""

from __future__ import annotations

import time

import pytest
import redis

from gateway.exceptions import ClaimLost
from gateway.store import get_store
from tests.conftest import Stack, wait_until
from tests.test_reuse import create, stage_state

STOP_DB = 14  # apart from the other stacks' databases: their workers must not take our jobs


@pytest.fixture
def stop_stack(redis_server, tmp_path):
    redis.Redis(port=redis_server.port, db=STOP_DB).flushdb()
    made: list[Stack] = []

    def make(stop_seconds: float) -> Stack:
        stack = Stack(
            redis_server, tmp_path, workers=1, db=STOP_DB, env={"GATEWAY_WORKER_STOP_SECONDS": str(stop_seconds)}
        )
        made.append(stack)
        return stack

    yield make
    for stack in made:
        stack.stop()


def _lines(path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def _submit(stack: Stack, tmp_path, receiver, seconds: float) -> tuple[str, object]:
    log = tmp_path / "runs.log"
    body = {"log": str(log), "marker": str(tmp_path / "started"), "seconds": seconds}
    task = {"task_name": "testing.slow_first", "task_id": "stop-1", "input_data": body, "callback": receiver.url()}
    assert stack.post(task).status_code == 202
    wait_until(lambda: len(_lines(log)) == 1, timeout=20, what="the run to start")
    return "stop-1", log


def _callbacks_once(receiver) -> dict:
    [push] = receiver.wait_for(1, timeout=20)
    time.sleep(1.0)  # a duplicate, if one were sent, would come within this
    assert len(receiver.requests) == 1
    return push


def test_a_run_that_ends_within_the_limit_finishes_before_the_worker_exits(stop_stack, tmp_path, receiver):
    stack = stop_stack(60)
    task_id, log = _submit(stack, tmp_path, receiver, seconds=3)
    [worker] = stack.workers
    worker.terminate()
    assert worker.wait(30), "the worker did not exit once its run ended"
    assert worker.popen.returncode == 0
    assert stack.stage(task_id, "testing.slow_first")["status"] == "SUCCESS"  # ended by the stopped worker

    stack.start_worker()  # delivers the callback if the stopping worker's delivery process did not
    push = _callbacks_once(receiver)
    assert push["json"]["status"] == "completed"
    assert len(_lines(log)) == 1  # ran once
    assert "handed back" not in worker.log_tail(20000)
    assert "Traceback" not in worker.log_tail(20000)


@pytest.mark.parametrize("how", ["limit", "second_sigterm"])
def test_a_run_still_going_at_the_limit_is_handed_back_and_run_by_another_worker(stop_stack, tmp_path, receiver, how):
    # The first run would sleep 120 s: the worker exits long before, having handed it back.
    stack = stop_stack(1 if how == "limit" else 120)
    task_id, log = _submit(stack, tmp_path, receiver, seconds=120)
    [worker] = stack.workers
    worker.terminate()
    if how == "second_sigterm":
        time.sleep(0.5)
        worker.popen.send_signal(15)
    assert worker.wait(30), "the worker did not hand its run back and exit"
    assert worker.popen.returncode == 0
    assert "handed back" in worker.log_tail(20000)
    assert "Traceback" not in worker.log_tail(20000)
    stage = stack.stage(task_id, "testing.slow_first")
    assert stage["status"] == "PENDING"  # queued again at once, not left for the sweeper
    assert receiver.requests == []

    stack.start_worker()
    ended = stack.wait_ended([task_id], "testing.slow_first", timeout=30)[task_id]
    assert ended["status"] == "SUCCESS"
    push = _callbacks_once(receiver)
    assert push["json"]["status"] == "completed"
    # Two runs, the second by the new worker, with the same attempt number: an interrupted
    # run is not a lost one.
    runs = [line.split() for line in _lines(log)]
    assert len(runs) == 2 and runs[0][1] == runs[1][1] == "1" and runs[0][2] != runs[1][2]


def test_a_handed_back_run_is_pending_under_a_new_claim_with_its_attempt(make_app, task_id, run_log):
    app = make_app()
    create(app.test_client(), task_id, "testing.count", {"log": run_log.path})
    token = stage_state(app, task_id, "testing.count")["token"]
    with app.app_context():
        store = get_store()
        store.start(task_id, "testing.count", token)
        store.report_progress(task_id, "testing.count", token, (0.5, "half"))
        new_token = store.hand_back(task_id, "testing.count", token)
        state = stage_state(app, task_id, "testing.count")
        assert (state["status"], state["token"], state["attempt"]) == ("PENDING", new_token, 1)
        assert "lost" not in state and "progress" not in state and "started_ms" not in state
        # The stopped handler's claim is void: it can neither finish nor hand back again.
        with pytest.raises(ClaimLost):
            store.finish(task_id, "testing.count", token, output_json="{}", error=None, duration=1.0)
        with pytest.raises(ClaimLost):
            store.hand_back(task_id, "testing.count", token)
        # Only a RUNNING run is handed back.
        with pytest.raises(ClaimLost):
            store.hand_back(task_id, "testing.count", new_token)
