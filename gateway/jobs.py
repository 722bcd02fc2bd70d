"""The RQ entry points, ``run_stage`` and ``deliver`` (``jobguard`` runs no other function).

They take ids and plain data, never request state, and build what they need from the app
(``worker.job_app_context``: the worker's, or one made for a bare ``rq worker``).
"""

from __future__ import annotations

import functools
import json
import logging
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING

from flask import current_app
from rq import get_current_job

from gateway import callbacks, documents, jsontext, leases, logs, metrics, signing, tasks, warmstop
from gateway.exceptions import ClaimLost, DocumentGone, RunCancelled, WorkerStopping
from gateway.queues import get_queues, request_id_of
from gateway.recent import get_recent
from gateway.runcontrol import RunControl
from gateway.store import get_store
from gateway.tenancy import public, tenant_of
from gateway.watches import get_watches
from gateway.worker import job_app_context

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from gateway.store import Store

log = logging.getLogger(__name__)

#: A try's recorded status → its outcome in ``gateway_delivery_tries_total``.
_TRY_OUTCOMES = {
    documents.DeliveryStatus.SENT: "sent",
    documents.DeliveryStatus.QUEUED: "retry",
    documents.DeliveryStatus.FAILED: "failed",
}


def _renewal(store: Store, task_id: str, task_name: str, token: str, control: RunControl) -> Callable[[], bool]:
    watches = get_watches()

    def renew() -> bool:
        if not store.renew(task_id, task_name, token):
            control.lose_claim()  # the handler stops at its next check (``runcontrol``)
            return False
        watches.run_renewed(task_id, task_name)
        return True

    return renew


def _output_json(output: object, max_bytes: int) -> str:
    """The handler's result as stored JSON; ValueError explains why it cannot be."""
    if not isinstance(output, dict):
        raise ValueError(f"handler returned {type(output).__name__}, expected a JSON object (dict)")
    try:
        text = documents.canonical_json(output)
    except (TypeError, ValueError) as error:
        raise ValueError(f"handler returned data that is not JSON: {error}") from None
    size = jsontext.utf8_length(text)
    if size > max_bytes:
        raise ValueError(f"handler output is {size} bytes, more than the limit of {max_bytes}")
    return text


def safe_text(text: str, limit: int = 2000) -> str:
    """Text that Redis can store: UTF-8-encodable (a lone surrogate from a caller's input
    would make redis-py fail) and bounded."""
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= limit else text[: limit - 1] + "…"


@contextmanager
def _queued_request_id() -> Iterator[None]:
    """While a job runs, the request id it was queued with is the current one: its log
    lines carry it, and so do the jobs it queues (deliveries, their next tries)."""
    job = get_current_job()
    token = logs.REQUEST_ID.set(request_id_of(job) if job is not None else None)
    try:
        yield
    finally:
        logs.REQUEST_ID.reset(token)


def _task_fields(task_id: str, task_name: str) -> dict[str, object]:
    """The fields that name a run's or delivery's task in a log line (the caller's id)."""
    return {"task_id": public(task_id), "tenant": tenant_of(task_id), "task_name": task_name}


def run_stage(task_id: str, task_name: str, token: str) -> str:
    """Run one claimed stage: RUNNING, handler with its lease renewed, SUCCESS or FAILED, callbacks."""
    with job_app_context(), _queued_request_id():
        fields = _task_fields(task_id, task_name)
        store = get_store()
        try:
            run = store.start(task_id, task_name, token)
        except (ClaimLost, DocumentGone) as error:
            log.info("run skipped: %s", type(error).__name__, extra=fields)
            return f"skipped: {type(error).__name__} {error}"
        fields["attempt"] = run.attempt
        log.info("run started", extra=fields)

        watches = get_watches()
        watches.run_started(task_id, task_name)
        get_recent().record_run_started(task_id)
        metrics.run_started(task_name)
        handler = tasks.get_handler(task_name)
        control = RunControl(functools.partial(store.report_progress, task_id, task_name, token), leases.keeper)
        # The caller's own id: the store id's tenant prefix is the gateway's business.
        context = tasks.TaskContext(
            task_id=public(task_id),
            task_name=task_name,
            attempt=run.attempt,
            tenant=tenant_of(task_id),
            _control=control,
        )
        output_json, error, stopped = None, None, False
        started = time.perf_counter()
        with leases.keeper.hold(_renewal(store, task_id, task_name, token, control), store.run_lease_ms / 3000):
            try:
                if handler is None:
                    raise LookupError(f"task {task_name!r} is not registered in this worker")
                with warmstop.limit.interruptible():
                    output = handler(json.loads(run.input_json), context)
                output_json = _output_json(output, current_app.config["MAX_OUTPUT_BYTES"])
            except WorkerStopping:  # the worker is stopping and its limit is over
                stopped = True
            # The handler's failure is the stage's result. RunCancelled (its run's claim is
            # gone) goes the same way: the finish below is refused and nothing is written.
            except (Exception, RunCancelled) as exc:
                error = safe_text(f"{type(exc).__name__}: {exc}")
        duration = round(time.perf_counter() - started, 6)
        control.close()  # the last progress reported is written before the run ends
        if stopped:
            return _hand_back(store, task_id, task_name, token)

        fields["duration_ms"] = round(duration * 1000, 3)
        try:
            due = store.finish(task_id, task_name, token, output_json=output_json, error=error, duration=duration)
        except (ClaimLost, DocumentGone) as lost:
            # Cancelled, or taken over by the sweeper: what this run made is not kept.
            log.info("run discarded: %s", type(lost).__name__, extra=fields)
            metrics.run_ended(task_name, "discarded", duration)
            return f"discarded: {type(lost).__name__}"
        status = documents.StageStatus.FAILED if error else documents.StageStatus.SUCCESS
        metrics.run_ended(task_name, "failed" if error else "success", duration)
        fields["status"] = status.value
        if error:
            # The handler's own message (a task should keep user data out of its exceptions).
            log.warning("run failed", extra={**fields, "error": error})
        else:
            log.info("run ended", extra=fields)
        if due:
            result = documents.stage_view(
                task_name, {"status": status.value, "error": error, "duration": duration}, run.input_json, output_json
            )
            get_queues().enqueue_deliveries(task_id, task_name, due, result)
        watches.run_finished(task_id, task_name, deliveries_queued=bool(due))
        get_recent().record_run_ended(task_id, task_name, error)
        return status.value


#: A try's outcome in its log line, by the status it leaves its delivery in.
_TRY_OUTCOME = {
    documents.DeliveryStatus.SENT: "sent",
    documents.DeliveryStatus.QUEUED: "retry",
    documents.DeliveryStatus.FAILED: "failed",
}


def _hand_back(store: Store, task_id: str, task_name: str, token: str) -> str:
    """Queue an interrupted run again, for another worker (``warmstop``)."""
    try:
        new_token = store.hand_back(task_id, task_name, token)
    except (ClaimLost, DocumentGone) as lost:
        return f"discarded: {type(lost).__name__}"
    get_queues().enqueue_run(task_id, task_name, new_token)
    fields = {"task_id": task_id, "task_name": task_name}
    log.warning("run handed back to its queue: the worker is stopping", extra=fields)
    return "handed back"


def deliver(task_id: str, task_name: str, delivery_id: str, result_json: str, try_number: int = 1) -> str:
    """Make one try of one delivery, record it, and schedule the next try if needed."""
    with job_app_context(), _queued_request_id():
        fields = {**_task_fields(task_id, task_name), "delivery_id": delivery_id, "try": try_number}
        config = current_app.config
        store = get_store()
        entry = store.delivery_record(task_id, task_name, delivery_id)
        if entry is None:
            log.info("delivery gone: its task or record was deleted", extra={**fields, "outcome": "gone"})
            metrics.delivery_tried("gone")
            return "gone"
        if entry["status"] != documents.DeliveryStatus.QUEUED or entry.get("attempts", 0) >= try_number:
            return "already done"  # a duplicate job for a try that was made

        started = time.perf_counter()
        try:
            body = callbacks.dumps(callbacks.payload(task_id, task_name, entry, json.loads(result_json)))
            outcome = callbacks.post(
                entry["url"],
                body,
                callbacks.headers(delivery_id, body, signing.secrets_for(task_id)),
                timeout=float(config["CALLBACK_TIMEOUT_SECONDS"]),
                policy=config["CALLBACK_POLICY"],
            )
        except Exception as error:
            # Whatever breaks a try is a failed try, recorded and retried on the schedule.
            # Left to RQ, it would leave no trace in the record, and a failed job holding
            # the result that the sweeper sends again and again.
            log.warning("delivery %s try %d failed unexpectedly", delivery_id, try_number, exc_info=True)
            outcome = callbacks.TryOutcome(False, error=f"internal error: {type(error).__name__}: {error}")
        took = time.perf_counter() - started
        status, delay = callbacks.next_try(
            outcome,
            # A delivery sent again (resend) starts its retry schedule again.
            try_number - entry.get("resent_after", 0),
            intervals=config["CALLBACK_RETRY_INTERVALS"],
            max_retry_after=float(config["CALLBACK_MAX_RETRY_AFTER_SECONDS"]),
        )
        _log_try(fields, entry["url"], outcome, status, delay, took)
        store.record_delivery(
            task_id,
            task_name,
            delivery_id,
            status=status,
            attempts=try_number,
            status_code=outcome.status_code,
            error=safe_text(outcome.error) if outcome.error else None,
        )
        metrics.delivery_tried(_TRY_OUTCOMES[status], took)
        if status != documents.DeliveryStatus.QUEUED:
            get_watches().forget_delivery(task_id, task_name, delivery_id)
        else:
            get_queues().enqueue_delivery(task_id, task_name, delivery_id, result_json, try_number + 1, delay=delay)
        get_recent().record_delivery_try(
            task_id, task_name, delivery_id, url=entry["url"], delivered=outcome.delivered, error=outcome.error,
            attempt=try_number, final=status != documents.DeliveryStatus.QUEUED,
        )  # fmt: skip
        return status.value


def _log_try(
    fields: dict,
    url: str,
    outcome: callbacks.TryOutcome,
    status: documents.DeliveryStatus,
    delay: float,
    seconds: float,
) -> None:
    """One line per delivery try: INFO when sent, WARNING when it failed (retried or given
    up). The callback as ``scheme://host:port/path``; its userinfo and query string, which
    may hold the receiver's secrets, appear neither there nor in the error."""
    kind = "gone" if status == documents.DeliveryStatus.FAILED and outcome.status_code == 410 else _TRY_OUTCOME[status]
    line = {
        **fields,
        "outcome": kind,
        "status_code": outcome.status_code,
        "callback": logs.callback_target(url),
        "duration_ms": round(seconds * 1000, 3),
    }
    if outcome.delivered:
        log.info("delivery sent", extra=line)
        return
    line["error"] = logs.redact(outcome.error, url)
    if status == documents.DeliveryStatus.QUEUED:
        log.warning("delivery try failed, will retry", extra={**line, "retry_in_s": delay})
    else:
        log.warning("delivery failed, given up", extra=line)
