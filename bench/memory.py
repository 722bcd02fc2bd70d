"""Memory per stored stage: ``python bench/memory.py`` (also a phase of bench/run.py).

MEMORY USAGE of task documents that hold one demo.echo stage of a known payload size,
against the target's bound (1.3x the payload + 300 B), and of the hit stage's small
document; and what RQ still keeps of the finished runs.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `python bench/memory.py`
from bench.toolkit.servers import Bench, run_alone  # noqa: E402 (needs the path above)
from bench.toolkit.tasks import HIT_BODY, HIT_ID, doc_key  # noqa: E402


def measure(bench: Bench) -> None:
    """MEMORY USAGE of documents that hold one demo.echo stage of a known payload."""
    size = bench.args.payload_bytes
    input_data = {"blob": "x" * (size - len('{"blob":""}'))}  # canonical JSON of exactly `size` bytes
    payload = len(json.dumps(input_data, separators=(",", ":")))
    task_ids = [f"mem-{n:05d}" for n in range(bench.args.stages)]
    bench.post_many([{"task_name": "demo.echo", "task_id": t, "input_data": input_data} for t in task_ids])
    bench.wait_success(task_ids, timeout=120)

    usage = statistics.mean(bench.redis.memory_usage(doc_key(t), samples=0) for t in task_ids)
    _memory_row(bench, payload, usage, doc_key(task_ids[0]), f"mean of {len(task_ids)} one-stage documents")
    hit_payload = len(json.dumps(HIT_BODY["input_data"], separators=(",", ":")))
    hit_usage = bench.redis.memory_usage(doc_key(HIT_ID), samples=0)
    _memory_row(bench, hit_payload, hit_usage, doc_key(HIT_ID), f"the {HIT_ID} document")
    # What RQ still keeps of this phase's finished runs (a job hash and a results
    # stream each, unless the gateway enqueues them with result_ttl=0).
    rq_keys = [*bench.redis.scan_iter("rq:job:run-*"), *bench.redis.scan_iter("rq:results:run-*")]
    rq_bytes = sum(bench.redis.memory_usage(key, samples=0) for key in rq_keys)
    bench.row(
        "RQ memory per finished run",
        f"{rq_bytes / len(task_ids):,.0f} B",
        f"{len(rq_keys)} rq:job/rq:results keys left for {len(task_ids)} finished runs",
    )


def _memory_row(bench: Bench, input_bytes: int, usage: float, key: str, which: str) -> None:
    # The stage's payload is its stored user data: the input and the output (= input).
    payload = 2 * input_bytes
    bound = 1.3 * payload + 300
    fields = bench.redis.hgetall(key)
    field_bytes = sum(len(k) + len(v) for k, v in fields.items())
    bench.row(
        f"doc memory per stage, {input_bytes:,} B input",
        f"{usage:,.0f} B",
        f"{usage / payload:.2f}x the {payload:,} B payload (input + output); target <= 1.3x + 300 = "
        f"{bound:,.0f} B: {'met' if usage <= bound else 'NOT met'}; {len(fields)} hash fields of "
        f"{field_bytes:,} B, {bench.redis.object('encoding', key)}; MEMORY USAGE SAMPLES 0, {which}",
    )


if __name__ == "__main__":
    sys.exit(run_alone(measure, __doc__.split("\n\n")[0]))
