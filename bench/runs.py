"""Execution throughput of the workers, apart from enqueuing: ``python bench/runs.py``.

N ``demo.echo`` tasks are created through the API while no worker runs; then 1 (then 2)
``flask --app wsgi worker`` processes are started and drain them. Reported per count of
workers:

* runs/s over the busy window, from the first stage's ``started_ms`` to the last one's
  ``finished_ms`` (what the workers do, without their start-up);
* the time from starting the worker processes to every stage ``SUCCESS`` (with the ~1 s
  the processes take to import and connect);
* CPU per run of the worker processes and of Redis, and the machine's busy cores, over the
  busy window.

The same is measured for a no-op job (``builtins.int``) enqueued with a run job's options
and run by RQ's own ``SimpleWorker`` (``bench/rq_worker.py``): RQ's ceiling on this machine
and this Redis. ``bench/run.py`` runs this as its "runs" phase; alone, this script starts
only Redis, gunicorn for the gateway and the workers, and prints the workers' pids for a
profiler (``py-spy record --gil -p <pid>``).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # `python bench/runs.py`
from bench.toolkit import cpu, report  # noqa: E402 (needs the path above)
from bench.toolkit.servers import GATEWAY_WORKER, Bench, prepare  # noqa: E402

QUEUE = "demo"  # the node of demo.echo: the RQ queue its runs go to
NOOP_QUEUE = "bench-noop"
STAGE_FIELD = "s:demo.echo"


@dataclass
class Drain:
    """One drain of N queued jobs by ``workers`` worker processes."""

    what: str
    n: int
    workers: int
    window_s: float  # first job started -> last job ended
    total_s: float  # worker processes started -> last job ended
    worker_cpu_us: float  # per job, worker processes, over the busy window
    redis_cpu_us: float  # per job, Redis, over the busy window
    busy_cores: float  # the whole machine, over the busy window
    other_cores: float  # of them, processes other than the workers and Redis

    @property
    def rate(self) -> float:
        return self.n / self.window_s

    def row(self) -> tuple[str, str, str]:
        plural = "worker" if self.workers == 1 else "workers"
        return (
            f"{self.what}, {self.workers} {plural}",
            f"{self.rate:,.0f}",
            f"{self.n} queued first; busy window {self.window_s:.2f} s; start -> all done {self.total_s:.2f} s "
            f"({self.n / self.total_s:,.0f}/s with process start); per job {self.worker_cpu_us:,.0f} us workers "
            f"+ {self.redis_cpu_us:,.0f} us Redis CPU; cores busy/other {self.busy_cores:.1f}/{self.other_cores:.1f}",
        )


class _Meter:
    """CPU of the workers, of Redis and of the machine between two ``mark`` calls."""

    def __init__(self, worker_pids: list[int], redis_pid: int) -> None:
        self.worker_pids, self.redis_pid = worker_pids, redis_pid

    def mark(self) -> tuple[float, float, float, float]:
        return (
            time.monotonic(),
            cpu.cpu_seconds(self.worker_pids),
            cpu.cpu_seconds([self.redis_pid]),
            cpu.machine_busy_seconds(),
        )


def rq_worker(url: str) -> list[str]:
    """RQ's own SimpleWorker on the no-op queue and, like a gateway worker, a second one
    (RQ then dequeues with BLPOP rather than BLMOVE)."""
    return [sys.executable, str(ROOT / "bench" / "rq_worker.py"), url, NOOP_QUEUE, "callbacks"]


def _start_workers(bench: Bench, count: int, command: Sequence[str] = GATEWAY_WORKER) -> tuple[float, list[int]]:
    names = ["worker"] + [f"worker-{number}" for number in range(2, count + 1)]
    started = time.time()
    pids = [bench.start_worker(name, tuple(command)).pid for name in names]
    print(f"  workers started, pids {pids}", flush=True)  # for py-spy
    return started, pids


def _drain(
    bench: Bench, what: str, n: int, workers: int, queue: str, command: Sequence[str], done
) -> tuple[Drain, float]:
    """Start the workers, wait until the queue is taken up and ``done()`` holds; returns the
    drain (window from the queue's length, refined by the caller) and the start time."""
    queue_key = f"rq:queue:{queue}"
    started, pids = _start_workers(bench, workers, command)
    meter = _Meter(pids, bench.redis_pid)
    deadline = time.monotonic() + 120 + n / 20
    while bench.redis.llen(queue_key) >= n:  # the workers are still starting
        bench.check_alive()
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: no worker took a job")
        time.sleep(0.005)
    first = meter.mark()
    while bench.redis.llen(queue_key) > 0 or not done():
        bench.check_alive()
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: {bench.redis.llen(queue_key)} jobs still queued")
        time.sleep(0.005)
    last = meter.mark()
    seconds = last[0] - first[0]
    busy = last[3] - first[3]
    workers_cpu, redis_cpu = last[1] - first[1], last[2] - first[2]
    drain = Drain(
        what=what,
        n=n,
        workers=workers,
        window_s=seconds,
        total_s=time.time() - started,
        worker_cpu_us=workers_cpu / n * 1e6,
        redis_cpu_us=redis_cpu / n * 1e6,
        busy_cores=busy / seconds,
        other_cores=max(0.0, busy - workers_cpu - redis_cpu) / seconds,
    )
    return drain, started


def measure_runs(bench: Bench, n: int, workers: int) -> Drain:
    """``n`` demo.echo tasks created with no worker running, then drained by ``workers``."""
    bench.stop_workers()
    prefix = f"runs{workers}-{os.urandom(3).hex()}"
    task_ids = [f"{prefix}-{number:05d}" for number in range(n)]
    bench.post_many([{"task_name": "demo.echo", "task_id": t, "input_data": {"n": i}} for i, t in enumerate(task_ids)])
    key = "gw:task:{%s}"  # gateway/keys.py task_document()
    left = list(task_ids)

    def done() -> bool:
        # Only the stages not seen SUCCESS yet are asked again; runs end roughly in order.
        nonlocal left
        pipe = bench.redis.pipeline(transaction=False)
        for task_id in left[:500]:
            pipe.hget(key % task_id, STAGE_FIELD)
        states = [json.loads(value) if value else None for value in pipe.execute()]
        for task_id, state in zip(left, states, strict=False):
            if state and state["status"] == "FAILED":
                raise RuntimeError(f"{task_id} FAILED: {state.get('error')}")
        finished = sum(1 for _ in itertools.takewhile(lambda s: s and s["status"] == "SUCCESS", states))
        left = left[finished:]
        return not left

    drain, started = _drain(bench, "runs/s", n, workers, QUEUE, GATEWAY_WORKER, done)
    pipe = bench.redis.pipeline(transaction=False)
    for task_id in task_ids:
        pipe.hget(key % task_id, STAGE_FIELD)
    states = [json.loads(value) for value in pipe.execute()]
    # The exact window from the stages' own timestamps (Redis TIME, ms).
    first_ms, last_ms = min(s["started_ms"] for s in states), max(s["finished_ms"] for s in states)
    drain.window_s = (last_ms - first_ms) / 1000
    drain.total_s = last_ms / 1000 - started
    bench.stop_workers()
    return drain


def measure_noop(bench: Bench, n: int, workers: int) -> Drain:
    """RQ's own ceiling: no-op jobs with a run job's options on RQ's SimpleWorker."""
    from redis import Redis
    from rq import Queue, Retry

    bench.stop_workers()
    url = bench.redis_server.url
    connection = Redis.from_url(url)
    queue = Queue(NOOP_QUEUE, connection=connection)
    with connection.pipeline() as pipe:
        for _ in range(n):  # what gateway.queues.Queues.enqueue_run passes
            queue.enqueue(
                "builtins.int",
                job_timeout=3600,
                result_ttl=0,
                failure_ttl=86400,
                retry=Retry(max=3, interval=[1, 5, 30]),
                pipeline=pipe,
            )
        pipe.execute()

    def done() -> bool:
        # Every worker of the queue counts its finished jobs in its own hash.
        workers_key = f"rq:workers:{NOOP_QUEUE}"
        counts = [bench.redis.hget(key, "successful_job_count") for key in bench.redis.smembers(workers_key)]
        return sum(int(count or 0) for count in counts) >= n

    drain, _ = _drain(bench, "RQ SimpleWorker, no-op jobs/s", n, workers, NOOP_QUEUE, rq_worker(url), done)
    bench.stop_workers()
    return drain


def measure_all(bench: Bench, n: int, worker_counts: tuple[int, ...] = (1, 2), noop: bool = True) -> list[Drain]:
    """The gateway's runs, then RQ's no-op ceiling, with each count of workers."""
    drains = [measure_runs(bench, n, count) for count in worker_counts]
    if noop:
        drains += [measure_noop(bench, n, count) for count in worker_counts]
    return drains


def measure(bench: Bench) -> None:
    """bench/run.py's "runs" phase: a row per drain. Leaves one worker running, as the
    phases before it had."""
    for drain in measure_all(bench, bench.args.runs):
        bench.row(*drain.row())
    bench.start_worker()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=2000, help="jobs per drain (default 2000)")
    parser.add_argument("--workers", default="1,2", help="worker counts to measure (default 1,2)")
    parser.add_argument("--no-noop", action="store_true", help="skip RQ's no-op ceiling")
    args = parser.parse_args()
    prepare(needs_wrk=False)
    with tempfile.TemporaryDirectory(prefix="gw-runs-") as tmp, Bench(args, Path(tmp)) as bench:
        measured = report.revision()
        bench.gunicorn("gateway", "wsgi:app")
        bench.wait_answering("gateway")
        counts = tuple(int(c) for c in args.workers.split(","))
        drains = measure_all(bench, args.runs, counts, noop=not args.no_noop)
        header = f"gateway {measured}; machine: {report.machine()}, Redis {bench.redis.info('server')['redis_version']}"
        report.print_table([d.row() for d in drains], header, [], bench.stack.commands())
    return 0


if __name__ == "__main__":
    sys.exit(main())
