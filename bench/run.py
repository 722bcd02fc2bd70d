"""Benchmark of the gateway's hot paths, all on 127.0.0.1: ``python bench/run.py``.

It starts its own embedded Redis, gunicorn for the gateway and for a floor app
(bench/floor_app.py) with the same flags, and one RQ worker, then measures:

* memory: MEMORY USAGE of task documents holding one stage of known payload size
          (bench/memory.py);
* large:  sequential completed hits on a stage with ~125 KB of input and output
          (bench/large_hit.py);
* runs:   demo.echo runs/s of 1 and of 2 workers draining N tasks queued beforehand, and
          RQ's own ceiling, a no-op job on RQ's SimpleWorker (bench/runs.py);
* hit:    the repeated identical POST /v1/tasks (200, completed, no callback), wrk;
* floor:  the same request to the floor app, alternated with hit to share the noise
          (both bench/hit.py), with the shipped gunicorn.conf.py (gthread) and again with
          gunicorn's sync workers, the setup issue 16 measured in;
* miss:   distinct task_ids (claim + RQ enqueue, 202), wrk, with the worker stopped
          (bench/miss.py);
* latency: status reads with 1,000,000 unrelated keys vs none, and the callback latency
          of a reuse hit (bench/latency.py, on Redis servers and gateways of its own).

Each phase is a driver that also runs alone (``python bench/hit.py``); what they share
(servers, wrk, CPU accounting, the table) is in bench/toolkit/.

Besides requests/s and latency, each wrk run reports the CPU time per request of the
gunicorn workers and of Redis, the machine's busy cores and how many of them other
processes took, and how wrk's keep-alive connections were spread over the gunicorn
workers ("cores busy/other, conns", all from /proc). A run is fair when nothing else took
CPU and no worker holds most connections: on a shared 2-core machine, read the ratios
of fair runs, not the absolute numbers.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `python bench/run.py` puts bench/ on the path
from bench import hit, large_hit, latency, memory, miss, runs  # noqa: E402 (needs the path above)
from bench.toolkit import options, report  # noqa: E402
from bench.toolkit.servers import Bench, prepare  # noqa: E402


def main() -> int:
    args = options.parser(__doc__.split("\n\n")[0]).parse_args()
    if not prepare(needs_wrk=True):
        return 2
    with tempfile.TemporaryDirectory(prefix="gw-bench-") as tmp, Bench(args, Path(tmp)) as bench:
        measured = report.revision()  # before the run: the tree may change while it runs
        print("starting gunicorn (gateway, floor) and one worker", flush=True)
        bench.setup()
        print("memory per stage", flush=True)
        memory.measure(bench)
        print("hit with a large payload", flush=True)
        large_hit.measure(bench)
        print("worker throughput", flush=True)
        runs.measure(bench)
        print("hit vs floor", flush=True)
        hit.measure(bench)
        print("hit vs floor, sync workers (issue 16's setup)", flush=True)
        hit.measure_sync(bench)
        print("miss path", flush=True)
        miss.measure(bench)
        print("latency (its own Redis servers and gateways)", flush=True)
        bench.stop_all()  # idle, but they would share the cores with the latency phase
        for row in latency.measure():
            bench.row(*row)
        bench.print_summary(measured, [hit.wrk_command(bench), hit.sync_wrk_command(bench), miss.wrk_command(bench)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
