"""The gateway's processes for tests and benchmarks: gunicorn with the shipped
``gunicorn.conf.py`` and ``flask --app wsgi worker``, against a given Redis, on 127.0.0.1.

Every process runs in a session (process group) of its own, so that ``kill()`` takes the
whole group as a crash or a stopped container does (RQ's scheduler is a forked child of
the worker: a SIGKILL of the worker's pid alone would leave it running as an orphan),
and so that a Ctrl-C in a terminal reaches only the caller, which stops the processes
itself. Each process writes to a log file of its own in ``log_dir``.

The commands run from the project folder (``wsgi.py``, ``gunicorn.conf.py``): by default
the checkout this package sits in.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import redis
import requests
from rq import Queue

from gateway.embedded import free_port
from gateway.testing.waiting import poll_until

PROJECT_ROOT = Path(__file__).resolve().parents[2]
ENDED = ("SUCCESS", "FAILED")


class Process:
    """One child process in a process group of its own, with its log file."""

    def __init__(self, name: str, command: list[str], *, env: dict[str, str], cwd: Path, log_path: Path) -> None:
        self.name = name
        self.command = command
        self.log_path = log_path
        self.stopped = False  # by us: an exit that check_alive() does not report
        with open(log_path, "ab") as log:  # the child keeps its own copy of the fd
            self.popen = subprocess.Popen(
                command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def terminate(self) -> None:
        """SIGTERM to the process alone, as ``kill PID`` or ``docker stop`` send it."""
        self.stopped = True
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL the process and its group (the worker's scheduler)."""
        self.stopped = True
        self._kill_group()
        self.popen.wait(10)

    def wait(self, timeout: float) -> bool:
        """Whether the process exited within ``timeout`` seconds."""
        try:
            self.popen.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            return False

    def stop(self, timeout: float = 15) -> None:
        """A graceful stop (gunicorn and RQ finish their work on SIGTERM), then SIGKILL to
        whatever of the group is left, so that nothing outlives the caller. SIGTERM is
        sent once: a second one makes a worker hand its run back at once (``warmstop``)."""
        if not self.stopped:
            self.terminate()
        if not self.wait(timeout):
            self.popen.kill()
        self._kill_group()
        self.popen.wait(10)

    def _kill_group(self) -> None:
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass  # no process of the group is left

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


class GatewayStack:
    """gunicorn and RQ worker processes of one gateway, as an operator runs them.

    ``env`` is added to this process's environment (``GATEWAY_*`` settings); the Redis is
    ``redis_url``. Nothing starts until ``start_web``, ``start_worker`` or ``spawn``; ``stop()``
    (or the end of a ``with`` block) stops every process still running, gracefully.
    """

    def __init__(
        self, redis_url: str, log_dir: str | Path, env: dict[str, str] | None = None, *, root: Path = PROJECT_ROOT
    ) -> None:
        self.root = Path(root)
        self.redis_url = redis_url
        #: RQ's Redis: the store's unless the stack's settings name another.
        self.queue_redis_url = (env or {}).get("GATEWAY_QUEUE_REDIS_URL") or redis_url
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.env = {**os.environ, "PYTHONPATH": str(self.root), "GATEWAY_REDIS_URL": redis_url, **(env or {})}
        self.processes: list[Process] = []  # every one started, in order
        self.web: Process | None = None
        self.workers: list[Process] = []
        self.port: int | None = None
        self.base = ""

    def __enter__(self) -> GatewayStack:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- processes -----------------------------------------------------------------

    def spawn(self, name: str, command: list[str]) -> Process:
        """Any command, from the project folder with the stack's environment."""
        log_path = self.log_dir / f"{len(self.processes) + 1:02d}-{name}.log"
        process = Process(name, list(command), env=self.env, cwd=self.root, log_path=log_path)
        self.processes.append(process)
        return process

    def start_web(
        self,
        app: str = "wsgi:app",
        *,
        port: int | None = None,
        name: str = "gunicorn",
        extra_args: tuple[str, ...] = (),
        main: bool = True,
    ) -> Process:
        """gunicorn with the shipped config on 127.0.0.1 (a free port unless given). A
        ``main`` one becomes the stack's ``web``, ``port`` and ``base``."""
        port = port or free_port()
        command = [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "--bind", f"127.0.0.1:{port}",
                   *extra_args, app]  # fmt: skip
        process = self.spawn(name, command)
        if main:
            self.web, self.port, self.base = process, port, f"http://127.0.0.1:{port}"
        return process

    def start_worker(self, queues: str | None = None, *, name: str = "worker") -> Process:
        """``flask --app wsgi worker`` (a run worker, a delivery worker, RQ's scheduler)."""
        command = [sys.executable, "-m", "flask", "--app", "wsgi", "worker"]
        worker = self.spawn(name, command + (["--queues", queues] if queues else []))
        self.workers.append(worker)
        return worker

    def start(self, workers: int, *, timeout: float = 30, registered: int = 0) -> GatewayStack:
        """gunicorn and ``workers`` worker commands, then ``wait_ready`` (``registered``
        workers seen by RQ); if they do not get there, everything is stopped again."""
        try:
            self.start_web()
            for _ in range(workers):
                self.start_worker()
            self.wait_ready(timeout=timeout, workers=registered)
        except BaseException:
            self.stop()
            raise
        return self

    def running(self) -> list[Process]:
        return [process for process in self.processes if process.alive()]

    def check_alive(self) -> None:
        """RuntimeError, with its log, if a process that we did not stop or kill has exited."""
        for process in self.processes:
            if not process.stopped and not process.alive():
                raise RuntimeError(f"{process.name} exited with {process.popen.returncode}:\n{process.log_tail()}")

    def stop(self, timeout: float = 15) -> None:
        """Stop every process still running, gracefully: SIGTERM to all at once (each
        finishes its work meanwhile), then SIGKILL to what is left after ``timeout``."""
        for process in self.processes:
            if not process.stopped:
                process.terminate()
        for process in self.processes:
            process.stop(timeout)

    def kill_all(self) -> None:
        """SIGKILL every process group, running or not (cleanup after a fault scenario)."""
        for process in self.processes:
            process.kill()

    def wait_ready(self, timeout: float = 30, workers: int = 0) -> None:
        """Until the web process answers its health check and ``workers`` workers are
        registered with RQ; RuntimeError (with the logs) if a process exits or time is up."""

        def ready() -> bool:
            self.check_alive()
            return self.healthy() and self.registered_workers() >= workers

        if not poll_until(ready, timeout, 0.1):
            logs = "\n".join(f"--- {p.name} ---\n{p.log_tail()}" for p in self.processes)
            raise RuntimeError(f"the gateway was not ready within {timeout:g} s:\n{logs}")

    # -- Redis ---------------------------------------------------------------------

    def redis(self) -> redis.Redis:
        """A new client of the stack's queue Redis (the store's too unless the settings
        name another; short timeouts: it may be down on purpose)."""
        return redis.Redis.from_url(self.queue_redis_url, socket_timeout=2, socket_connect_timeout=1)

    def registered_workers(self) -> int:
        """RQ workers registered in the stack's Redis (a ``flask worker`` registers two)."""
        try:
            with self.redis() as client:
                return client.scard("rq:workers")
        except redis.RedisError:
            return 0

    def worker_by_pid(self, pid: int) -> Process | None:
        return next((w for w in self.workers if w.pid == pid), None)

    def scheduler_worker(self) -> Process | None:
        """The worker whose RQ scheduler holds the lock of the callbacks queue (one does).
        The scheduler is a forked child: its process group is its worker's pid."""
        with self.redis() as client:
            pid = Queue("callbacks", connection=client).scheduler_pid
        try:
            return self.worker_by_pid(os.getpgid(pid)) if pid else None
        except ProcessLookupError:
            return None

    # -- API -----------------------------------------------------------------------

    def healthy(self) -> bool:
        try:
            return requests.get(self.base + "/v1/tasks/health", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def post(self, body: dict, timeout: float = 10) -> requests.Response:
        return requests.post(self.base + "/v1/tasks", json=body, timeout=timeout)

    def status(self, task_id: str) -> dict:
        return requests.get(f"{self.base}/v1/tasks/{task_id}/status", timeout=10).json()

    def document(self, task_id: str) -> dict | None:
        """The task's status document; None if it is unknown or the gateway does not answer."""
        try:
            response = requests.get(f"{self.base}/v1/tasks/{task_id}/status", timeout=5)
        except requests.RequestException:
            return None
        return response.json() if response.status_code == 200 else None

    def stage(self, task_id: str, task_name: str) -> dict | None:
        document = self.document(task_id)
        return document["stages"].get(task_name) if document else None

    def wait_ended(self, task_ids: list[str], task_name: str, timeout: float) -> dict[str, dict | None]:
        """Each stage once it is SUCCESS or FAILED; whatever it is at ``timeout`` otherwise."""
        stages: dict[str, dict | None] = dict.fromkeys(task_ids)

        def settled(task_id: str) -> bool:
            return stages[task_id] is not None and stages[task_id]["status"] in ENDED

        def all_settled() -> bool:
            for task_id in task_ids:
                if not settled(task_id):
                    stages[task_id] = self.stage(task_id, task_name)
            return all(settled(t) for t in task_ids)

        poll_until(all_settled, timeout, 0.1)
        return stages

    def commands(self) -> list[str]:
        """Each distinct command started, in order, as a shell line."""
        return list(dict.fromkeys(shlex.join(process.command) for process in self.processes))
