"""Benchmark of the gateway's hot paths, all on 127.0.0.1: ``python bench/run.py``.

It starts its own embedded Redis, gunicorn for the gateway and for a floor app
(bench/floor_app.py) with the same flags, and one RQ worker, then measures:

* memory: MEMORY USAGE of task documents holding one stage of known payload size;
* runs:   demo.echo runs/s of 1 and of 2 workers draining N tasks queued beforehand, and
          RQ's own ceiling, a no-op job on RQ's SimpleWorker (bench/runs.py);
* large:  sequential completed hits on a stage with ~125 KB of input and output;
* hit:    the repeated identical POST /v1/tasks (200, completed, no callback), wrk;
* floor:  the same request to the floor app, alternated with hit to share the noise;
* miss:   distinct task_ids (claim + RQ enqueue, 202), wrk, with the worker stopped;
* latency: status reads with 1,000,000 unrelated keys vs none, and the callback latency
          of a reuse hit (bench/latency.py, on Redis servers and gateways of its own).

Besides requests/s and latency, each wrk run reports the CPU time per request of the
gunicorn workers and of Redis, the machine's busy cores and how many of them other
processes took, and how wrk's keep-alive connections were spread over the gunicorn
workers ("cores busy/other, conns", all from /proc). A run is fair when nothing else took
CPU and no worker holds most connections: on a shared 2-core machine, read the ratios
of fair runs, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shlex
import shutil
import signal
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
LARGE_ID = "bench-large"
LARGE_HITS = 100
# A wrk run is "fair" when other processes used less CPU than this and no gunicorn
# worker held more than this share of wrk's connections.
CLEAN_OTHER_CORES = 0.2
BALANCED_SHARE = 0.75
STAGE_FIELD = "s:demo.echo"  # the stage's hash field (gateway/documents.py STAGE_FIELD + task_name)


def doc_key(task_id: str) -> str:
    return f"gw:task:{{{task_id}}}"  # gateway/keys.py task_document()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds per measured wrk run (default 5)")
    # Many short rounds: a round is unfair when one gunicorn process holds most connections.
    parser.add_argument("--rounds", type=int, default=6, help="gateway/floor alternations (default 6)")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of wrk warm-up per server (default 2)")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections (default 16)")
    parser.add_argument("--wrk-threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument("--stages", type=int, default=200, help="task documents for the memory figure (200)")
    parser.add_argument("--payload-bytes", type=int, default=1000, help="their input_data JSON size (1000)")
    parser.add_argument("--runs", type=int, default=2000, help="jobs per worker drain (default 2000)")
    return parser.parse_args()


# -- processes -----------------------------------------------------------------------


def stop_process(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()  # gunicorn and RQ shut down gracefully on SIGTERM
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


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
        stop_process(self.running.pop(name))

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


def _stat_fields(pid: int) -> list[str]:
    # /proc/<pid>/stat after the ")" that closes the command name: field 3 (state) onwards.
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def child_pids(parent: int) -> list[int]:
    """gunicorn's worker processes: every process whose parent is the master."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(_stat_fields(int(stat.parent.name))[1]) == parent:
                children.append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue  # a process that ended while we looked
    return children


def connections_per_process(port: int, pids: list[int]) -> list[int]:
    """Established TCP connections to ``port`` that each process holds (/proc/net/tcp)."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "01":  # 01: ESTABLISHED
            inodes.add(f"socket:[{fields[9]}]")
    counts = []
    for pid in pids:
        try:
            counts.append(sum(1 for fd in Path(f"/proc/{pid}/fd").iterdir() if os.readlink(fd) in inodes))
        except OSError:
            counts.append(0)  # the process or one of its fds went away while we looked
    return counts


def machine_busy_seconds() -> float:
    """CPU time the whole machine spent busy so far, all cores (/proc/stat, first line)."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, Path("/proc/stat").read_text().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    """CPU time of our reaped children: the finished wrk runs (servers are reaped at the end)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time these processes used so far (stat fields 14 and 15)."""
    ticks = sum(int(fields[11]) + int(fields[12]) for fields in map(_stat_fields, pids))
    return ticks / os.sysconf("SC_CLK_TCK")


# -- wrk -----------------------------------------------------------------------------


@dataclass
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int  # non-2xx/3xx answers plus socket errors: any of them spoils the figure
    app_cpu_us: float = 0.0  # gunicorn workers' CPU per request
    redis_cpu_us: float = 0.0  # Redis server's CPU per request
    # Busy cores of the whole machine during the run. Below what the load asks for (about
    # nproc), the machine was held back (throttled VM, other tenants) and the run is slow.
    busy_cores: float = 0.0
    # Of those, the cores used by processes other than wrk, the workers and Redis.
    other_cores: float = 0.0
    # wrk's keep-alive connections held by each gunicorn worker process, e.g. [16, 0]: they
    # stay where they were accepted, and one process alone is much slower than two.
    split: tuple[int, ...] = ()

    @property
    def fair(self) -> bool:
        balanced = max(self.split, default=0) <= BALANCED_SHARE * sum(self.split)
        return balanced and self.other_cores < CLEAN_OTHER_CORES

    def brief(self) -> str:
        split = "/".join(map(str, self.split))
        return f"{self.rps:,.0f} ({self.busy_cores:.1f}/{self.other_cores:.1f}, {split})"


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


# -- the benchmark -------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace, redis_url: str, redis_pid: int, procs: Processes) -> None:
        self.args = args
        self.redis = redis.Redis.from_url(redis_url, decode_responses=True)
        self.redis_pid = redis_pid
        self.procs = procs
        self.http = requests.Session()
        # Our own few requests must leave no idle keep-alive connection in a gunicorn worker.
        self.http.headers["Connection"] = "close"
        self.urls: dict[str, str] = {}  # server name -> base URL
        self.rows: list[tuple[str, str, str]] = []  # (measure, value, how)
        self.measured: list[WrkResult] = []  # every wrk run but the warm-ups

    def row(self, measure: str, value: str, how: str = "") -> None:
        self.rows.append((measure, value, how))
        print(f"  {measure}: {value}  {how}", flush=True)

    def gunicorn(self, name: str, app: str) -> None:
        """Start gunicorn with the gateway's config file and no other change."""
        from gateway.embedded import free_port

        port = free_port()
        # gunicorn 27 opens a control socket at one fixed path per user; two servers would
        # fight over it, so both (same flags otherwise) run without one.
        flags = ["-c", "gunicorn.conf.py", "--bind", f"127.0.0.1:{port}", "--no-control-socket"]
        self.procs.start(name, [sys.executable, "-m", "gunicorn", *flags, app])
        self.urls[name] = f"http://127.0.0.1:{port}"

    def start_worker(self) -> None:
        self.procs.start("worker", [sys.executable, "-m", "flask", "--app", "wsgi", "worker"])

    def load(self, server: str, script: str, script_arg: str, seconds: int) -> WrkResult:
        """One wrk run against a server, with the CPU its workers and Redis spent on it."""
        workers = child_pids(self.procs.running[server].pid)
        app_before, redis_before = cpu_seconds(workers), cpu_seconds([self.redis_pid])
        busy_before, wrk_before, started = machine_busy_seconds(), children_cpu_seconds(), time.monotonic()
        command = wrk_command(self.args, self.urls[server] + "/v1/tasks", script, script_arg, seconds)
        with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as process:
            try:
                time.sleep(min(1.0, seconds / 2))  # let wrk open its connections, then see where they went
                split = connections_per_process(int(self.urls[server].rsplit(":", 1)[1]), workers)
                out, err = process.communicate(timeout=seconds + 30)
            except BaseException:  # a timeout, Ctrl-C or SIGTERM: leave no wrk behind
                process.kill()
                raise
        if process.returncode != 0:
            raise RuntimeError(f"wrk failed ({process.returncode}): {err}")
        result = parse_wrk(out)
        result.split = tuple(split)
        elapsed = time.monotonic() - started
        if result.errors:
            raise RuntimeError(f"{server} {script}: {result.errors} errors in {result.requests} requests")
        app, store = cpu_seconds(workers) - app_before, cpu_seconds([self.redis_pid]) - redis_before
        busy = machine_busy_seconds() - busy_before
        result.app_cpu_us, result.redis_cpu_us = app / result.requests * 1e6, store / result.requests * 1e6
        result.busy_cores = busy / elapsed
        result.other_cores = max(0.0, busy - app - store - (children_cpu_seconds() - wrk_before)) / elapsed
        if seconds == self.args.duration:  # not a warm-up
            self.measured.append(result)
        return result

    def stage_states(self, task_ids: list[str]) -> list[dict | None]:
        """Each task's demo.echo stage state, straight from Redis (cheaper than the API)."""
        pipe = self.redis.pipeline(transaction=False)
        for task_id in task_ids:
            pipe.hget(doc_key(task_id), STAGE_FIELD)
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

    def post_many(self, bodies: list[dict], threads: int = 8) -> None:
        """POST every body with a few client threads (one keep-alive session each)."""
        local, sessions = threading.local(), []

        def post(body: dict) -> None:
            if not hasattr(local, "session"):
                local.session = requests.Session()
                sessions.append(local.session)
            answer = local.session.post(self.urls["gateway"] + "/v1/tasks", json=body, timeout=10)
            if answer.status_code != 202:
                raise RuntimeError(f"POST {body['task_id']}: {answer.status_code} {answer.text[:200]}")

        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(post, bodies))
        for session in sessions:  # idle keep-alive connections would sit in a gunicorn worker
            session.close()

    # -- phases --------------------------------------------------------------------

    def setup(self) -> None:
        self.gunicorn("gateway", "wsgi:app")
        self.gunicorn("floor", "bench.floor_app:app")
        self.start_worker()
        for url in (self.urls["gateway"] + "/v1/tasks/health", self.urls["floor"] + "/health"):
            wait_until(lambda url=url: self.procs.check_alive() or answers(url), 30, url)
        self.redis.set("bench:floor", "x" * 16)  # what the floor app GETs

        # The hit stage: created once, run once, then every identical POST is a hit.
        create_url = self.urls["gateway"] + "/v1/tasks"
        if self.http.post(create_url, json=HIT_BODY, timeout=10).status_code != 202:
            raise RuntimeError(f"{HIT_ID} was not created (stale Redis data?)")
        status_url = f"{self.urls['gateway']}/v1/tasks/{HIT_ID}/status"
        wait_until(lambda: self.http.get(status_url, timeout=5).json()["status"] == "completed", 30, "the hit stage")
        answer = self.http.post(create_url, json=HIT_BODY, timeout=10)
        if answer.status_code != 200 or not answer.json()["reuse_info"]["reuse_hit"]:
            raise RuntimeError(f"the repeated POST is not a completed hit: {answer.status_code} {answer.text}")

    def memory(self) -> None:
        """MEMORY USAGE of documents that hold one demo.echo stage of a known payload."""
        size = self.args.payload_bytes
        input_data = {"blob": "x" * (size - len('{"blob":""}'))}  # canonical JSON of exactly `size` bytes
        payload = len(json.dumps(input_data, separators=(",", ":")))
        task_ids = [f"mem-{n:05d}" for n in range(self.args.stages)]
        self.post_many([{"task_name": "demo.echo", "task_id": t, "input_data": input_data} for t in task_ids])
        self.wait_success(task_ids, timeout=120)

        usage = statistics.mean(self.redis.memory_usage(doc_key(t), samples=0) for t in task_ids)
        self.memory_row(payload, usage, doc_key(task_ids[0]), f"mean of {len(task_ids)} one-stage documents")
        hit_payload = len(json.dumps(HIT_BODY["input_data"], separators=(",", ":")))
        hit_usage = self.redis.memory_usage(doc_key(HIT_ID), samples=0)
        self.memory_row(hit_payload, hit_usage, doc_key(HIT_ID), f"the {HIT_ID} document")
        # What RQ still keeps of this phase's finished runs (a job hash and a results
        # stream each, unless the gateway enqueues them with result_ttl=0).
        rq_keys = [*self.redis.scan_iter("rq:job:run-*"), *self.redis.scan_iter("rq:results:run-*")]
        rq_bytes = sum(self.redis.memory_usage(key, samples=0) for key in rq_keys)
        self.row(
            "RQ memory per finished run",
            f"{rq_bytes / len(task_ids):,.0f} B",
            f"{len(rq_keys)} rq:job/rq:results keys left for {len(task_ids)} finished runs",
        )

    def large_hit(self) -> None:
        """Sequential completed hits on a stage with ~125 KB of input and of output: the
        part of a hit that grows with the payload (parsing, canonical JSON, the answer)."""
        items = [{"id": n, "name": f"item-{n}", "score": n / 2} for n in range(2500)]
        data = json.dumps({"task_name": "demo.echo", "task_id": LARGE_ID, "input_data": {"items": items}})
        url = self.urls["gateway"] + "/v1/tasks"
        headers = {"Content-Type": "application/json"}
        self.http.post(url, data=data, headers=headers, timeout=10)
        self.wait_success([LARGE_ID], timeout=30)
        times = []
        with requests.Session() as session:  # closed after: no idle connection left in a worker
            for _ in range(LARGE_HITS):
                started = time.perf_counter()
                answer = session.post(url, data=data, headers=headers, timeout=10)
                times.append((time.perf_counter() - started) * 1000)
                if answer.status_code != 200:
                    raise RuntimeError(f"large hit: {answer.status_code} {answer.text[:200]}")
        times.sort()
        self.row(
            f"hit latency, {len(data) / 1000:,.0f} KB input",
            f"{statistics.median(times):.2f} / {times[int(0.99 * (len(times) - 1))]:.2f} ms",
            f"p50 / p99 of {LARGE_HITS} sequential completed hits, one connection; answer "
            f"{len(answer.content) / 1000:,.0f} KB",
        )

    def memory_row(self, input_bytes: int, usage: float, key: str, which: str) -> None:
        # The stage's payload is its stored user data: the input and the output (= input).
        payload = 2 * input_bytes
        bound = 1.3 * payload + 300
        fields = self.redis.hgetall(key)
        field_bytes = sum(len(k) + len(v) for k, v in fields.items())
        self.row(
            f"doc memory per stage, {input_bytes:,} B input",
            f"{usage:,.0f} B",
            f"{usage / payload:.2f}x the {payload:,} B payload (input + output); target <= 1.3x + 300 = "
            f"{bound:,.0f} B: {'met' if usage <= bound else 'NOT met'}; {len(fields)} hash fields of "
            f"{field_bytes:,} B, {self.redis.object('encoding', key)}; MEMORY USAGE SAMPLES 0, {which}",
        )

    def runs(self) -> None:
        """Execution throughput of 1 and 2 workers, apart from enqueuing, and RQ's no-op
        ceiling (bench/runs.py). Leaves one worker running, as the phases before it had."""
        from bench import runs

        for drain in runs.measure_all(self, self.args.runs):
            self.row(*drain.row())
        self.start_worker()

    def hit_vs_floor(self) -> None:
        """Alternate gateway and floor so that both see the same background noise."""
        body = json.dumps(HIT_BODY, separators=(",", ":"))  # what wrk/hit.lua sends
        for server in ("gateway", "floor"):  # fill connection pools and caches; not measured
            self.load(server, "hit.lua", body, self.args.warmup)
        results: dict[str, list[WrkResult]] = {"gateway": [], "floor": []}
        # To profile while this runs: py-spy record --gil -p <pid> (one of the workers below).
        print(f"  gateway workers: pids {child_pids(self.procs.running['gateway'].pid)}", flush=True)
        for number in range(1, self.args.rounds + 1):
            for server, runs in results.items():
                runs.append(self.load(server, "hit.lua", body, self.args.duration))
                print(f"  round {number} {server}: req/s (cores busy/other, conns) {runs[-1].brief()}", flush=True)
        for server, runs in results.items():
            label = "hit" if server == "gateway" else "floor"
            self.row(
                f"{label} req/s (median of {len(runs)})",
                f"{statistics.median(r.rps for r in runs):,.0f}",
                f"best {max(r.rps for r in runs):,.0f}; rounds (cores busy/other, connections per worker): "
                + " / ".join(r.brief() for r in runs),
            )
            self.row(
                f"{label} p50 / p99 latency",
                f"{statistics.median(r.p50_ms for r in runs):.2f} / {statistics.median(r.p99_ms for r in runs):.2f} ms",
                f"median over rounds, {self.args.connections} connections",
            )
            self.row(f"{label} CPU per request", *cpu_text(runs))
        pairs = list(zip(results["gateway"], results["floor"], strict=True))
        ratios = [g.rps / f.rps for g, f in pairs]
        per_round = " / ".join(f"{r:.2f}" for r in ratios)
        # Pairs in which nothing else took CPU and the connections were spread: the ratio to trust.
        fair = [g.rps / f.rps for g, f in pairs if g.fair and f.fair]
        fair_text = f"{statistics.median(fair):.2f} (median of {len(fair)})" if fair else "none"
        self.row(
            "hit / floor req/s",
            f"{statistics.median(ratios):.2f}",
            f"target >= 0.90; rounds: {per_round}; fair pairs (other < {CLEAN_OTHER_CORES} cores, no worker > "
            f"{BALANCED_SHARE:.0%} of connections): {fair_text}",
        )
        # Both servers are CPU-bound, so the inverse ratio of their CPU per request is a second
        # estimate of the req/s ratio, less moved by the noise than req/s itself.
        gateway_cpu = statistics.median(r.app_cpu_us + r.redis_cpu_us for r in results["gateway"])
        floor_cpu = statistics.median(r.app_cpu_us + r.redis_cpu_us for r in results["floor"])
        self.row("floor / hit CPU per request", f"{floor_cpu / gateway_cpu:.2f}", "gunicorn workers + Redis, medians")

    def miss(self) -> None:
        """Distinct task_ids: claim + enqueue only. The worker is stopped so that it takes no
        CPU from gunicorn; the jobs simply pile up in the queue."""
        self.procs.stop("worker")
        prefix = f"miss-{uuid.uuid4().hex[:8]}"
        result = self.load("gateway", "miss.lua", prefix, self.args.duration)
        created = sum(1 for _ in self.redis.scan_iter(doc_key(prefix + "*"), count=1000))
        if created < result.requests:  # more is fine: wrk does not count requests in flight at the end
            raise RuntimeError(f"miss: {result.requests} requests made only {created} documents")
        self.row(
            "miss req/s (create + enqueue)",
            f"{result.rps:,.0f}",
            f"(cores busy/other, conns) {result.brief()}; worker stopped; {created} documents created",
        )
        self.row("miss p50 / p99 latency", f"{result.p50_ms:.2f} / {result.p99_ms:.2f} ms")
        self.row("miss CPU per request", *cpu_text([result]))


def cpu_text(runs: list[WrkResult]) -> tuple[str, str]:
    app = statistics.median(r.app_cpu_us for r in runs)
    store = statistics.median(r.redis_cpu_us for r in runs)
    return f"{app:,.0f} + {store:,.0f} us", "gunicorn workers + Redis, from /proc/<pid>/stat"


# -- report --------------------------------------------------------------------------


def notes(runs: list[WrkResult]) -> list[str]:
    """Why some wrk runs are not fair, so that nobody reads their req/s as the gateway's."""
    found = []
    disturbed = sum(r.other_cores >= CLEAN_OTHER_CORES for r in runs)
    if disturbed:
        found.append(
            f"other processes took >= {CLEAN_OTHER_CORES} cores during {disturbed} of {len(runs)} wrk runs: "
            "their req/s are low; rerun on a quiet machine"
        )
    lopsided = sum(max(r.split, default=0) > BALANCED_SHARE * sum(r.split) for r in runs)
    if lopsided:
        found.append(
            f"in {lopsided} of {len(runs)} wrk runs one gunicorn worker held most keep-alive connections; "
            "one worker process serves far fewer requests than two (docs/PERFORMANCE.md)"
        )
    return found


def revision() -> str:
    """The commit measured, marked dirty when the code under test differs from it."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    try:
        dirty = git("status", "--porcelain", "--", "gateway", "lua", "wsgi.py", "gunicorn.conf.py")
        return git("rev-parse", "--short", "HEAD") + (" (dirty)" if dirty else "")
    except OSError:
        return "unknown"


def machine() -> str:
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return f"nproc {os.cpu_count()}, {model}, Python {sys.version.split()[0]}"


def print_table(rows: list[tuple[str, str, str]], header: str, notes: list[str], commands: list[str]) -> None:
    width = max(len(measure) for measure, _, _ in rows)
    value_width = max(len(value) for _, value, _ in rows)
    print(f"\n{header}")
    print(f"{'measure':<{width}}  {'value':>{value_width}}  how")
    print(f"{'-' * width}  {'-' * value_width}  ---")
    for measure, value, how in rows:
        print(f"{measure:<{width}}  {value:>{value_width}}  {how}")
    for note in notes:
        print(f"note: {note}")
    print("\ncommands (run from the repository root):")
    for command in commands:
        print(f"  {command}")


def main() -> int:
    args = parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not installed; install it with: apt-get update && apt-get install -y wrk", file=sys.stderr)
        return 2
    # SIGTERM ends the run through SystemExit, so the finally below still stops the children.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sys.path.insert(0, str(ROOT))  # `python bench/run.py` puts bench/, not the root, on the path
    from gateway.embedded import EmbeddedRedis

    with tempfile.TemporaryDirectory(prefix="gw-bench-") as tmp:
        redis_server = EmbeddedRedis(Path(tmp) / "redis")
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            # gunicorn.conf.py logs every request to stdout by default. An empty value makes
            # gunicorn exit ("'' isn't writable"), so the access log goes to /dev/null.
            "GATEWAY_ACCESS_LOG": "/dev/null",
            "GATEWAY_DEMO_TASKS": "true",  # the benchmarks run demo.echo
        }
        procs = Processes(Path(tmp), env)
        try:
            redis_server.start()
            env["GATEWAY_REDIS_URL"] = redis_server.url
            load = [sys.executable, "-m", "flask", "--app", "wsgi", "scripts", "load"]
            subprocess.run(load, cwd=ROOT, env=env, check=True, capture_output=True, timeout=60)
            measured = revision()  # before the run: the tree may change while it runs
            bench = Bench(args, redis_server.url, redis_server.process.pid, procs)
            print("starting gunicorn (gateway, floor) and one worker", flush=True)
            bench.setup()
            print("memory per stage", flush=True)
            bench.memory()
            print("hit with a large payload", flush=True)
            bench.large_hit()
            print("worker throughput", flush=True)
            bench.runs()
            print("hit vs floor", flush=True)
            bench.hit_vs_floor()
            print("miss path", flush=True)
            bench.miss()
            print("latency (its own Redis servers and gateways)", flush=True)
            procs.stop_all()  # idle, but they would share the cores with the latency phase
            from bench import latency

            for row in latency.measure():
                bench.row(*row)
            url = bench.urls["gateway"] + "/v1/tasks"
            hit_body = json.dumps(HIT_BODY, separators=(",", ":"))
            commands = [
                f"env GATEWAY_REDIS_URL={redis_server.url} GATEWAY_ACCESS_LOG=/dev/null GATEWAY_DEMO_TASKS=true"
                " PYTHONPATH=. (all below)",
                shlex.join(load),
                *procs.commands.values(),
                shlex.join(wrk_command(args, url, "hit.lua", hit_body, args.duration)),
                shlex.join(wrk_command(args, url, "miss.lua", "miss-<random>", args.duration)),
            ]
            redis_version = bench.redis.info("server")["redis_version"]
            header = f"gateway {measured}; machine: {machine()}, Redis {redis_version}; wrk on the same machine"
            print_table(bench.rows, header, notes(bench.measured), commands)
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
