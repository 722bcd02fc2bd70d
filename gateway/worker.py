"""``flask --app wsgi worker``: an RQ worker for every node queue and the callback queue."""

from __future__ import annotations

import click
from flask import current_app
from flask.cli import with_appcontext
from rq import SimpleWorker

from gateway import tasks
from gateway.queues import CALLBACK_QUEUE, get_queues
from gateway.sweeper import SweeperThread


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
    return SimpleWorker([queues.get(name) for name in names], connection=queues.connection)


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
    worker = build_worker(names)
    current_app.logger.info("worker serving queues: %s", ", ".join(q.name for q in worker.queues))
    sweeper = SweeperThread(current_app._get_current_object())
    if not burst:
        sweeper.start()
    try:
        worker.work(burst=burst, with_scheduler=True, logging_level=log_level.upper())
    finally:
        sweeper.stop()
