"""Request schemas, named by role. Validators and defaults live on the fields."""

from __future__ import annotations

import uuid

from flask import current_app
from marshmallow import Schema, ValidationError, fields, validate, validates

from gateway import tasks, urlpolicy

TASK_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
TASK_ID_RULE = "1-128 characters from A-Z a-z 0-9 . _ -, starting with a letter or digit"

task_id_field_validator = validate.Regexp(TASK_ID_PATTERN, error=f"task_id must be {TASK_ID_RULE}")


def _new_task_id() -> str:
    return f"task-{uuid.uuid4()}"


class CreateTaskSchema(Schema):
    """``POST /v1/tasks``. Unknown fields are rejected (marshmallow's RAISE)."""

    task_name = fields.String(required=True)
    task_id = fields.String(load_default=_new_task_id, validate=task_id_field_validator)
    callback = fields.String(load_default=None, allow_none=True)
    input_data = fields.Dict(required=True)

    @validates("task_name")
    def _task_name_is_registered(self, value: str, **_: object) -> None:
        if not tasks.TASK_NAME.match(value):
            raise ValidationError("task_name must be <node>.<method>, each part [a-z][a-z0-9_]*")
        if not tasks.is_registered(value):
            raise ValidationError(f"task_name {value!r} is not registered; see GET /v1/tasks/supported-tasks")

    @validates("callback")
    def _callback_is_allowed(self, value: str | None, **_: object) -> None:
        if value is None:
            return
        try:
            urlpolicy.check_url(value, current_app.config["CALLBACK_POLICY"])
        except urlpolicy.UrlRefused as error:
            raise ValidationError(str(error)) from None


class DeleteTaskSchema(Schema):
    """``POST /v1/tasks/{task_id}/delete``."""

    force = fields.Boolean(load_default=False)


class ResultQuerySchema(Schema):
    """Query string of ``GET /v1/tasks/{task_id}/result``."""

    task_name = fields.String(load_default=None)


create_task_schema = CreateTaskSchema()
delete_task_schema = DeleteTaskSchema()
result_query_schema = ResultQuerySchema()
