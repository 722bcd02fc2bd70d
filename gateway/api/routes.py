"""The ``/v1/tasks`` endpoints. Thin: parse, call ``service``/``store``, answer."""

from __future__ import annotations

import re

from flask import Blueprint, current_app, jsonify, request
from werkzeug.routing import BaseConverter

from gateway import service, tasks, tenancy
from gateway.api.body import json_body
from gateway.api.schemas import (
    RESERVED_TASK_IDS,
    TASK_ID_RULE,
    delete_task_schema,
    load_create_request,
    result_query_schema,
    task_id_field_validator,
)
from gateway.exceptions import StoreUnavailable, ValidationFailed
from gateway.queues import get_queues
from gateway.store import get_store
from gateway.version import __version__

bp = Blueprint("tasks", __name__, url_prefix="/v1/tasks")


class TaskIdConverter(BaseConverter):
    """A path segment that is not one of the fixed routes' names; the view validates the rest."""

    # The lookahead ends at "/" or the end: werkzeug may match it against the rest of the path.
    regex = "(?!(?:" + "|".join(re.escape(name) for name in RESERVED_TASK_IDS) + ")(?:/|$))[^/]+"


bp.before_request(tenancy.authenticate)


def _task_ref(task_id: str) -> str:
    """The store's id of a path's ``task_id``: validated, then scoped to the caller's tenant."""
    try:
        task_id_field_validator(task_id)
    except Exception:
        raise ValidationFailed(f"task_id must be {TASK_ID_RULE}", {"task_id": [f"must be {TASK_ID_RULE}"]}) from None
    return tenancy.scoped(task_id)


@bp.post("")
def create_task():
    data = load_create_request(json_body())
    text, status = service.create_task(
        tenancy.scoped(data["task_id"]), data["task_name"], data["input_data"], data["callback"]
    )
    return current_app.response_class(text + "\n", status=status, mimetype="application/json")


@bp.get("/<task_id:task_id>/status")
def task_status(task_id: str):
    return jsonify(get_store().read(_task_ref(task_id)))


@bp.get("/<task_id:task_id>/result")
def task_result(task_id: str):
    task_ref = _task_ref(task_id)
    query = result_query_schema.load(request.args)
    if query["task_name"] is None:
        return jsonify(get_store().read(task_ref))
    return jsonify(get_store().read_stage(task_ref, query["task_name"]))


@bp.post("/<task_id:task_id>/delete")
def delete_task(task_id: str):
    options = delete_task_schema.load(json_body(required=False))
    return jsonify(service.delete_task(_task_ref(task_id), force=options["force"]))


@bp.delete("/<task_id:task_id>")
def cancel_task(task_id: str):
    return jsonify(service.cancel_task(_task_ref(task_id)))


@bp.post("/<task_id:task_id>/retry")
def retry_task(task_id: str):
    return jsonify(service.retry_task(_task_ref(task_id)))


@bp.get("/supported-tasks")
def supported_tasks():
    grouped = tasks.by_node()
    return jsonify({"nodes": grouped, "tasks": [name for names in grouped.values() for name in names]})


@bp.get("/health")
def health():
    store = get_store()
    try:
        store.client.ping()
        get_queues().connection.ping()
        missing = store.scripts.missing()
    except Exception as error:
        current_app.logger.warning("health check failed: %s", error)
        raise StoreUnavailable("Redis is unavailable.", {"redis": "unavailable"}) from None
    return jsonify(
        {
            "status": "ok",
            "version": __version__,
            "redis": "ok",
            # Missing scripts are loaded on first use unless the Redis user may only EVALSHA.
            "scripts_missing": missing,
        }
    )
