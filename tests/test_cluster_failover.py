"""A primary of the task store's Redis Cluster dies (SIGKILL) while creates and runs flow
(issue 13 item 4).

Its replica is promoted (``cluster-node-timeout`` 1 s); the killed node is then started
again and rejoins as a replica, as a supervisor would restart it. What a caller sees is
printed (how many requests got 503 and over how long; run with ``-s``), never asserted
as a timing. Asserted: no answer other than 200/202/503 (no 500, no hang), every run of
a surviving stage ends and its callback arrives, and with ``GATEWAY_REDIS_WAIT_REPLICAS=1``
no acknowledged stage is lost. Without it, Redis replicates asynchronously: a create
acknowledged in the last moment before the kill may not have reached the replica yet
(the replication window); the test prints how many were lost.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field

import pytest
import redis
import requests

from gateway.testing.redis_cluster import RedisClusterServers
from gateway.testing.stack import GatewayStack
from gateway.testing.waiting import poll_until
from tests.conftest import STACK_ENV

QUEUE_DB = 15
THREADS = 6
#: Seconds of load before the kill and after the cluster is whole again.
LOAD_BEFORE, LOAD_AFTER = 1.0, 1.5


@pytest.fixture(scope="module")
def failover_cluster():
    with RedisClusterServers(primaries=3, replicas=1, node_timeout_ms=1000) as servers:
        yield servers


@dataclass
class Answer:
    task_id: str
    sent: float
    took: float
    status: int | None  # None: no answer (an exception)
    error: str = ""


@dataclass
class Outcome:
    answers: list[Answer] = field(default_factory=list)
    killed_at: float = 0.0
    promoted_after: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def acknowledged(self) -> list[str]:
        return [a.task_id for a in self.answers if a.status in (200, 202)]

    def report(self, label: str, lost: list[str]) -> str:
        unavailable = [a for a in self.answers if a.status == 503]
        window = "none"
        if unavailable:
            first = min(a.sent for a in unavailable) - self.killed_at
            last = max(a.sent + a.took for a in unavailable) - self.killed_at
            window = f"{first:+.2f} s to {last:+.2f} s"
        slowest = max(a.took for a in self.answers)
        return (
            f"[{label}] {len(self.answers)} creates, {len(self.acknowledged())} acknowledged, "
            f"{len(unavailable)} answered 503 (from kill: {window}), slowest answer {slowest:.2f} s, "
            f"replica promoted {self.promoted_after:.2f} s after the kill, acknowledged stages lost: {len(lost)}"
        )


def start_stack(servers, redis_server, tmp_path, wait_replicas: int) -> GatewayStack:
    redis.Redis(port=redis_server.port, db=QUEUE_DB).flushdb()
    env = {
        **STACK_ENV,
        "GATEWAY_REDIS_CLUSTER": "true",
        "GATEWAY_QUEUE_REDIS_URL": redis_server.url_for(QUEUE_DB),
        "GATEWAY_REDIS_WAIT_REPLICAS": str(wait_replicas),
        "GATEWAY_WEB_WORKERS": "2",
        # What a dead primary interrupts (a start, a finish, a delivery record) is found
        # again by the sweeper: make that quick.
        "GATEWAY_RUN_LEASE_SECONDS": "2",
        "GATEWAY_SWEEP_INTERVAL_SECONDS": "0.5",
        "GATEWAY_CALLBACK_TIMEOUT_SECONDS": "2",
        "GATEWAY_DELIVERY_GRACE_SECONDS": "1",
    }
    stack = GatewayStack(servers.url, tmp_path, env)
    stack.start(2, registered=2)
    return stack


def load(stack: GatewayStack, receiver, prefix: str, outcome: Outcome, stop: threading.Event) -> None:
    number = 0
    while not stop.is_set():
        number += 1
        task_id = f"{prefix}-{threading.get_ident() % 100000}-{number}"
        body = {"task_name": "demo.echo", "task_id": task_id, "input_data": {"n": number},
                "callback": receiver.url(f"/{task_id}")}  # fmt: skip
        sent = time.monotonic()
        try:
            response = requests.post(stack.base + "/v1/tasks", json=body, timeout=15)
            answer = Answer(task_id, sent, time.monotonic() - sent, response.status_code)
            if response.status_code == 503:
                assert response.headers.get("Retry-After"), response.headers
            elif response.status_code not in (200, 202):
                answer.error = response.text[:300]
        except requests.RequestException as error:
            answer = Answer(task_id, sent, time.monotonic() - sent, None, repr(error))
        with outcome.lock:
            outcome.answers.append(answer)
        time.sleep(0.01)


def run_failover(servers: RedisClusterServers, stack: GatewayStack, receiver, label: str) -> Outcome:
    outcome = Outcome()
    stop = threading.Event()
    prefix = f"{label}-{uuid.uuid4().hex[:6]}"
    threads = [threading.Thread(target=load, args=(stack, receiver, prefix, outcome, stop)) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(LOAD_BEFORE)
        victim = servers.primary_ports()[0]
        outcome.killed_at = time.monotonic()
        servers.kill(victim)
        _promoted, outcome.promoted_after = servers.wait_promoted(victim, timeout=30)
        servers.restart(victim)  # rejoins as a replica of the promoted node
        servers.wait_healthy(timeout=30)
        time.sleep(LOAD_AFTER)
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    return outcome


def settle(stack: GatewayStack, receiver, outcome: Outcome) -> tuple[list[str], dict[str, str]]:
    """(acknowledged task ids whose stage is gone, task id → final status of the others),
    once every surviving stage ended and its callback arrived (or 60 s passed)."""
    acknowledged = outcome.acknowledged()
    statuses: dict[str, str | None] = dict.fromkeys(acknowledged)
    lost: set[str] = set()

    def read(task_id: str) -> None:
        response = requests.get(f"{stack.base}/v1/tasks/{task_id}/status", timeout=10)
        if response.status_code == 404:
            lost.add(task_id)
        elif response.status_code == 200:
            statuses[task_id] = response.json()["stages"]["demo.echo"]["status"]

    def all_ended() -> bool:
        for task_id, current in statuses.items():
            if task_id not in lost and current not in ("SUCCESS", "FAILED"):
                read(task_id)
        return all(statuses[t] in ("SUCCESS", "FAILED") for t in acknowledged if t not in lost)

    poll_until(all_ended, 60, 0.2)

    def all_called_back() -> bool:
        heard = {r["path"].lstrip("/") for r in receiver.requests}
        return all(t in heard for t in acknowledged if t not in lost)

    poll_until(all_called_back, 60, 0.2)
    return sorted(lost), {t: s for t, s in statuses.items() if t not in lost}


def check(stack, receiver, outcome: Outcome, label: str) -> list[str]:
    lost, ended = settle(stack, receiver, outcome)
    print("\n" + outcome.report(label, lost))
    others = [a for a in outcome.answers if a.status not in (200, 202, 503)]
    assert not others, others[:5]  # no 500, no answer missing (a hang ends in the 15 s timeout)
    # The other primaries' slots went on while the dead one's were unavailable.
    window_end = outcome.killed_at + outcome.promoted_after
    served = [a for a in outcome.answers if outcome.killed_at < a.sent < window_end and a.status in (200, 202)]
    print(f"  acknowledged between the kill and the promotion (the other slots): {len(served)}")
    assert served
    assert len(outcome.acknowledged()) > 0
    assert {s for s in ended.values()} <= {"SUCCESS"}, {t: s for t, s in ended.items() if s != "SUCCESS"}
    heard = {r["path"].lstrip("/") for r in receiver.requests}
    assert set(ended) <= heard, sorted(set(ended) - heard)[:5]
    return lost


def test_primary_killed_under_load_without_wait(failover_cluster, redis_server, receiver, tmp_path):
    stack = start_stack(failover_cluster, redis_server, tmp_path, wait_replicas=0)
    try:
        outcome = run_failover(failover_cluster, stack, receiver, "nowait")
        lost = check(stack, receiver, outcome, "GATEWAY_REDIS_WAIT_REPLICAS=0")
    finally:
        stack.stop()
    # Not asserted: asynchronous replication may lose the last acknowledged writes.
    print(f"  lost (the replication window): {lost[:10]}")


def test_primary_killed_under_load_with_wait_keeps_every_acknowledged_stage(
    failover_cluster, redis_server, receiver, tmp_path
):
    stack = start_stack(failover_cluster, redis_server, tmp_path, wait_replicas=1)
    try:
        outcome = run_failover(failover_cluster, stack, receiver, "wait1")
        lost = check(stack, receiver, outcome, "GATEWAY_REDIS_WAIT_REPLICAS=1")
    finally:
        stack.stop()
    assert lost == []
