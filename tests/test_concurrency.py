"""Many concurrent requests against real gunicorn and worker processes (SPEC §2, §6)."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

from tests.conftest import wait_until

CONCURRENCY = 50


def fire(stack, bodies):
    with ThreadPoolExecutor(max_workers=CONCURRENCY) as pool:
        return list(pool.map(stack.post, bodies))


def test_concurrent_identical_creates_run_once(stack, run_log, receiver):
    task_id = f"c-{uuid.uuid4().hex[:10]}"
    body = {
        "task_name": "testing.count",
        "task_id": task_id,
        "input_data": {"log": run_log.path, "seconds": 0.5},
    }
    bodies = [{**body, "callback": receiver.url(f"/r{i}")} for i in range(CONCURRENCY)]
    responses = fire(stack, bodies)

    assert all(r.status_code == 202 for r in responses), {r.status_code for r in responses}
    states = [r.json()["reuse_info"]["state"] for r in responses]
    assert states.count("miss") == 1
    assert sum(1 for s in states if s in ("pending", "running")) == CONCURRENCY - 1

    wait_until(lambda: stack.status(task_id)["stages"]["testing.count"]["status"] == "SUCCESS", timeout=30)
    assert len(run_log.lines()) == 1
    # Every subscriber (one distinct URL each) hears of the one run, exactly once.
    delivered = receiver.wait_for(CONCURRENCY, timeout=30)
    assert sorted(r["path"] for r in delivered) == sorted(f"/r{i}" for i in range(CONCURRENCY))
    assert len({r["headers"]["webhook-id"] for r in delivered}) == CONCURRENCY


def test_concurrent_distinct_task_names_keep_every_stage(stack):
    """Fifty stages written at once under one task_id: none overwrites another."""
    # The plugin module registers testing.stage_00 .. testing.stage_49 (in the web app
    # and the workers alike).
    task_id = f"d-{uuid.uuid4().hex[:10]}"
    bodies = [
        {"task_name": f"testing.stage_{i:02d}", "task_id": task_id, "input_data": {"i": i}} for i in range(CONCURRENCY)
    ]
    responses = fire(stack, bodies)
    assert [r.status_code for r in responses] == [202] * CONCURRENCY

    def all_done():
        stages = stack.status(task_id)["stages"]
        return len(stages) == CONCURRENCY and all(s["status"] == "SUCCESS" for s in stages.values())

    wait_until(all_done, timeout=30)
    stages = stack.status(task_id)["stages"]
    assert {name: stage["output"] for name, stage in stages.items()} == {
        f"testing.stage_{i:02d}": {"i": i} for i in range(CONCURRENCY)
    }


def test_concurrent_hits_on_a_completed_stage_push_each_url_once(stack, receiver):
    task_id = f"h-{uuid.uuid4().hex[:10]}"
    body = {"task_name": "demo.echo", "task_id": task_id, "input_data": {"v": 1}}
    assert stack.post(body).status_code == 202
    wait_until(lambda: stack.status(task_id)["stages"]["demo.echo"]["status"] == "SUCCESS")

    responses = fire(stack, [{**body, "callback": receiver.url(f"/h{i}")} for i in range(CONCURRENCY)])
    assert {r.status_code for r in responses} == {200}
    assert {r.json()["result"]["output"]["v"] for r in responses} == {1}
    delivered = receiver.wait_for(CONCURRENCY, timeout=30)
    assert sorted(r["path"] for r in delivered) == sorted(f"/h{i}" for i in range(CONCURRENCY))
    assert stack.status(task_id)["stages"]["demo.echo"]["attempt"] == 1
