"""Jobs written into the queue Redis by someone else (or by an older gateway) never run
code in a worker: not by being read, not by the function they name, not by their
callbacks or webhooks."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import redis
from rq import Callback, Queue, Retry
from rq.job import Job
from rq.serializers import JSONSerializer
from rq.webhook import Webhook

from gateway.sweeper import sweep_once
from gateway.worker import build_worker
from tests.conftest import IN_PROCESS_DB, ROOT
from tests.test_reuse import create, stage, stage_state


class Unpickled:
    """Unpickling this creates a file: what an attacker's pickle does, harmlessly."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def leave_mark(path: str) -> None:
    """A function that is not a gateway job function."""
    with open(path, "w"):
        pass


def callback_mark(job, *args) -> None:
    """A success/failure callback that leaves a file named in the job's meta."""
    with open(job.meta["mark"], "w"):
        pass


def run_worker_command(redis_server, *args: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "GATEWAY_REDIS_URL": f"redis://127.0.0.1:{redis_server.port}/{IN_PROCESS_DB}",
        "GATEWAY_CALLBACK_ALLOW_PRIVATE_NETWORKS": "true",
        "GATEWAY_TASK_MODULES": "tests.plugin_tasks",
    }
    command = [sys.executable, "-m", "flask", "--app", "wsgi", "worker", *args]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


def test_jobs_written_by_someone_else_fail_without_running(app, client, redis_server, tmp_path, receiver, run_log):
    connection = redis.Redis(port=redis_server.port, db=IN_PROCESS_DB)
    marks = {name: str(tmp_path / name) for name in ("data", "meta", "system", "function", "success", "failure")}
    # RQ's default (pickle) format, naming a gateway function: reading it would run code.
    Queue("testing", connection=connection).enqueue(
        "gateway.jobs.run_stage", Unpickled(marks["data"]), meta={"x": Unpickled(marks["meta"])}
    )
    json_queue = Queue("testing", connection=connection, serializer=JSONSerializer)
    json_queue.enqueue("os.system", f"touch {marks['system']}")
    json_queue.enqueue("tests.test_jobguard.leave_mark", marks["function"])
    # A gateway function with callbacks and a webhook the gateway never sets.
    for outcome, args in (("success", ("no-task", "testing.count", "no-token")), ("failure", ())):
        json_queue.enqueue(
            "gateway.jobs.run_stage",
            *args,
            meta={"mark": marks[outcome]},
            on_success=Callback("tests.test_jobguard.callback_mark"),
            on_failure=Callback("tests.test_jobguard.callback_mark"),
            webhooks=[Webhook(receiver.url(), "finished"), Webhook(receiver.url(), "failed")],
        )
    create(client, "real", "testing.count", {"log": run_log.path})  # and one of the gateway's own

    finished = run_worker_command(redis_server, "--burst", "--queues", "testing")

    assert finished.returncode == 0, finished.stderr
    assert [name for name, path in marks.items() if os.path.exists(path)] == []
    assert stage(client, "real", "testing.count")["status"] == "SUCCESS"
    assert len(run_log.lines()) == 1
    time.sleep(0.3)
    assert receiver.requests == []  # no webhook
    failed = {key for key in connection.scan_iter("rq:job:*") if connection.hget(key, "status") == b"failed"}
    assert len(failed) == 4  # the pickle, os.system, leave_mark, and run_stage without arguments
    assert connection.zcard("rq:failed:testing") == 4
    assert connection.zcard("rq:scheduled:testing") == 0  # refused jobs are not retried


def _as_pickle(connection, queue: str, job_id: str, *args, **options) -> None:
    """Put back a queued job as an older gateway (RQ's pickle format) wrote it."""
    connection.delete(f"rq:job:{job_id}")
    connection.lrem(f"rq:queue:{queue}", 0, job_id)
    Queue(queue, connection=connection).enqueue(*args, job_id=job_id, **options)


def test_a_run_queued_by_an_older_version_is_queued_again_after_one_lease(make_app, redis_server, task_id, run_log):
    app = make_app(RUN_LEASE_SECONDS=0.5)
    client = app.test_client()
    connection = redis.Redis(port=redis_server.port, db=IN_PROCESS_DB)
    create(client, task_id, "testing.count", {"log": run_log.path})
    [job_id] = [item.decode() for item in connection.lrange("rq:queue:testing", 0, -1)]
    token = stage_state(app, task_id, "testing.count")["token"]
    _as_pickle(
        connection, "testing", job_id, "gateway.jobs.run_stage", task_id, "testing.count", token,
        result_ttl=0, failure_ttl=86400, retry=Retry(max=3, interval=[1, 5, 30]),
    )  # fmt: skip

    with app.app_context():
        build_worker().work(burst=True, logging_level="WARNING")
    assert run_log.lines() == []  # refused unread, not retried
    assert stage(client, task_id, "testing.count")["status"] == "PENDING"

    time.sleep(0.6)  # one lease
    with app.app_context():
        assert sweep_once().runs_requeued == 1
        build_worker().work(burst=True, logging_level="WARNING")
    assert len(run_log.lines()) == 1
    assert stage(client, task_id, "testing.count")["status"] == "SUCCESS"


def test_a_delivery_queued_by_an_older_version_is_sent_again_by_the_sweeper(make_app, redis_server, task_id, receiver):
    app = make_app(DELIVERY_GRACE_SECONDS=0, CALLBACK_TIMEOUT_SECONDS=0.5)
    client = app.test_client()
    connection = redis.Redis(port=redis_server.port, db=IN_PROCESS_DB)
    create(client, task_id, "testing.empty", {}, callback=receiver.url())
    with app.app_context():
        build_worker(["testing"]).work(burst=True, logging_level="WARNING")
    [job_id] = [item.decode() for item in connection.lrange("rq:queue:callbacks", 0, -1)]
    args = Job.fetch(job_id, connection, serializer=JSONSerializer).args
    _as_pickle(connection, "callbacks", job_id, "gateway.jobs.deliver", *args, result_ttl=0, failure_ttl=86400)

    with app.app_context():
        build_worker(["callbacks"]).work(burst=True, logging_level="WARNING")
    time.sleep(0.6)  # past the try's timeout and grace
    assert receiver.requests == []
    with app.app_context():
        assert sweep_once().deliveries_requeued == 1
        build_worker(["callbacks"]).work(burst=True, logging_level="WARNING")
    [delivered] = receiver.wait_for(1)
    assert delivered["json"]["task_id"] == task_id
