"""``flask --app wsgi worker`` as an operator runs it: a run worker and a delivery worker
in processes of their own, signals, and a start without Redis."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
import redis

from gateway.embedded import free_port
from tests.conftest import ROOT, Stack, wait_until

STACK_DB = 6  # apart from the session stack's database: its workers must not take our jobs
WORKER_DB = 7


def descendants(pid: int) -> set[int]:
    """Every living process below ``pid`` (children, their children, …)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z":  # a zombie has ended
            parents[int(entry.name)] = int(fields[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def registered_workers(client: redis.Redis) -> dict[str, set[str]]:
    """RQ worker key → the queues it serves, as RQ records them."""
    workers = {}
    for key in client.smembers("rq:workers"):
        queues = client.hget(key, "queues")
        if queues is not None:
            workers[key.decode()] = set(queues.decode().split(","))
    return workers


def test_a_hits_push_arrives_within_a_second_while_long_runs_hold_every_run_worker(
    redis_server, tmp_path, receiver, run_log
):
    """One ``flask worker`` (the quickstart's): its run worker busy with a 6 s run and
    another queued behind it, a completed hit's push still goes out at once."""
    client = redis.Redis(port=redis_server.port, db=STACK_DB)
    client.flushdb()
    stack = Stack(redis_server, tmp_path, workers=1, db=STACK_DB)
    try:
        done = {"task_name": "testing.count", "task_id": "done", "input_data": {"log": run_log.path}}
        assert stack.post(done).status_code == 202
        wait_until(lambda: stack.status("done")["stages"]["testing.count"]["status"] == "SUCCESS", timeout=20)

        for number in (1, 2):
            body = {"log": run_log.path, "seconds": 6}
            stack.post({"task_name": "testing.count", "task_id": f"long-{number}", "input_data": body})
        wait_until(lambda: len(run_log.lines()) == 2, timeout=20)  # one run holds the run worker

        hit = stack.post({**done, "callback": receiver.url()})
        answered = time.monotonic()
        assert hit.status_code == 200
        [push] = receiver.wait_for(1, timeout=15)
        running = [stack.status(f"long-{n}")["stages"]["testing.count"]["status"] for n in (1, 2)]
    finally:
        stack.stop()
    assert push["json"]["task_id"] == "done"
    assert push["received"] - answered < 1.0
    assert sorted(running) == ["PENDING", "RUNNING"]  # the runs still held the worker


def start_worker(redis_server, tmp_path: Path, db: int, **env: str) -> tuple[subprocess.Popen, Path]:
    log = tmp_path / "worker.log"
    environment = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "GATEWAY_REDIS_URL": f"redis://127.0.0.1:{redis_server.port}/{db}",
        "GATEWAY_TASK_MODULES": "tests.plugin_tasks",
        **env,
    }
    with open(log, "w") as out:
        command = [sys.executable, "-m", "flask", "--app", "wsgi", "worker"]
        process = subprocess.Popen(command, cwd=ROOT, env=environment, stdout=out, stderr=out)
    return process, log


def test_one_worker_command_runs_a_run_worker_a_delivery_worker_and_one_scheduler(redis_server, tmp_path):
    client = redis.Redis(port=redis_server.port, db=WORKER_DB)
    client.flushdb()
    process, log = start_worker(redis_server, tmp_path, WORKER_DB)
    try:
        workers = wait_until(lambda: len(registered_workers(client)) == 2 and registered_workers(client), timeout=20)
        # The delivery worker serves only the callbacks queue (ordered first: with one
        # task module both workers serve one queue, so a length sort is not enough).
        served = sorted(workers.values(), key=lambda queues: "callbacks" not in queues)
        assert served[0] == {"callbacks"}
        assert "callbacks" not in served[1] and "testing" in served[1]
        # One RQ scheduler for the command, holding the lock of every queue it serves.
        locks = wait_until(lambda: client.keys("rq:scheduler-lock:*"), timeout=10)
        assert {key.decode().rsplit(":", 1)[1] for key in locks} == served[0] | served[1]
        assert len({client.get(key) for key in locks}) == 1

        # A delivery process that dies is started again.
        [killed] = [key for key, queues in workers.items() if queues == {"callbacks"}]
        delivery_pid = int(client.hget(killed, "pid"))
        os.kill(delivery_pid, signal.SIGKILL)

        def new_delivery_worker():
            pids = {int(client.hget(key, "pid") or 0) for key in registered_workers(client)}
            return any(pid in descendants(process.pid) for pid in pids - {delivery_pid, process.pid})

        wait_until(new_delivery_worker, timeout=20)
        below = descendants(process.pid)
        assert len(below) == 2  # the delivery process and the scheduler

        process.send_signal(signal.SIGTERM)  # to the command's process alone, like `kill PID`
        assert process.wait(20) == 0
    finally:
        if process.poll() is None:
            process.kill()
    wait_until(lambda: not any(alive(pid) for pid in below), timeout=10)  # no orphan
    assert set(registered_workers(client)) == {killed}  # SIGKILLed: RQ lets its record expire
    assert "Traceback" not in log.read_text()


# The worker's lines are JSON (GATEWAY_LOG_FORMAT's default): a WARNING line's time.
LOG_TIME = re.compile(r'^\{"time":"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3})Z","level":"WARNING"')


@pytest.mark.parametrize("timeout", [8])
def test_a_worker_without_redis_backs_off_and_gives_up_after_its_start_timeout(redis_server, tmp_path, timeout):
    closed = free_port()
    process, log = start_worker(
        redis_server,
        tmp_path,
        0,
        GATEWAY_REDIS_URL=f"redis://127.0.0.1:{closed}/0",
        GATEWAY_WORKER_START_TIMEOUT_SECONDS=str(timeout),
    )
    started = time.monotonic()
    try:
        code = process.wait(timeout + 15)
    finally:
        if process.poll() is None:
            process.kill()
    took = time.monotonic() - started
    assert code != 0
    assert timeout - 1 < took < timeout + 10
    text = log.read_text()
    assert "Traceback" not in text
    attempts = [line for line in text.splitlines() if f"127.0.0.1:{closed}" in line]
    assert all(len(line) < 300 for line in attempts)  # one short line each
    assert "giving up" in attempts[-1]
    times = [
        datetime.strptime(LOG_TIME.match(line).group(1), "%Y-%m-%dT%H:%M:%S.%f").timestamp()
        for line in attempts
        if LOG_TIME.match(line)
    ]
    assert len(times) >= 4
    gaps = [later - earlier for earlier, later in zip(times, times[1:], strict=False)]
    assert gaps[0] < gaps[1] < gaps[2]  # 1, 2, 4 s: backing off


def test_a_worker_command_killed_outright_leaves_no_process_behind(redis_server, tmp_path):
    """``kill -9`` of the command's process alone (what the OOM killer does): its delivery
    worker and RQ's scheduler end too, and the scheduler gives its locks back."""
    client = redis.Redis(port=redis_server.port, db=WORKER_DB)
    client.flushdb()
    process, _ = start_worker(redis_server, tmp_path, WORKER_DB)
    try:
        wait_until(lambda: len(registered_workers(client)) == 2 and client.keys("rq:scheduler-lock:*"), timeout=20)
        below = wait_until(lambda: len(descendants(process.pid)) == 2 and descendants(process.pid), timeout=10)
        process.kill()
        process.wait(10)
    finally:
        if process.poll() is None:
            process.kill()
    wait_until(lambda: not any(alive(pid) for pid in below), timeout=15)
    assert client.keys("rq:scheduler-lock:*") == []
