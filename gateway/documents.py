"""Turn the stored form of a task (hash fields) into what callers see.

Pure functions, no Redis: ``store`` reads, this module shapes. User data is decoded
here with Python's ``json`` only, which keeps big integers, 17-digit floats, ``{}`` and
``[]`` exactly.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from enum import StrEnum
from functools import lru_cache
from json.encoder import c_make_encoder, encode_basestring
from typing import Any

from gateway import jsontext


class StageStatus(StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCESS = "SUCCESS"
    FAILED = "FAILED"


class VerdictState(StrEnum):
    """What the claim script decided for one create request (``reuse_info.state``)."""

    MISS = "miss"
    COMPLETED = "completed"
    PENDING = "pending"
    RUNNING = "running"
    EMPTY_OUTPUT = "empty_output"
    STALE = "stale"
    FAILED = "failed"
    #: A SUCCESS stage run again at the caller's asking ("reuse": false, or
    #: "if_input_differs": "rerun" with another input).
    RERUN = "rerun"


#: The verdicts answered from an existing stage; the others claim a run.
HIT_STATES = frozenset({VerdictState.COMPLETED, VerdictState.PENDING, VerdictState.RUNNING})


class DeliveryStatus(StrEnum):
    """A callback record's status, as stored and shown (``callback_status``)."""

    QUEUED = "queued"
    SENT = "sent"
    FAILED = "failed"


#: Stage status (stored, upper case) → task status (API bodies, lower case).
TASK_STATUS = {
    StageStatus.PENDING.value: "pending",
    StageStatus.RUNNING.value: "running",
    StageStatus.SUCCESS.value: "completed",
    StageStatus.FAILED.value: "failed",
}
#: The statuses of a run that holds a claim and has not ended.
LIVE_STATUSES = frozenset({StageStatus.PENDING.value, StageStatus.RUNNING.value})

STAGE_FIELD = "s:"
INPUT_FIELD = "i:"
OUTPUT_FIELD = "o:"


# Cached: the reuse hits of one stage all show the same time (its cached_at).
@lru_cache(maxsize=4096)
def iso(ms: float | None) -> str | None:
    """Epoch milliseconds → ``2026-11-28T04:03:43.123Z``."""
    if ms is None:
        return None
    moment = datetime.fromtimestamp(ms / 1000, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _fact_number(text: str) -> int | float | None:
    # What json.loads gives for cjson's "%.14g" text of the same number: int when integral.
    if not text:
        return None
    return int(text) if text.isdigit() else float(text)


def stage_from_facts(facts: str) -> dict[str, Any]:
    """The stage fields that its facts (``lua/include/stage.lua``) carry, as ``json.loads``
    of the stage JSON gives them: status and lease_ms, or status, finished_ms and duration."""
    status, _, rest = facts.partition(" ")
    if status in LIVE_STATUSES:
        return {"status": status, "lease_ms": _fact_number(rest)}
    finished_ms, _, duration = rest.partition(" ")
    return {"status": status, "finished_ms": _fact_number(finished_ms), "duration": _fact_number(duration)}


def canonical_json(value: Any) -> str:
    """The stored form of user data: sorted keys, no spaces, UTF-8 (``jsontext``).

    Sorted keys make equal inputs equal strings, which the claim script compares.
    """
    try:
        chunks = _encode_canonical(value, 0)
    except RecursionError:
        # Without the circular check a cycle ends here too: the encoder's own error for
        # it ("Circular reference detected"), or RecursionError for a deep value, as before.
        return jsontext.utf8_safe(_CANONICAL.encode(value))
    return jsontext.utf8_safe("".join(chunks))


# Built once: ``json.dumps`` with options builds an encoder per call, a third of its time
# for a small input (on every create, the reuse hit's included). Same text.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
# And its C encoder too, which ``JSONEncoder.encode`` also makes on every call (with a new
# dict for its circular check): about 8k instructions, half of the encoding of a small
# input. Without the check (None), the one encoder serves every thread; the same text.
# (markers, default, string encoder, indent, key and item separators, sort_keys, skipkeys, allow_nan)
# Python without the json module's C part (none in practice): the encoder's own way.
_encode_canonical = (
    c_make_encoder(None, _CANONICAL.default, encode_basestring, None, ":", ",", True, False, False)
    if c_make_encoder is not None
    else lambda value, _level: [_CANONICAL.encode(value)]
)


def ascii_canonical_json(value: Any, text: str) -> str | None:
    """The form versions before UTF-8 storage wrote for ``value`` (all non-ASCII as
    ``\\u`` escapes), when it differs from ``text``, its ``canonical_json``; else None.

    A stage stored by such a version still matches the same input. Only a text with a
    non-ASCII character or a DEL (which only the old form escapes) can differ, so an
    ASCII input costs a flag read and a ``memchr``.
    """
    if text.isascii() and "\x7f" not in text:
        return None
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def callback_entries(state: dict[str, Any]) -> list[dict[str, Any]]:
    # Lua's cjson writes an empty list as {}.
    callbacks = state.get("callbacks") or []
    return callbacks if isinstance(callbacks, list) else []


def stage_view(task_name: str, state: dict[str, Any], input_json: str | None, output_json: str | None) -> dict:
    """The single-stage view used in responses and callbacks."""
    return {
        "task_name": task_name,
        "status": state["status"],
        "input_params": json.loads(input_json) if input_json else {},
        "output": json.loads(output_json) if output_json else None,
        "error": state.get("error"),
        "duration": state.get("duration"),
    }


def stage_view_json(task_name: str, state: dict[str, Any], input_json: str | None, output_json: str | None) -> str:
    """``stage_view`` as JSON text, with the stored input and output put in as they are
    stored (JSON text from ``canonical_json``: valid, UTF-8-safe; ASCII if an older version
    stored it) rather than decoded and encoded again, which was two thirds of a reuse
    hit's time for a 100 KB payload. The other members are written one by one
    (``jsontext.scalar``): the same text as ``jsontext.dumps`` of the dict, in a fraction
    of its time."""
    head, middle, tail = stage_view_parts(task_name, state)
    return f"{head}{input_json or '{}'}{middle}{output_json or 'null'}{tail}"


def stage_view_parts(task_name: str, state: dict[str, Any]) -> tuple[str, str, str]:
    """The text of ``stage_view_json`` around the stored input and output: what comes
    before the input, between input and output, and after the output. It depends on the
    stage's facts only, so that a reuse hit's answer can keep it per stage."""
    return (
        f'{{"task_name":{jsontext.scalar(task_name)},"status":{jsontext.scalar(state["status"])},"input_params":',
        ',"output":',
        f',"error":{jsontext.scalar(state.get("error"))},"duration":{jsontext.scalar(state.get("duration"))}}}',
    )


def callback_record(entry: dict[str, Any]) -> dict[str, Any]:
    """One delivery as the ``callbacks`` list of a stage shows it."""
    return {
        "delivery_id": entry["delivery_id"],
        "url": entry["url"],
        "status": entry["status"],
        "attempts": entry.get("attempts", 0),
        "last_status_code": entry.get("last_status_code"),
        "last_error": entry.get("last_error"),
        "reuse": bool(entry.get("reuse")),
        "updated_at": iso(entry.get("updated_ms")),
        "tries": [
            {"at": iso(t["at_ms"]), "status_code": t.get("status_code"), "error": t.get("error")}
            for t in (entry.get("tries") or [])  # cjson writes an empty list as {}
        ],
    }


def stage_record(task_name: str, state: dict[str, Any], input_json: str | None, output_json: str | None) -> dict:
    """A stage as the whole document shows it."""
    record = stage_view(task_name, state, input_json, output_json)
    record.update(
        attempt=state["attempt"],
        created_at=iso(state.get("created_ms")),
        started_at=iso(state.get("started_ms")),
        finished_at=iso(state.get("finished_ms")),
        # As the handler last reported it (ctx.progress), kept after the end; None before.
        progress=state.get("progress"),
        progress_message=state.get("progress_message"),
        callbacks=[callback_record(entry) for entry in callback_entries(state)],
    )
    return record


def find_callback(state: dict[str, Any], delivery_id: str) -> dict[str, Any] | None:
    for entry in callback_entries(state):
        if entry["delivery_id"] == delivery_id:
            return entry
    return None


def reuse_info(task_name: str, state: str, input_matches: bool | None, cached_ms: float | None) -> dict:
    """``reuse_info`` of a create response, and of the callback that request asked for."""
    info: dict[str, Any] = {
        "reuse_hit": state in HIT_STATES,
        "state": state,
        "task_name": task_name,
        "input_matches": input_matches,
    }
    if state == VerdictState.COMPLETED:
        info["source"] = "redis"
        info["cached_at"] = iso(cached_ms)
    return info


def _latest_callback_url(meta: dict[str, Any], fields: dict[str, str]) -> str | None:
    # A document last written by a version that kept the latest request in a ``request``
    # field (claim_stage.lua deletes it on its next write).
    if "request" in fields:
        return json.loads(fields["request"]).get("callback_url")
    return meta.get("last_callback_url")


def document(task_id: str, fields: dict[str, str]) -> dict[str, Any]:
    """The whole document of a task from its hash fields (``HGETALL``)."""
    meta = json.loads(fields["meta"])
    # The latest request's input: its stage's input unless it differed (see claim_stage.lua).
    request_input = fields.get("request_input") or fields.get(INPUT_FIELD + meta.get("last_task_name", ""))
    stages: dict[str, Any] = {}
    states: dict[str, dict[str, Any]] = {}
    for field, value in fields.items():
        if field.startswith(STAGE_FIELD):
            name = field[len(STAGE_FIELD) :]
            states[name] = json.loads(value)
    for name in sorted(states, key=lambda n: (states[n].get("created_ms", 0), n)):
        stages[name] = stage_record(name, states[name], fields.get(INPUT_FIELD + name), fields.get(OUTPUT_FIELD + name))

    latest = states.get(meta.get("last_task_name", ""))
    callback_status = None
    if latest is not None and meta.get("last_delivery_id"):
        entry = find_callback(latest, meta["last_delivery_id"])
        callback_status = entry["status"] if entry else None
    return {
        "task_id": task_id,
        "workflow_id": task_id,
        "status": TASK_STATUS[latest["status"]] if latest else None,
        "created_at": iso(meta.get("created_ms")),
        "updated_at": iso(meta.get("updated_ms")),
        "input_params": {
            "task_name": meta.get("last_task_name"),
            "input_data": json.loads(request_input) if request_input else {},
            "callback_url": _latest_callback_url(meta, fields),
        },
        "stages": stages,
        "callback_status": callback_status,
    }
