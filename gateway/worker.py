"""``flask --app wsgi worker``: an RQ worker for every node queue and the callback queue."""

from __future__ import annotations

import time

import click
from flask import current_app
from flask.cli import with_appcontext
from redis.exceptions import RedisError
from rq import SimpleWorker
from rq.exceptions import StopRequested

from gateway import tasks
from gateway.queues import CALLBACK_QUEUE, get_queues
from gateway.sweeper import SweeperThread

MAINTENANCE_INTERVAL_SECONDS = 30
#: Pause before a worker that stopped on a Redis error starts again.
RESTART_DELAY_SECONDS = 1.0


def all_queue_names() -> list[str]:
    """Every node of the registry, then the callback queue."""
    return [*tasks.by_node(), CALLBACK_QUEUE]


def build_worker(queue_names: list[str] | None = None) -> SimpleWorker:
    """A worker that runs jobs in its own process (no fork per job).

    Forking per job costs far more than our small jobs (RQ 3.0: ~75 vs ~460 no-op
    jobs/s). A handler that crashes the process loses only its run, which its lease
    gives back; the app context pushed by the caller serves every job.
    """
    queues = get_queues()
    names = queue_names or all_queue_names()
    return SimpleWorker(
        [queues.get(name) for name in names],
        connection=queues.connection,
        # RQ restarts a dead scheduler process (and cleans registries) only in its
        # maintenance pass: every 30 s rather than RQ's 10 minutes.
        maintenance_interval=MAINTENANCE_INTERVAL_SECONDS,
    )


def _asked_to_stop(worker: SimpleWorker) -> bool:
    # RQ records the time of a SIGTERM/SIGINT whether or not a job was running (its
    # _stop_requested flag is set only in the busy case).
    return getattr(worker, "_shutdown_requested_date", None) is not None


@click.command("worker")
@click.option("--queues", "queue_names", help="Comma-separated queues to serve (default: all).")
@click.option("--burst", is_flag=True, help="Drain the queues, then exit.")
@click.option(
    "--log-level", default="WARNING", show_default=True, help="RQ's log level; INFO logs every job (about 5% slower)."
)
@with_appcontext
def worker_command(queue_names: str | None, burst: bool, log_level: str) -> None:
    """Run an RQ worker with RQ's scheduler (it carries callback retries)."""
    names = [name.strip() for name in queue_names.split(",") if name.strip()] if queue_names else None
    sweeper = SweeperThread(current_app._get_current_object())
    if not burst:
        sweeper.start()
    try:
        while True:
            worker = None
            try:
                worker = build_worker(names)  # talks to Redis already (CLIENT SETNAME)
                current_app.logger.info("worker serving queues: %s", ", ".join(q.name for q in worker.queues))
                worker.work(burst=burst, with_scheduler=True, logging_level=log_level.upper())
            except RedisError as error:  # also raised from RQ's teardown while Redis is down
                if burst:
                    raise
                current_app.logger.warning("worker lost Redis: %s", error)
            # RQ's work() returns on SIGTERM/SIGINT, at the end of a burst, and also when a
            # Redis error reaches its loop (it logs and quits). Only the first two end us:
            # a Redis restart must not leave the machine without workers.
            if burst or (worker is not None and _asked_to_stop(worker)):
                break
            current_app.logger.warning("worker stopped without being asked (Redis error?); starting again")
            try:
                time.sleep(RESTART_DELAY_SECONDS)
            except StopRequested:  # SIGTERM while we wait: RQ's handler is still installed
                break
    finally:
        sweeper.stop()
