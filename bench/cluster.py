"""One Redis against a Redis Cluster, side by side: ``python bench/cluster.py``.

Three setups run at once on this machine, each with 4 gunicorn processes
(``GATEWAY_WEB_WORKERS=4``) and 4 ``flask --app wsgi worker`` processes:

* one Redis: the task documents and the queues on one Redis server (the quickstart's
  layout, the scripts write the watch list);
* cluster: the task documents on a 3-primary, 3-replica Redis Cluster
  (``GATEWAY_REDIS_CLUSTER=true``), the queues on one queue Redis;
* cluster + WAIT: the same cluster and queue Redis (its own database there, so each
  setup's workers take only their jobs), with ``GATEWAY_REDIS_WAIT_REPLICAS=1``.

They are measured in turns, round after round, so that all see the same background noise
(on a shared machine, read the ratios). Per round and setup, with wrk:

* reuse hits/s: the identical POST for one of 24 completed stages (``wrk/hits.lua``),
  whose task ids spread over the cluster's three primaries;
* creates/s: a new task id per request (``wrk/miss.lua``: claim, watch entry, enqueue,
  202) while the workers run what is created; then the queue is drained before the next
  measurement.

CPU per request of each tier comes from /proc: the gunicorn processes, the store's Redis
servers (the sum of the six nodes), the queue Redis and the workers (per run: over the
creates and the drain that follows). docs/SCALING.md derives a topology from these.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # `python bench/cluster.py`
from bench.toolkit import cpu, options, report, wrk  # noqa: E402 (needs the path above)
from bench.toolkit.servers import BENCH_ENV, LOAD_SCRIPTS, prepare  # noqa: E402
from gateway.testing.redis_cluster import RedisClusterServers  # noqa: E402
from gateway.testing.redis_server import RedisServer  # noqa: E402
from gateway.testing.stack import GatewayStack  # noqa: E402
from gateway.testing.waiting import wait_until  # noqa: E402

WEB_WORKERS = 4
WORKERS = 4
HIT_STAGES = 24
QUEUE_KEYS = ("rq:queue:demo", "rq:queue:callbacks")


@dataclass
class Run:
    """One wrk run of one setup, with the CPU each tier spent per request."""

    result: wrk.WrkResult
    web_us: float
    store_us: float
    queue_us: float
    # Creates only, per create, over the creates and the drain of their runs that follows:
    worker_us: float = 0.0
    store_with_runs_us: float = 0.0
    queue_with_runs_us: float = 0.0


@dataclass
class Setup:
    name: str
    stack: GatewayStack
    store_pids: list[int]
    queue_pids: list[int]  # empty when the store's Redis holds the queues
    queue_client: object = None
    hits: list[Run] = field(default_factory=list)
    creates: list[Run] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.stack.base + "/v1/tasks"

    def worker_pids(self) -> list[int]:
        pids = []
        for worker in self.stack.workers:
            pids.append(worker.pid)
            pids.extend(cpu.child_pids(worker.pid))  # the delivery process, RQ's scheduler
        return pids

    def web_pids(self) -> list[int]:
        return cpu.child_pids(self.stack.web.pid)

    def queued(self) -> int:
        return sum(self.queue_client.llen(key) for key in QUEUE_KEYS)


def start_setup(name: str, store_url: str, store_pids: list[int], queue: RedisServer, queue_db: int,
                folder: Path, extra_env: dict[str, str]) -> Setup:  # fmt: skip
    env = {**BENCH_ENV, "GATEWAY_WEB_WORKERS": str(WEB_WORKERS),
           "GATEWAY_QUEUE_REDIS_URL": queue.url_for(queue_db), **extra_env}  # fmt: skip
    stack = GatewayStack(store_url, folder / name, env)
    subprocess.run(LOAD_SCRIPTS, cwd=ROOT, env=stack.env, check=True, capture_output=True, timeout=60)
    stack.start_web(extra_args=("--no-control-socket",))
    for _ in range(WORKERS):
        stack.start_worker()
    stack.wait_ready(timeout=60, workers=WORKERS)
    queue_pids = [] if queue.pid in store_pids else [queue.pid]
    setup = Setup(name, stack, store_pids, queue_pids, queue.client(queue_db))
    prefix = "hit"
    for number in range(HIT_STAGES):
        body = {"task_name": "demo.echo", "task_id": f"{prefix}-{number}", "input_data": {"text": "hi"}}
        stack.post(body).raise_for_status()
    for number in range(HIT_STAGES):
        wait_until(lambda n=number: stack.status(f"{prefix}-{n}")["status"] == "completed", 30, what="hit stages")
    return setup


def measure(setup: Setup, script: str, script_args: list[str], args) -> tuple[wrk.WrkResult, dict[str, float], float]:
    """One wrk run; (result, CPU seconds per tier, elapsed)."""
    web, workers = setup.web_pids(), setup.worker_pids()
    before = {
        "web": cpu.cpu_seconds(web),
        "store": cpu.cpu_seconds(setup.store_pids),
        "queue": cpu.cpu_seconds(setup.queue_pids),
        "workers": cpu.cpu_seconds(workers),
    }
    started = time.monotonic()
    command = wrk.wrk_command(args.wrk_threads, args.connections, setup.url, script, script_args[0], args.duration)
    command += script_args[1:]
    out = subprocess.run(command, capture_output=True, text=True, check=True, timeout=args.duration + 60).stdout
    result = wrk.parse_wrk(out)
    if result.errors:
        raise RuntimeError(f"{setup.name} {script}: {result.errors} errors in {result.requests} requests")
    spent = {
        "web": cpu.cpu_seconds(web) - before["web"],
        "store": cpu.cpu_seconds(setup.store_pids) - before["store"],
        "queue": cpu.cpu_seconds(setup.queue_pids) - before["queue"],
        "workers": before["workers"],  # the caller measures the workers after the drain
    }
    return result, spent, time.monotonic() - started


def hits_round(setup: Setup, args) -> None:
    result, spent, _ = measure(setup, "hits.lua", ["hit", str(HIT_STAGES)], args)
    n = result.requests
    setup.hits.append(Run(result, spent["web"] / n * 1e6, spent["store"] / n * 1e6, spent["queue"] / n * 1e6))
    print(f"  {setup.name}: hits {result.rps:,.0f}/s", flush=True)


def creates_round(setup: Setup, args) -> None:
    prefix = f"new-{uuid.uuid4().hex[:8]}"
    store_before = cpu.cpu_seconds(setup.store_pids)
    queue_before = cpu.cpu_seconds(setup.queue_pids)
    result, spent, _ = measure(setup, "miss.lua", [prefix], args)
    wait_until(lambda: setup.queued() == 0, 120, 0.1, what=f"{setup.name}: the queue drained")
    time.sleep(0.5)  # the last jobs taken end
    n = result.requests
    workers_after = cpu.cpu_seconds(setup.worker_pids())
    run = Run(result, spent["web"] / n * 1e6, spent["store"] / n * 1e6, spent["queue"] / n * 1e6)
    run.worker_us = (workers_after - spent["workers"]) / n * 1e6
    # The store's and the queue's share of the runs too (dequeue, start, finish).
    run.store_with_runs_us = (cpu.cpu_seconds(setup.store_pids) - store_before) / n * 1e6
    run.queue_with_runs_us = (cpu.cpu_seconds(setup.queue_pids) - queue_before) / n * 1e6
    setup.creates.append(run)
    print(f"  {setup.name}: creates {result.rps:,.0f}/s", flush=True)


def rows(setups: list[Setup]) -> list[tuple[str, str, str]]:
    table = []
    for setup in setups:
        for kind, runs in (("reuse hits/s", setup.hits), ("creates/s", setup.creates)):
            rates = [r.result.rps for r in runs]
            table.append(
                (
                    f"{setup.name}: {kind}",
                    f"{statistics.median(rates):,.0f}",
                    f"median of {len(runs)}; rounds {' / '.join(f'{r:,.0f}' for r in rates)}; p50/p99 "
                    f"{statistics.median(r.result.p50_ms for r in runs):.2f}/"
                    f"{statistics.median(r.result.p99_ms for r in runs):.2f} ms",
                )
            )
            web = statistics.median(r.web_us for r in runs)
            store = statistics.median(r.store_us for r in runs)
            queue = statistics.median(r.queue_us for r in runs)
            how = "per request during wrk: gunicorn + store Redis (all nodes) + queue Redis"
            if kind == "creates/s":
                workers = statistics.median(r.worker_us for r in runs)
                store_all = statistics.median(r.store_with_runs_us for r in runs)
                queue_all = statistics.median(r.queue_with_runs_us for r in runs)
                how += (
                    f"; with the runs (creates + drain): workers {workers:,.0f} us, store {store_all:,.0f} us, "
                    f"queue {queue_all:,.0f} us per create"
                )
            table.append((f"{setup.name}: CPU per {kind[:-2]}", f"{web:,.0f} + {store:,.0f} + {queue:,.0f} us", how))
    return table


def main() -> int:
    parser = options.parser(__doc__.split("\n\n")[0])
    parser.set_defaults(rounds=3, connections=32)
    args = parser.parse_args()
    if not prepare(needs_wrk=True):
        return 2
    measured = report.revision()
    with tempfile.TemporaryDirectory(prefix="gw-bench-cluster-") as tmp:
        folder = Path(tmp)
        single, queue = RedisServer(folder / "single"), RedisServer(folder / "queue")
        cluster = RedisClusterServers(primaries=3, replicas=1)
        setups: list[Setup] = []
        try:
            single.start()
            queue.start()
            cluster.start()
            cluster_pids = [node.process.pid for node in cluster.nodes.values()]
            print("starting the three setups", flush=True)
            clustered = {"GATEWAY_REDIS_CLUSTER": "true"}
            specs = [
                # The single Redis holds the queues too: its CPU is counted once, as the store's.
                ("one Redis", single.url, [single.pid], single, 0, {}),
                ("cluster", cluster.url, cluster_pids, queue, 0, clustered),
                (
                    "cluster + WAIT 1",
                    cluster.url,
                    cluster_pids,
                    queue,
                    1,
                    {**clustered, "GATEWAY_REDIS_WAIT_REPLICAS": "1"},
                ),
            ]
            for name, url, pids, queue_server, db, env in specs:
                setups.append(start_setup(name, url, pids, queue_server, db, folder, env))
            for setup in setups:  # warm-up: connections, caches
                measure(setup, "hits.lua", ["hit", str(HIT_STAGES)], _short(args))
            for number in range(1, args.rounds + 1):
                print(f"round {number}", flush=True)
                for setup in setups:
                    hits_round(setup, args)
                for setup in setups:
                    creates_round(setup, args)
        finally:
            for setup in setups:
                setup.stack.stop()
            cluster.stop()
            queue.stop()
            single.stop()
    table = rows(setups)
    header = (
        f"gateway {measured}: one Redis vs a 3-primary cluster (+ replicas), {WEB_WORKERS} gunicorn processes "
        f"and {WORKERS} workers each; machine: {report.machine()}; wrk {args.connections} connections, "
        f"{args.duration} s runs, on the same machine"
    )
    commands = [f"python bench/cluster.py --rounds {args.rounds} --duration {args.duration} "
                f"--connections {args.connections}"]  # fmt: skip
    report.print_table(table, header, [], commands)
    return 0


def _short(args):
    short = options.defaults()
    short.duration, short.connections, short.wrk_threads = 2, args.connections, args.wrk_threads
    return short


if __name__ == "__main__":
    sys.exit(main())
