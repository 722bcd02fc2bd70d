"""The ``/v1/tasks`` endpoints. Thin: parse, call ``service``/``store``, answer (``answers``).

Each view carries its OpenAPI operation (``operations``); ``/openapi.json`` is built from them."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from flask import Blueprint, current_app, jsonify, request
from werkzeug.routing import BaseConverter

from gateway import service, tasks, tenancy, waits
from gateway.api import answers, requestlog
from gateway.api.body import json_body
from gateway.api.operations import BODY_ERRORS, COMMON_ERRORS, error, ok, operation
from gateway.api.schemas import (
    RESERVED_TASK_IDS,
    TASK_ID_RULE,
    cancel_query_schema,
    claim_policy,
    create_query_schema,
    delete_task_schema,
    load_create_request,
    result_query_schema,
    retry_task_schema,
    status_query_schema,
    task_id_field_validator,
)
from gateway.exceptions import StoreUnavailable, ValidationFailed
from gateway.queues import get_queues
from gateway.store import get_store

if TYPE_CHECKING:
    from flask.blueprints import BlueprintSetupState

bp = Blueprint("tasks", __name__, url_prefix="/v1/tasks")


class TaskIdConverter(BaseConverter):
    """A path segment that is not one of the fixed routes' names; the view validates the rest."""

    # The lookahead ends at "/" or the end: werkzeug may match it against the rest of the path.
    regex = "(?!(?:" + "|".join(re.escape(name) for name in RESERVED_TASK_IDS) + ")(?:/|$))[^/]+"


@bp.record
def _authenticate_with_tokens(state: BlueprintSetupState) -> None:
    """Install ``tenancy.authenticate`` for an app with API tokens. Without tokens it
    would keep no tenant, which ``tenancy.scoped`` assumes anyway, and a
    before-request hook costs every request (the reuse hit included) a few microseconds."""
    if tenancy.requires_tokens(state.app):
        state.app.before_request_funcs.setdefault(state.name, []).append(tenancy.authenticate)


def _task_ref(task_id: str) -> str:
    """The store's id of a path's ``task_id``: validated, then scoped to the caller's tenant."""
    try:
        task_id_field_validator(task_id)
    except Exception:
        raise ValidationFailed(f"task_id must be {TASK_ID_RULE}", {"task_id": [f"must be {TASK_ID_RULE}"]}) from None
    return tenancy.scoped(task_id)


def _wait_seconds(asked: float | None) -> float:
    """A query's ``wait``, cut to GATEWAY_MAX_WAIT_SECONDS; 0 without one."""
    if not asked:
        return 0.0
    return min(asked, float(current_app.config["MAX_WAIT_SECONDS"]))


#: The ``wait`` query parameter of the operations that can wait for a stage to end.
WAIT_PARAMETER = {
    "name": "wait",
    "in": "query",
    "required": False,
    "description": "Seconds to wait for the stage to end before answering (cut to GATEWAY_MAX_WAIT_SECONDS, "
    "30 by default); when they run out, the answer is the one without wait.",
    "schema": {"type": "number", "minimum": 0},
}


def task_name_parameter(description: str | None = None) -> dict:
    """The optional ``task_name`` query parameter: the one stage an operation is about."""
    parameter = {"name": "task_name", "in": "query", "required": False, "schema": {"type": "string"}}
    if description:
        parameter["description"] = description
    return parameter


@bp.post("")
@operation(
    "Create (or reuse) one stage of a task",
    body="CreateTask",
    query=[WAIT_PARAMETER],
    responses={
        "200": ok("TaskCreated", "Completed hit: the cached result (or, with wait, the run ended meanwhile)"),
        "202": ok("TaskCreated", "Accepted: a run was started or is under way"),
        "409": error(
            "Too many stages or undelivered callbacks, or another stored input with if_input_differs 'reject' "
            "(input_mismatch)"
        ),
        **COMMON_ERRORS,
        **BODY_ERRORS,
    },
)
def create_task():
    data = load_create_request(json_body())
    requestlog.note(data["task_id"], data["task_name"])
    # Validated before anything is written; looked at only when there is a query string,
    # so that the reuse hit pays nothing for it (the request itself, not the proxy: an
    # attribute read through ``request`` costs about 7k instructions of werkzeug's lookup).
    query = request._get_current_object().query_string  # type: ignore[attr-defined]
    seconds = _wait_seconds(create_query_schema.load(request.args)["wait"]) if query else 0.0
    task_ref = tenancy.scoped(data["task_id"])
    verdict = service.create_task(task_ref, data["task_name"], data["input_data"], data["callback"], claim_policy(data))
    requestlog.note_verdict(verdict.state)  # for the line and the metrics (api/bookkeeping)
    if seconds and verdict.state != "completed":
        view = waits.ended_stage_view(task_ref, verdict.task_name, seconds)
        if view is not None:
            return answers.task_waited(verdict, view)
    return answers.task_created(verdict)


@bp.get("/<task_id:task_id>/status")
@operation(
    "The whole task document",
    query=[task_name_parameter("With wait: the stage to wait for (else every stage)"), WAIT_PARAMETER],
    responses={"200": ok("TaskDocument"), "404": error("Unknown task"), **COMMON_ERRORS},
)
def task_status(task_id: str):
    task_ref = _task_ref(task_id)
    if request.query_string:
        query = status_query_schema.load(request.args)
        seconds = _wait_seconds(query["wait"])
        if seconds:
            return jsonify(waits.document(task_ref, query["task_name"], seconds))
    return jsonify(get_store().read(task_ref))


@bp.get("/<task_id:task_id>/result")
@operation(
    "The document, or one stage",
    query=[task_name_parameter(), WAIT_PARAMETER],
    responses={
        "200": {
            "description": "The document, or with task_name the single-stage view",
            "content": {
                "application/json": {
                    "schema": {
                        "oneOf": [
                            {"$ref": "#/components/schemas/TaskDocument"},
                            {"$ref": "#/components/schemas/StageView"},
                        ]
                    }
                }
            },
        },
        "404": error("Unknown task"),
        **COMMON_ERRORS,
    },
)
def task_result(task_id: str):
    task_ref = _task_ref(task_id)
    query = result_query_schema.load(request.args)
    seconds = _wait_seconds(query["wait"])
    if query["task_name"] is None:
        if seconds:
            return jsonify(waits.document(task_ref, None, seconds))
        return jsonify(get_store().read(task_ref))
    if seconds:
        return jsonify(waits.stage_view(task_ref, query["task_name"], seconds))
    return jsonify(get_store().read_stage(task_ref, query["task_name"]))


@bp.post("/<task_id:task_id>/delete")
@operation(
    "Delete a task (refused while a stage is live, unless forced)",
    body="DeleteTask",
    body_required=False,
    responses={
        "200": ok("Deleted"),
        "404": error("Unknown task"),
        "409": error("Live stages (task_busy)"),
        **COMMON_ERRORS,
        **BODY_ERRORS,
    },
)
def delete_task(task_id: str):
    options = delete_task_schema.load(json_body(required=False))
    service.delete_task(_task_ref(task_id), force=options["force"])
    return answers.task_deleted(task_id)


@bp.delete("/<task_id:task_id>")
@operation(
    "Cancel the pending and running stages (or only task_name's)",
    query=[task_name_parameter()],
    responses={
        "200": ok("Cancelled"),
        "404": error("Unknown task (task_not_found), or no stage task_name (stage_not_found)"),
        "405": error("task_id is the name of a fixed route (health, supported-tasks)"),
        "409": error("No stage is pending or running (nothing_to_cancel)"),
        **COMMON_ERRORS,
    },
)
def cancel_task(task_id: str):
    task_ref = _task_ref(task_id)
    query = cancel_query_schema.load(request.args)
    return answers.task_cancelled(task_id, service.cancel_task(task_ref, query["task_name"]))


@bp.post("/<task_id:task_id>/retry")
@operation(
    "Run the failed stages again (or only task_name's), optionally with a callback",
    body="RetryTask",
    body_required=False,
    responses={
        "200": ok("Retried"),
        "404": error("Unknown task (task_not_found), or no stage task_name (stage_not_found)"),
        "409": error("No stage to retry has failed (nothing_to_retry), or its callback records are full"),
        **COMMON_ERRORS,
        **BODY_ERRORS,
    },
)
def retry_task(task_id: str):
    task_ref = _task_ref(task_id)
    options = retry_task_schema.load(json_body(required=False))
    retried = service.retry_task(task_ref, options["task_name"], options["callback"])
    return answers.task_retried(task_id, retried)


@bp.post("/<task_id:task_id>/deliveries/<delivery_id>/resend")
@operation(
    "Send a recorded callback delivery again (same webhook-id, the stage's current result)",
    responses={
        "202": ok("Resent", "Queued: the delivery is sent again"),
        "404": error("Unknown task (task_not_found) or delivery (delivery_not_found)"),
        "409": error("The delivery is still queued (delivery_queued), or its stage runs again (stage_live)"),
        **COMMON_ERRORS,
    },
)
def resend_delivery(task_id: str, delivery_id: str):
    resent = service.resend_delivery(_task_ref(task_id), delivery_id)
    return answers.delivery_resent(task_id, delivery_id, resent)


@bp.get("/supported-tasks")
@operation(
    "Registered tasks, grouped by node",
    responses={"200": ok("SupportedTasks"), "401": COMMON_ERRORS["401"]},
)
def supported_tasks():
    return answers.supported_tasks(tasks.by_node())


@bp.get("/health")
@operation(
    "Liveness of the gateway and its Redis (no token needed)",
    responses={"200": ok("Health"), "503": COMMON_ERRORS["503"]},
)
def health():
    store = get_store()
    try:
        store.client.ping()
        get_queues().connection.ping()
        missing = store.scripts.missing()
    except Exception as failure:
        current_app.logger.warning("health check failed: %s", failure)
        raise StoreUnavailable("Redis is unavailable.", {"redis": "unavailable"}) from None
    return answers.health(missing)
