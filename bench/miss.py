"""The miss path: ``python bench/miss.py`` (also a phase of bench/run.py).

A new task_id on every request (claim + RQ enqueue, 202) with wrk. The worker is stopped
so that it takes no CPU from gunicorn; the jobs simply pile up in the queue.
"""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `python bench/miss.py`
from bench.toolkit.report import cpu_text  # noqa: E402 (needs the path above)
from bench.toolkit.servers import Bench, run_alone  # noqa: E402
from bench.toolkit.tasks import doc_key  # noqa: E402


def measure(bench: Bench) -> None:
    """Distinct task_ids: claim + enqueue only, with the worker stopped."""
    bench.stop("worker")
    prefix = f"miss-{uuid.uuid4().hex[:8]}"
    result = bench.load("gateway", "miss.lua", prefix, bench.args.duration)
    created = sum(1 for _ in bench.redis.scan_iter(doc_key(prefix + "*"), count=1000))
    if created < result.requests:  # more is fine: wrk does not count requests in flight at the end
        raise RuntimeError(f"miss: {result.requests} requests made only {created} documents")
    bench.row(
        "miss req/s (create + enqueue)",
        f"{result.rps:,.0f}",
        f"(cores busy/other, conns) {result.brief()}; worker stopped; {created} documents created",
    )
    bench.row("miss p50 / p99 latency", f"{result.p50_ms:.2f} / {result.p99_ms:.2f} ms")
    bench.row("miss CPU per request", *cpu_text([result]))


def wrk_command(bench: Bench) -> list[str]:
    """The measured wrk run, as the summary prints it (the prefix is random each run)."""
    return bench.wrk_command("gateway", "miss.lua", "miss-<random>", bench.args.duration)


if __name__ == "__main__":
    sys.exit(run_alone(measure, __doc__.split("\n\n")[0], needs_wrk=True))
