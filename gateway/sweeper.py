"""Finishes what a dead process left: lost runs and lost deliveries.

Each worker runs a sweeper thread (``flask --app wsgi worker``) for the queue Redis of its
node group; ``flask --app wsgi sweep`` runs one pass over every queue Redis. It reads only
the members of that server's two watch lists whose time has come (``watches``): the cost
grows with the work that is overdue, never with the keyspace. Every action is checked
against the task document by a script or a record, so several sweepers at once do no harm.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from flask import current_app
from redis.exceptions import RedisError

from gateway import documents, logs, metrics
from gateway.queue_redis import get_queue_redis
from gateway.queues import get_queues, request_id_of
from gateway.recent import get_recent
from gateway.replies import Outcome
from gateway.store import get_store
from gateway.watches import get_watches

if TYPE_CHECKING:
    from flask import Flask

    from gateway.queue_redis import QueueRedis

log = logging.getLogger(__name__)

BATCH = 100


@dataclass
class SweepReport:
    runs_checked: int = 0
    runs_requeued: int = 0
    runs_rerun: int = 0
    runs_failed: int = 0
    deliveries_checked: int = 0
    deliveries_requeued: int = 0
    #: Entries found on a queue Redis that no longer serves their node (the map changed),
    #: handed to the sweeper of the one that does.
    moved: int = 0
    actions: list[str] = field(default_factory=list)
    #: The request id of this pass: the runs it queues again carry it (their request's
    #: is not kept), its lines too. A lost delivery keeps its request's.
    sweep_id: str = field(default_factory=lambda: f"sweep-{os.urandom(6).hex()}")

    def summary(self) -> str:
        return (
            f"runs checked {self.runs_checked}, requeued {self.runs_requeued}, rerun {self.runs_rerun}, "
            f"failed {self.runs_failed}; deliveries checked {self.deliveries_checked}, "
            f"requeued {self.deliveries_requeued}"
            + (f"; {self.moved} moved to their node's queue Redis" if self.moved else "")
        )


def sweep_once(server: QueueRedis | None = None) -> SweepReport:
    """One pass over everything overdue now on ``server``'s watch lists (None: on every
    queue Redis), in batches of 100 per list."""
    report = SweepReport()
    for each in [server] if server is not None else get_queue_redis().all():
        _sweep_server(each, report)
    metrics.sweeper_acted("rerun", report.runs_rerun)
    metrics.sweeper_acted("failed_lost", report.runs_failed)
    metrics.sweeper_acted("requeued_run", report.runs_requeued)
    metrics.sweeper_acted("resent_delivery", report.deliveries_requeued)
    return report


def _sweep_server(server: QueueRedis, report: SweepReport) -> None:
    now_ms = int(time.time() * 1000)
    watches, servers = get_watches(), get_queue_redis()
    token = logs.REQUEST_ID.set(report.sweep_id)
    try:
        for task_id, task_name in watches.due_runs(server, now_ms, BATCH):
            if servers.for_task(task_name) is not server:
                watches.move_run(server, task_id, task_name)
                report.moved += 1
                continue
            report.runs_checked += 1
            _check_run(task_id, task_name, report)
        for task_id, task_name, delivery_id in watches.due_deliveries(server, now_ms, BATCH):
            if servers.for_task(task_name) is not server:
                watches.move_delivery(server, task_id, task_name, delivery_id)
                report.moved += 1
                continue
            report.deliveries_checked += 1
            _check_delivery(task_id, task_name, delivery_id, report)
    finally:
        logs.REQUEST_ID.reset(token)


def _check_run(task_id: str, task_name: str, report: SweepReport) -> None:
    queues, watches = get_queues(), get_watches()
    reaped = get_store().reap(task_id, task_name, int(current_app.config["MAX_ATTEMPTS"]))
    if reaped.outcome == Outcome.ENDED:
        _send_unsent(task_id, task_name, report)
        watches.forget_run(task_id, task_name)
    elif reaped.outcome == Outcome.GONE:
        watches.forget_run(task_id, task_name)
    elif reaped.outcome == Outcome.ALIVE:
        if reaped.status == documents.StageStatus.PENDING and not queues.run_job_alive(reaped.token, task_name):
            # Claimed, but its job never reached RQ or was lost there.
            queues.enqueue_run(task_id, task_name, reaped.token, again=True)
            report.runs_requeued += 1
            report.actions.append(f"requeued {task_id}/{task_name}")
        else:
            watches.watch_run(task_id, task_name, min(reaped.lease_ms, watches.lease_check_ms()))
    elif reaped.outcome == Outcome.RERUN:
        queues.enqueue_run(task_id, task_name, reaped.token)
        report.runs_rerun += 1
        report.actions.append(f"rerun {task_id}/{task_name} attempt {reaped.attempt}")
    elif reaped.outcome == Outcome.FAILED:
        state = {"status": documents.StageStatus.FAILED.value, "error": reaped.error, "duration": None}
        result = documents.stage_view(task_name, state, reaped.input_json, None)
        queues.enqueue_deliveries(task_id, task_name, list(reaped.delivery_ids), result)
        watches.forget_run(task_id, task_name)
        get_recent().record_run_ended(task_id, task_name, reaped.error or "lost")
        report.runs_failed += 1
        report.actions.append(f"failed {task_id}/{task_name}")


def _send_unsent(task_id: str, task_name: str, report: SweepReport) -> None:
    """Deliveries that became due when the run ended but were never enqueued (the worker
    died between finish_run and its enqueues): the run's watch entry outlives them."""
    queues, watches = get_queues(), get_watches()
    unsent = [
        record["delivery_id"]
        for record in get_store().callback_records(task_id, task_name)
        if record["status"] == documents.DeliveryStatus.QUEUED
        and not record.get("waiting")
        and not record.get("attempts")
        and not watches.delivery_watched(task_id, task_name, record["delivery_id"])
    ]
    if unsent:
        queues.enqueue_deliveries(task_id, task_name, unsent, get_store().read_stage(task_id, task_name))
        report.deliveries_requeued += len(unsent)
        report.actions.append(f"sent {len(unsent)} unsent deliveries of {task_id}/{task_name}")


def _check_delivery(task_id: str, task_name: str, delivery_id: str, report: SweepReport) -> None:
    queues, watches = get_queues(), get_watches()
    record = get_store().delivery_record(task_id, task_name, delivery_id)
    if record is None or record["status"] != documents.DeliveryStatus.QUEUED or record.get("waiting"):
        watches.forget_delivery(task_id, task_name, delivery_id)
        return
    try_number = record.get("attempts", 0) + 1
    job = queues.delivery_job(task_name, delivery_id, try_number)
    if queues.delivery_job_alive(job):
        watches.watch_delivery_later(task_id, task_name, delivery_id)
        return
    # The try was lost (its worker died, or the enqueue never happened). The lost job
    # still carries the result the delivery was due with; without it, read it now.
    result_json = job.args[3] if job is not None else json.dumps(get_store().read_stage(task_id, task_name))
    original = request_id_of(job) if job is not None else None
    token = logs.REQUEST_ID.set(original or report.sweep_id)
    try:
        queues.enqueue_delivery(task_id, task_name, delivery_id, result_json, try_number, again=True)
    finally:
        logs.REQUEST_ID.reset(token)
    report.deliveries_requeued += 1
    report.actions.append(f"requeued delivery {delivery_id} try {try_number}")


class SweeperThread(threading.Thread):
    """Runs ``sweep_once`` over one queue Redis (its worker's, ``server``) every
    ``GATEWAY_SWEEP_INTERVAL_SECONDS`` in a worker process."""

    def __init__(self, app: Flask, server: QueueRedis) -> None:
        super().__init__(name="gateway-sweeper", daemon=True)
        self._app = app
        self._server = server
        self._interval = float(app.config["SWEEP_INTERVAL_SECONDS"])
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self._interval):
            try:
                with self._app.app_context():
                    report = sweep_once(self._server)
                for action in report.actions:
                    log.warning("sweeper: %s", action, extra={"request_id": report.sweep_id})
            except Exception as error:  # Redis down: try again next interval
                if isinstance(error, RedisError):
                    metrics.redis_error("sweeper", error)
                log.warning("sweep failed", exc_info=True)

    def stop(self) -> None:
        self._stop_event.set()
