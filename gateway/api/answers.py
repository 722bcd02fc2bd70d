"""The answers of the ``/v1/tasks`` operations: body and status code, from what the
service did (``service`` returns data; only this module shapes it for the caller).

Each answer's shape is the response schema of the same name in ``schemas``
(``TaskCreated``, ``Cancelled``...), which ``/openapi.json`` publishes.
"""

from __future__ import annotations

from functools import lru_cache
from json.encoder import encode_basestring_ascii
from typing import TYPE_CHECKING, Any

from flask import current_app, jsonify

from gateway import documents
from gateway.version import __version__

if TYPE_CHECKING:
    from flask import Response

    from gateway.replies import Cancelled, Resent, Retried
    from gateway.store import Verdict

#: The ``message`` of a create answer, per verdict state.
MESSAGES = {
    "miss": "Accepted: the stage will run.",
    "completed": "Reused: the stage already completed; its cached result is returned.",
    "pending": "Reused: the stage is queued; the callback, if any, is sent when it ends.",
    "running": "Reused: the stage is running; the callback, if any, is sent when it ends.",
    "empty_output": "Accepted: the stage completed with empty output and runs again.",
    "stale": "Accepted: the earlier run stopped answering and the stage runs again.",
    "failed": "Accepted: the stage failed before and runs again.",
    "rerun": "Accepted: a new run of the completed stage was asked for; it runs again.",
}


#: JSON literals of the create answer's flags.
_LITERAL = {True: "true", False: "false", None: "null"}
#: Each ``message``, as JSON text.
_MESSAGE_TEXT = {state: encode_basestring_ascii(message) for state, message in MESSAGES.items()}


def task_created(verdict: Verdict) -> Response:
    """``POST /v1/tasks``: 200 with the cached ``result`` for a completed hit, else 202.

    This is the reuse hit's answer, the path bench/run.py measures, so its text is
    written rather than encoded: the very text ``json.dumps`` (ASCII, compact) gives for
    ``{task_id, status, message, reuse_info, callback_status}`` (``documents.reuse_info``,
    the ``TaskCreated`` schema; tests/test_hit_answer.py and tests/test_docs.py compare
    answers byte for byte), without building and walking the dicts. A completed hit's
    ``result`` carries the stored input and output as stored (``documents.stage_view_json``),
    spliced into the text rather than decoded and encoded again, and the rest of its text
    is written once per stage and verdict (``_completed_parts``)."""
    state = verdict.state
    task_id_text = encode_basestring_ascii(verdict.task_id)
    if state == "completed":
        head, middle, tail = _completed_parts(
            verdict.task_name, verdict.facts, verdict.input_matches, bool(verdict.delivery_id)
        )
        input_json, output_json = verdict.input_json or "{}", verdict.output_json or "null"
        text = f'{{"task_id":{task_id_text},{head}{input_json}{middle}{output_json}{tail}'
        return _response(text, 200)
    callback_status = '"queued"' if verdict.delivery_id else "null"
    text = (
        f'{{"task_id":{task_id_text},"status":"pending","message":{_MESSAGE_TEXT[state]},'
        f'"reuse_info":{{"reuse_hit":{_LITERAL[verdict.hit]},"state":"{state}",'
        f'"task_name":{encode_basestring_ascii(verdict.task_name)},"input_matches":{_LITERAL[verdict.input_matches]}}},'
        f'"callback_status":{callback_status}}}\n'
    )
    return _response(text, 202)


def _response(text: str, status: int) -> Response:
    """A JSON answer of ``text``: the app's response class from the app itself (an
    attribute read through the ``current_app`` proxy costs about 7k instructions), with
    the content type as ``mimetype`` gives it for JSON (no charset), without working it out."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    return app.response_class(text, status, content_type="application/json")


# Keyed by the stage's facts (which hold its finished time): the answers of one stage's
# hits differ only in task_id, input and output. A few hundred bytes an entry.
@lru_cache(maxsize=1024)
def _completed_parts(task_name: str, facts: str, input_matches: bool | None, queued: bool) -> tuple[str, str, str]:
    """A completed hit's answer after ``"task_id":...,``, around the stored input and
    output: before the input, between input and output, after the output."""
    stage = documents.stage_from_facts(facts)
    cached_at = documents.iso(stage.get("finished_ms"))
    cached_text = _LITERAL[None] if cached_at is None else f'"{cached_at}"'
    callback_status = '"queued"' if queued else "null"
    head, middle, tail = documents.stage_view_parts(task_name, stage)
    return (
        f'"status":"completed","message":{_MESSAGE_TEXT["completed"]},'
        f'"reuse_info":{{"reuse_hit":true,"state":"completed",'
        f'"task_name":{encode_basestring_ascii(task_name)},"input_matches":{_LITERAL[input_matches]},'
        f'"source":"redis","cached_at":{cached_text}}},"callback_status":{callback_status},"result":{head}',
        middle,
        tail + "}\n",
    )


#: The ``message`` of a create answer that waited (``?wait=``) for the run to end.
WAITED_MESSAGES = {
    "SUCCESS": "Completed while the request waited; the result is included.",
    "FAILED": "Failed while the request waited; the result holds the error.",
}


def task_waited(verdict: Verdict, view: dict[str, Any]) -> Response:
    """``POST /v1/tasks?wait=``: the run ended while the request waited. 200 with the
    stage's ``result``, as a completed hit, and ``status`` ``completed`` or ``failed``;
    ``reuse_info`` and ``callback_status`` say what this request did, as in its 202."""
    body: dict[str, Any] = {
        "task_id": verdict.task_id,
        "status": "completed" if view["status"] == documents.StageStatus.SUCCESS else "failed",
        "message": WAITED_MESSAGES[view["status"]],
        "reuse_info": documents.reuse_info(verdict.task_name, verdict.state, verdict.input_matches, verdict.cached_ms),
        "callback_status": "queued" if verdict.delivery_id else None,
        "result": view,
    }
    return jsonify(body)


def task_deleted(task_id: str) -> Response:
    return jsonify({"task_id": task_id, "deleted": True})


#: The ``message`` of a cancel answer: what became of the runs.
CANCEL_MESSAGES = {
    False: "Cancelled: the stages ended FAILED and no queued run will start.",
    True: (
        "Cancelled: the stages ended FAILED. A running handler stops at its next progress report, "
        "sleep or cancellation check; one that never checks runs to its end and its result is discarded."
    ),
}


def task_cancelled(task_id: str, cancelled: Cancelled) -> Response:
    return jsonify(
        {
            "task_id": task_id,
            "cancelled": sorted(cancelled.inputs),
            "was_running": sorted(cancelled.running),
            "message": CANCEL_MESSAGES[bool(cancelled.running)],
        }
    )


def task_retried(task_id: str, retried: Retried) -> Response:
    # callback_status as a create answer's: queued once the callback waits on the new runs.
    return jsonify(
        {"task_id": task_id, "retried": retried.task_names, "callback_status": "queued" if retried.deliveries else None}
    )


def delivery_resent(task_id: str, delivery_id: str, resent: Resent) -> Response:
    body = {"task_id": task_id, "task_name": resent.task_name, "delivery_id": delivery_id, "callback_status": "queued"}
    response = jsonify(body)
    response.status_code = 202
    return response


def supported_tasks(by_node: dict[str, list[str]]) -> Response:
    return jsonify({"nodes": by_node, "tasks": [name for names in by_node.values() for name in names]})


def health(scripts_missing: list[str]) -> Response:
    # Missing scripts are loaded on first use unless the Redis user may only EVALSHA.
    return jsonify({"status": "ok", "version": __version__, "redis": "ok", "scripts_missing": scripts_missing})
