"""``flask --app wsgi worker``: an RQ worker for the node queues (runs) and, in a process
of its own beside it, one for the callback queue (deliveries), all on the queue Redis of
one node group (``queue_redis``), with that server's sweeper."""

from __future__ import annotations

import signal
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING

from flask import current_app, has_app_context
from flask.cli import locate_app
from redis.exceptions import RedisError
from rq import SimpleWorker
from rq.defaults import DEFAULT_LOGGING_DATE_FORMAT, DEFAULT_LOGGING_FORMAT
from rq.exceptions import StopRequested
from rq.job import JobStatus
from rq.results import Result
from rq.scheduler import RQScheduler
from rq.utils import now
from rq.worker import WorkerStatus

from gateway import metrics, metricsdir, tasks, warmstop
from gateway.backoff import wait_for_redis
from gateway.connections import connect, get_connections
from gateway.deliveryproc import DeliveryProcess, die_with_parent
from gateway.jobguard import SERIALIZER, GatewayJob
from gateway.queue_redis import NodeGroupError, get_queue_redis
from gateway.queues import CALLBACK_QUEUE, make_queue
from gateway.sweeper import SweeperThread

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from flask import Flask
    from redis.client import Pipeline
    from rq.executions import Execution
    from rq.job import Job
    from rq.queue import Queue
    from rq.registry import StartedJobRegistry

    from gateway.queue_redis import QueueRedis

MAINTENANCE_INTERVAL_SECONDS = 30
#: Pause before a worker that stopped on a Redis error starts again.
RESTART_DELAY_SECONDS = 1.0
#: How often an idle or busy worker refreshes its RQ worker hash at most (RQ: 3 times per
#: job, one round trip per command). Well inside RQ's 480 s TTL and 405 s dequeue wait.
HEARTBEAT_SECONDS = 10.0
#: How soon a worker notices ``rq suspend`` (RQ: one round trip per job).
SUSPENSION_CHECK_SECONDS = 1.0
#: The gateway's own jobs: enqueued with ``result_ttl=0``, no dependents, repeats, groups
#: or rate limits, so that their success is one transaction (``GatewayWorker``).
LEAN_JOBS = frozenset({"gateway.jobs.run_stage", "gateway.jobs.deliver"})


class GatewayScheduler(RQScheduler):
    """RQ's scheduler process, which ends with the worker that forked it: a worker killed
    outright (``kill -9``, the OOM killer) must not leave it running with the lock."""

    def work(self) -> None:
        die_with_parent()
        super().work()


class GatewayWorker(SimpleWorker):
    """RQ's ``SimpleWorker`` with 5 Redis round trips of bookkeeping per job instead of ~27.

    RQ 3.0 sends its worker heartbeat (3 commands, one round trip each) three times per
    job, writes the worker state twice, checks for suspension once, and after a job with
    ``result_ttl=0`` reads the job's status and its executions twice (6 round trips) to
    delete them, around a WATCH for dependents: ~75% of a worker's CPU for a ``demo.echo``
    run on a 2-core machine (docs/PERFORMANCE.md, "Worker"). Here, per job: the dequeue,
    the job fetch, RQ's two start transactions, and one transaction at success that
    deletes the job and its execution and sets the worker idle. What other processes see
    in Redis is RQ's: job status and ``started_at`` while the job runs, the started
    registry, the execution records, the worker hash (at most ``HEARTBEAT_SECONDS`` old).
    Failures, retries and every other job take RQ's own path. Written against RQ 3.0.0's
    worker (requirements.txt pins it; tests/test_worker.py fails on another version).
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        #: Queues whose scheduled jobs this worker's RQ scheduler moves (None: its own).
        self.scheduled_queue_names: list[str] | None = None
        #: Told of each SIGTERM/SIGINT the worker gets (the command's delivery process).
        self.on_stop_signal: Callable[[int], None] | None = None
        #: How long a run may go on once the worker is asked to stop (``warmstop``); None:
        #: RQ's warm stop, which waits for it however long it takes.
        self.stop_seconds: float | None = None
        self._beat_ttl: int | None = None
        self._next_beat = 0.0
        self._next_suspension_check = 0.0

    def heartbeat(self, timeout: int | None = None, pipeline: Pipeline | None = None) -> None:
        ttl = timeout or self.worker_ttl + 60
        if pipeline is not None:
            super().heartbeat(ttl, pipeline)
        elif ttl == self._beat_ttl and time.monotonic() < self._next_beat:
            return  # the hash's TTL was set to this very value moments ago
        else:
            with self.connection.pipeline(transaction=False) as pipe:
                super().heartbeat(ttl, pipe)
                pipe.execute()
        self._beat_ttl, self._next_beat = ttl, time.monotonic() + HEARTBEAT_SECONDS

    def set_state(self, state: str, pipeline: Pipeline | None = None) -> None:
        if pipeline is None and state == self._state:
            return  # RQ sets IDLE after a job and again before the next dequeue
        super().set_state(state, pipeline)

    def check_for_suspension(self, burst: bool) -> None:
        if time.monotonic() < self._next_suspension_check:
            return
        self._next_suspension_check = time.monotonic() + SUSPENSION_CHECK_SECONDS
        super().check_for_suspension(burst)

    def request_stop(self, signum, frame) -> None:
        if self.on_stop_signal is not None:
            self.on_stop_signal(signum)
        if self.stop_seconds is not None and self.get_state() == WorkerStatus.BUSY:
            warmstop.limit.arm(self.stop_seconds)
        super().request_stop(signum, frame)

    def request_force_stop(self, signum, frame) -> None:
        if self.on_stop_signal is not None:
            self.on_stop_signal(signum)
        # A run's handler is stopped and the run handed back (the worker then exits as
        # after a warm stop); anything else takes RQ's cold stop.
        warmstop.limit.interrupt_now()
        super().request_force_stop(signum, frame)

    def _start_scheduler(
        self,
        burst: bool = False,
        logging_level: str | None = "INFO",
        date_format: str = DEFAULT_LOGGING_DATE_FORMAT,
        log_format: str = DEFAULT_LOGGING_FORMAT,
    ) -> None:
        # RQ 3.0's, for ``scheduled_queue_names``: the run worker's scheduler also serves
        # the callback queue of its delivery process, so that one command runs one
        # scheduler (RQ's scheduler locks are per queue: one per queue wins fleet-wide).
        self.scheduler = GatewayScheduler(
            self.scheduled_queue_names or self.queues,
            connection=self.connection,
            logging_level=logging_level if logging_level is not None else self.log.level,
            date_format=date_format,
            log_format=log_format,
            serializer=self.serializer,
        )
        self.scheduler.acquire_locks()
        if self.scheduler.acquired_locks:
            if burst:
                try:
                    self.scheduler.register_birth()
                    self.scheduler.enqueue_scheduled_jobs()
                finally:
                    self.scheduler.release_locks()
                    self.scheduler.register_death()
            else:
                self.scheduler.start()

    def _lean(self, job: Job) -> bool:
        return (
            isinstance(job, GatewayJob)
            and job.refusal() is None  # a refused job fails the ordinary way
            and job.func_name in LEAN_JOBS
            and job.get_result_ttl(self.default_result_ttl) == 0
            and not job.has_rate_limit
            and not job.group_id
            and not job.repeats_left
        )

    def handle_execution_ended(self, job: Job, queue: Queue, heartbeat_ttl: int) -> None:
        if self._lean(job):
            job.ended_at = now()  # RQ also stamps the job's last heartbeat; it is deleted at once
            return
        super().handle_execution_ended(job, queue, heartbeat_ttl)

    def handle_job_success(
        self, job: Job, queue: Queue, started_job_registry: StartedJobRegistry, execution: Execution
    ) -> None:
        if not self._lean(job):
            super().handle_job_success(job, queue, started_job_registry, execution)
            return
        took = job.ended_at - job.started_at
        # What RQ's Job.cleanup(ttl=0) leaves behind, in one MULTI/EXEC and no reads.
        with self.connection.pipeline() as pipe:
            self.increment_successful_job_count(pipeline=pipe)
            self.increment_total_working_time(took, pipe)
            self.cleanup_execution(job, pipeline=pipe, execution=execution)
            pipe.delete(
                job.key, job.dependents_key, job.dependencies_key, Result.get_key(job.id), job.execution_registry.key
            )
            self.set_state(WorkerStatus.IDLE, pipeline=pipe)
            self.heartbeat(pipeline=pipe)
            pipe.execute()
        job._status = JobStatus.FINISHED
        self.log.info("Successfully completed job %s in %ss on worker %s", job.id, took, self.name)


_job_app: Flask | None = None


@contextmanager
def job_app_context() -> Iterator[None]:
    """The app context a job runs in: the one the worker command pushed, or, in a bare
    ``rq worker`` (which knows nothing of Flask), one of an app made once per process."""
    global _job_app
    if has_app_context():
        yield
        return
    if _job_app is None:
        # Found the way ``flask --app gateway`` finds it: the package's ``create_app``
        # factory, called with no arguments. The package never imports its factory.
        _job_app = locate_app("gateway", None)
    with _job_app.app_context():
        yield


def all_queue_names(server: QueueRedis | None = None) -> list[str]:
    """Every node of the registry (of ``server``'s group when given), then the callback queue."""
    nodes = list(tasks.by_node()) if server is None else get_queue_redis().nodes_of(server)
    return [*nodes, CALLBACK_QUEUE]


def queue_redis_of(names: list[str]) -> QueueRedis:
    """The one queue Redis of the queues ``names``; ``NodeGroupError`` if they span several."""
    return get_queue_redis().server_for_queues(names, CALLBACK_QUEUE)


def split_roles(names: list[str]) -> tuple[list[str], list[str]]:
    """(run queues, delivery queues) among the queues a worker command serves."""
    return [name for name in names if name != CALLBACK_QUEUE], [name for name in names if name == CALLBACK_QUEUE]


def build_worker(queue_names: list[str] | None = None, server: QueueRedis | None = None) -> GatewayWorker:
    """A worker that runs jobs in its own process (no fork per job), on ``server`` (by
    default the one queue Redis of ``queue_names``; ``NodeGroupError`` if they span several).

    Forking per job costs far more than our small jobs (RQ 3.0: ~75 vs ~460 no-op
    jobs/s). A handler that crashes the process loses only its run, which its lease
    gives back; the app context pushed by the caller serves every job.
    """
    names = queue_names or all_queue_names(server)
    server = server or queue_redis_of(names)
    # A client of RQ's own: RQ raises its client's socket timeout to outlast its blocking
    # dequeue (415 s), and on the app's shared client the sweeper, lease renewals and
    # delivery enqueues of this process would then wait that long on a hung Redis.
    connection = connect(server.url, current_app.config, decode_responses=False)
    worker = GatewayWorker(
        [make_queue(name, connection) for name in names],
        connection=connection,
        # JSON jobs of the gateway's own functions only (gateway.jobguard).
        serializer=SERIALIZER,
        job_class=GatewayJob,
        # RQ restarts a dead scheduler process (and cleans registries) only in its
        # maintenance pass: every 30 s rather than RQ's 10 minutes.
        maintenance_interval=MAINTENANCE_INTERVAL_SECONDS,
    )
    worker.stop_seconds = float(current_app.config["WORKER_STOP_SECONDS"])
    return worker


def _asked_to_stop(worker: GatewayWorker) -> bool:
    # RQ records the time of a SIGTERM/SIGINT whether or not a job was running (its
    # _stop_requested flag is set only in the busy case).
    return getattr(worker, "_shutdown_requested_date", None) is not None


def _stop_on_signals(on_stop_signal: Callable[[int], None] | None) -> None:
    """Until RQ's own handlers are in place (and again after RQ's worker returned), a
    SIGTERM/SIGINT ends the serve loop, and is passed on."""

    def handler(signum: int, frame: object) -> None:
        if on_stop_signal is not None:
            on_stop_signal(signum)
        raise StopRequested()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def serve(
    names: list[str],
    *,
    server: QueueRedis | None = None,
    burst: bool = False,
    log_level: str = "WARNING",
    scheduled_queue_names: list[str] | None = None,
    with_scheduler: bool = True,
    on_stop_signal: Callable[[int], None] | None = None,
) -> None:
    """Run a worker over ``names`` until asked to stop; start it again after a Redis error."""
    _stop_on_signals(on_stop_signal)
    while True:
        worker = None
        try:
            worker = build_worker(names, server)  # talks to Redis already (CLIENT SETNAME)
            worker.scheduled_queue_names = scheduled_queue_names
            worker.on_stop_signal = on_stop_signal
            current_app.logger.info("worker serving queues: %s", ", ".join(q.name for q in worker.queues))
            worker.work(burst=burst, with_scheduler=with_scheduler, logging_level=log_level.upper())
        except StopRequested:  # a signal before RQ's handlers were in place
            break
        except RedisError as error:  # also raised from RQ's teardown while Redis is down
            if burst:
                raise
            current_app.logger.warning("worker lost Redis: %s", error)
            metrics.redis_error("worker", error)
        finally:
            _stop_on_signals(on_stop_signal)  # RQ's handlers belong to a worker that ended
        # RQ's work() returns on SIGTERM/SIGINT, at the end of a burst, and also when a
        # Redis error reaches its loop (it logs and quits). Only the first two end us:
        # a Redis restart must not leave the machine without workers.
        if burst or (worker is not None and _asked_to_stop(worker)):
            break
        current_app.logger.warning("worker stopped without being asked (Redis error?); starting again")
        try:
            time.sleep(RESTART_DELAY_SECONDS)
        except StopRequested:  # SIGTERM while we wait
            break


def worker_queue_redis(queue_names: list[str] | None, group: str | None) -> tuple[QueueRedis, list[str]]:
    """The queue Redis and the queues of a worker command: ``--group`` names a node group
    by one of its nodes (or ``*``: every node the map does not name), ``--queues`` the
    queues; either alone decides the server. ``NodeGroupError`` explains a bad pair."""
    servers = get_queue_redis()
    if group is not None:
        server = servers.group(group)
        names = queue_names or all_queue_names(server)
        if queue_redis_of(names) is not server and split_roles(names)[0]:
            raise NodeGroupError(f"--queues {','.join(names)}: not all on the queue Redis of group {server.label}")
        return server, names
    if queue_names is None and not servers.single:
        groups = ", ".join(server.label for server in servers.all())
        raise NodeGroupError(
            f"GATEWAY_QUEUE_REDIS_URLS puts the queues on {len(servers.all())} Redis servers: start one worker "
            f"(or more) per server with --group NODE, one of each of these groups: {groups}"
        )
    names = queue_names or all_queue_names()
    return queue_redis_of(names), names


def run(
    queue_names: list[str] | None = None, *, group: str | None = None, burst: bool = False, log_level: str = "WARNING"
) -> bool:
    """``flask --app wsgi worker``: a worker for the node queues and, in a process of its
    own, one for the callback queue, with RQ's scheduler and the sweeper, all on the queue
    Redis of one node group (``worker_queue_redis``). False when Redis did not answer
    within ``GATEWAY_WORKER_START_TIMEOUT_SECONDS``."""
    app = current_app._get_current_object()
    server, names = worker_queue_redis(queue_names, group)
    timeout = app.config["WORKER_START_TIMEOUT_SECONDS"]
    if not wait_for_redis([get_connections().store, server.client], None if timeout is None else float(timeout)):
        return False
    if burst:  # one worker drains everything, deliveries its runs made included
        serve(names, server=server, burst=True, log_level=log_level)
        return True
    runs, deliveries = split_roles(names)
    stop_metrics = _serve_metrics(app)
    sweeper = SweeperThread(app, server)
    sweeper.start()
    delivery_process = None
    try:
        if runs and deliveries:
            delivery_process = DeliveryProcess(
                app, lambda: serve(deliveries, server=server, log_level=log_level, with_scheduler=False)
            )
            delivery_process.start()
        serve(
            runs or deliveries,
            server=server,
            log_level=log_level,
            scheduled_queue_names=names,
            on_stop_signal=delivery_process.signal if delivery_process else None,
        )
    finally:
        if delivery_process is not None:
            # While we wait for it, a signal is only passed on (a second one: its cold stop).
            for signum in (signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, lambda number, frame: delivery_process.signal(number))
            delivery_process.stop()
        sweeper.stop()
        if stop_metrics is not None:
            stop_metrics()
            metricsdir.remove_private_worker_folder()
    return True


def _serve_metrics(app: Flask) -> Callable[[], None] | None:
    """The command's own ``/metrics`` (``GATEWAY_METRICS_PORT``): what its processes (run
    worker, delivery worker) counted; the function that stops it, None without a port."""
    port = app.config["METRICS_PORT"]
    if port is None:
        return None
    host = app.config["METRICS_HOST"]
    stop = metrics.serve(host, int(port), app.config["METRICS_TOKEN"])
    app.logger.info("worker metrics on http://%s:%s/metrics", host, port)
    return stop
