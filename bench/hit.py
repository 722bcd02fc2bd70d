"""The reuse hit against the floor: ``python bench/hit.py`` (also a phase of bench/run.py).

The identical POST /v1/tasks for a completed stage (200, ``reuse_hit``, no callback) with
wrk, alternated with the same request to the floor app (bench/floor_app.py) so that both
see the same background noise: req/s, latency and CPU per request of each, and their
ratio over every round and over the fair ones.
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


def measure(bench: Bench) -> None:
    """Alternate gateway and floor so that both see the same background noise."""
    args = bench.args
    for server in ("gateway", "floor"):  # fill connection pools and caches; not measured
        bench.load(server, "hit.lua", HIT_JSON, args.warmup)
    results: dict[str, list[WrkResult]] = {"gateway": [], "floor": []}
    # To profile while this runs: py-spy record --gil -p <pid> (one of the workers below).
    print(f"  gateway workers: pids {child_pids(bench.running['gateway'].pid)}", flush=True)
    for number in range(1, args.rounds + 1):
        for server, runs in results.items():
            runs.append(bench.load(server, "hit.lua", HIT_JSON, args.duration))
            print(f"  round {number} {server}: req/s (cores busy/other, conns) {runs[-1].brief()}", flush=True)
    for server, runs in results.items():
        label = "hit" if server == "gateway" else "floor"
        bench.row(
            f"{label} req/s (median of {len(runs)})",
            f"{statistics.median(r.rps for r in runs):,.0f}",
            f"best {max(r.rps for r in runs):,.0f}; rounds (cores busy/other, connections per worker): "
            + " / ".join(r.brief() for r in runs),
        )
        bench.row(
            f"{label} p50 / p99 latency",
            f"{statistics.median(r.p50_ms for r in runs):.2f} / {statistics.median(r.p99_ms for r in runs):.2f} ms",
            f"median over rounds, {args.connections} connections",
        )
        bench.row(f"{label} CPU per request", *cpu_text(runs))
    pairs = list(zip(results["gateway"], results["floor"], strict=True))
    ratios = [g.rps / f.rps for g, f in pairs]
    per_round = " / ".join(f"{r:.2f}" for r in ratios)
    # Pairs in which nothing else took CPU and the connections were spread: the ratio to trust.
    fair = [g.rps / f.rps for g, f in pairs if g.fair and f.fair]
    fair_text = f"{statistics.median(fair):.2f} (median of {len(fair)})" if fair else "none"
    bench.row(
        "hit / floor req/s",
        f"{statistics.median(ratios):.2f}",
        f"target >= 0.90; rounds: {per_round}; fair pairs (other < {CLEAN_OTHER_CORES} cores, no worker > "
        f"{BALANCED_SHARE:.0%} of connections): {fair_text}",
    )
    # Both servers are CPU-bound, so the inverse ratio of their CPU per request is a second
    # estimate of the req/s ratio, less moved by the noise than req/s itself.
    gateway_cpu = statistics.median(r.app_cpu_us + r.redis_cpu_us for r in results["gateway"])
    floor_cpu = statistics.median(r.app_cpu_us + r.redis_cpu_us for r in results["floor"])
    bench.row("floor / hit CPU per request", f"{floor_cpu / gateway_cpu:.2f}", "gunicorn workers + Redis, medians")


def wrk_command(bench: Bench) -> list[str]:
    """The measured wrk run, as the summary prints it."""
    return bench.wrk_command("gateway", "hit.lua", HIT_JSON, bench.args.duration)


if __name__ == "__main__":
    sys.exit(run_alone(measure, __doc__.split("\n\n")[0], needs_wrk=True))
