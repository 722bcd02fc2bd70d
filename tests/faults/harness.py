"""Real processes to break on purpose.

``FaultStack`` runs its own Redis (own port, own data folder: killing it hurts no other
test), gunicorn and ``flask --app wsgi worker`` processes, each in a process group of
its own, and can SIGKILL, SIGTERM or restart any of them (gateway/testing/stack.py). The
callback receiver is ``gateway.testing.receiver.Receiver``: it can answer from a script,
stall a request, and go down and come back on the same port.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from gateway.testing.redis_server import RedisServer
from gateway.testing.stack import ENDED, GatewayStack

__all__ = ["ENDED", "FAST_ENV", "FULL_ENV", "FaultStack", "RunLog", "new_task_id"]

#: Short leases and timeouts, so that each fault is noticed within seconds (CI).
FAST_ENV = {
    "GATEWAY_RUN_LEASE_SECONDS": "2",
    "GATEWAY_SWEEP_INTERVAL_SECONDS": "0.5",
    "GATEWAY_CALLBACK_TIMEOUT_SECONDS": "1",
    "GATEWAY_DELIVERY_GRACE_SECONDS": "1",
    "GATEWAY_CALLBACK_RETRY_INTERVALS": "[1, 1, 1, 1, 1]",
}
#: The shipped defaults (gateway/config.py): the figures an operator gets.
FULL_ENV: dict[str, str] = {}


def new_task_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


class FaultStack(GatewayStack):
    """Redis + gunicorn + RQ workers, all on 127.0.0.1, every one of them killable."""

    def __init__(self, workdir: Path, env: dict[str, str], *, workers: int = 2, queues: str | None = None) -> None:
        self.workdir = Path(workdir)
        self.redis_server = RedisServer(self.workdir / "redis")
        settings = {
            "GATEWAY_TASK_MODULES": "tests.plugin_tasks",
            "GATEWAY_DEMO_TASKS": "true",
            "GATEWAY_CALLBACK_ALLOW_PRIVATE_NETWORKS": "true",
            "GATEWAY_WEB_WORKERS": "2",
            "FAULTS_FAILPOINT_DIR": str(self.workdir),  # tests/faults/failpoints.py
            **env,
        }
        super().__init__(self.redis_server.url, self.workdir, settings)
        self.initial_workers = workers
        self.initial_queues = queues

    def __enter__(self) -> FaultStack:
        try:
            self.redis_server.start()
            self.start_web()
            for _ in range(self.initial_workers):
                self.start_worker(self.initial_queues)
            # Tasks are spread over the workers only once every one listens.
            self.wait_ready(timeout=30, workers=self.initial_workers)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        # Cleanup only: the scenarios that need a graceful stop send SIGTERM themselves.
        self.kill_all()
        self.redis_server.stop()


class RunLog:
    """The file ``testing.count`` appends ``<task_id> <task_name> <attempt> <pid>`` to."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.touch()

    def runs(self) -> list[tuple[str, str, int, int]]:
        rows = []
        for line in self.path.read_text().splitlines():
            task_id, task_name, attempt, pid = line.split()
            rows.append((task_id, task_name, int(attempt), int(pid)))
        return rows

    def runs_of(self, task_id: str) -> int:
        return sum(1 for run in self.runs() if run[0] == task_id)
