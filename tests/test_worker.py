"""The worker's own bookkeeping: what it leaves in RQ, and the lease keeper."""

from __future__ import annotations

import threading
import time

import pytest
import redis
from rq.job import Job, JobStatus
from rq.registry import StartedJobRegistry

from gateway import keys
from gateway.leases import LeaseKeeper
from gateway.queues import get_queues, run_job_id
from gateway.worker import build_worker
from tests.test_reuse import create, stage, stage_state

LAYOUTS = pytest.mark.parametrize("queue_db", [None, 2], ids=["queue-in-store-redis", "queue-in-another-redis"])


def layout_app(make_app, redis_server, queue_db, **overrides):
    if queue_db is not None:
        redis.Redis(port=redis_server.port, db=queue_db).flushdb()
        overrides["QUEUE_REDIS_URL"] = f"redis://127.0.0.1:{redis_server.port}/{queue_db}"
    return make_app(**overrides)


@LAYOUTS
def test_finished_runs_and_deliveries_leave_nothing_in_rq(make_app, redis_server, receiver, queue_db):
    app = layout_app(make_app, redis_server, queue_db)
    client = app.test_client()
    create(client, "quiet-1", input_data={"n": 1})
    create(client, "quiet-2", input_data={"n": 2})
    create(client, "told", input_data={"n": 3}, callback=receiver.url())
    with app.app_context():
        worker = build_worker()
        worker.work(burst=True, logging_level="WARNING")
        connection = get_queues().connection
        assert [stage(client, t)["status"] for t in ("quiet-1", "quiet-2", "told")] == ["SUCCESS"] * 3
        receiver.wait_for(1)
        records = (b"rq:job", b"rq:execution", b"rq:result", b"rq:wip", b"rq:failed")
        assert [key for key in connection.scan_iter("rq:*") if key.startswith(records)] == []
        assert connection.zcard(keys.run_watch()) == 0
        assert connection.zcard(keys.delivery_watch()) == 0
        # 3 runs and 1 delivery, counted in the worker's hash as RQ does.
        assert connection.hget(worker.key, "successful_job_count") == b"4"


def test_a_running_job_looks_started_in_rq(make_app, task_id, run_log):
    """While a run's handler runs, RQ's records say so: the sweeper and RQ's own
    maintenance read them."""
    app = make_app()
    client = app.test_client()
    create(client, task_id, "testing.count", {"log": run_log.path, "seconds": 0.6})
    token = stage_state(app, task_id, "testing.count")["token"]
    seen = {}

    def look():
        time.sleep(0.3)
        with app.app_context():
            connection = get_queues().connection
            job = Job.fetch(run_job_id(token, "testing.count"), connection=connection)
            seen["status"] = job.get_status()
            seen["started_at"] = job.started_at
            seen["in_registry"] = job.id in StartedJobRegistry("testing", connection=connection)
            seen["stage"] = stage(client, task_id, "testing.count")["status"]

    looker = threading.Thread(target=look)
    looker.start()
    with app.app_context():
        worker = build_worker()
        worker.work(burst=True, logging_level="WARNING")
        state = get_queues().connection.hget(worker.key, "state")
    looker.join()
    assert seen == {
        "status": JobStatus.STARTED,
        "started_at": seen["started_at"],
        "in_registry": True,
        "stage": "RUNNING",
    }
    assert seen["started_at"] is not None
    assert state == b"idle"


def test_lease_renewals_run_while_held_and_stop_after():
    keeper = LeaseKeeper()
    calls = []
    with keeper.hold(lambda: calls.append(time.monotonic()) or True, 0.05):
        time.sleep(0.28)
    held = len(calls)
    time.sleep(0.15)
    assert 4 <= held <= 6
    assert len(calls) == held  # none after the run


def test_a_lost_claim_ends_its_renewals_and_others_go_on():
    keeper = LeaseKeeper()
    lost, kept = [], []
    with keeper.hold(lambda: lost.append(1) and False, 0.05), keeper.hold(lambda: kept.append(1) or True, 0.05):
        time.sleep(0.28)
    assert lost == [1]  # renew said the claim is gone: never asked again
    assert len(kept) >= 4


def test_rq_is_the_version_whose_internals_the_worker_overrides():
    # GatewayWorker replaces RQ's heartbeat, state, suspension and success handling with
    # leaner ones written against RQ 3.0.0's worker (rq/worker/base.py). Upgrading RQ
    # means reading those methods again: this test is the reminder.
    import rq

    assert rq.__version__ == "3.0.0"


def test_the_worker_leaves_the_apps_queue_client_failing_fast(app):
    with app.app_context():
        worker = build_worker()
        shared = get_queues().connection.connection_pool.connection_kwargs["socket_timeout"]
        own = worker.connection.connection_pool.connection_kwargs["socket_timeout"]
    # RQ raised its own client's timeout to outlast its blocking dequeue, not the app's.
    assert shared == app.config["REDIS_SOCKET_TIMEOUT_SECONDS"]
    assert own > 400
