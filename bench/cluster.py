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

CPU per request of each tier comes from /proc: the gunicorn processes, the store's
primaries and its replicas (each a sum over the nodes), the queue Redis and the workers;
for creates also over the creates and the drain of their runs that follows (a create's
whole cost). docs/SCALING.md derives a topology from these.
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


#: The tiers whose CPU is measured, in the order the table shows them.
TIERS = ("web", "primaries", "replicas", "queue", "workers")


@dataclass
class Run:
    """One wrk run of one setup: its result and the CPU each tier spent per request
    (µs); for creates, also per create over the creates and the drain of their runs."""

    result: wrk.WrkResult
    during: dict[str, float]
    with_runs: dict[str, float] = field(default_factory=dict)


@dataclass
class Setup:
    name: str
    stack: GatewayStack
    primary_pids: list[int]
    replica_pids: list[int]
    queue_pids: list[int]  # empty when the store's Redis holds the queues
    queue_client: object = None
    hits: list[Run] = field(default_factory=list)
    creates: list[Run] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.stack.base + "/v1/tasks"

    def pids(self) -> dict[str, list[int]]:
        workers = []
        for worker in self.stack.workers:
            workers.append(worker.pid)
            workers.extend(cpu.child_pids(worker.pid))  # the delivery process, RQ's scheduler
        return {
            "web": cpu.child_pids(self.stack.web.pid),
            "primaries": self.primary_pids,
            "replicas": self.replica_pids,
            "queue": self.queue_pids,
            "workers": workers,
        }

    def cpu(self, pids: dict[str, list[int]]) -> dict[str, float]:
        return {tier: cpu.cpu_seconds(pids[tier]) for tier in TIERS}

    def queued(self) -> int:
        return sum(self.queue_client.llen(key) for key in QUEUE_KEYS)


def start_setup(name: str, store_url: str, store: tuple[list[int], list[int]], queue: RedisServer, queue_db: int,
                folder: Path, extra_env: dict[str, str]) -> Setup:  # fmt: skip
    env = {**BENCH_ENV, "GATEWAY_WEB_WORKERS": str(WEB_WORKERS),
           "GATEWAY_QUEUE_REDIS_URL": queue.url_for(queue_db), **extra_env}  # fmt: skip
    stack = GatewayStack(store_url, folder / name, env)
    subprocess.run(LOAD_SCRIPTS, cwd=ROOT, env=stack.env, check=True, capture_output=True, timeout=60)
    stack.start_web(extra_args=("--no-control-socket",))
    for _ in range(WORKERS):
        stack.start_worker()
    stack.wait_ready(timeout=60, workers=WORKERS)
    primaries, replicas = store
    queue_pids = [] if queue.pid in primaries else [queue.pid]
    setup = Setup(name, stack, primaries, replicas, queue_pids, queue.client(queue_db))
    for number in range(HIT_STAGES):
        body = {"task_name": "demo.echo", "task_id": f"hit-{number}", "input_data": {"text": "hi"}}
        stack.post(body).raise_for_status()
    for number in range(HIT_STAGES):
        wait_until(lambda n=number: stack.status(f"hit-{n}")["status"] == "completed", 30, what="hit stages")
    return setup


def wrk_run(setup: Setup, script: str, script_args: list[str], duration: int, args) -> wrk.WrkResult:
    command = wrk.wrk_command(args.wrk_threads, args.connections, setup.url, script, script_args[0], duration)
    out = subprocess.run(command + script_args[1:], capture_output=True, text=True, check=True, timeout=duration + 60)
    result = wrk.parse_wrk(out.stdout)
    if result.errors:
        raise RuntimeError(f"{setup.name} {script}: {result.errors} errors in {result.requests} requests")
    return result


def per_request(before: dict[str, float], after: dict[str, float], requests: int) -> dict[str, float]:
    return {tier: (after[tier] - before[tier]) / requests * 1e6 for tier in TIERS}


def hits_round(setup: Setup, args) -> None:
    pids = setup.pids()
    before = setup.cpu(pids)
    result = wrk_run(setup, "hits.lua", ["hit", str(HIT_STAGES)], args.duration, args)
    setup.hits.append(Run(result, per_request(before, setup.cpu(pids), result.requests)))
    print(f"  {setup.name}: hits {result.rps:,.0f}/s", flush=True)


def creates_round(setup: Setup, args) -> None:
    pids = setup.pids()
    before = setup.cpu(pids)
    result = wrk_run(setup, "miss.lua", [f"new-{uuid.uuid4().hex[:8]}"], args.duration, args)
    during = setup.cpu(pids)
    wait_until(lambda: setup.queued() == 0, 120, 0.1, what=f"{setup.name}: the queue drained")
    time.sleep(0.5)  # the last jobs taken end
    after = setup.cpu(pids)
    n = result.requests
    setup.creates.append(Run(result, per_request(before, during, n), per_request(before, after, n)))
    print(f"  {setup.name}: creates {result.rps:,.0f}/s", flush=True)


def _cpu_text(values: dict[str, float]) -> str:
    return " + ".join(f"{values[tier]:,.0f}" for tier in TIERS) + " us"


def rows(setups: list[Setup]) -> list[tuple[str, str, str]]:
    table = []
    for setup in setups:
        for kind, runs in (("reuse hits/s", setup.hits), ("creates/s", setup.creates)):
            rates = [r.result.rps for r in runs]
            p50 = statistics.median(r.result.p50_ms for r in runs)
            p99 = statistics.median(r.result.p99_ms for r in runs)
            table.append(
                (
                    f"{setup.name}: {kind}",
                    f"{statistics.median(rates):,.0f}",
                    f"median of {len(runs)}; rounds {' / '.join(f'{r:,.0f}' for r in rates)}; p50/p99 "
                    f"{p50:.2f}/{p99:.2f} ms",
                )
            )
            during = {tier: statistics.median(r.during[tier] for r in runs) for tier in TIERS}
            label = "hit" if kind.startswith("reuse") else "create"
            table.append((f"{setup.name}: CPU per {label}", _cpu_text(during), "during wrk; " + " + ".join(TIERS)))
            if label == "create":
                with_runs = {tier: statistics.median(r.with_runs[tier] for r in runs) for tier in TIERS}
                table.append(
                    (f"{setup.name}: CPU per create + run", _cpu_text(with_runs), "wrk and the drain of its runs")
                )
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
            primaries = set(cluster.primary_ports())
            by_role = {role: [n.process.pid for port, n in cluster.nodes.items() if (port in primaries) == role]
                       for role in (True, False)}  # fmt: skip
            cluster_pids = (by_role[True], by_role[False])
            print("starting the three setups", flush=True)
            clustered = {"GATEWAY_REDIS_CLUSTER": "true"}
            specs = [
                # The single Redis holds the queues too: its CPU is counted once, as the store's.
                ("one Redis", single.url, ([single.pid], []), single, 0, {}),
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
                wrk_run(setup, "hits.lua", ["hit", str(HIT_STAGES)], 2, args)
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


if __name__ == "__main__":
    sys.exit(main())
