"""What the Lua scripts answer, typed: one enum of their outcomes, one small result per
script that answers more than a flag (each parsed here, from the reply array that the
script's ``Output:`` header describes), and the one place that turns an outcome into the
exception a caller sees.

``store`` calls the scripts and hands back these results; nobody else reads a reply.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import StrEnum

from gateway.exceptions import (
    CallbackRecordsTooLarge,
    ClaimLost,
    DeliveryNotFound,
    DeliveryQueued,
    DocumentGone,
    InputMismatch,
    NothingToCancel,
    NothingToRetry,
    StageLive,
    StageNotFound,
    TaskBusy,
    TaskNotFound,
    TooManyCallbacks,
    TooManyStages,
)
from gateway.tenancy import public


class Outcome(StrEnum):
    """The first element of a script's reply, when it is not a claim verdict
    (``documents.VerdictState``). Values as the scripts write them."""

    OK = "ok"
    #: The document or the stage is gone (expired or deleted).
    GONE = "gone"
    #: Another claim is current, or the stage already ended.
    SUPERSEDED = "superseded"
    #: This claim runs elsewhere and its lease is alive (``start_run``).
    RUNNING = "running"
    #: No such task (``cancel_task``, ``delete_task``, ``retry_task``; a read).
    MISSING = "missing"
    #: The task has live stages and ``force`` was not given (``delete_task``).
    BUSY = "busy"
    DELETED = "deleted"
    # cancel_task, retry_task: the stage named does not exist
    NO_STAGE = "no_stage"
    # cancel_task: no stage looked at is PENDING or RUNNING
    NOT_LIVE = "not_live"
    # reap_run: what became of a run whose lease is over
    ENDED = "ended"
    ALIVE = "alive"
    RERUN = "rerun"
    FAILED = "failed"
    # claim_stage: refused, nothing written
    TOO_MANY_STAGES = "too_many_stages"
    TOO_MANY_CALLBACKS = "too_many_callbacks"
    CALLBACK_RECORDS_TOO_LARGE = "callback_records_too_large"
    #: "if_input_differs": "reject" and the stored input differs
    INPUT_MISMATCH = "input_mismatch"
    # retry_task: no stage looked at is FAILED
    NOT_FAILED = "not_failed"
    # resend_delivery: no such delivery / it is still queued / its stage runs again
    NO_DELIVERY = "no_delivery"
    DELIVERY_QUEUED = "delivery_queued"
    STAGE_LIVE = "stage_live"


#: The claim script's refusals, which come where a verdict would.
CLAIM_REFUSALS = frozenset(
    {Outcome.TOO_MANY_STAGES, Outcome.TOO_MANY_CALLBACKS, Outcome.CALLBACK_RECORDS_TOO_LARGE, Outcome.INPUT_MISMATCH}
)


def outcome_error(
    outcome: str,
    task_id: str,
    *,
    task_name: str = "",
    limit: int = 0,
    stages: list[str] | None = None,
    statuses: dict[str, str] | None = None,
    delivery_id: str = "",
) -> Exception:
    """The exception for a script outcome that is not a success. ``task_id`` is the store
    id (messages show the public one); ``limit`` is the configured bound a refusal hit;
    ``stages`` the live stages that keep a task busy; ``statuses`` the status of each stage
    a cancel found not live."""
    shown = public(task_id)
    if outcome == Outcome.MISSING:
        return TaskNotFound(f"task {shown!r} not found", {"task_id": shown})
    if outcome == Outcome.GONE:
        return DocumentGone()
    if outcome in (Outcome.SUPERSEDED, Outcome.RUNNING):
        return ClaimLost(outcome)
    if outcome == Outcome.BUSY:
        return TaskBusy(
            f"task {shown!r} has pending or running stages; cancel them or pass force", {"stages": stages or []}
        )
    if outcome == Outcome.NO_STAGE:
        return StageNotFound(f"task {shown!r} has no stage {task_name!r}", {"task_id": shown, "task_name": task_name})
    if outcome == Outcome.NOT_LIVE:
        which = f"stage {task_name!r} is not" if task_name else "no stage is"
        message = f"task {shown!r}: {which} pending or running; nothing to cancel"
        return NothingToCancel(message, {"task_id": shown, "stages": statuses or {}})
    if outcome == Outcome.NOT_FAILED:
        which = f"stage {task_name!r} has not" if task_name else "no stage has"
        return NothingToRetry(
            f"task {shown!r}: {which} failed; nothing to retry", {"task_id": shown, "stages": statuses or {}}
        )
    if outcome == Outcome.NO_DELIVERY:
        return DeliveryNotFound(
            f"task {shown!r} has no delivery {delivery_id!r}", {"task_id": shown, "delivery_id": delivery_id}
        )
    if outcome == Outcome.DELIVERY_QUEUED:
        return DeliveryQueued(
            "the delivery is still queued; it can be sent again once its tries are over",
            {"task_id": shown, "task_name": task_name, "delivery_id": delivery_id},
        )
    if outcome == Outcome.STAGE_LIVE:
        return StageLive(
            f"stage {task_name!r} runs again and has no current result yet; send the delivery again once it ends",
            {"task_id": shown, "task_name": task_name, "delivery_id": delivery_id},
        )
    if outcome == Outcome.INPUT_MISMATCH:
        return InputMismatch(
            f"stage {task_name!r} of task {shown!r} holds a different input_data, and if_input_differs is 'reject'",
            {"task_id": shown, "task_name": task_name},
        )
    if outcome == Outcome.TOO_MANY_STAGES:
        return TooManyStages(f"task {shown!r} already holds {limit} stages, the most allowed", {"limit": limit})
    if outcome == Outcome.TOO_MANY_CALLBACKS:
        return TooManyCallbacks(f"stage {task_name!r} already holds {limit} undelivered callbacks", {"limit": limit})
    if outcome == Outcome.CALLBACK_RECORDS_TOO_LARGE:
        return CallbackRecordsTooLarge(
            f"stage {task_name!r} has no room for another callback record: its records would take more "
            f"than {limit} bytes, and only finished ones are forgotten to make room",
            {"limit_bytes": limit},
        )
    raise ValueError(f"script outcome {outcome!r} is no error")


@dataclass(frozen=True)
class Started:
    """``start_run``: the run is RUNNING."""

    attempt: int
    input_json: str

    @classmethod
    def parse(cls, reply: list) -> Started:
        return cls(attempt=int(reply[1]), input_json=reply[2])


@dataclass(frozen=True)
class Reaped:
    """``reap_run``: what became of a run whose lease is over. Which fields are set
    depends on ``outcome``."""

    #: GONE | ENDED | ALIVE | RERUN | FAILED
    outcome: Outcome
    #: ALIVE: the stage status (PENDING or RUNNING).
    status: str | None = None
    #: ALIVE: the current claim's token; RERUN: the new claim's token.
    token: str | None = None
    #: ALIVE: when the lease ends (epoch ms).
    lease_ms: int | None = None
    #: RERUN: the new attempt's number.
    attempt: int | None = None
    #: FAILED: the stage's stored input and the error it ended with.
    input_json: str | None = None
    error: str | None = None
    #: FAILED: the deliveries now due.
    delivery_ids: tuple[str, ...] = ()

    @classmethod
    def parse(cls, reply: list) -> Reaped:
        outcome = Outcome(reply[0])
        if outcome == Outcome.ALIVE:
            return cls(outcome, status=reply[1], token=reply[2], lease_ms=int(reply[3]))
        if outcome == Outcome.RERUN:
            return cls(outcome, attempt=int(reply[1]), token=reply[2])
        if outcome == Outcome.FAILED:
            return cls(outcome, input_json=reply[1], error=reply[2], delivery_ids=tuple(reply[3:]))
        return cls(outcome)


@dataclass(frozen=True)
class Cancelled:
    """``cancel_task``: the stages it cancelled and the deliveries that became due."""

    #: task name → the stage's stored input JSON
    inputs: dict[str, str]
    #: (task name, delivery id) of each delivery now due
    due: list[tuple[str, str]]
    #: task name → claim token of each stage cancelled while PENDING (its job may wait in RQ)
    pending: dict[str, str] = field(default_factory=dict)
    #: names of the stages cancelled while RUNNING (their handlers are told at their next check)
    running: list[str] = field(default_factory=list)

    @classmethod
    def parse(cls, reply: list) -> Cancelled:
        cancelled = cls({}, [])
        triples = reply[1:]
        for i in range(0, len(triples), 3):
            kind, task_name, value = triples[i : i + 3]
            if kind == "stage":
                cancelled.inputs[task_name] = value
            elif kind == "pending":
                cancelled.pending[task_name] = value
            elif kind == "running":
                cancelled.running.append(task_name)
            else:
                cancelled.due.append((task_name, value))
        return cancelled

    @staticmethod
    def statuses(reply: list) -> dict[str, str]:
        """task name → status, from a ``not_live`` reply."""
        triples = reply[1:]
        return {triples[i + 1]: triples[i + 2] for i in range(0, len(triples), 3)}


@dataclass(frozen=True)
class Retried:
    """``retry_task``: the stages claimed again, all under one token."""

    token: str
    task_names: list[str]
    #: task name → the delivery id of its new callback record (only with a callback)
    deliveries: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, token: str, reply: list) -> Retried:
        pairs = reply[1:]
        names = pairs[0::2]
        deliveries = {name: delivery for name, delivery in zip(names, pairs[1::2], strict=True) if delivery}
        return cls(token, sorted(names), deliveries)


@dataclass(frozen=True)
class Resent:
    """``resend_delivery``: the delivery marked queued again, and what its try carries."""

    task_name: str
    #: the stage state, for the stage's current result
    stage: dict
    input_json: str
    output_json: str | None
    #: the try number to enqueue
    try_number: int

    @classmethod
    def parse(cls, reply: list) -> Resent:
        return cls(reply[1], json.loads(reply[2]), reply[3], reply[4] or None, int(reply[5]))
