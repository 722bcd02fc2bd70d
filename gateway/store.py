"""The only module that talks to task documents: every read and every scripted write.

One ``Store`` per app, kept in ``app.extensions``; every write is one Lua script call
(see ``lua/``), so each decision sees and changes a document atomically. The ``task_id``
arguments are store ids, scoped to a tenant (``tenancy.scoped``); what the store returns
to callers carries the public id.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

import redis
from flask import current_app

from gateway import documents, ids, keys
from gateway.connections import get_connections
from gateway.exceptions import StageNotFound
from gateway.replies import (
    CLAIM_REFUSALS,
    Cancelled,
    Outcome,
    Reaped,
    Resent,
    Retried,
    Started,
    outcome_error,
)
from gateway.scripts import make_scripts
from gateway.tenancy import public
from gateway.watches import get_watches

if TYPE_CHECKING:
    from flask import Flask
    from redis.cluster import RedisCluster

    from gateway.watches import Watches

#: Claim reply → verdict state: a dict lookup, the cheapest way to the enum member.
_VERDICT_STATES = {state.value: state for state in documents.VerdictState}
#: Delivery attempts listed in a callback record (1 try + 5 retries by default fit).
MAX_TRIES_KEPT = 20
#: Characters of a try's error kept in a callback record: with MAX_TRIES_KEPT, what one
#: record can grow to after the claim script measured it (docs/DESIGN.md, "Storage sizes").
MAX_TRY_ERROR_CHARS = 300


# Not frozen: a frozen dataclass sets each of its ten fields through object.__setattr__,
# about 5 us of every reuse hit. Nothing changes a verdict after ``claim`` made it.
@dataclass
class Verdict:
    """What ``claim`` decided for one create request."""

    task_id: str
    task_name: str
    state: documents.VerdictState
    #: Whether the request's input equals the stored stage's input; None on a miss.
    input_matches: bool | None
    #: The stage's facts after the write, as the claim script returns them (``lua/include/stage.lua``).
    facts: str
    input_json: str
    output_json: str | None
    #: The delivery that this request's callback became, None without a callback.
    delivery_id: str | None
    #: True when that delivery must be made now (a completed hit).
    delivery_due: bool
    #: The claim token of the run this request started; "" on a hit.
    token: str

    @property
    def hit(self) -> bool:
        return self.state in documents.HIT_STATES

    @cached_property
    def stage(self) -> dict[str, Any]:
        """What ``documents.stage_view`` reads of the stage: status, error, duration.

        A hit's stage has no error: it is live or SUCCESS, and finish_run drops the error
        of a SUCCESS."""
        return documents.stage_from_facts(self.facts)

    @property
    def cached_ms(self) -> int | None:
        if self.state != documents.VerdictState.COMPLETED:
            return None
        return self.stage.get("finished_ms")


class Store:
    def __init__(self, client: redis.Redis | RedisCluster, config: dict[str, Any], watches: Watches) -> None:
        self.client = client
        self.watches = watches
        self.scripts = make_scripts(client, config)
        self.ttl = int(config["TASK_TTL_SECONDS"])
        self.queue_lease_ms = int(float(config["QUEUE_LEASE_SECONDS"]) * 1000)
        self.run_lease_ms = int(float(config["RUN_LEASE_SECONDS"]) * 1000)
        self.max_stages = int(config["MAX_STAGES_PER_TASK"])
        self.max_callbacks = int(config["MAX_CALLBACKS_PER_STAGE"])
        self.max_callback_bytes = int(config["MAX_CALLBACK_BYTES_PER_STAGE"])
        #: The claim script's terms after the two ids (``lua/claim_stage.lua``, ARGV[3]).
        self._claim_terms = (
            f" {self.queue_lease_ms} {self.ttl} {self.max_stages} {self.max_callbacks} {self.max_callback_bytes}"
        )
        #: The bound each refusal of the claim script hit.
        self._claim_limits = {
            Outcome.TOO_MANY_STAGES: self.max_stages,
            Outcome.TOO_MANY_CALLBACKS: self.max_callbacks,
            Outcome.CALLBACK_RECORDS_TOO_LARGE: self.max_callback_bytes,
        }

    # -- writes, each one script -------------------------------------------------

    def claim(
        self, task_id: str, task_name: str, input_data: dict, callback_url: str | None, policy: str = ""
    ) -> Verdict:
        """Decide the reuse verdict and write what it needs, in one script call (and,
        where the script cannot write the run's watch entry, one write before it).

        ``policy`` is the caller's reuse policy as the script takes it (ARGV[5],
        ``schemas.claim_policy``): "" for the default."""
        input_json = documents.canonical_json(input_data)
        # A stage stored before UTF-8 storage holds the ASCII form of the same input.
        ascii_json = documents.ascii_canonical_json(input_data, input_json)
        watch_keys, watch_terms = self.watches.watch_claim(task_id, task_name)
        # The terms in one argument (ARGV[3]): each argument costs about 3k instructions
        # to send. The two ids are drawn on every create (from a batch: ``ids``): asking
        # the script for them would cost a miss a second round trip.
        args = [task_name, input_json, f"{ids.id_pair_hex()}{self._claim_terms}{watch_terms}"]
        if callback_url or policy or ascii_json:
            args += (callback_url or "", policy, ascii_json or "")
        result = self.scripts("claim_stage", [keys.task_document(task_id), *watch_keys], args)
        state, matches, facts, stored_input, stored_output, delivery_id, due, token = result
        if state in CLAIM_REFUSALS:
            raise outcome_error(state, task_id, task_name=task_name, limit=self._claim_limits.get(state, 0))
        # By position, in the order of the fields: keywords take twice as long (8.8k
        # instructions against 4.5k).
        return Verdict(
            public(task_id),
            task_name,
            _VERDICT_STATES[state],
            None if matches == "" else matches == "1",  # input_matches
            facts,
            stored_input or input_json,  # the stored input: "" when it is the input sent
            stored_output or None,
            delivery_id or None,
            due == "1",  # delivery_due
            token,
        )

    def start(self, task_id: str, task_name: str, token: str) -> Started:
        """Mark the run RUNNING. Raises ClaimLost/DocumentGone.

        The run's watch entry moves to the end of its lease in the same step, when the
        script may write it (``watches``); otherwise the caller moves it."""
        watch_keys, watch_args = self.watches.run_script_args(task_id, task_name)
        result = self.scripts(
            "start_run",
            [keys.task_document(task_id), *watch_keys],
            [task_name, token, self.run_lease_ms, self.ttl, *watch_args],
        )
        if result[0] != Outcome.OK:
            raise outcome_error(result[0], task_id)
        return Started.parse(result)

    def hand_back(self, task_id: str, task_name: str, token: str) -> str:
        """Make a RUNNING run PENDING again under a new claim token, which it returns, for
        the caller to enqueue (``lua/hand_back_run.lua``). Raises ClaimLost/DocumentGone."""
        new_token, _ = ids.id_pair()
        result = self.scripts(
            "hand_back_run",
            [keys.task_document(task_id)],
            [task_name, token, new_token, self.queue_lease_ms, self.ttl],
        )
        if result[0] != Outcome.OK:
            raise outcome_error(result[0], task_id)
        return new_token

    def reap(self, task_id: str, task_name: str, max_lost: int) -> Reaped:
        """Re-claim or fail a run whose lease is over (``lua/reap_run.lua``)."""
        result = self.scripts(
            "reap_run",
            [keys.task_document(task_id)],
            [task_name, ids.fresh_id(), max_lost, self.queue_lease_ms, self.ttl],
        )
        return Reaped.parse(result)

    def renew(self, task_id: str, task_name: str, token: str) -> bool:
        """Extend a RUNNING run's lease; False once its claim is gone."""
        renewed = self.scripts(
            "renew_lease",
            [keys.task_document(task_id)],
            [task_name, token, self.run_lease_ms, self.ttl],
        )
        return renewed == 1

    def report_progress(
        self, task_id: str, task_name: str, token: str, progress: tuple[float, str | None] | None
    ) -> bool:
        """Store a RUNNING run's progress ``(fraction, message)``, or with None only look;
        True while the run's claim is current (``lua/report_progress.lua``)."""
        fraction, message = progress if progress is not None else ("", None)
        current = self.scripts(
            "report_progress",
            [keys.task_document(task_id)],
            [task_name, token, fraction, message or "", self.ttl],
        )
        return current == 1

    def finish(
        self,
        task_id: str,
        task_name: str,
        token: str,
        *,
        output_json: str | None,
        error: str | None,
        duration: float,
    ) -> list[str]:
        """End the run SUCCESS (output) or FAILED (error); returns the deliveries now due.

        With no delivery due, the run's watch entry is dropped in the same step when the
        script may write it (``watches``); otherwise the caller drops it
        (``Watches.run_finished``) once it queued the deliveries."""
        status = documents.StageStatus.SUCCESS if error is None else documents.StageStatus.FAILED
        watch_keys, watch_args = self.watches.run_script_args(task_id, task_name)
        result = self.scripts(
            "finish_run",
            [keys.task_document(task_id), *watch_keys],
            [task_name, token, status.value, output_json or "", error or "", round(duration, 6), self.ttl, *watch_args],
        )
        if result[0] != Outcome.OK:
            raise outcome_error(result[0], task_id)
        return list(result[1:])

    def record_delivery(
        self,
        task_id: str,
        task_name: str,
        delivery_id: str,
        *,
        status: documents.DeliveryStatus,
        attempts: int,
        status_code: int | None,
        error: str | None,
    ) -> bool:
        recorded = self.scripts(
            "record_delivery",
            [keys.task_document(task_id)],
            [task_name, delivery_id, status, attempts, status_code or "", _try_error(error), self.ttl, MAX_TRIES_KEPT],
        )
        return recorded == 1

    def cancel(self, task_id: str, task_name: str | None = None) -> Cancelled:
        """Cancel the live stages, or only ``task_name``'s; the deliveries waiting on them
        become due. TaskNotFound, StageNotFound, or NothingToCancel when none was live."""
        result = self.scripts("cancel_task", [keys.task_document(task_id)], [self.ttl, task_name or ""])
        if result[0] == Outcome.NOT_LIVE:
            raise outcome_error(result[0], task_id, task_name=task_name or "", statuses=Cancelled.statuses(result))
        if result[0] != Outcome.OK:
            raise outcome_error(result[0], task_id, task_name=task_name or "")
        return Cancelled.parse(result)

    def delete(self, task_id: str, *, force: bool) -> None:
        result = self.scripts("delete_task", [keys.task_document(task_id)], ["1" if force else "0"])
        if result[0] != Outcome.DELETED:
            raise outcome_error(result[0], task_id, stages=list(result[1:]))

    def retry(self, task_id: str, *, task_name: str | None = None, callback_url: str | None = None) -> Retried:
        """Claim every FAILED stage (or only ``task_name``) again, all under one new token,
        with ``callback_url`` subscribed to each new run."""
        token, delivery_seed = ids.id_pair()
        watch_keys, watch_args = self.watches.retry_script_args(task_id)
        result = self.scripts(
            "retry_task",
            [keys.task_document(task_id), *watch_keys],
            [
                token,
                self.queue_lease_ms,
                self.ttl,
                task_name or "",
                callback_url or "",
                delivery_seed,
                self.max_callbacks,
                self.max_callback_bytes,
                *watch_args,
            ],
        )
        outcome = result[0]
        if outcome == Outcome.OK:
            return Retried.parse(token, result)
        if outcome == Outcome.NOT_FAILED:
            statuses = dict(zip(result[1::2], result[2::2], strict=True))
            raise outcome_error(outcome, task_id, task_name=task_name or "", statuses=statuses)
        if outcome in CLAIM_REFUSALS:  # a stage's callback records are full
            raise outcome_error(outcome, task_id, task_name=result[1], limit=self._claim_limits[outcome])
        raise outcome_error(outcome, task_id, task_name=task_name or "")

    def resend(self, task_id: str, delivery_id: str) -> Resent:
        """Mark a recorded delivery queued again (``lua/resend_delivery.lua``); the caller
        enqueues its try."""
        result = self.scripts("resend_delivery", [keys.task_document(task_id)], [delivery_id, self.ttl])
        if result[0] != Outcome.OK:
            task_name = result[1] if len(result) > 1 else ""
            raise outcome_error(result[0], task_id, task_name=task_name, delivery_id=delivery_id)
        return Resent.parse(result)

    # -- reads ---------------------------------------------------------------------

    def read_fields(self, task_id: str) -> dict[str, str]:
        fields = self.client.hgetall(keys.task_document(task_id))
        if not fields:
            raise outcome_error(Outcome.MISSING, task_id)
        return fields

    def read(self, task_id: str) -> dict[str, Any]:
        """The whole document, as ``GET /status`` shows it."""
        return documents.document(public(task_id), self.read_fields(task_id))

    def read_stage(self, task_id: str, task_name: str) -> dict[str, Any]:
        """The single-stage view of one stage (``/result?task_name=``)."""
        fields = self.read_fields(task_id)
        stage_json = fields.get(documents.STAGE_FIELD + task_name)
        if stage_json is None:
            raise StageNotFound(
                f"task {public(task_id)!r} has no stage {task_name!r}",
                {"task_id": public(task_id), "task_name": task_name},
            )
        return documents.stage_view(
            task_name,
            json.loads(stage_json),
            fields.get(documents.INPUT_FIELD + task_name),
            fields.get(documents.OUTPUT_FIELD + task_name),
        )

    def callback_records(self, task_id: str, task_name: str) -> list[dict[str, Any]]:
        """Every callback record of one stage (empty when the stage is gone)."""
        stage_json = self.client.hget(keys.task_document(task_id), documents.STAGE_FIELD + task_name)
        return documents.callback_entries(json.loads(stage_json)) if stage_json else []

    def delivery_record(self, task_id: str, task_name: str, delivery_id: str) -> dict[str, Any] | None:
        """The callback record of one delivery, or None when it (or its document) is gone."""
        stage_json = self.client.hget(keys.task_document(task_id), documents.STAGE_FIELD + task_name)
        if stage_json is None:
            return None
        return documents.find_callback(json.loads(stage_json), delivery_id)

    def delivery_stage(self, task_id: str, delivery_id: str) -> str | None:
        """The name of the stage whose callback records hold ``delivery_id``, or None."""
        document = keys.task_document(task_id)
        names = [name for name in self.client.hkeys(document) if name.startswith(documents.STAGE_FIELD)]
        for name, stage_json in zip(names, self.client.hmget(document, names) if names else [], strict=True):
            if stage_json and documents.find_callback(json.loads(stage_json), delivery_id) is not None:
                return name[len(documents.STAGE_FIELD) :]
        return None


def _try_error(error: str | None) -> str:
    if not error:
        return ""
    return error if len(error) <= MAX_TRY_ERROR_CHARS else error[: MAX_TRY_ERROR_CHARS - 1] + "…"


def get_store(app: Flask | None = None) -> Store:
    # The app itself, not the proxy: an attribute read through ``current_app`` costs about
    # 7k instructions of werkzeug's lookup (on every request, the reuse hit's included).
    return (app or current_app._get_current_object()).extensions["gateway.store"]  # type: ignore[attr-defined]


def get_redis(app: Flask | None = None) -> redis.Redis:
    return get_store(app).client


def init_app(app: Flask) -> None:
    """Needs ``connections.init_app`` and ``watches.init_app`` first."""
    app.extensions["gateway.store"] = Store(get_connections(app).store, app.config, get_watches(app))
