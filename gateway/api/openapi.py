"""The OpenAPI 3 document, generated from the marshmallow schemas with apispec, served at
``/openapi.json`` (open, like health). The fuzzing tests check every answer against it."""

from __future__ import annotations

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Blueprint, current_app, jsonify

from gateway import tasks
from gateway.api import schemas
from gateway.version import __version__

bp = Blueprint("openapi", __name__)

TASK_ID_PARAM = {
    "name": "task_id",
    "in": "path",
    "required": True,
    "schema": {
        "type": "string",
        "pattern": schemas.TASK_ID_PATTERN,
        "maxLength": 128,
        "not": {"enum": list(schemas.RESERVED_TASK_IDS)},
    },
}


def _error(description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": "Error"}}}


def _ok(schema: str, description: str = "OK") -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


COMMON_ERRORS = {
    "400": _error("Invalid request (validation_error)"),
    "401": _error("Missing or invalid API token (only when GATEWAY_API_TOKENS is set)"),
    "503": _error("Redis unavailable or scripts not loaded"),
}
BODY_ERRORS = {
    "413": _error("Body larger than GATEWAY_MAX_INPUT_BYTES"),
    "415": _error("Content-Type is not application/json"),
}


def build_spec() -> dict:
    spec = APISpec(
        title="Single-Task Gateway",
        version=__version__,
        openapi_version="3.0.3",
        plugins=[MarshmallowPlugin()],
        info={"description": "See docs/SINGLE_TASK_API_REFERENCE.md for the reuse rules and callbacks."},
    )
    spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer"})
    for name, schema in [
        # Nested schemas first: apispec registers a nested one by itself otherwise.
        ("StageView", schemas.StageViewSchema),
        ("CreateTask", schemas.CreateTaskSchema),
        ("DeleteTask", schemas.DeleteTaskSchema),
        ("TaskCreated", schemas.TaskCreatedSchema),
        ("TaskDocument", schemas.TaskDocumentSchema),
        ("SupportedTasks", schemas.SupportedTasksSchema),
        ("Health", schemas.HealthSchema),
        ("Cancelled", schemas.CancelledSchema),
        ("Retried", schemas.RetriedSchema),
        ("Deleted", schemas.DeletedSchema),
        ("Error", schemas.ErrorSchema),
    ]:
        spec.components.schema(name, schema=schema)
    create = spec.to_dict()["components"]["schemas"]["CreateTask"]
    # What the validators enforce, told to clients (and to the fuzzer) in the document.
    create["properties"]["task_name"].update(enum=sorted(tasks.by_name()), description="a registered task")
    create["properties"]["task_id"].update(
        pattern=schemas.TASK_ID_PATTERN, maxLength=128, **{"not": {"enum": list(schemas.RESERVED_TASK_IDS)}}
    )
    create["properties"]["callback"].update(
        maxLength=2048,
        # A subset of what is accepted, simple enough to state here; the full rules
        # (credentials, non-public addresses, ports) are in the API reference.
        # Labels of at most 63, three at most (under 253 in all), and a path of characters
        # sent as they are (no percent-encoding), so that 2048 characters are 2048 bytes.
        pattern=(
            r"^https?://[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?){0,2}"
            r"(:[1-9][0-9]{0,3})?(/[A-Za-z0-9!$&'()*+,/:;=?@._~-]*)?$"
        ),
        description="http(s) URL without credentials; non-public addresses need the operator's consent",
    )
    create["additionalProperties"] = False
    spec.components.schemas["CreateTask"] = create

    secured = [{"bearer": []}]
    spec.path(
        path="/v1/tasks",
        operations={
            "post": {
                "summary": "Create (or reuse) one stage of a task",
                "security": secured,
                "requestBody": {"required": True, "content": {"application/json": {"schema": "CreateTask"}}},
                "responses": {
                    "200": _ok("TaskCreated", "Completed hit: the cached result"),
                    "202": _ok("TaskCreated", "Accepted: a run was started or is under way"),
                    "409": _error("Too many stages or undelivered callbacks"),
                    **COMMON_ERRORS,
                    **BODY_ERRORS,
                },
            }
        },
    )
    for suffix, summary in [("status", "The whole task document"), ("result", "The document, or one stage")]:
        operation = {
            "summary": summary,
            "security": secured,
            "parameters": [TASK_ID_PARAM],
            "responses": {"200": _ok("TaskDocument"), "404": _error("Unknown task"), **COMMON_ERRORS},
        }
        if suffix == "result":
            operation["parameters"] = [
                TASK_ID_PARAM,
                {"name": "task_name", "in": "query", "required": False, "schema": {"type": "string"}},
            ]
            operation["responses"]["200"] = {
                "description": "The document, or with task_name the single-stage view",
                "content": {"application/json": {"schema": {"oneOf": [{"$ref": "#/components/schemas/TaskDocument"},
                                                                        {"$ref": "#/components/schemas/StageView"}]}}},
            }  # fmt: skip
        spec.path(path=f"/v1/tasks/{{task_id}}/{suffix}", operations={"get": operation})
    spec.path(
        path="/v1/tasks/{task_id}/delete",
        operations={
            "post": {
                "summary": "Delete a task (refused while a stage is live, unless forced)",
                "security": secured,
                "parameters": [TASK_ID_PARAM],
                "requestBody": {"required": False, "content": {"application/json": {"schema": "DeleteTask"}}},
                "responses": {
                    "200": _ok("Deleted"),
                    "404": _error("Unknown task"),
                    "409": _error("Live stages (task_busy)"),
                    **COMMON_ERRORS,
                    **BODY_ERRORS,
                },
            }
        },
    )
    spec.path(
        path="/v1/tasks/{task_id}",
        operations={
            "delete": {
                "summary": "Cancel the pending and running stages",
                "security": secured,
                "parameters": [TASK_ID_PARAM],
                "responses": {
                    "200": _ok("Cancelled"),
                    "404": _error("Unknown task"),
                    "405": _error("task_id is the name of a fixed route (health, supported-tasks)"),
                    **COMMON_ERRORS,
                },
            }
        },
    )
    spec.path(
        path="/v1/tasks/{task_id}/retry",
        operations={
            "post": {
                "summary": "Run the failed stages again",
                "security": secured,
                "parameters": [TASK_ID_PARAM],
                "responses": {"200": _ok("Retried"), "404": _error("Unknown task"), **COMMON_ERRORS},
            }
        },
    )
    spec.path(
        path="/v1/tasks/supported-tasks",
        operations={
            "get": {
                "summary": "Registered tasks, grouped by node",
                "security": secured,
                "responses": {"200": _ok("SupportedTasks"), "401": COMMON_ERRORS["401"]},
            }
        },
    )
    spec.path(
        path="/v1/tasks/health",
        operations={
            "get": {
                "summary": "Liveness of the gateway and its Redis (no token needed)",
                "responses": {"200": _ok("Health"), "503": COMMON_ERRORS["503"]},
            }
        },
    )
    return spec.to_dict()


@bp.get("/openapi.json")
def spec():
    document = current_app.extensions.get("gateway.openapi")
    if document is None:  # built once per process, on first use (the registry is complete by then)
        document = current_app.extensions["gateway.openapi"] = build_spec()
    return jsonify(document)
