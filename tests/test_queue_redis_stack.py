"""Two node groups on two queue Redis servers, with real gunicorn and worker processes:
node ``other`` on queue Redis A, every other node (``testing``) on B, the task documents
on the session Redis. Each group has its worker (``flask --app wsgi worker --group``),
which runs its group's runs and deliveries and sweeps its own queue Redis."""

from __future__ import annotations

import json
import sys
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis

from gateway import keys
from gateway.testing.redis_server import RedisServer
from gateway.testing.stack import GatewayStack
from tests.conftest import STACK_ENV, wait_until

SPLIT_DB = 14  # apart from the other stacks' databases: their workers must not take our jobs
#: Short enough for a lost run to be found within seconds, long enough for a busy machine
#: to renew it (every lease / 3) without losing a run that is alive.
RUN_LEASE_SECONDS = 3


class Split:
    def __init__(self, stack: GatewayStack, a: RedisServer, b: RedisServer) -> None:
        self.stack, self.a, self.b = stack, a, b
        self.workers = {"other": self.start_worker("other"), "*": self.start_worker("*")}

    def start_worker(self, group: str):
        command = [sys.executable, "-m", "flask", "--app", "wsgi", "worker", "--group", group]
        worker = self.stack.spawn(f"worker-{group.strip('*') or 'default'}", command)
        self.stack.workers.append(worker)
        return worker

    def wait_workers(self) -> None:
        """Until each queue Redis has its run and delivery worker registered with RQ."""
        for server in (self.a, self.b):
            with server.client() as client:
                wait_until(lambda c=client: c.scard("rq:workers") >= 2, timeout=30, what="workers")


@pytest.fixture(scope="module")
def split(redis_server, tmp_path_factory):
    with RedisServer() as a, RedisServer() as b:
        redis.Redis(port=redis_server.port, db=SPLIT_DB).flushdb()
        env = {
            **STACK_ENV,
            "GATEWAY_TASK_MODULES": "tests.plugin_tasks,tests.split_tasks",
            "GATEWAY_QUEUE_REDIS_URLS": json.dumps({"other": a.url, "*": b.url}),
            "GATEWAY_RUN_LEASE_SECONDS": str(RUN_LEASE_SECONDS),
            "GATEWAY_SWEEP_INTERVAL_SECONDS": "0.5",
        }
        stack = GatewayStack(redis_server.url_for(SPLIT_DB), tmp_path_factory.mktemp("split"), env)
        try:
            stack.start_web()
            running = Split(stack, a, b)
            stack.wait_ready(timeout=30)
            running.wait_workers()
            yield running
        finally:
            stack.stop()


def runs_by_pid(run_log) -> dict[str, list[str]]:
    """task name → pids of the processes that ran it (testing.count's log lines)."""
    runs: dict[str, list[str]] = {}
    for line in run_log.lines():
        _task_id, task_name, _attempt, pid = line.split()
        runs.setdefault(task_name, []).append(pid)
    return runs


def test_each_group_runs_its_nodes_on_its_own_queue_redis(split, redis_server, run_log, receiver):
    stack = split.stack
    task_id = f"g-{uuid.uuid4().hex[:10]}"
    for task_name in ("other.count", "testing.count"):
        body = {"task_name": task_name, "task_id": task_id, "input_data": {"log": run_log.path}}
        assert stack.post({**body, "callback": receiver.url(f"/{task_name}")}).status_code == 202
    stages = stack.wait_ended([task_id], "other.count", timeout=30)
    assert stages[task_id]["status"] == "SUCCESS"
    assert stack.wait_ended([task_id], "testing.count", timeout=30)[task_id]["status"] == "SUCCESS"
    # Each run was made by the worker of its node's group (the run worker is the
    # command's own process; testing.count writes the pid that ran it).
    assert runs_by_pid(run_log) == {
        "other.count": [str(split.workers["other"].pid)],
        "testing.count": [str(split.workers["*"].pid)],
    }
    assert sorted(r["path"] for r in receiver.wait_for(2, timeout=30)) == ["/other.count", "/testing.count"]
    with redis_server.client(SPLIT_DB) as store:  # the documents are on the store Redis only
        assert store.exists(keys.task_document(task_id)) == 1
        assert store.keys("rq:*") == []
    for server in (split.a, split.b):
        with server.client() as client:
            assert client.keys("gw:task:*") == []


def test_concurrent_creates_across_both_groups_run_each_stage_once(split, run_log, receiver):
    """40 creates at once: 4 task ids × 2 nodes (one per queue Redis) × 5 identical
    requests, each with a callback URL of its own."""
    stack = split.stack
    task_ids = [f"c-{uuid.uuid4().hex[:10]}" for _ in range(4)]
    bodies = [
        {
            "task_name": task_name,
            "task_id": task_id,
            "input_data": {"log": run_log.path, "seconds": 0.3},
            "callback": receiver.url(f"/{task_id}/{task_name}/{copy}"),
        }
        for task_id in task_ids
        for task_name in ("other.count", "testing.count")
        for copy in range(5)
    ]
    with ThreadPoolExecutor(max_workers=len(bodies)) as pool:
        responses = list(pool.map(stack.post, bodies))
    assert [r.status_code for r in responses] == [202] * 40
    assert Counter(r.json()["reuse_info"]["state"] for r in responses)["miss"] == 8
    for task_name in ("other.count", "testing.count"):
        stages = stack.wait_ended(task_ids, task_name, timeout=60)
        assert {stage["status"] for stage in stages.values()} == {"SUCCESS"}
    # Each of the 8 stages ran exactly once, on its group's worker.
    runs = Counter((line.split()[0], line.split()[1]) for line in run_log.lines())
    assert runs == Counter({(t, n): 1 for t in task_ids for n in ("other.count", "testing.count")})
    assert set(runs_by_pid(run_log)["other.count"]) == {str(split.workers["other"].pid)}
    assert set(runs_by_pid(run_log)["testing.count"]) == {str(split.workers["*"].pid)}
    delivered = receiver.wait_for(40, timeout=60)
    expected = [f"/{t}/{n}/{c}" for t in task_ids for n in ("other.count", "testing.count") for c in range(5)]
    assert sorted(r["path"] for r in delivered) == sorted(expected)  # each subscriber, once
    assert len({r["headers"]["webhook-id"] for r in delivered}) == 40


def test_a_worker_killed_mid_run_on_b_is_recovered_by_b_sweeper(split, run_log, receiver):
    stack = split.stack
    task_id = f"k-{uuid.uuid4().hex[:10]}"
    body = {"task_name": "testing.count", "task_id": task_id, "input_data": {"log": run_log.path, "seconds": 4}}
    assert stack.post({**body, "callback": receiver.url("/killed")}).status_code == 202
    wait_until(lambda: stack.stage(task_id, "testing.count")["status"] == "RUNNING", timeout=30, what="RUNNING")
    killed = split.workers["*"]
    killed.kill()  # SIGKILL to its group: the run worker, its delivery worker, RQ's scheduler
    split.workers["*"] = split.start_worker("*")
    stages = stack.wait_ended([task_id], "testing.count", timeout=60)
    assert stages[task_id]["status"] == "SUCCESS"
    assert stages[task_id]["attempt"] == 2
    assert runs_by_pid(run_log)["testing.count"] == [str(killed.pid), str(split.workers["*"].pid)]
    [delivered] = receiver.wait_for(1, timeout=30)
    assert delivered["json"]["status"] == "completed"
    # B's new worker's sweeper found it; A's, running all along, never saw it.
    assert f"rerun {task_id}/testing.count" in split.workers["*"].log_path.read_text()
    assert task_id not in split.workers["other"].log_path.read_text()


def test_a_down_queue_redis_stops_its_group_only(split, run_log):
    """Queue Redis A dies: creates of ``other`` get 503, ``testing`` (on B) goes on; once A
    is back, so is ``other``."""
    stack = split.stack
    task_id = f"d-{uuid.uuid4().hex[:10]}"
    split.a.kill()
    try:
        refused = stack.post({"task_name": "other.count", "task_id": task_id, "input_data": {"log": run_log.path}})
        assert refused.status_code == 503
        accepted = stack.post({"task_name": "testing.count", "task_id": task_id, "input_data": {"log": run_log.path}})
        assert accepted.status_code == 202
        assert stack.wait_ended([task_id], "testing.count", timeout=30)[task_id]["status"] == "SUCCESS"
    finally:
        split.a.restart()
    body = {"task_name": "other.count", "task_id": task_id, "input_data": {"log": run_log.path}}
    wait_until(lambda: stack.post(body).status_code == 202, timeout=30, what="other accepted again")
    assert stack.wait_ended([task_id], "other.count", timeout=60)[task_id]["status"] == "SUCCESS"
