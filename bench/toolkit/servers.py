"""One benchmark run's servers, on ``gateway.testing``: a private Redis with the gateway's
scripts loaded, gunicorn for the gateway (and for the floor app, bench/floor_app.py) with
the same flags, RQ workers; wrk runs against them with the CPU each side spent; the rows
of the summary table.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import redis
import requests

from bench.toolkit import cpu, options, report, tasks, wrk
from gateway.embedded import free_port
from gateway.testing.redis_server import RedisServer
from gateway.testing.stack import GatewayStack, Process
from gateway.testing.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
BENCH_ENV = {
    # Nothing else: gunicorn.conf.py's defaults, as deployed (no gunicorn access log, the
    # gateway's JSON request line and metrics on).
    "GATEWAY_DEMO_TASKS": "true",  # the benchmarks run demo.echo
}
GATEWAY_WORKER = (sys.executable, "-m", "flask", "--app", "wsgi", "worker")
LOAD_SCRIPTS = [sys.executable, "-m", "flask", "--app", "wsgi", "scripts", "load"]
HEALTH_PATHS = {"gateway": "/v1/tasks/health", "floor": "/health"}


def answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).status_code == 200
    except requests.RequestException:
        return False


class Bench:
    """The servers of one run, started by ``with Bench(...)`` (Redis, scripts loaded) and
    ``setup()``; everything is stopped at the end of the block, also on an error (and
    then the logs of the processes still running are printed)."""

    def __init__(self, args: argparse.Namespace, folder: Path) -> None:
        self.args = args
        self.redis_server = RedisServer(folder / "redis")
        self.stack = GatewayStack(self.redis_server.url, folder, BENCH_ENV)
        self.running: dict[str, Process] = {}  # server or worker name -> its process
        self.urls: dict[str, str] = {}  # server name -> base URL
        self.rows: list[tuple[str, str, str]] = []  # (measure, value, how)
        self.measured: list[wrk.WrkResult] = []  # every wrk run but the warm-ups
        self.http = requests.Session()
        # Our own few requests must leave no idle keep-alive connection in a gunicorn worker.
        self.http.headers["Connection"] = "close"

    def __enter__(self) -> Bench:
        try:
            self.redis_server.start()
            subprocess.run(LOAD_SCRIPTS, cwd=ROOT, env=self.stack.env, check=True, capture_output=True, timeout=60)
        except BaseException:
            self.redis_server.stop()
            raise
        self.redis = redis.Redis.from_url(self.redis_server.url, decode_responses=True)
        self.redis_pid = self.redis_server.pid
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if isinstance(exc, Exception):
            for name, process in self.running.items():
                print(f"--- {name} log (tail) ---\n{process.log_tail()}", file=sys.stderr)
        self.stop_all()
        self.redis_server.stop()

    def row(self, measure: str, value: str, how: str = "") -> None:
        self.rows.append((measure, value, how))
        print(f"  {measure}: {value}  {how}", flush=True)

    # -- processes -------------------------------------------------------------------

    def gunicorn(self, name: str, app: str, flags: tuple[str, ...] = ()) -> None:
        """Start gunicorn with the gateway's config file and no other change than ``flags``."""
        port = free_port()
        # gunicorn 27 opens a control socket at one fixed path per user; two servers would
        # fight over it, so both (same flags otherwise) run without one.
        flags = ("--no-control-socket", *flags)
        self.running[name] = self.stack.start_web(app, port=port, name=name, extra_args=flags, main=False)
        self.urls[name] = f"http://127.0.0.1:{port}"

    def start_worker(self, name: str = "worker", command: tuple[str, ...] = GATEWAY_WORKER) -> Process:
        self.running[name] = self.stack.spawn(name, list(command))
        return self.running[name]

    def stop(self, name: str) -> None:
        self.running.pop(name).stop()

    def stop_workers(self) -> None:
        for name in [name for name in self.running if name.startswith("worker")]:
            self.stop(name)

    def stop_all(self) -> None:
        for name in list(self.running):
            self.stop(name)

    def check_alive(self) -> None:
        self.stack.check_alive()

    def wait_answering(self, name: str) -> None:
        url = self.urls[name] + HEALTH_PATHS[name.split("-")[0]]  # "floor-sync" answers as "floor"
        wait_until(lambda: self.check_alive() or answers(url), 30, what=url)

    def setup(self) -> None:
        """The gateway, the floor app, one worker, and the completed stage every hit reuses."""
        self.gunicorn("gateway", "wsgi:app")
        self.gunicorn("floor", "bench.floor_app:app")
        self.start_worker()
        for name in ("gateway", "floor"):
            self.wait_answering(name)
        self.redis.set("bench:floor", "x" * 16)  # what the floor app GETs

        # The hit stage: created once, run once, then every identical POST is a hit.
        create_url = self.urls["gateway"] + "/v1/tasks"
        if self.http.post(create_url, json=tasks.HIT_BODY, timeout=10).status_code != 202:
            raise RuntimeError(f"{tasks.HIT_ID} was not created (stale Redis data?)")
        status_url = f"{self.urls['gateway']}/v1/tasks/{tasks.HIT_ID}/status"
        completed = lambda: self.http.get(status_url, timeout=5).json()["status"] == "completed"  # noqa: E731
        wait_until(completed, 30, what="the hit stage")
        answer = self.http.post(create_url, json=tasks.HIT_BODY, timeout=10)
        if answer.status_code != 200 or not answer.json()["reuse_info"]["reuse_hit"]:
            raise RuntimeError(f"the repeated POST is not a completed hit: {answer.status_code} {answer.text}")

    # -- load ------------------------------------------------------------------------

    def wrk_command(
        self, server: str, script: str, script_arg: str, seconds: int, wrk_threads: int | None = None
    ) -> list[str]:
        url = self.urls[server] + "/v1/tasks"
        threads = wrk_threads or self.args.wrk_threads
        return wrk.wrk_command(threads, self.args.connections, url, script, script_arg, seconds)

    def load(
        self, server: str, script: str, script_arg: str, seconds: int, *, wrk_threads: int | None = None
    ) -> wrk.WrkResult:
        """One wrk run against a server, with the CPU its workers and Redis spent on it.

        With sync workers (no keep-alive) the connections a process holds at one moment say
        nothing: the run's split is then left empty, and only other processes' CPU can make
        it unfair."""
        workers = cpu.child_pids(self.running[server].pid)
        app_before, redis_before = cpu.cpu_seconds(workers), cpu.cpu_seconds([self.redis_pid])
        busy_before, wrk_before, started = cpu.machine_busy_seconds(), cpu.children_cpu_seconds(), time.monotonic()
        command = self.wrk_command(server, script, script_arg, seconds, wrk_threads)
        with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as process:
            try:
                time.sleep(min(1.0, seconds / 2))  # let wrk open its connections, then see where they went
                split = cpu.connections_per_process(int(self.urls[server].rsplit(":", 1)[1]), workers)
                out, err = process.communicate(timeout=seconds + 30)
            except BaseException:  # a timeout, Ctrl-C or SIGTERM: leave no wrk behind
                process.kill()
                raise
        if process.returncode != 0:
            raise RuntimeError(f"wrk failed ({process.returncode}): {err}")
        result = wrk.parse_wrk(out)
        result.split = () if server.endswith("-sync") else tuple(split)
        elapsed = time.monotonic() - started
        if result.errors:
            raise RuntimeError(f"{server} {script}: {result.errors} errors in {result.requests} requests")
        app, store = cpu.cpu_seconds(workers) - app_before, cpu.cpu_seconds([self.redis_pid]) - redis_before
        busy = cpu.machine_busy_seconds() - busy_before
        result.app_cpu_us, result.redis_cpu_us = app / result.requests * 1e6, store / result.requests * 1e6
        result.busy_cores = busy / elapsed
        result.other_cores = max(0.0, busy - app - store - (cpu.children_cpu_seconds() - wrk_before)) / elapsed
        if seconds == self.args.duration:  # not a warm-up
            self.measured.append(result)
        return result

    # -- tasks -----------------------------------------------------------------------

    def stage_states(self, task_ids: list[str]) -> list[dict | None]:
        return tasks.stage_states(self.redis, task_ids)

    def post_many(self, bodies: list[dict], threads: int = 8) -> None:
        tasks.post_many(self.urls["gateway"] + "/v1/tasks", bodies, threads)

    def wait_success(self, task_ids: list[str], timeout: float) -> list[dict]:
        """Poll until every stage is SUCCESS; only the unfinished ones are asked again."""
        left = set(task_ids)

        def all_done() -> bool:
            self.check_alive()
            pending = sorted(left)
            for task_id, state in zip(pending, self.stage_states(pending), strict=True):
                if state and state["status"] == "SUCCESS":
                    left.discard(task_id)
                elif state and state["status"] == "FAILED":
                    raise RuntimeError(f"{task_id} FAILED: {state.get('error')}")
            return not left

        wait_until(all_done, timeout, 0.02, what=f"{len(task_ids)} stages to succeed")
        return self.stage_states(task_ids)

    # -- the summary -----------------------------------------------------------------

    def print_summary(self, measured: str, wrk_commands: list[list[str]] = ()) -> None:
        """The table of every row, with the commands that started the servers (and ``wrk_commands``)."""
        commands = [
            f"env GATEWAY_REDIS_URL={self.redis_server.url} GATEWAY_DEMO_TASKS=true PYTHONPATH=. (all below)",
            shlex.join(LOAD_SCRIPTS),
            *self.stack.commands(),
            *(shlex.join(command) for command in wrk_commands),
        ]
        redis_version = self.redis.info("server")["redis_version"]
        header = f"gateway {measured}; machine: {report.machine()}, Redis {redis_version}; wrk on the same machine"
        report.print_table(self.rows, header, wrk.unfair_notes(self.measured), commands)


def prepare(needs_wrk: bool = True) -> bool:
    """Before a run: wrk is there (else says how to install it), and SIGTERM ends the run
    through SystemExit, so that the ``with`` blocks still stop the servers."""
    if needs_wrk and shutil.which("wrk") is None:
        print("wrk is not installed; install it with: apt-get update && apt-get install -y wrk", file=sys.stderr)
        return False
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    return True


def run_alone(measure: Callable[[Bench], None], description: str, *, needs_wrk: bool = False) -> int:
    """A driver's ``main``: its own servers (``setup()``), its rows, the table."""
    args = options.parser(description).parse_args()
    if not prepare(needs_wrk):
        return 2
    with tempfile.TemporaryDirectory(prefix="gw-bench-") as tmp, Bench(args, Path(tmp)) as bench:
        measured = report.revision()
        bench.setup()
        measure(bench)
        bench.print_summary(measured)
    return 0
