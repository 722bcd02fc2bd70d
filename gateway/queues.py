"""The RQ side: one queue per node for runs, one queue for callback deliveries.

Job ids are derived from what they serve (the run's claim token, the delivery id and
try number), so enqueuing the same work twice is refused by RQ (``unique=True``):
RQ 3.0 would otherwise run a job twice when its id is enqueued twice.
"""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from flask import current_app
from rq import Queue, Retry
from rq.exceptions import DuplicateJobError

from gateway import store, tasks

if TYPE_CHECKING:
    from flask import Flask
    from redis import Redis

CALLBACK_QUEUE = "callbacks"
# One delivery try is one HTTP request with its own timeout; this is only a backstop.
DELIVERY_JOB_TIMEOUT = 300


class Queues:
    def __init__(self, connection: Redis, config: dict[str, Any]) -> None:
        self.connection = connection
        self.job_timeout = int(config["JOB_TIMEOUT_SECONDS"])
        self._queues: dict[str, Queue] = {}

    def get(self, name: str) -> Queue:
        queue = self._queues.get(name)
        if queue is None:
            queue = self._queues[name] = Queue(name, connection=self.connection)
        return queue

    def enqueue_run(self, task_id: str, task_name: str, token: str) -> None:
        """One job per claimed run, on the node's queue."""
        self._enqueue(
            self.get(tasks.node_of(task_name)),
            "gateway.jobs.run_stage",
            (task_id, task_name, token),
            job_id=f"run-{token}-{task_name.replace('.', '_')}",
            job_timeout=self.job_timeout,
            # A Redis error before the handler ran (or while finishing) fails the job;
            # the claim stays valid, so trying again resumes the same run.
            retry=Retry(max=3, interval=[1, 5, 30]),
        )

    def enqueue_delivery(
        self, task_id: str, task_name: str, delivery_id: str, result_json: str, try_number: int = 1, delay: float = 0
    ) -> None:
        """One job per delivery try; a later try waits ``delay`` seconds in RQ's scheduler."""
        due = None
        if delay > 0:
            # RQ's scheduler keeps whole seconds and truncates; rounding up keeps the wait
            # at least ``delay`` (a receiver's Retry-After is a promise to keep).
            due = datetime.fromtimestamp(math.ceil(time.time() + delay), UTC)
        self._enqueue(
            self.get(CALLBACK_QUEUE),
            "gateway.jobs.deliver",
            (task_id, task_name, delivery_id, result_json, try_number),
            job_id=f"dlv-{delivery_id}-{try_number}",
            job_timeout=DELIVERY_JOB_TIMEOUT,
            due=due,
            result_ttl=0,  # the job carries a copy of the result: drop it once done
        )

    def _enqueue(
        self,
        queue: Queue,
        func: str,
        args: tuple,
        *,
        job_id: str,
        job_timeout: int,
        due: datetime | None = None,
        result_ttl: int = 600,
        retry: Retry | None = None,
    ) -> None:
        options = {
            "job_id": job_id,
            "job_timeout": job_timeout,
            "unique": True,
            "result_ttl": result_ttl,
            "failure_ttl": 86400,
            "retry": retry,
        }
        try:
            if due is None:
                queue.enqueue(func, *args, **options)
            else:
                queue.enqueue_at(due, func, *args, **options)
        except DuplicateJobError:
            # The same run or try is already queued: exactly what we wanted.
            pass


def get_queues(app: Flask | None = None) -> Queues:
    app = app or current_app
    return app.extensions["gateway.queues"]


def init_app(app: Flask) -> None:
    connection = store.connect(app.config["QUEUE_REDIS_URL"], app.config, decode_responses=False)
    app.extensions["gateway.queues"] = Queues(connection, app.config)
