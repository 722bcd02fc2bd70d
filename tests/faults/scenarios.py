"""Fault scenarios against real processes: each one starts a FaultStack, breaks something
for real (SIGKILL, SIGTERM, a receiver that is down or answers errors, Redis killed),
and counts what the promises forbid:

* ``stages_lost``: accepted stages that did not end SUCCESS or FAILED (or vanished);
* ``callbacks_lost``: callbacks asked for that no receiver request answered 2xx (for a
  410 case: that the receiver never saw);
* ``duplicate_runs``: handler runs beyond one per stage plus one per run that was
  killed (``testing.count`` logs every run with the worker's pid).

Each function takes ``fast`` (short leases and outages, for CI) and returns a row; every
other check that failed is listed in ``problems``. No timing is asserted on except the
bounds a scenario names (a 503 must not hang, a process must exit).
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import tempfile
import threading
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import requests

from gateway.testing.receiver import STALL, Receiver
from gateway.testing.waiting import WaitTimeout, poll_until
from tests.faults.harness import ENDED, FAST_ENV, FULL_ENV, FaultStack, RunLog, new_task_id

TASK = "testing.count"


@dataclass
class Row:
    scenario: str
    requests: int = 0
    stages_lost: int | None = 0
    callbacks_lost: int | None = 0
    duplicate_runs: int | None = 0
    recovery_seconds: float | None = None
    notes: str = ""
    problems: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        self.notes = f"{self.notes}; {text}" if self.notes else text


class Abort(Exception):
    """The scenario cannot go on; the message says why."""


@contextmanager
def _scenario(name: str):
    """A row and a scratch folder; a crash becomes a problem of the row. The folder
    (process logs, Redis data) is removed unless FAULTS_KEEP_LOGS is set."""
    row = Row(name)
    workdir = Path(tempfile.mkdtemp(prefix="faults-"))
    try:
        yield row, workdir
    except Abort as error:
        row.problems.append(str(error))
    except Exception as error:  # one broken scenario must not hide the others' figures
        row.problems.append(f"crashed: {type(error).__name__}: {error}")
    finally:
        if os.environ.get("FAULTS_KEEP_LOGS"):
            row.note(f"logs in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def _env(fast: bool, **overrides: str) -> dict[str, str]:
    return {**(FAST_ENV if fast else FULL_ENV), **overrides}


def _settle_timeout(fast: bool) -> float:
    # Full runs use the shipped 60 s run lease and 10 s + 30 s delivery grace.
    return 30 if fast else 180


def _create(row: Row, stack: FaultStack, task_id: str, input_data: dict, callback: str | None) -> None:
    body = {"task_name": TASK, "task_id": task_id, "input_data": input_data}
    if callback:
        body["callback"] = callback
    response = stack.post(body)
    if response.status_code != 202:
        row.problems.append(f"create {task_id}: HTTP {response.status_code} {response.text[:200]}")
    row.requests += 1


def _settle(row: Row, stack: FaultStack, task_ids: list[str], timeout: float) -> dict[str, dict | None]:
    """Wait for every stage to end; count the ones that never did; flag FAILED ones."""
    stages = stack.wait_ended(task_ids, TASK, timeout)
    row.stages_lost += sum(1 for s in stages.values() if s is None or s["status"] not in ENDED)
    for task_id, stage in stages.items():
        if stage is not None and stage["status"] == "FAILED":
            row.problems.append(f"{task_id} ended FAILED: {stage['error']}")
    return stages


def _count_callbacks(row: Row, receiver: Receiver, task_ids: list[str], timeout: float, path: str | None = None):
    """Wait for a 2xx-answered delivery per task; count the missing; check that every try
    of one task's callback carried the same webhook-id."""

    def delivered_tasks() -> set[str]:
        return {call["json"]["task_id"] for call in receiver.delivered(path).values()}

    wanted = set(task_ids)
    poll_until(lambda: delivered_tasks() >= wanted, timeout, 0.1)
    row.callbacks_lost += len(wanted - delivered_tasks())
    ids_per_task: dict[str, set[str]] = {}
    for call in receiver.requests_for(path):
        ids_per_task.setdefault(call["json"]["task_id"], set()).add(call["webhook_id"])
    for task_id, ids in ids_per_task.items():
        if len(ids) != 1:
            row.problems.append(f"{task_id}: tries carried different webhook-ids {sorted(ids)}")
    repeats = sum(count - 1 for count in Counter(c["webhook_id"] for c in receiver.requests_for(path)).values())
    if repeats:
        row.note(f"repeated tries (same webhook-id): {repeats}")
    accepted = Counter(c["webhook_id"] for c in receiver.requests_for(path) if c["answered"] and c["answered"] < 300)
    twice = sum(count - 1 for count in accepted.values())
    if twice:  # allowed (at least once), but worth knowing
        row.note(f"deliveries accepted twice: {twice}")


def _left(deadline: float) -> float:
    return max(0.1, deadline - time.monotonic())


def _duplicate_runs(log: RunLog, task_ids: list[str], killed: Counter) -> int:
    """Runs beyond one per stage plus one per run that was killed."""
    return sum(max(0, log.runs_of(t) - 1 - killed[t]) for t in task_ids)


# -- 1 ------------------------------------------------------------------------------


def worker_killed_mid_task(fast: bool) -> dict:
    """SIGKILL workers while they run tasks; the sweeper of a surviving or replacement
    worker must re-run those runs once their lease is over."""
    tasks, workers, victims = (4, 3, 2) if fast else (8, 4, 3)
    with _scenario("worker SIGKILL mid-task") as (row, workdir):
        with FaultStack(workdir, _env(fast), workers=workers) as stack, Receiver() as receiver:
            log = RunLog(workdir / "runs.log")
            task_ids = [new_task_id("kill") for _ in range(tasks)]
            for task_id in task_ids:
                _create(row, stack, task_id, {"log": str(log.path), "seconds": 3}, receiver.url())

            # A run is RUNNING once its log line is written; the line names its worker.
            def busy_pids():
                pids = list(dict.fromkeys(run[3] for run in log.runs()))
                return pids if len(pids) >= victims else None

            pids = poll_until(busy_pids, 20)
            if not pids:
                raise Abort(f"only {len(log.runs())} runs started")
            doomed = set(pids[:victims])
            killed = Counter(run[0] for run in log.runs() if run[3] in doomed)
            killed_at = time.monotonic()
            for pid in doomed:
                stack.worker_by_pid(pid).kill()
            stack.start_worker()  # the replacement an orchestrator would start

            stages = _settle(row, stack, task_ids, _settle_timeout(fast))
            row.recovery_seconds = time.monotonic() - killed_at
            _count_callbacks(row, receiver, task_ids, _settle_timeout(fast))
            row.duplicate_runs = _duplicate_runs(log, task_ids, killed)
            attempts = sorted(s["attempt"] for s in stages.values() if s)
            row.note(f"{sum(killed.values())} runs killed with {victims} of {workers} workers; attempts {attempts}")
    return _done(row)


# -- 2 ------------------------------------------------------------------------------


def worker_killed_while_delivering(fast: bool) -> dict:
    """SIGKILL the only worker while a receiver holds its delivery; a new worker's
    sweeper sends that delivery again, with the same webhook-id."""
    tasks = 3
    with _scenario("worker SIGKILL mid-delivery") as (row, workdir):
        with FaultStack(workdir, _env(fast), workers=1) as stack, Receiver() as receiver:
            receiver.plan("/hook", [STALL])  # the first delivery hangs; later ones get 200
            log = RunLog(workdir / "runs.log")
            task_ids = [new_task_id("dlv") for _ in range(tasks)]
            for task_id in task_ids:
                _create(row, stack, task_id, {"log": str(log.path)}, receiver.url())
            try:
                stalled = receiver.wait_for(1, 20)[0]
            except WaitTimeout:
                raise Abort("no delivery reached the receiver") from None
            killed_at = time.monotonic()
            stack.workers[0].kill()
            receiver.release()
            stack.start_worker()

            _settle(row, stack, task_ids, _settle_timeout(fast))
            _count_callbacks(row, receiver, task_ids, _settle_timeout(fast))
            redelivered = receiver.delivered().get(stalled["webhook_id"])
            if redelivered is None:
                row.problems.append("the delivery held at the kill never arrived")
            else:
                row.recovery_seconds = redelivered["received"] - killed_at
            record = poll_until(lambda: _sent_record(stack, stalled["json"]["task_id"]), 10)
            if not record or record["delivery_id"] != stalled["webhook_id"]:
                row.problems.append(f"callback record of the held delivery: {record}")
            row.duplicate_runs = _duplicate_runs(log, task_ids, Counter())
            row.note(f"{tasks} deliveries, 1 held by the receiver when its worker was killed")
    return _done(row)


def _sent_record(stack: FaultStack, task_id: str) -> dict | None:
    stage = stack.stage(task_id, TASK)
    records = stage["callbacks"] if stage else []
    return records[0] if records and records[0]["status"] == "sent" else None


# -- 3 ------------------------------------------------------------------------------


def receiver_outage(fast: bool) -> dict:
    """The receiver is down (connection refused) for a while, then back on the same
    port: every delivery that came due meanwhile arrives through the retry schedule."""
    outage, tasks = (5.0, 5) if fast else (60.0, 20)
    # The schedule must outlast the outage: 1+1+2+2+2+2 = 10 s > 5 s; 5+10+20+30+60 > 60 s.
    intervals = "[1, 1, 2, 2, 2, 2]" if fast else "[5, 10, 20, 30, 60]"
    with _scenario(f"receiver down {outage:.0f} s") as (row, workdir):
        env = _env(fast, GATEWAY_CALLBACK_RETRY_INTERVALS=intervals)
        with FaultStack(workdir, env, workers=2) as stack, Receiver() as receiver:
            log = RunLog(workdir / "runs.log")
            receiver.stop()
            down_at = time.monotonic()
            task_ids = [new_task_id("out") for _ in range(tasks)]
            for task_id in task_ids:
                _create(row, stack, task_id, {"log": str(log.path)}, receiver.url())
            _settle(row, stack, task_ids, _settle_timeout(fast))
            time.sleep(max(0.0, outage - (time.monotonic() - down_at)))
            receiver.start()
            up_at = time.monotonic()

            _count_callbacks(row, receiver, task_ids, _settle_timeout(fast))
            delivered = receiver.delivered().values()
            if delivered:
                row.recovery_seconds = max(call["received"] for call in delivered) - up_at
            records = [poll_until(lambda t=t: _sent_record(stack, t), 10) for t in task_ids]
            attempts = sorted(r["attempts"] for r in records if r)
            if len(attempts) != tasks:
                row.problems.append(f"only {len(attempts)} of {tasks} records say sent")
            row.duplicate_runs = _duplicate_runs(log, task_ids, Counter())
            row.note(f"{tasks} deliveries, retries {intervals} s; tries per delivery {min(attempts, default=0)}-"
                     f"{max(attempts, default=0)}; recovery = receiver up -> last delivery")  # fmt: skip
    return _done(row)


# -- 4 ------------------------------------------------------------------------------


def receiver_errors(fast: bool) -> dict:
    """500, 500, then 200: delivered on the third try. 410: one try, record failed."""
    quiet = 4 if fast else 12  # how long to watch for a try after the 410 (first retry: 1 s / 5 s)
    with _scenario("receiver 500,500,200 / 410") as (row, workdir):
        with FaultStack(workdir, _env(fast), workers=2) as stack, Receiver() as receiver:
            receiver.plan("/flaky", [500, 500, 200])
            receiver.plan("/gone", [410])
            log = RunLog(workdir / "runs.log")
            flaky, gone = new_task_id("flaky"), new_task_id("gone")
            _create(row, stack, flaky, {"log": str(log.path)}, receiver.url("/flaky"))
            _create(row, stack, gone, {"log": str(log.path)}, receiver.url("/gone"))
            _settle(row, stack, [flaky, gone], _settle_timeout(fast))

            try:
                receiver.wait_for(1, _settle_timeout(fast), path="/gone")
            except WaitTimeout:
                row.callbacks_lost += 1
            _count_callbacks(row, receiver, [flaky], _settle_timeout(fast), path="/flaky")
            tries = receiver.requests_for("/flaky")
            if [c["answered"] for c in tries] != [500, 500, 200]:
                row.problems.append(f"/flaky answers {[c['answered'] for c in tries]}, expected [500, 500, 200]")
            if tries and tries[-1]["answered"] == 200:
                row.recovery_seconds = tries[-1]["received"] - tries[0]["received"]
            record = poll_until(lambda: _sent_record(stack, flaky), 10)
            if not record or record["attempts"] != 3:
                row.problems.append(f"/flaky record: {record}")

            def failed_record():
                stage = stack.stage(gone, TASK)
                records = stage["callbacks"] if stage else []
                return records[0] if records and records[0]["status"] == "failed" else None

            record = poll_until(failed_record, 10)
            gone_calls = receiver.requests_for("/gone")
            if gone_calls:  # a second try would come within ``quiet`` of the first
                time.sleep(max(0.0, gone_calls[0]["received"] + quiet - time.monotonic()))
            if len(receiver.requests_for("/gone")) != 1:
                row.problems.append(f"/gone got {len(receiver.requests_for('/gone'))} tries, expected 1")
            if not record or record["attempts"] != 1 or record["last_status_code"] != 410:
                row.problems.append(f"/gone record: {record}")
            row.duplicate_runs = _duplicate_runs(log, [flaky, gone], Counter())
            row.note("3 tries then sent; 410: 1 try, record failed; recovery = first try -> delivered")
    return _done(row)


# -- 5 ------------------------------------------------------------------------------


def redis_killed(fast: bool) -> dict:
    """SIGKILL Redis while creates stream in, let the API answer while it is down, restart
    it on the same port and data folder: AOF gives the documents back, and gunicorn and
    the (idle) workers reconnect by themselves."""
    settled_docs, write_seconds, down_seconds = (8, 1.5, 2.5) if fast else (50, 5.0, 15.0)
    with _scenario("Redis SIGKILL + restart") as (row, workdir):
        # The workers serve testing and callbacks; the streamed creates are demo.echo runs
        # that wait in the demo queue, so no worker is busy at the kill (see
        # redis_killed_under_busy_workers for that case).
        with FaultStack(workdir, _env(fast), workers=2, queues="testing,callbacks") as stack, Receiver() as receiver:
            log = RunLog(workdir / "runs.log")
            # Documents that are complete (run ended, callback sent) well before the kill.
            settled = [new_task_id("aof") for _ in range(settled_docs)]
            for task_id in settled:
                _create(row, stack, task_id, {"log": str(log.path)}, receiver.url())
            _settle(row, stack, settled, _settle_timeout(fast))
            _count_callbacks(row, receiver, settled, _settle_timeout(fast))
            poll_until(lambda: all(_sent_record(stack, t) for t in settled), 10)
            before = {t: stack.document(t) for t in settled}

            acked, killed_at = _stream_creates_then(stack, write_seconds, stack.redis_server.kill)
            answers = _probe_while_down(stack, settled[0], down_seconds)
            row.requests += len(settled) + len(acked)
            slowest = max((elapsed for _, elapsed in answers), default=0.0)
            codes = Counter(code for code, _ in answers)
            if set(codes) != {503}:
                row.problems.append(f"answers while Redis was down: {dict(codes)}")
            if slowest > 5:
                row.problems.append(f"an answer took {slowest:.1f} s while Redis was down")

            stack.redis_server.restart()
            up_at = time.monotonic()
            # The first create after the restart: gunicorn and the workers reconnect alone.
            probe = new_task_id("after")
            if not poll_until(lambda: _try_create(stack, probe, log, receiver.url()), 30, 0.2):
                row.problems.append("no create was accepted within 30 s of the restart")
            row.requests += 1
            _settle(row, stack, [probe], _settle_timeout(fast))
            _count_callbacks(row, receiver, [probe], _settle_timeout(fast))
            if probe in {c["json"]["task_id"] for c in receiver.delivered().values()}:
                row.recovery_seconds = time.monotonic() - up_at
            exited = [w.popen.returncode for w in stack.workers if not w.alive()]
            if exited:
                row.problems.append(f"{len(exited)} idle workers exited during the outage ({exited})")

            # Every document of before the kill is intact, and every create acknowledged
            # more than a second before it (AOF everysec) runs once a demo worker comes.
            stack.start_worker("demo")
            changed = [t for t in settled if stack.document(t) != before[t]]
            early = [t for t, at in acked.items() if at < killed_at - 1]
            late = [t for t, at in acked.items() if at >= killed_at - 1]
            stages = stack.wait_ended(early + late, "demo.echo", _settle_timeout(fast))
            early_lost = [t for t in early if stages[t] is None or stages[t]["status"] != "SUCCESS"]
            late_kept = sum(1 for t in late if stages[t] is not None and stages[t]["status"] == "SUCCESS")
            row.stages_lost += len(changed) + len(early_lost)
            if changed:
                row.problems.append(f"documents changed by the crash: {changed}")
            row.duplicate_runs = _duplicate_runs(log, settled + [probe], Counter())
            row.note(
                f"{len(settled) - len(changed)}/{len(settled)} settled documents intact; "
                f"{len(early) - len(early_lost)}/{len(early)} creates acked >1 s before the kill and "
                f"{late_kept}/{len(late)} of its last second ran; {sum(codes.values())} answers while down: "
                f"{dict(codes)}, slowest {slowest:.2f} s; recovery = restart -> a new task's callback"
            )
    return _done(row)


def _stream_creates_then(stack: FaultStack, seconds: float, action) -> tuple[dict[str, float], float]:
    """Create demo.echo tasks one after another for ``seconds``, then call ``action``
    while they go on; returns (task id -> when its 202 came, when the action began)."""
    acked: dict[str, float] = {}
    stop = threading.Event()

    def write() -> None:
        while not stop.is_set():
            task_id = new_task_id("w")
            try:
                response = stack.post({"task_name": "demo.echo", "task_id": task_id, "input_data": {"n": 1}}, 3)
            except requests.RequestException:
                continue
            if response.status_code == 202:
                acked[task_id] = time.monotonic()
            time.sleep(0.02)  # a steady stream (~40/s), not a flood to read back afterwards

    writer = threading.Thread(target=write)
    writer.start()
    try:
        time.sleep(seconds)
        acted_at = time.monotonic()
        action()
        time.sleep(0.5)  # creates in flight at the kill get their answer (a 503 by now)
    finally:
        stop.set()
        writer.join(10)
    return acked, acted_at


def redis_killed_under_busy_workers(fast: bool) -> dict:
    """SIGKILL Redis while every worker runs a task, restart it: the runs must end and a
    callback retry scheduled after the restart must be sent, with no process restarted."""
    seconds, down_seconds = (1.5, 2.0) if fast else (5.0, 15.0)
    bound = 12 if fast else 180  # lease + sweep + the task + a retry: about 6 s in fast mode
    with _scenario("Redis SIGKILL, workers busy") as (row, workdir):
        with FaultStack(workdir, _env(fast), workers=2) as stack, Receiver() as receiver:
            receiver.plan("/busy", [500, 500])  # each callback needs one retry after the restart
            log = RunLog(workdir / "runs.log")
            task_ids = [new_task_id("busy") for _ in range(2)]
            for task_id in task_ids:
                _create(row, stack, task_id, {"log": str(log.path), "seconds": seconds}, receiver.url("/busy"))
            if not poll_until(lambda: len({run[3] for run in log.runs()}) == 2, 20):
                raise Abort("the two tasks did not start on two workers")
            stack.redis_server.kill()
            time.sleep(down_seconds)
            stack.redis_server.restart()
            up_at = time.monotonic()

            deadline = up_at + bound
            _settle(row, stack, task_ids, bound)
            _count_callbacks(row, receiver, task_ids, _left(deadline), path="/busy")
            delivered = receiver.delivered("/busy").values()
            if len(delivered) == len(task_ids):
                row.recovery_seconds = max(call["received"] for call in delivered) - up_at
            exited = [w.popen.returncode for w in stack.workers if not w.alive()]
            if exited:
                row.problems.append(f"{len(exited)} of {len(stack.workers)} workers exited (codes {exited})")
            killed = Counter(run[0] for run in log.runs() if run[2] == 1)  # cut by the crash, may run again
            row.duplicate_runs = _duplicate_runs(log, task_ids, killed)
            row.note(f"Redis down {down_seconds:.0f} s while 2 workers ran {seconds} s tasks; waited {bound} s; "
                     "recovery = restart -> both callbacks sent after one retry each")  # fmt: skip
    return _done(row)


def scheduler_worker_killed(fast: bool) -> dict:
    """SIGKILL the worker whose RQ scheduler holds the lock while a callback retry waits
    in the schedule: another worker must send that retry."""
    bound = 8 if fast else 180  # the retry is due 2 s after the first try (fast), plus a grace
    with _scenario("scheduler's worker SIGKILL, retry due") as (row, workdir):
        env = _env(fast, GATEWAY_CALLBACK_RETRY_INTERVALS="[2, 2, 2]" if fast else "[5, 30, 120]")
        with FaultStack(workdir, env, workers=2) as stack, Receiver() as receiver:
            receiver.plan("/retry", [500])
            log = RunLog(workdir / "runs.log")
            task_id = new_task_id("sched")
            _create(row, stack, task_id, {"log": str(log.path)}, receiver.url("/retry"))
            # Kill only once the failed first try is recorded and its retry scheduled.
            if not poll_until(lambda: (stack.stage(task_id, TASK) or {}).get("callbacks", [{}])[0].get("attempts"), 20):
                raise Abort("the first try was never recorded")
            holder = poll_until(stack.scheduler_worker, 10)
            if holder is None:
                raise Abort("no worker holds the scheduler lock")
            killed_at = time.monotonic()
            holder.kill()
            stack.start_worker()

            deadline = killed_at + bound
            _settle(row, stack, [task_id], bound)
            _count_callbacks(row, receiver, [task_id], _left(deadline), path="/retry")
            delivered = receiver.delivered("/retry").values()
            if delivered:
                row.recovery_seconds = max(call["received"] for call in delivered) - killed_at
            row.duplicate_runs = _duplicate_runs(log, [task_id], Counter())
            row.note(f"retry due {json.loads(env['GATEWAY_CALLBACK_RETRY_INTERVALS'])[0]} s after the first try; "
                     f"waited {bound} s; recovery = kill -> retry delivered")  # fmt: skip
    return _done(row)


def _try_create(stack: FaultStack, task_id: str, log: RunLog, callback: str) -> bool:
    body = {"task_name": TASK, "task_id": task_id, "input_data": {"log": str(log.path)}, "callback": callback}
    try:
        return stack.post(body, 5).status_code == 202
    except Exception:  # noqa: BLE001 (not yet: try again)
        return False


def _probe_while_down(stack: FaultStack, known_id: str, seconds: float) -> list[tuple[int, float]]:
    """(status, seconds) of every create, read and health request made while Redis is down;
    status 0 for no answer or a body that is not JSON, -1 for JSON without ``error``."""
    calls = [
        lambda: requests.post(stack.base + "/v1/tasks", json={"task_name": TASK, "input_data": {}}, timeout=15),
        lambda: requests.get(f"{stack.base}/v1/tasks/{known_id}/status", timeout=15),
        lambda: requests.get(f"{stack.base}/v1/tasks/health", timeout=15),
    ]
    answers: list[tuple[int, float]] = []
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def probe(call) -> None:
        while time.monotonic() < deadline:
            started = time.monotonic()
            try:
                response = call()
                code = response.status_code if "error" in response.json() else -1  # -1: not our error shape
            except (requests.RequestException, ValueError):  # no answer or not JSON: recorded as 0
                code = 0
            with lock:
                answers.append((code, time.monotonic() - started))

    threads = [threading.Thread(target=probe, args=(call,)) for call in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 20)
    return answers


# -- crashes at exact places (tests/faults/failpoints.py) ----------------------------


def _failpoint_env(fast: bool) -> dict[str, str]:
    # Imported by the stack's processes only: importing it here would patch this process.
    return _env(fast, GATEWAY_TASK_MODULES="tests.plugin_tasks,tests.faults.failpoints")


def worker_killed_after_finish(fast: bool) -> dict:
    """The worker dies between writing the run's end and queueing its callback: the
    callback records say "queued"; a sweeper must send them."""
    bound = 8 if fast else 180  # the delivery grace (2 s fast) plus a sweep
    with _scenario("worker SIGKILL after finish, before callback queued") as (row, workdir):
        with FaultStack(workdir, _failpoint_env(fast), workers=1) as stack, Receiver() as receiver:
            log = RunLog(workdir / "runs.log")
            task_id = new_task_id("crash-after-finish")  # failpoints.AFTER_FINISH
            _create(row, stack, task_id, {"log": str(log.path)}, receiver.url())
            if not stack.workers[0].wait(20):
                raise Abort("the failpoint did not fire")
            killed_at = time.monotonic()
            stack.start_worker()
            _settle(row, stack, [task_id], bound)
            _count_callbacks(row, receiver, [task_id], _left(killed_at + bound))
            delivered = receiver.delivered().values()
            if delivered:
                row.recovery_seconds = max(call["received"] for call in delivered) - killed_at
            row.duplicate_runs = _duplicate_runs(log, [task_id], Counter())
            row.note(f"waited {bound} s; recovery = kill -> callback delivered")
    return _done(row)


def web_killed_after_claim(fast: bool) -> dict:
    """The web process dies between the create's claim and queueing its run; the client
    saw the connection drop and sends the same create again, which is accepted: that
    stage must run."""
    bound = 8 if fast else 180  # a run lease (2 s fast) plus a sweep and the run
    with _scenario("web SIGKILL after claim, before run queued") as (row, workdir):
        with FaultStack(workdir, _failpoint_env(fast), workers=2) as stack, Receiver() as receiver:
            log = RunLog(workdir / "runs.log")
            task_id = new_task_id("crash-after-claim")  # failpoints.AFTER_CLAIM
            body = {"task_name": TASK, "task_id": task_id, "input_data": {"log": str(log.path)}}
            try:
                first = stack.post({**body, "callback": receiver.url()}).status_code
            except requests.ConnectionError:
                first = "dropped"
            killed_at = time.monotonic()
            if first != "dropped":
                raise Abort(f"the failpoint did not fire: HTTP {first}")
            # The careful client's retry, once gunicorn has a new web process.
            retry = poll_until(lambda: _try_create(stack, task_id, log, receiver.url()), 20, 0.1)
            row.requests += 2
            if not retry:
                raise Abort("the retried create was not accepted")
            _settle(row, stack, [task_id], bound)
            _count_callbacks(row, receiver, [task_id], _left(killed_at + bound))
            stage = stack.stage(task_id, TASK)
            if row.stages_lost == 0:
                row.recovery_seconds = time.monotonic() - killed_at
            row.duplicate_runs = _duplicate_runs(log, [task_id], Counter())
            row.note(f"waited {bound} s; the stage was {stage and stage['status']} (attempt "
                     f"{stage and stage['attempt']}); recovery = kill -> stage ended")  # fmt: skip
    return _done(row)


# -- 6 ------------------------------------------------------------------------------


def worker_sigterm(fast: bool) -> dict:
    """SIGTERM a worker during a task: RQ's warm shutdown finishes it, then exits."""
    seconds = 2 if fast else 10
    with _scenario("worker SIGTERM mid-task") as (row, workdir):
        with FaultStack(workdir, _env(fast), workers=2) as stack, Receiver() as receiver:
            log = RunLog(workdir / "runs.log")
            task_id = new_task_id("term")
            _create(row, stack, task_id, {"log": str(log.path), "seconds": seconds}, receiver.url())
            started = poll_until(log.runs, 20)
            if not started:
                raise Abort("the task never started")
            worker = stack.worker_by_pid(started[0][3])
            signalled_at = time.monotonic()
            worker.terminate()
            bound = seconds + 15
            if worker.wait(bound):
                row.recovery_seconds = time.monotonic() - signalled_at
            else:
                row.problems.append(f"the worker did not exit within {bound} s of SIGTERM")
            stages = _settle(row, stack, [task_id], _settle_timeout(fast))
            _count_callbacks(row, receiver, [task_id], _settle_timeout(fast))
            row.duplicate_runs = _duplicate_runs(log, [task_id], Counter())
            stage = stages[task_id]
            if stage and stage["attempt"] != 1:
                row.problems.append(f"the task took {stage['attempt']} attempts")
            row.note(f"{seconds} s task finished by the stopping worker; recovery = SIGTERM -> worker exited")
    return _done(row)


def gunicorn_sigterm(fast: bool) -> dict:
    """SIGTERM gunicorn while clients send creates, some of them half-way through their
    body: every request it took is answered in full; later ones are refused."""
    clients, before, slow = (12, 1.0, 4) if fast else (32, 5.0, 8)
    with _scenario("gunicorn SIGTERM under load") as (row, workdir):
        with FaultStack(workdir, _env(fast), workers=2) as stack:
            log = RunLog(workdir / "runs.log")
            outcomes: list[tuple[str, str, str]] = []  # (client kind, outcome, task id)
            lock = threading.Lock()
            finish_bodies = threading.Event()

            def send(kind: str, gate: threading.Event | None) -> str:
                task_id = new_task_id("gw")
                outcome = _post_raw(stack.port, task_id, log, gate)
                with lock:
                    outcomes.append((kind, outcome, task_id))
                return outcome

            def loop() -> None:
                while send("loop", None) != "refused":  # refused: the server is gone
                    pass

            loopers = [threading.Thread(target=loop) for _ in range(clients)]
            for thread in loopers:
                thread.start()
            time.sleep(before)
            # Requests in flight across the signal: headers and part of the body sent before it.
            slow_senders = [threading.Thread(target=send, args=("slow", finish_bodies)) for _ in range(slow)]
            for thread in slow_senders:
                thread.start()
            time.sleep(0.3)
            signalled_at = time.monotonic()
            stack.web.terminate()
            time.sleep(0.3)
            finish_bodies.set()
            exited = stack.web.wait(40)
            exit_seconds = time.monotonic() - signalled_at
            for thread in loopers + slow_senders:
                thread.join(60)
            if not exited:
                row.problems.append("gunicorn did not exit within 40 s of SIGTERM")

            counts = Counter(outcome for _, outcome, _ in outcomes)
            row.requests = len(outcomes)
            broken = counts["broken"] + counts["timeout"]
            if broken:
                row.problems.append(f"{broken} broken, partial or hanging answers")
            slow_answers = Counter(outcome for kind, outcome, _ in outcomes if kind == "slow")
            if slow_answers != {"202": slow}:
                row.problems.append(f"requests in flight at SIGTERM got {dict(slow_answers)}")
            # Whatever was accepted runs; a reset create must not have been processed
            # (its client saw no answer), which a new gunicorn lets us check.
            stack.start_web()
            poll_until(stack.healthy, 30, 0.1)
            accepted = [t for _, outcome, t in outcomes if outcome == "202"]
            _settle(row, stack, accepted, _settle_timeout(fast))
            reset = [t for _, outcome, t in outcomes if outcome == "reset"]
            processed_unanswered = sum(1 for t in reset if stack.document(t) is not None)
            if processed_unanswered:
                row.problems.append(f"{processed_unanswered} creates were processed but got no answer")
            row.callbacks_lost = None  # no callbacks here
            row.duplicate_runs = _duplicate_runs(log, accepted, Counter())
            row.recovery_seconds = exit_seconds
            row.note(
                f"answers {dict(sorted(counts.items()))} ({slow} of the 202s had their body finished after "
                f"SIGTERM; reset = closed unread in the listen backlog, none processed); "
                "recovery = SIGTERM -> gunicorn exited"
            )
    return _done(row)


def _post_raw(port: int, task_id: str, log: RunLog, gate: threading.Event | None) -> str:
    """One create on a fresh connection: its HTTP status as text, or what went wrong:
    refused (no connection), reset (closed before any answer), broken (a partial or
    unreadable answer), timeout."""
    body = json.dumps({"task_name": TASK, "task_id": task_id, "input_data": {"log": str(log.path)}}).encode()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=45)
    try:
        try:
            connection.connect()
        except ConnectionRefusedError:
            return "refused"
        try:
            connection.putrequest("POST", "/v1/tasks")
            connection.putheader("Content-Type", "application/json")
            connection.putheader("Content-Length", str(len(body)))
            connection.endheaders()
            if gate is None:
                connection.send(body)
            else:
                connection.send(body[:10])
                gate.wait(30)
                connection.send(body[10:])
            response = connection.getresponse()
        except (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected):
            return "reset"
        except TimeoutError:
            return "timeout"
        try:
            json.loads(response.read())
        except (http.client.IncompleteRead, ValueError, OSError):
            return "broken"
        return str(response.status)
    finally:
        connection.close()


def _done(row: Row) -> dict:
    if row.recovery_seconds is not None:
        row.recovery_seconds = round(row.recovery_seconds, 2)
    return row.__dict__.copy()


#: Every scenario, in the order the bench prints them.
SCENARIOS = [
    worker_killed_mid_task,
    worker_killed_while_delivering,
    receiver_outage,
    receiver_errors,
    redis_killed,
    redis_killed_under_busy_workers,
    scheduler_worker_killed,
    worker_killed_after_finish,
    web_killed_after_claim,
    worker_sigterm,
    gunicorn_sigterm,
]
