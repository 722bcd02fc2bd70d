"""The sweeper finishes what a dead process left (in-process; tests/faults kills real ones)."""

from __future__ import annotations

import time

import pytest
import redis
from rq.job import Job

from gateway import keys, service
from gateway.queues import Queues, delivery_job_id, get_queues, run_job_id
from gateway.store import get_store
from gateway.sweeper import sweep_once
from gateway.watches import get_watches
from tests.test_reuse import create, stage, stage_state

LOST_FAST = {"RUN_LEASE_SECONDS": 0.2, "QUEUE_LEASE_SECONDS": 0.2, "MAX_ATTEMPTS": 3}


def start_and_die(app, task_id, task_name):
    """What a worker does before it is killed: take the job and mark the run RUNNING."""
    state = stage_state(app, task_id, task_name)
    with app.app_context():
        get_queues().get(task_name.split(".")[0]).empty()  # the job is gone with its worker
        get_store().start(task_id, task_name, state["token"])
        get_watches().watch_run(task_id, task_name, 0)


def test_lost_run_is_rerun_without_a_new_request(make_app, work, task_id, receiver, run_log):
    app = make_app(**LOST_FAST)
    client = app.test_client()
    create(client, task_id, "testing.count", {"log": run_log.path}, callback=receiver.url())
    start_and_die(app, task_id, "testing.count")
    time.sleep(0.3)
    with app.app_context():
        report = sweep_once()
    assert report.runs_rerun == 1
    assert stage(client, task_id, "testing.count")["attempt"] == 2
    work(app)
    assert stage(client, task_id, "testing.count")["status"] == "SUCCESS"
    [delivered] = receiver.wait_for(1)  # the subscriber of the dead run hears of the new one
    assert delivered["json"]["status"] == "completed"


def test_run_lost_too_often_ends_failed_and_tells_subscribers(make_app, work, task_id, receiver, run_log):
    app = make_app(**{**LOST_FAST, "MAX_ATTEMPTS": 2})
    client = app.test_client()
    create(client, task_id, "testing.count", {"log": run_log.path}, callback=receiver.url())
    for _ in range(2):
        start_and_die(app, task_id, "testing.count")
        time.sleep(0.3)
        with app.app_context():
            sweep_once()
    failed = stage(client, task_id, "testing.count")
    assert failed["status"] == "FAILED"
    assert failed["error"].startswith("run lost")
    work(app)
    [delivered] = receiver.wait_for(1)
    assert delivered["json"]["status"] == "failed"
    assert delivered["json"]["result"]["error"] == failed["error"]
    assert run_log.lines() == []


def test_a_run_replaced_by_a_stale_request_counts_as_lost(make_app, work, task_id, receiver, run_log):
    """Whoever replaces a lost run, the sweeper or a request, the run counts: a task whose
    worker keeps dying ends FAILED even while requests keep arriving (lua/include/new_attempt.lua)."""
    app = make_app(**{**LOST_FAST, "MAX_ATTEMPTS": 2})
    client = app.test_client()
    create(client, task_id, "testing.count", {"log": run_log.path}, callback=receiver.url())
    start_and_die(app, task_id, "testing.count")
    time.sleep(0.3)
    stale = create(client, task_id, "testing.count", {"log": run_log.path})
    assert stale.json["reuse_info"]["state"] == "stale"  # the request replaced the lost run
    start_and_die(app, task_id, "testing.count")
    time.sleep(0.3)
    with app.app_context():
        report = sweep_once()
    assert (report.runs_rerun, report.runs_failed) == (0, 1)
    failed = stage(client, task_id, "testing.count")
    assert failed["status"] == "FAILED"
    assert failed["error"] == "run lost: its worker stopped renewing the lease (2 lost runs)"
    work(app)
    [delivered] = receiver.wait_for(1)  # the first request's subscriber hears of the end
    assert delivered["json"]["status"] == "failed"
    assert run_log.lines() == []


def test_claim_whose_job_never_reached_rq_is_requeued(make_app, work, task_id, run_log):
    app = make_app()
    client = app.test_client()
    create(client, task_id, "testing.count", {"log": run_log.path})
    with app.app_context():
        token = stage_state(app, task_id, "testing.count")["token"]
        Job.fetch(run_job_id(token, "testing.count"), connection=get_queues().connection).delete()
        get_watches().watch_run(task_id, "testing.count", 0)
        assert sweep_once().runs_requeued == 1
    work(app)
    assert stage(client, task_id, "testing.count")["status"] == "SUCCESS"
    assert len(run_log.lines()) == 1


class DiedBeforeEnqueue(BaseException):
    """Stands for the web process dying between the claim and the enqueue."""


@pytest.mark.parametrize("queue_db", [None, 2], ids=["queue-in-store-redis", "queue-in-another-redis"])
def test_claim_of_a_process_that_died_before_its_enqueue_is_found(
    make_app, work, task_id, run_log, redis_server, monkeypatch, queue_db
):
    overrides = {"RUN_LEASE_SECONDS": 0.2}
    if queue_db is not None:
        redis.Redis(port=redis_server.port, db=queue_db).flushdb()
        overrides["QUEUE_REDIS_URL"] = f"redis://127.0.0.1:{redis_server.port}/{queue_db}"
    app = make_app(**overrides)
    client = app.test_client()

    def die(*args, **kwargs):
        raise DiedBeforeEnqueue

    with app.app_context(), monkeypatch.context() as patch:
        # The claim script writes the watch entry itself in one layout, the web process
        # before the claim in the other; either way it must be there.
        assert get_watches().scripts_write_runs is (queue_db is None)
        patch.setattr(Queues, "enqueue_run", die)
        with pytest.raises(DiedBeforeEnqueue):
            service.create_task(task_id, "testing.count", {"log": run_log.path}, None)
    assert stage(client, task_id, "testing.count")["status"] == "PENDING"
    time.sleep(0.3)
    with app.app_context():
        assert sweep_once().runs_requeued == 1
    work(app)
    assert stage(client, task_id, "testing.count")["status"] == "SUCCESS"
    assert len(run_log.lines()) == 1


def test_retry_of_a_process_that_died_before_its_enqueue_is_found(make_app, work, task_id, run_log, monkeypatch):
    app = make_app(RUN_LEASE_SECONDS=0.2)
    client = app.test_client()
    create(client, task_id, "testing.count", {"log": run_log.path})
    client.delete(f"/v1/tasks/{task_id}")  # cancelled before it ran: FAILED, so retry claims it
    assert stage(client, task_id, "testing.count")["status"] == "FAILED"

    def die(*args, **kwargs):
        raise DiedBeforeEnqueue

    with app.app_context(), monkeypatch.context() as patch:
        patch.setattr(Queues, "enqueue_run", die)
        with pytest.raises(DiedBeforeEnqueue):
            service.retry_task(task_id)
    assert stage(client, task_id, "testing.count")["status"] == "PENDING"
    time.sleep(0.3)
    with app.app_context():
        assert sweep_once().runs_requeued == 1  # retry_task.lua left the trace with the claim
    work(app)
    assert stage(client, task_id, "testing.count")["status"] == "SUCCESS"
    assert len(run_log.lines()) == 1  # the cancelled run's job was skipped


def test_a_hit_adds_no_watch_entry(make_app, work, task_id):
    app = make_app()
    client = app.test_client()
    create(client, task_id, "demo.echo", {"v": 1})
    work(app)
    with app.app_context():
        watch = get_queues().connection
        assert watch.zcard(keys.run_watch()) == 0  # the finished run forgot its entry
        create(client, task_id, "demo.echo", {"v": 1})  # a completed hit: nothing to watch
        assert watch.zcard(keys.run_watch()) == 0


def test_live_runs_are_left_alone(make_app, task_id, run_log):
    app = make_app()
    client = app.test_client()
    create(client, task_id, "testing.count", {"log": run_log.path})
    with app.app_context():
        get_watches().watch_run(task_id, "testing.count", 0)
        report = sweep_once()
    assert (report.runs_checked, report.runs_requeued, report.runs_rerun) == (1, 0, 0)
    assert stage(client, task_id, "testing.count")["attempt"] == 1


def test_lost_delivery_is_sent_again_with_the_same_webhook_id(make_app, task_id, receiver):
    from gateway.worker import build_worker

    app = make_app(DELIVERY_GRACE_SECONDS=0, CALLBACK_TIMEOUT_SECONDS=0.1)
    client = app.test_client()
    create(client, task_id, "demo.echo", {"v": 1}, callback=receiver.url())
    with app.app_context():
        build_worker(["demo"]).work(burst=True, logging_level="WARNING")  # the run ends; delivery due
        [record] = stage(client, task_id, "demo.echo")["callbacks"]
        job = get_queues().delivery_job("demo.echo", record["delivery_id"], 1)
        get_queues().get("callbacks").remove(job.id)  # taken by a worker that then died
        job.set_status("started")
        time.sleep(0.2)
        assert sweep_once().deliveries_requeued == 1
        build_worker(["callbacks"]).work(burst=True, logging_level="WARNING")
    [delivered] = receiver.wait_for(1)
    assert delivered["headers"]["webhook-id"] == record["delivery_id"]
    assert delivered["json"]["result"]["output"] == {"v": 1}
    assert stage(client, task_id, "demo.echo")["callbacks"][0]["status"] == "sent"
    with app.app_context():  # nothing left to watch
        server = get_queues().servers.default
        assert get_watches().due_deliveries(server, int(time.time() * 1000) + 10**9, 10) == []
        assert delivery_job_id(record["delivery_id"], 1) == job.id


def test_sweep_command_reports(app):
    result = app.test_cli_runner().invoke(args=["sweep"])
    assert result.exit_code == 0
    assert "runs checked 0" in result.output


def test_deliveries_never_enqueued_after_the_run_ended_are_sent(make_app, task_id, receiver, run_log):
    """The worker died between finish_run and enqueuing the deliveries it released."""
    from gateway.worker import build_worker

    app = make_app()
    client = app.test_client()
    create(client, task_id, "testing.count", {"log": run_log.path}, callback=receiver.url())
    token = stage_state(app, task_id, "testing.count")["token"]
    with app.app_context():
        store = get_store()
        store.start(task_id, "testing.count", token)
        store.finish(task_id, "testing.count", token, output_json='{"done":true}', error=None, duration=0.1)
        get_watches().watch_run(task_id, "testing.count", 0)  # its watch entry is still there
        report = sweep_once()
        assert report.deliveries_requeued == 1
        build_worker(["callbacks"]).work(burst=True, logging_level="WARNING")
    [delivered] = receiver.wait_for(1)
    assert delivered["json"]["result"]["output"] == {"done": True}
    with app.app_context():  # a second pass finds nothing left to do
        get_watches().watch_run(task_id, "testing.count", 0)
        assert sweep_once().deliveries_requeued == 0
