"""Benchmark of the gateway's hot paths, all on 127.0.0.1: ``python bench/run.py``.

It starts its own embedded Redis, gunicorn for the gateway and for a floor app
(bench/floor_app.py) with the same flags, and one RQ worker, then measures:

* hit:    the repeated identical POST /v1/tasks (200, completed, no callback), wrk;
* floor:  the same request to the floor app, alternated with hit to share the noise;
* memory: MEMORY USAGE of task documents holding one stage of known payload size;
* runs:   demo.echo runs/s of one worker, from enqueuing N tasks to all SUCCESS;
* miss:   distinct task_ids (claim + RQ enqueue, 202), wrk, with the worker stopped.

A shared 2-core machine is noisy: read the ratios, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import redis
import requests

ROOT = Path(__file__).resolve().parent.parent
WRK_DIR = ROOT / "bench" / "wrk"
HIT_ID = "bench-hit"
HIT_BODY = {"task_name": "demo.echo", "task_id": HIT_ID, "input_data": {"text": "hi"}}
STAGE_FIELD = "s:demo.echo"  # the stage hash field of demo.echo (gateway/keys.py, documents.py)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run (default 10)")
    parser.add_argument("--rounds", type=int, default=3, help="gateway/floor alternations (default 3)")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of wrk warm-up per server (default 2)")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections (default 16)")
    parser.add_argument("--wrk-threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument("--stages", type=int, default=200, help="task documents for the memory figure")
    parser.add_argument("--payload-bytes", type=int, default=1000, help="input_data JSON size, memory figure")
    parser.add_argument("--runs", type=int, default=500, help="demo.echo runs for the worker throughput")
    return parser.parse_args()


# -- processes -----------------------------------------------------------------------


class Processes:
    """Child processes with a log file each, all stopped by ``stop_all`` (in a finally)."""

    def __init__(self, log_dir: Path, env: dict[str, str]) -> None:
        self.log_dir = log_dir
        self.env = env
        self.running: dict[str, subprocess.Popen] = {}
        self.commands: dict[str, str] = {}

    def start(self, name: str, command: list[str]) -> None:
        self.commands[name] = shlex.join(command)
        with open(self.log_dir / f"{name}.log", "a") as log:  # the child keeps its own copy of the fd
            self.running[name] = subprocess.Popen(command, cwd=ROOT, env=self.env, stdout=log, stderr=log)

    def stop(self, name: str) -> None:
        process = self.running.pop(name)
        if process.poll() is None:
            process.terminate()  # gunicorn and RQ shut down gracefully on SIGTERM
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def stop_all(self) -> None:
        for name in list(self.running):
            self.stop(name)

    def check_alive(self) -> None:
        for name, process in self.running.items():
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode}:\n{self.log_tail(name)}")

    def log_tail(self, name: str) -> str:
        return (self.log_dir / f"{name}.log").read_text(errors="replace")[-3000:]


def wait_until(predicate, timeout: float, what: str, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).status_code == 200
    except requests.RequestException:
        return False


# -- wrk -----------------------------------------------------------------------------


@dataclass
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int  # non-2xx/3xx answers plus socket errors: any of them spoils the figure


_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def parse_wrk(text: str) -> WrkResult:
    def latency(percent: str) -> float:
        match = re.search(rf"^\s+{percent}%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.MULTILINE)
        return float(match.group(1)) * _UNIT_MS[match.group(2)]

    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    return WrkResult(
        rps=float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1)),
        p50_ms=latency("50"),
        p99_ms=latency("99"),
        requests=int(re.search(r"(\d+) requests in", text).group(1)),
        errors=(int(non_2xx.group(1)) if non_2xx else 0) + (sum(map(int, sockets.groups())) if sockets else 0),
    )


def wrk_command(args: argparse.Namespace, url: str, script: str, script_arg: str, seconds: int) -> list[str]:
    return [
        "wrk", f"-t{args.wrk_threads}", f"-c{args.connections}", f"-d{seconds}s", "--latency", "--timeout", "5s",
        "-s", str(WRK_DIR / script), url, "--", script_arg,
    ]  # fmt: skip


def wrk(args: argparse.Namespace, url: str, script: str, script_arg: str, seconds: int) -> WrkResult:
    command = wrk_command(args, url, script, script_arg, seconds)
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 30, check=True)
    return parse_wrk(done.stdout)


# -- the stack -----------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace, redis_url: str, procs: Processes) -> None:
        self.args = args
        self.redis = redis.Redis.from_url(redis_url, decode_responses=True)
        self.procs = procs
        self.http = requests.Session()
        self.rows: list[tuple[str, str, str]] = []  # (measure, value, how)

    def row(self, measure: str, value: str, how: str = "") -> None:
        self.rows.append((measure, value, how))
        print(f"  {measure}: {value}  {how}", flush=True)

    def gunicorn(self, name: str, app: str) -> str:
        """Start gunicorn with the gateway's config file; returns its base URL."""
        from gateway.embedded import free_port

        port = free_port()
        # gunicorn 27 opens a control socket at one fixed path per user; two servers would
        # fight over it, so both (same flags otherwise) run without one.
        flags = ["-c", "gunicorn.conf.py", "--bind", f"127.0.0.1:{port}", "--no-control-socket"]
        self.procs.start(name, [sys.executable, "-m", "gunicorn", *flags, app])
        return f"http://127.0.0.1:{port}"

    def start_worker(self) -> None:
        self.procs.start("worker", [sys.executable, "-m", "flask", "--app", "wsgi", "worker"])

    def stage_states(self, task_ids: list[str]) -> list[dict | None]:
        """Each task's demo.echo stage state, straight from Redis (cheaper than the API)."""
        pipe = self.redis.pipeline(transaction=False)
        for task_id in task_ids:
            pipe.hget(f"gw:task:{{{task_id}}}", STAGE_FIELD)
        return [json.loads(value) if value else None for value in pipe.execute()]

    def wait_success(self, task_ids: list[str], timeout: float) -> list[dict]:
        """Poll until every stage is SUCCESS; only the unfinished ones are asked again."""
        left = set(task_ids)

        def all_done() -> bool:
            self.procs.check_alive()
            pending = sorted(left)
            for task_id, state in zip(pending, self.stage_states(pending), strict=True):
                if state and state["status"] == "SUCCESS":
                    left.discard(task_id)
                elif state and state["status"] == "FAILED":
                    raise RuntimeError(f"{task_id} FAILED: {state.get('error')}")
            return not left

        wait_until(all_done, timeout, f"{len(task_ids)} stages to succeed", interval=0.02)
        return self.stage_states(task_ids)

    def post_many(self, bodies: list[dict], workers: int = 8) -> None:
        """POST every body with a few client threads (one Session each)."""
        local = threading.local()

        def post(body: dict) -> None:
            if not hasattr(local, "session"):
                local.session = requests.Session()  # keep-alive per thread, as a real client would
            answer = local.session.post(self.gateway + "/v1/tasks", json=body, timeout=10)
            if answer.status_code != 202:
                raise RuntimeError(f"POST {body['task_id']}: {answer.status_code} {answer.text[:200]}")

        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(post, bodies))

    # -- phases --------------------------------------------------------------------

    def setup(self) -> None:
        self.gateway = self.gunicorn("gateway", "wsgi:app")
        self.floor = self.gunicorn("floor", "bench.floor_app:app")
        self.start_worker()
        for url in (self.gateway + "/v1/tasks/health", self.floor + "/health"):
            wait_until(lambda url=url: self.procs.check_alive() or answers(url), 30, url)
        self.redis.set("bench:floor", "x" * 16)  # what the floor app GETs

        # The hit stage: created once, run once, then every identical POST is a hit.
        assert self.http.post(self.gateway + "/v1/tasks", json=HIT_BODY, timeout=10).status_code == 202
        status_url = f"{self.gateway}/v1/tasks/{HIT_ID}/status"
        wait_until(lambda: self.http.get(status_url, timeout=5).json()["status"] == "completed", 30, "the hit stage")
        answer = self.http.post(self.gateway + "/v1/tasks", json=HIT_BODY, timeout=10)
        if answer.status_code != 200 or not answer.json()["reuse_info"]["reuse_hit"]:
            raise RuntimeError(f"the repeated POST is not a completed hit: {answer.status_code} {answer.text}")

    def memory(self) -> None:
        """MEMORY USAGE of documents that hold one demo.echo stage of a known payload."""
        size = self.args.payload_bytes
        input_data = {"blob": "x" * (size - len('{"blob":""}'))}  # canonical JSON of exactly `size` bytes
        payload_bytes = len(json.dumps(input_data, separators=(",", ":")))
        task_ids = [f"mem-{n:05d}" for n in range(self.args.stages)]
        self.post_many([{"task_name": "demo.echo", "task_id": t, "input_data": input_data} for t in task_ids])
        self.wait_success(task_ids, timeout=120)

        usage = statistics.mean(self.redis.memory_usage(f"gw:task:{{{t}}}", samples=0) for t in task_ids)
        # What the hash holds: input, output, the request record (input again), state, meta.
        fields = self.redis.hgetall(f"gw:task:{{{task_ids[0]}}}")
        field_bytes = sum(len(k) + len(v) for k, v in fields.items())
        hit_usage = self.redis.memory_usage(f"gw:task:{{{HIT_ID}}}", samples=0)
        hit_payload = len(json.dumps(HIT_BODY["input_data"], separators=(",", ":")))
        n = len(task_ids)
        self.row(
            "memory per stage, doc key",
            f"{usage:,.0f} B",
            f"payload {payload_bytes} B JSON (in+out = {2 * payload_bytes} B) -> {usage / payload_bytes:.1f}x payload; "
            f"fields hold {field_bytes} B; MEMORY USAGE SAMPLES 0, mean of {n} one-stage docs",
        )
        self.row("memory per stage, tiny doc", f"{hit_usage:,} B", f"payload {hit_payload} B JSON ({HIT_ID})")
        # What RQ keeps per finished run (gateway/queues.py: result_ttl=600): the job hash
        # and, since RQ 2, a results stream. Only runs of this phase and the hit exist yet.
        rq_keys = [*self.redis.scan_iter("rq:job:run-*"), *self.redis.scan_iter("rq:results:run-*")]
        runs = sum(1 for key in rq_keys if key.startswith("rq:job:"))
        rq_bytes = sum(self.redis.memory_usage(key, samples=0) for key in rq_keys)
        self.row(
            "RQ keys per finished run",
            f"{rq_bytes / runs:,.0f} B",
            f"rq:job hash + rq:results stream, mean of {runs} runs; they expire after result_ttl=600 s",
        )

    def runs(self) -> None:
        """demo.echo runs/s of one worker: from the first POST to every stage SUCCESS."""
        task_ids = [f"run-{n:05d}" for n in range(self.args.runs)]
        bodies = [{"task_name": "demo.echo", "task_id": t, "input_data": {"n": i}} for i, t in enumerate(task_ids)]
        started = time.perf_counter()
        self.post_many(bodies)
        enqueued = time.perf_counter() - started
        states = self.wait_success(task_ids, timeout=120)
        total = time.perf_counter() - started
        # The worker's own pace: its busy window, from the first start to the last finish.
        window_s = (max(s["finished_ms"] for s in states) - min(s["started_ms"] for s in states)) / 1000
        n = len(task_ids)
        self.row(
            "runs/s, 1 worker (enqueue -> all SUCCESS)",
            f"{n / total:,.0f}",
            f"{n} demo.echo in {total:.2f} s; enqueue via API (8 client threads) took {enqueued:.2f} s",
        )
        self.row("runs/s, worker busy window", f"{n / window_s:,.0f}", "first started_ms to last finished_ms")

    def hit_vs_floor(self) -> None:
        """Alternate gateway and floor so both see the same background noise."""
        body = json.dumps(HIT_BODY, separators=(",", ":"))
        targets = {"gateway": self.gateway + "/v1/tasks", "floor": self.floor + "/v1/tasks"}
        for url in targets.values():  # first requests fill pools and caches; not measured
            wrk(self.args, url, "hit.lua", body, self.args.warmup)
        results: dict[str, list[WrkResult]] = {"gateway": [], "floor": []}
        for number in range(1, self.args.rounds + 1):
            for name, url in targets.items():
                result = wrk(self.args, url, "hit.lua", body, self.args.duration)
                if result.errors:
                    raise RuntimeError(f"{name}: {result.errors} errors out of {result.requests} requests")
                results[name].append(result)
                print(f"  round {number} {name}: {result.rps:,.0f} req/s, p50 {result.p50_ms:.2f} ms", flush=True)
        for name, runs in results.items():
            self.row(
                f"{'hit' if name == 'gateway' else 'floor'} req/s (median of {len(runs)})",
                f"{statistics.median(r.rps for r in runs):,.0f}",
                "rounds: " + " / ".join(f"{r.rps:,.0f}" for r in runs),
            )
            self.row(
                f"{'hit' if name == 'gateway' else 'floor'} p50 / p99 latency",
                f"{statistics.median(r.p50_ms for r in runs):.2f} / {statistics.median(r.p99_ms for r in runs):.2f} ms",
                f"median over rounds, {self.args.connections} connections",
            )
        ratios = [g.rps / f.rps for g, f in zip(results["gateway"], results["floor"], strict=True)]
        self.row(
            "hit / floor req/s",
            f"{statistics.median(ratios):.2f}",
            "per round: " + " / ".join(f"{r:.2f}" for r in ratios),
        )

    def miss(self) -> None:
        """Distinct task_ids: claim + enqueue only. The worker is stopped so it takes no
        CPU from gunicorn; the jobs simply pile up in the queue."""
        self.procs.stop("worker")
        prefix = f"miss-{uuid.uuid4().hex[:8]}"
        result = wrk(self.args, self.gateway + "/v1/tasks", "miss.lua", prefix, self.args.duration)
        if result.errors:
            raise RuntimeError(f"miss: {result.errors} errors out of {result.requests} requests")
        created = len(self.redis.keys("gw:task:{miss-*"))  # bench only; the gateway never uses KEYS
        if created < result.requests:  # wrk does not count the requests in flight at the end
            raise RuntimeError(f"miss: {result.requests} requests made {created} documents")
        self.row("miss req/s (create + enqueue)", f"{result.rps:,.0f}", f"worker stopped; {created} documents created")
        self.row("miss p50 / p99 latency", f"{result.p50_ms:.2f} / {result.p99_ms:.2f} ms")


# -- report --------------------------------------------------------------------------


def machine() -> str:
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return f"nproc {os.cpu_count()}, {model}, Python {sys.version.split()[0]}"


def print_table(bench: Bench, redis_version: str, commands: list[str]) -> None:
    width = max(len(measure) for measure, _, _ in bench.rows)
    value_width = max(len(value) for _, value, _ in bench.rows)
    print()
    print(f"machine: {machine()}, Redis {redis_version}")
    print(f"{'measure':<{width}}  {'value':>{value_width}}  how")
    print(f"{'-' * width}  {'-' * value_width}  {'-' * 3}")
    for measure, value, how in bench.rows:
        print(f"{measure:<{width}}  {value:>{value_width}}  {how}")
    print("\ncommands:")
    for command in commands:
        print(f"  {command}")


def main() -> int:
    args = parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not installed; install it with: apt-get update && apt-get install -y wrk", file=sys.stderr)
        return 2
    sys.path.insert(0, str(ROOT))  # `python bench/run.py` puts bench/, not the root, on the path
    from gateway.embedded import EmbeddedRedis

    with tempfile.TemporaryDirectory(prefix="gw-bench-") as tmp:
        redis_server = EmbeddedRedis(Path(tmp) / "redis")
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            # gunicorn.conf.py logs every request to stdout by default. An empty value makes
            # gunicorn fail ("'' isn't writable"), so the access log goes to /dev/null.
            "GATEWAY_ACCESS_LOG": "/dev/null",
        }
        procs = Processes(Path(tmp), env)
        try:
            redis_server.start()
            env["GATEWAY_REDIS_URL"] = redis_server.url
            load = [sys.executable, "-m", "flask", "--app", "wsgi", "scripts", "load"]
            subprocess.run(load, cwd=ROOT, env=env, check=True, capture_output=True, timeout=60)
            bench = Bench(args, redis_server.url, procs)
            print("starting gunicorn (gateway, floor) and one worker", flush=True)
            bench.setup()
            print("memory per stage", flush=True)
            bench.memory()
            print("worker throughput", flush=True)
            bench.runs()
            print("hit vs floor", flush=True)
            bench.hit_vs_floor()
            print("miss path", flush=True)
            bench.miss()
            commands = [
                f"GATEWAY_REDIS_URL={redis_server.url} GATEWAY_ACCESS_LOG=/dev/null (embedded Redis, temp dir)",
                shlex.join(load),
                *procs.commands.values(),
                shlex.join(wrk_command(args, bench.gateway + "/v1/tasks", "hit.lua", "<HIT_BODY>", args.duration)),
                shlex.join(wrk_command(args, bench.gateway + "/v1/tasks", "miss.lua", "<prefix>", args.duration)),
            ]
            print_table(bench, bench.redis.info("server")["redis_version"], commands)
        except Exception:
            for name in procs.running:
                print(f"--- {name} log (tail) ---\n{procs.log_tail(name)}", file=sys.stderr)
            raise
        finally:
            procs.stop_all()
            redis_server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
