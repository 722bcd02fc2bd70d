"""Request schemas, named by role. Validators and defaults live on the fields."""

from __future__ import annotations

import re
import uuid
from typing import Any

from flask import current_app
from marshmallow import Schema, ValidationError, fields, validate, validates

from gateway import tasks, urlpolicy

TASK_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
TASK_ID_RULE = "1-128 characters from A-Z a-z 0-9 . _ -, starting with a letter or digit"

# Names of fixed routes under /v1/tasks/: a task with such an id could not be addressed
# (DELETE /v1/tasks/health would be ambiguous), so they are not task ids.
RESERVED_TASK_IDS = ("health", "supported-tasks")

# The pattern as documented (OpenAPI), anchored with \Z: Python's $ also matches before a
# trailing newline, which would let "abc\n" through.
_TASK_ID = re.compile(TASK_ID_PATTERN.removesuffix("$") + r"\Z")

task_id_field_validator = validate.And(
    validate.Regexp(_TASK_ID, error=f"task_id must be {TASK_ID_RULE}"),
    validate.NoneOf(RESERVED_TASK_IDS, error="task_id {input!r} is reserved"),
)


def _new_task_id() -> str:
    return f"task-{uuid.uuid4()}"


class StrictBoolean(fields.Boolean):
    """A JSON ``true`` or ``false`` only (marshmallow's Boolean also takes "yes", 1...)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> bool:
        if type(value) is not bool:
            raise self.make_error("invalid")
        return value


#: ``if_input_differs``: what a request whose input differs from the stage's stored one
#: means (docs/SINGLE_TASK_API_REFERENCE.md §4.1).
IF_INPUT_DIFFERS = ("reuse", "rerun", "reject")
#: How ``claim_stage.lua`` takes the policy (its ARGV[5]): "" for the default.
_DIFFERS_CODES = {"reuse": "u", "rerun": "r", "reject": "x"}


def claim_policy(data: dict[str, Any]) -> str:
    """The claim script's policy argument for a loaded create request: "" (the default,
    nothing for the script to do) unless ``reuse`` or ``if_input_differs`` was given."""
    reuse, differs = data.get("reuse", True), data.get("if_input_differs", "reuse")
    if reuse and differs == "reuse":
        return ""
    return ("1" if reuse else "0") + _DIFFERS_CODES[differs]


def check_callback_url(value: str | None) -> None:
    """The URL policy of a callback (create and retry): ValidationError when refused."""
    if value is None:
        return
    try:
        urlpolicy.check_url(value, current_app.config["CALLBACK_POLICY"])
    except urlpolicy.UrlRefused as error:
        raise ValidationError(str(error)) from None


class CreateTaskSchema(Schema):
    """``POST /v1/tasks``. Unknown fields are rejected (marshmallow's RAISE)."""

    task_name = fields.String(required=True)
    task_id = fields.String(load_default=_new_task_id, validate=task_id_field_validator)
    callback = fields.String(load_default=None, allow_none=True)
    input_data = fields.Dict(required=True)
    # No load_default: an absent field stays absent, as from the shortcut below
    # (``claim_policy`` reads the defaults); metadata tells them in the OpenAPI document.
    #: false: a SUCCESS stage runs again (a live one stays a pending/running hit).
    reuse = StrictBoolean(
        metadata={"default": True, "description": "false: a SUCCESS stage runs again (a live one stays a hit)"}
    )
    if_input_differs = fields.String(
        validate=validate.OneOf(IF_INPUT_DIFFERS),
        metadata={"default": "reuse", "description": "what another input means: reuse, a new run, or 409"},
    )

    @validates("task_name")
    def _task_name_is_registered(self, value: str, **_: object) -> None:
        if not tasks.TASK_NAME.match(value):
            raise ValidationError("task_name must be <node>.<method>, each part [a-z][a-z0-9_]*")
        if not tasks.is_registered(value):
            raise ValidationError(f"task_name {value!r} is not registered; see GET /v1/tasks/supported-tasks")

    @validates("callback")
    def _callback_is_allowed(self, value: str | None, **_: object) -> None:
        check_callback_url(value)


# The fields the shortcut below handles; a request with "reuse" or "if_input_differs"
# goes through the schema (it is no reuse hit, whose speed the shortcut is for).
_CREATE_FIELDS = frozenset({"task_name", "task_id", "callback", "input_data"})


def load_create_request(body: dict[str, Any]) -> dict[str, Any]:
    """``create_task_schema.load(body)``, with a shortcut for a request that is valid.

    The schema costs about a tenth of a reuse hit. The shortcut applies the same rules
    (the same pattern, registry and URL policy) and accepts only what the schema accepts;
    anything else goes through the schema, which then names every problem.
    tests/test_errors.py checks that both agree.
    """
    task_name, task_id = body.get("task_name"), body.get("task_id", None)
    callback, input_data = body.get("callback"), body.get("input_data")
    if (
        _CREATE_FIELDS.issuperset(body)
        and type(input_data) is dict
        and type(task_name) is str
        # The schema's TASK_NAME check too: only a name that passed it is registered.
        and tasks.is_registered(task_name)
        and (_is_task_id(task_id) or (task_id is None and "task_id" not in body))
        and (callback is None or type(callback) is str and _callback_allowed(callback))
    ):
        return {
            "task_name": task_name,
            "task_id": task_id if task_id is not None else _new_task_id(),
            "callback": callback,
            "input_data": input_data,
        }
    return create_task_schema.load(body)


def _is_task_id(value: object) -> bool:
    return type(value) is str and _TASK_ID.match(value) is not None and value not in RESERVED_TASK_IDS


def _callback_allowed(url: str) -> bool:
    try:
        urlpolicy.check_url(url, current_app.config["CALLBACK_POLICY"])
    except urlpolicy.UrlRefused:
        return False
    return True


class DeleteTaskSchema(Schema):
    """``POST /v1/tasks/{task_id}/delete``."""

    force = fields.Boolean(load_default=False)


class RetryTaskSchema(Schema):
    """``POST /v1/tasks/{task_id}/retry`` (body optional)."""

    #: Only this stage; absent: every FAILED stage.
    task_name = fields.String(load_default=None)
    #: Subscribed to each new run, with the same URL policy as a create request's.
    callback = fields.String(load_default=None, allow_none=True, validate=check_callback_url)


def _wait_field() -> fields.Float:
    """``?wait=<seconds>``: how long to wait for the stage to end (``waits``); capped by
    GATEWAY_MAX_WAIT_SECONDS in the view, since the cap is configuration."""
    return fields.Float(
        load_default=None,
        allow_nan=False,
        validate=validate.Range(min=0, error="wait must be a number of seconds >= 0"),
        metadata={"description": "seconds to wait for the stage to end (at most GATEWAY_MAX_WAIT_SECONDS)"},
    )


class ResultQuerySchema(Schema):
    """Query string of ``GET /v1/tasks/{task_id}/result``."""

    task_name = fields.String(load_default=None)
    wait = _wait_field()


class StatusQuerySchema(Schema):
    """Query string of ``GET /v1/tasks/{task_id}/status``: ``task_name`` names the stage a
    ``wait`` waits for. Another parameter is a 400, as on ``/result``: the OpenAPI document
    lists every parameter, and a misspelt ``wait`` must not pass for no wait."""

    task_name = fields.String(load_default=None)
    wait = _wait_field()


class CreateQuerySchema(Schema):
    """Query string of ``POST /v1/tasks`` (read only when there is one: the hit path pays
    nothing without it). Another parameter is a 400, as on ``/result``."""

    wait = _wait_field()


class CancelQuerySchema(Schema):
    """Query string of ``DELETE /v1/tasks/{task_id}``: one stage only, or every live one."""

    task_name = fields.String(load_default=None)


create_task_schema = CreateTaskSchema()
delete_task_schema = DeleteTaskSchema()
retry_task_schema = RetryTaskSchema()
result_query_schema = ResultQuerySchema()
cancel_query_schema = CancelQuerySchema()
status_query_schema = StatusQuerySchema()
create_query_schema = CreateQuerySchema()


# -- Response shapes: for the OpenAPI document (and the fuzzer that checks answers
# against it). Server-set, so every field is dump_only.


class ReuseInfoSchema(Schema):
    reuse_hit = fields.Boolean(required=True, dump_only=True)
    state = fields.String(
        required=True,
        dump_only=True,
        metadata={"enum": ["miss", "completed", "pending", "running", "empty_output", "stale", "failed", "rerun"]},
    )
    task_name = fields.String(required=True, dump_only=True)
    input_matches = fields.Boolean(required=True, allow_none=True, dump_only=True)
    source = fields.String(dump_only=True, metadata={"enum": ["redis"]})
    cached_at = fields.String(dump_only=True, allow_none=True)


STAGE_STATUSES = ["PENDING", "RUNNING", "SUCCESS", "FAILED"]


class StageViewSchema(Schema):
    """The single-stage view used in responses and callbacks."""

    task_name = fields.String(required=True, dump_only=True)
    status = fields.String(required=True, dump_only=True, metadata={"enum": STAGE_STATUSES})
    input_params = fields.Dict(required=True, dump_only=True)
    output = fields.Dict(required=True, allow_none=True, dump_only=True)
    error = fields.String(required=True, allow_none=True, dump_only=True)
    duration = fields.Float(required=True, allow_none=True, dump_only=True)


class DeliveryTrySchema(Schema):
    at = fields.String(required=True, dump_only=True)
    status_code = fields.Integer(required=True, allow_none=True, dump_only=True)
    error = fields.String(required=True, allow_none=True, dump_only=True)


class CallbackRecordSchema(Schema):
    delivery_id = fields.String(required=True, dump_only=True)
    url = fields.String(required=True, dump_only=True)
    status = fields.String(required=True, dump_only=True, metadata={"enum": ["queued", "sent", "failed"]})
    attempts = fields.Integer(required=True, dump_only=True)
    last_status_code = fields.Integer(required=True, allow_none=True, dump_only=True)
    last_error = fields.String(required=True, allow_none=True, dump_only=True)
    reuse = fields.Boolean(required=True, dump_only=True)
    updated_at = fields.String(required=True, allow_none=True, dump_only=True)
    tries = fields.List(fields.Nested(DeliveryTrySchema), required=True, dump_only=True)


class StageRecordSchema(StageViewSchema):
    attempt = fields.Integer(required=True, dump_only=True)
    created_at = fields.String(required=True, allow_none=True, dump_only=True)
    started_at = fields.String(required=True, allow_none=True, dump_only=True)
    finished_at = fields.String(required=True, allow_none=True, dump_only=True)
    progress = fields.Float(required=True, allow_none=True, dump_only=True, validate=validate.Range(min=0, max=1))
    progress_message = fields.String(required=True, allow_none=True, dump_only=True)
    callbacks = fields.List(fields.Nested(CallbackRecordSchema), required=True, dump_only=True)


CALLBACK_STATUS = {"enum": ["queued", "sent", "failed", None]}
TASK_STATUSES = ["pending", "running", "completed", "failed"]


class TaskCreatedSchema(Schema):
    task_id = fields.String(required=True, dump_only=True)
    # "failed": a ?wait= that saw the run end FAILED (with ``result``).
    status = fields.String(required=True, dump_only=True, metadata={"enum": ["pending", "completed", "failed"]})
    message = fields.String(required=True, dump_only=True)
    reuse_info = fields.Nested(ReuseInfoSchema, required=True, dump_only=True)
    callback_status = fields.String(required=True, allow_none=True, dump_only=True, metadata=CALLBACK_STATUS)
    result = fields.Nested(StageViewSchema, dump_only=True)


class RequestRecordSchema(Schema):
    task_name = fields.String(required=True, allow_none=True, dump_only=True)
    input_data = fields.Dict(required=True, dump_only=True)
    callback_url = fields.String(required=True, allow_none=True, dump_only=True)


class TaskDocumentSchema(Schema):
    task_id = fields.String(required=True, dump_only=True)
    workflow_id = fields.String(required=True, dump_only=True)
    status = fields.String(required=True, allow_none=True, dump_only=True, metadata={"enum": [*TASK_STATUSES, None]})
    created_at = fields.String(required=True, allow_none=True, dump_only=True)
    updated_at = fields.String(required=True, allow_none=True, dump_only=True)
    input_params = fields.Nested(RequestRecordSchema, required=True, dump_only=True)
    stages = fields.Dict(keys=fields.String(), values=fields.Nested(StageRecordSchema), required=True, dump_only=True)
    callback_status = fields.String(required=True, allow_none=True, dump_only=True, metadata=CALLBACK_STATUS)


class SupportedTasksSchema(Schema):
    nodes = fields.Dict(keys=fields.String(), values=fields.List(fields.String()), required=True, dump_only=True)
    tasks = fields.List(fields.String(), required=True, dump_only=True)


class HealthSchema(Schema):
    status = fields.String(required=True, dump_only=True)
    version = fields.String(required=True, dump_only=True)
    redis = fields.String(required=True, dump_only=True)
    scripts_missing = fields.List(fields.String(), required=True, dump_only=True)


class CancelledSchema(Schema):
    task_id = fields.String(required=True, dump_only=True)
    cancelled = fields.List(fields.String(), required=True, dump_only=True)
    #: The cancelled stages whose handler was running: it stops at its next check, or its
    #: result is discarded when it ends.
    was_running = fields.List(fields.String(), required=True, dump_only=True)
    message = fields.String(required=True, dump_only=True)


class RetriedSchema(Schema):
    task_id = fields.String(required=True, dump_only=True)
    retried = fields.List(fields.String(), required=True, dump_only=True)
    callback_status = fields.String(required=True, allow_none=True, dump_only=True, metadata={"enum": ["queued", None]})


class ResentSchema(Schema):
    task_id = fields.String(required=True, dump_only=True)
    task_name = fields.String(required=True, dump_only=True)
    delivery_id = fields.String(required=True, dump_only=True)
    callback_status = fields.String(required=True, dump_only=True, metadata={"enum": ["queued"]})


class DeletedSchema(Schema):
    task_id = fields.String(required=True, dump_only=True)
    deleted = fields.Boolean(required=True, dump_only=True)


class ErrorBodySchema(Schema):
    code = fields.String(required=True, dump_only=True)
    message = fields.String(required=True, dump_only=True)
    details = fields.Dict(required=True, dump_only=True)


class ErrorSchema(Schema):
    error = fields.Nested(ErrorBodySchema, required=True, dump_only=True)
