"""The RQ side: one queue per node for runs, one queue for callback deliveries, and the
enqueues that serve them (with their watch entries, ``watches``).

Each node's queue lives on its queue Redis (``queue_redis``), and so do the deliveries of
its stages (the ``callbacks`` queue of that server): a node group's runs, deliveries and
watch lists are all on one server, with its own workers and sweeper, and a server that is
down stops only its group. ``Queues.redis_for(node)`` and ``Queues.all_connections()``
are the accessors for code that must reach them (health, metrics).

Job ids are derived from what they serve (the run's claim token, the delivery id and
try number). Delivery tries are enqueued ``unique``, so the same try twice is refused:
RQ 3.0 would otherwise run a job twice when its id is enqueued twice.
"""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from flask import current_app
from rq import Queue, Retry
from rq.exceptions import DuplicateJobError, NoSuchJobError
from rq.job import Job, JobStatus
from rq.registry import ScheduledJobRegistry

from gateway import jsontext, logs, tasks
from gateway.jobguard import SERIALIZER, GatewayJob
from gateway.queue_redis import get_queue_redis
from gateway.watches import get_watches

if TYPE_CHECKING:
    from flask import Flask
    from redis import Redis

    from gateway.queue_redis import QueueRedis, QueueRedisMap
    from gateway.watches import Watches

CALLBACK_QUEUE = "callbacks"
# One delivery try is one HTTP request with its own timeout; this is only a backstop.
DELIVERY_JOB_TIMEOUT = 300
# How long RQ keeps a failed delivery job: its hash (which holds a copy of the result),
# its entry in the failed registry, and its failure result. A try records its own
# failure, so a job fails only when recording did (Redis down) or its worker died; the
# sweeper then re-sends from the job within the delivery grace, or from the stage.
DELIVERY_FAILURE_TTL = 300


class Queues:
    def __init__(self, servers: QueueRedisMap, config: dict[str, Any], watches: Watches) -> None:
        self.servers = servers
        #: The default queue Redis's client (every node's, without a map).
        self.connection = servers.default.client
        self.watches = watches
        self.job_timeout = int(config["JOB_TIMEOUT_SECONDS"])
        self._queues: dict[tuple[str, str], Queue] = {}

    # -- where the queues are ------------------------------------------------------

    def redis_for(self, node: str) -> Redis:
        """The client of ``node``'s queue Redis (its runs, its stages' deliveries)."""
        return self.servers.for_node(node).client

    def all_connections(self) -> list[Redis]:
        """One client per queue Redis server, the default's first (to ping or measure each)."""
        return [server.client for server in self.servers.all()]

    def get(self, name: str, server: QueueRedis | None = None) -> Queue:
        """The RQ queue ``name`` on ``server``: by default the node's own server for a node
        queue, the default server for ``callbacks``."""
        server = server or self.servers.for_node(name)
        queue = self._queues.get((server.url, name))
        if queue is None:
            queue = self._queues[(server.url, name)] = make_queue(name, server.client)
        return queue

    # -- runs --------------------------------------------------------------------

    def enqueue_run(self, task_id: str, task_name: str, token: str, *, again: bool = False) -> None:
        """One job per claimed run, on the node's queue, in one round trip with its watch
        entry (so that a lost enqueue leaves a trace the sweeper finds).

        Not ``unique``: every claim has a new token, hence a new job id, and the sweeper's
        re-enqueue of a lost job takes a new id (the old one may linger in RQ).
        """
        job_id = run_job_id(token, task_name)
        server = self.servers.for_task(task_name)
        with server.client.pipeline() as pipe:
            pipe.multi()  # explicit, or RQ would start the transaction after our ZADD and fail
            self.watches.watch_run_in(pipe, task_id, task_name)
            self.get(tasks.node_of(task_name), server).enqueue(
                "gateway.jobs.run_stage",
                task_id,
                task_name,
                token,
                job_id=f"{job_id}-{_now_ms()}" if again else job_id,
                job_timeout=self.job_timeout,
                **_log_options(f"run {task_id} {task_name}"),
                # The document holds the outcome; RQ's copy would only cost memory.
                result_ttl=0,
                failure_ttl=86400,
                # A Redis error before the handler ran (or while finishing) fails the job;
                # the claim stays valid, so trying again resumes the same run.
                retry=Retry(max=3, interval=[1, 5, 30]),
                pipeline=pipe,
            )
            pipe.execute()

    def remove_run(self, token: str, task_name: str) -> bool:
        """Take a cancelled run's job out of its queue, if no worker took it yet, and drop
        the job; whether it was still waiting. A job a worker already took (or a copy the
        sweeper queued again under another id) finds its claim void and does nothing."""
        job_id = run_job_id(token, task_name)
        server = self.servers.for_task(task_name)
        if not self.get(tasks.node_of(task_name), server).remove(job_id):
            return False
        # Out of the queue list, no worker can reach it any more: its hash is garbage.
        server.client.delete(GatewayJob.key_for(job_id))
        return True

    def run_job_alive(self, token: str, task_name: str) -> bool:
        """Whether the run's job is waiting in RQ or was taken by a worker within a lease."""
        client = self.servers.for_task(task_name).client
        return _job_alive(client, run_job_id(token, task_name), self.watches.run_lease_ms)

    # -- deliveries --------------------------------------------------------------

    def enqueue_deliveries(self, task_id: str, task_name: str, delivery_ids: list[str], result: dict) -> None:
        """Queue the deliveries that just became due, each carrying the result as it is
        now: a rerun that starts before a delivery is made must not change what it reports."""
        if not delivery_ids:
            return
        result_json = jsontext.dumps(result)  # UTF-8 in the queued job too
        for delivery_id in delivery_ids:
            self.enqueue_delivery(task_id, task_name, delivery_id, result_json)

    def enqueue_delivery(
        self,
        task_id: str,
        task_name: str,
        delivery_id: str,
        result_json: str,
        try_number: int = 1,
        delay: float = 0,
        *,
        again: bool = False,
    ) -> None:
        """One job per delivery try, on the queue Redis of the stage's node; a later try
        waits ``delay`` seconds in RQ's scheduler."""
        due = None
        due_ms = _now_ms()
        if delay > 0:
            # RQ's scheduler keeps whole seconds and truncates; rounding up keeps the wait
            # at least ``delay`` (a receiver's Retry-After is a promise to keep).
            due = datetime.fromtimestamp(math.ceil(time.time() + delay), UTC)
            due_ms = int(due.timestamp() * 1000)
        self.watches.watch_delivery(task_id, task_name, delivery_id, due_ms)
        job_id = delivery_job_id(delivery_id, try_number)
        self._enqueue(
            self.get(CALLBACK_QUEUE, self.servers.for_task(task_name)),
            "gateway.jobs.deliver",
            (task_id, task_name, delivery_id, result_json, try_number),
            job_id=f"{job_id}-{_now_ms()}" if again else job_id,
            job_timeout=DELIVERY_JOB_TIMEOUT,
            due=due,
            result_ttl=0,  # the job carries a copy of the result: drop it once done
            failure_ttl=DELIVERY_FAILURE_TTL,
            log_options=_log_options(f"deliver {task_id} {task_name} {delivery_id} try {try_number}"),
        )

    def delivery_job(self, task_name: str, delivery_id: str, try_number: int) -> GatewayJob | None:
        """The try's job (on the queue Redis of ``task_name``'s node), if there is one this
        version can run (an older version's pickled job never runs: the sweeper then sends
        the try again from the stored stage)."""
        client = self.servers.for_task(task_name).client
        try:
            job = GatewayJob.fetch(delivery_job_id(delivery_id, try_number), client, SERIALIZER)
        except NoSuchJobError:
            return None
        return job if job.refusal() is None else None

    def delivery_job_alive(self, job: Job | None) -> bool:
        return job is not None and _job_alive(job.connection, job.id, self.watches.delivery_grace_ms)

    # -- shared ------------------------------------------------------------------

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
        failure_ttl: int = 86400,
        log_options: dict[str, Any] | None = None,
    ) -> None:
        options = {
            "job_id": job_id,
            "job_timeout": job_timeout,
            "unique": True,
            "result_ttl": result_ttl,
            "failure_ttl": failure_ttl,
            **(log_options or {}),
        }
        try:
            if due is None:
                queue.enqueue(func, *args, **options)
            else:
                queue.enqueue_at(due, func, *args, **options)
        except DuplicateJobError:
            # The same run or try is already queued: exactly what we wanted.
            pass


def _log_options(description: str) -> dict[str, Any]:
    """What a job says in logs: a short ``description`` of ids (RQ's default is the call
    with its arguments, a delivery's result among them: user data in RQ's log lines, in
    ``rq info`` and in dashboards), and in its ``meta`` the id of the request (or job, or
    sweep) that queued it, which ``jobs`` logs with the run or delivery try."""
    options: dict[str, Any] = {"description": description}
    request_id = logs.request_id()
    if request_id is not None:
        options["meta"] = {"request_id": request_id}
    return options


def request_id_of(job: Job) -> str | None:
    """The request id a job was queued with (None for a job queued without one)."""
    meta = job.meta if isinstance(job.meta, dict) else {}
    value = meta.get("request_id")
    return value if isinstance(value, str) else None


def make_queue(name: str, connection: Redis) -> Queue:
    """An RQ queue that writes and reads jobs as ``gateway.jobguard`` says (JSON)."""
    return Queue(name, connection=connection, serializer=SERIALIZER, job_class=GatewayJob)


def run_job_id(token: str, task_name: str) -> str:
    return f"run-{token}-{task_name.replace('.', '_')}"


def delivery_job_id(delivery_id: str, try_number: int) -> str:
    return f"dlv-{delivery_id}-{try_number}"


def _now_ms() -> int:
    return int(time.time() * 1000)


_WAITING = (JobStatus.QUEUED, JobStatus.DEFERRED)


def _job_alive(connection: Redis, job_id: str, grace_ms: int) -> bool:
    """Whether a job will still run or is running: queued; scheduled and not overdue by
    more than ``grace_ms`` (a scheduled job needs RQ's scheduler, whose process can die);
    or taken by a worker less than ``grace_ms`` ago. A job no worker will run (an older
    version's pickle) is not alive."""
    try:
        job = GatewayJob.fetch(job_id, connection, SERIALIZER)
    except NoSuchJobError:
        return False
    if job.refusal() is not None:
        return False
    status = job.get_status(refresh=False)
    if status in _WAITING:
        return True
    if status == JobStatus.SCHEDULED:
        try:
            due = ScheduledJobRegistry(job.origin, connection=connection).get_scheduled_time(job)
        except NoSuchJobError:
            return False
        return _now_ms() < due.replace(tzinfo=UTC).timestamp() * 1000 + grace_ms
    if status == JobStatus.STARTED and job.started_at is not None:
        started_ms = job.started_at.replace(tzinfo=UTC).timestamp() * 1000
        return _now_ms() - started_ms < grace_ms
    return False


def get_queues(app: Flask | None = None) -> Queues:
    app = app or current_app._get_current_object()  # type: ignore[attr-defined]  # see store.get_store
    return app.extensions["gateway.queues"]


def init_app(app: Flask) -> None:
    """Needs ``queue_redis.init_app`` and ``watches.init_app`` first."""
    app.extensions["gateway.queues"] = Queues(get_queue_redis(app), app.config, get_watches(app))
