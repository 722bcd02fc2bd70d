"""The OpenAPI 3 document, served at ``/openapi.json`` (open, like health): its paths
from the app's routes and the operation each view carries (``operations``), its
components from the marshmallow schemas with apispec. The fuzzing tests check every
answer against it; tests/test_openapi.py checks that it has every route and no other."""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Blueprint, current_app, jsonify

from gateway import tasks, tenancy
from gateway.api import schemas
from gateway.api.operations import ATTRIBUTE, PATH_PARAMETERS, undocumented
from gateway.version import __version__

if TYPE_CHECKING:
    from flask import Flask

bp = Blueprint("openapi", __name__)

#: A route's argument, ``<converter:name>`` or ``<name>``.
ARGUMENT = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")
#: Methods werkzeug adds to every route by itself.
IMPLIED_METHODS = {"HEAD", "OPTIONS"}
SECURED = [{"bearer": []}]
#: Flask's own file route (the app has no static folder: it answers 404), not the API's.
FLASK_ENDPOINTS = {"static"}


class UndocumentedRoute(RuntimeError):
    """A route whose view declares no OpenAPI operation (``operations.operation``)."""


def paths(app: Flask) -> Iterator[tuple[str, dict[str, dict]]]:
    """(OpenAPI path, {method: operation}) for each route of the app, in the order they
    were added; the views marked ``undocumented`` are left out."""
    for rule in app.url_map.iter_rules():
        if rule.endpoint in FLASK_ENDPOINTS:
            continue
        view = app.view_functions[rule.endpoint]
        if not hasattr(view, ATTRIBUTE):
            raise UndocumentedRoute(f"route {rule.rule} ({rule.endpoint}) has no OpenAPI operation")
        declared = getattr(view, ATTRIBUTE)
        if declared is None:
            continue
        # apispec resolves schema names to $refs in place: keep the views' own copy as declared.
        declared = copy.deepcopy(declared)
        operation = {"summary": declared["summary"]}
        if rule.endpoint not in tenancy.OPEN_ENDPOINTS:
            operation["security"] = SECURED
        parameters = [PATH_PARAMETERS[name] for name in ARGUMENT.findall(rule.rule)] + declared.get("parameters", [])
        if parameters:
            operation["parameters"] = parameters
        operation.update((key, value) for key, value in declared.items() if key not in ("summary", "parameters"))
        path = ARGUMENT.sub(r"{\1}", rule.rule)
        yield path, {method.lower(): operation for method in sorted(rule.methods - IMPLIED_METHODS)}


def build_spec(app: Flask) -> dict:
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
        ("RetryTask", schemas.RetryTaskSchema),
        ("Resent", schemas.ResentSchema),
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
    # A retry's callback follows the same rules as a create request's.
    spec.components.schemas["RetryTask"]["properties"]["callback"] = dict(create["properties"]["callback"])

    for path, operations in paths(app):
        spec.path(path=path, operations=operations)
    return spec.to_dict()


@bp.get("/openapi.json")
@undocumented
def spec():
    document = current_app.extensions.get("gateway.openapi")
    if document is None:  # built once per process, on first use (the registry is complete by then)
        document = current_app.extensions["gateway.openapi"] = build_spec(current_app)
    return jsonify(document)
