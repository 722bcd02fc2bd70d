"""The OpenAPI operation of each view, declared on the view itself.

``openapi.py`` walks the app's routes and asks each view for its operation, so a route
and its documentation cannot drift apart: a route without one (and not marked
``undocumented``) stops the document from being built. What the routes imply is
filled in there, not here: the path, the path parameters (``PATH_PARAMETERS``, by
name) and ``security`` (from ``tenancy.OPEN_ENDPOINTS``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from gateway.api import schemas

View = TypeVar("View", bound=Callable[..., Any])

#: The attribute of a view function that holds its operation (None: not part of the API).
ATTRIBUTE = "openapi_operation"

#: The parameter of each path argument, by its name in the route.
PATH_PARAMETERS = {
    "task_id": {
        "name": "task_id",
        "in": "path",
        "required": True,
        "schema": {
            "type": "string",
            "pattern": schemas.TASK_ID_PATTERN,
            "maxLength": 128,
            "not": {"enum": list(schemas.RESERVED_TASK_IDS)},
        },
    },
    "delivery_id": {
        "name": "delivery_id",
        "in": "path",
        "required": True,
        "description": "A callback record's delivery_id (the webhook-id of its deliveries)",
        "schema": {"type": "string"},
    },
}


def error(description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": "Error"}}}


def ok(schema: str, description: str = "OK") -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


COMMON_ERRORS = {
    "400": error("Invalid request (validation_error)"),
    "401": error("Missing or invalid API token (only when GATEWAY_API_TOKENS is set)"),
    "503": error("Redis unavailable or scripts not loaded"),
}
BODY_ERRORS = {
    "413": error("Body larger than GATEWAY_MAX_INPUT_BYTES"),
    "415": error("Content-Type is not application/json"),
}


def operation(
    summary: str,
    *,
    responses: dict[str, dict],
    body: str | None = None,
    body_required: bool = True,
    query: list[dict] | None = None,
) -> Callable[[View], View]:
    """Attach the view's operation: ``body`` names the request body's schema, ``query``
    lists the query parameters (path parameters come from the route)."""
    document: dict[str, Any] = {"summary": summary}
    if query:
        document["parameters"] = query
    if body is not None:
        document["requestBody"] = {"required": body_required, "content": {"application/json": {"schema": body}}}
    document["responses"] = responses

    def attach(view: View) -> View:
        setattr(view, ATTRIBUTE, document)
        return view

    return attach


def undocumented(view: View) -> View:
    """Mark a view as outside the API's document (``/openapi.json`` itself)."""
    setattr(view, ATTRIBUTE, None)
    return view
