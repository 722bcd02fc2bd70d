"""The reuse hit against the floor: ``python bench/hit.py`` (also a phase of bench/run.py).

The identical POST /v1/tasks for a completed stage (200, ``reuse_hit``, no callback) with
wrk, alternated with the same request to the floor app (bench/floor_app.py) so that both
see the same background noise: req/s, latency and CPU per request of each, and their
ratio over every round and over the fair ones. Twice: with the shipped gunicorn.conf.py
(gthread), and with gunicorn's sync workers, as issue 16 measured (``SYNC_FLAGS``).
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `python bench/hit.py`
from bench.toolkit.cpu import child_pids  # noqa: E402 (needs the path above)
from bench.toolkit.report import cpu_text  # noqa: E402
from bench.toolkit.servers import Bench, run_alone  # noqa: E402
from bench.toolkit.tasks import HIT_BODY  # noqa: E402
from bench.toolkit.wrk import BALANCED_SHARE, CLEAN_OTHER_CORES, WrkResult  # noqa: E402

#: What wrk/hit.lua sends.
HIT_JSON = json.dumps(HIT_BODY, separators=(",", ":"))


#: The setup issue 16 measured the hit against the floor in: gunicorn's sync workers, two
#: processes of one thread each, and wrk with one thread (16 connections). No keep-alive:
#: a sync worker closes each connection after its answer.
SYNC_FLAGS = ("--worker-class", "sync", "--workers", "2", "--threads", "1")
SYNC_WRK_THREADS = 1


def measure(bench: Bench) -> None:
    """The hit against the floor, both with the shipped gunicorn.conf.py (gthread)."""
    _alternate(bench, {"hit": "gateway", "floor": "floor"}, "", None)


#: The servers with ``SYNC_FLAGS``, by what they answer.
SYNC_SERVERS = {"hit": "gateway-sync", "floor": "floor-sync"}


def start_sync_servers(bench: Bench) -> dict[str, str]:
    """gunicorn with ``SYNC_FLAGS`` for the gateway and the floor, answering; ``SYNC_SERVERS``."""
    for name, app in ((SYNC_SERVERS["hit"], "wsgi:app"), (SYNC_SERVERS["floor"], "bench.floor_app:app")):
        bench.gunicorn(name, app, SYNC_FLAGS)
    for name in SYNC_SERVERS.values():
        bench.wait_answering(name)
    return SYNC_SERVERS


def measure_sync(bench: Bench) -> None:
    """The same with sync workers (``SYNC_FLAGS``): each process runs one request at a time,
    so neither side's requests contend for its GIL, as in the issue's own figures."""
    _alternate(bench, start_sync_servers(bench), ", sync workers", SYNC_WRK_THREADS)


def _alternate(bench: Bench, servers: dict[str, str], setup: str, wrk_threads: int | None) -> None:
    """Alternate hit and floor rounds so that both see the same background noise; the rows
    of the summary, their labels ending in ``setup``."""
    args = bench.args
    for server in servers.values():  # fill connection pools and caches; not measured
        bench.load(server, "hit.lua", HIT_JSON, args.warmup, wrk_threads=wrk_threads)
    results: dict[str, list[WrkResult]] = {label: [] for label in servers}
    # To profile while this runs: py-spy record --gil -p <pid> (one of the workers below).
    print(f"  gateway workers: pids {child_pids(bench.running[servers['hit']].pid)}", flush=True)
    for number in range(1, args.rounds + 1):
        for label, runs in results.items():
            runs.append(bench.load(servers[label], "hit.lua", HIT_JSON, args.duration, wrk_threads=wrk_threads))
            print(f"  round {number} {servers[label]}: req/s (cores busy/other, conns) {runs[-1].brief()}", flush=True)
    for label, runs in results.items():
        bench.row(
            f"{label} req/s (median of {len(runs)}){setup}",
            f"{statistics.median(r.rps for r in runs):,.0f}",
            f"best {max(r.rps for r in runs):,.0f}; rounds (cores busy/other, connections per worker): "
            + " / ".join(r.brief() for r in runs),
        )
        bench.row(
            f"{label} p50 / p99 latency{setup}",
            f"{statistics.median(r.p50_ms for r in runs):.2f} / {statistics.median(r.p99_ms for r in runs):.2f} ms",
            f"median over rounds, {args.connections} connections",
        )
        bench.row(f"{label} CPU per request{setup}", *cpu_text(runs))
    pairs = list(zip(results["hit"], results["floor"], strict=True))
    ratios = [g.rps / f.rps for g, f in pairs]
    per_round = " / ".join(f"{r:.2f}" for r in ratios)
    # Pairs in which nothing else took CPU and the connections were spread: the ratio to trust.
    fair = [g.rps / f.rps for g, f in pairs if g.fair and f.fair]
    fair_text = f"{statistics.median(fair):.2f} (median of {len(fair)})" if fair else "none"
    balance = "" if setup else f", no worker > {BALANCED_SHARE:.0%} of connections"
    bench.row(
        f"hit / floor req/s{setup}",
        f"{statistics.median(ratios):.2f}",
        f"target >= 0.90; rounds: {per_round}; fair pairs (other < {CLEAN_OTHER_CORES} cores{balance}): {fair_text}",
    )
    # Both servers are CPU-bound, so the inverse ratio of their CPU per request is a second
    # estimate of the req/s ratio, less moved by the noise than req/s itself.
    hit_cpu = statistics.median(r.app_cpu_us + r.redis_cpu_us for r in results["hit"])
    floor_cpu = statistics.median(r.app_cpu_us + r.redis_cpu_us for r in results["floor"])
    bench.row(f"floor / hit CPU per request{setup}", f"{floor_cpu / hit_cpu:.2f}", "gunicorn workers + Redis, medians")


def wrk_command(bench: Bench) -> list[str]:
    """The measured wrk run, as the summary prints it."""
    return bench.wrk_command("gateway", "hit.lua", HIT_JSON, bench.args.duration)


def sync_wrk_command(bench: Bench) -> list[str]:
    return bench.wrk_command("gateway-sync", "hit.lua", HIT_JSON, bench.args.duration, SYNC_WRK_THREADS)


def _both(bench: Bench) -> None:
    measure(bench)
    measure_sync(bench)


if __name__ == "__main__":
    sys.exit(run_alone(_both, __doc__.split("\n\n")[0], needs_wrk=True))
