"""The HTTP API: the ``/v1/tasks`` blueprint and its error handling."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flask import Flask


def init_app(app: Flask) -> None:
    from gateway.api import errors, openapi, routes

    app.url_map.converters["task_id"] = routes.TaskIdConverter
    errors.init_app(app)
    app.register_blueprint(routes.bp)
    app.register_blueprint(openapi.bp)
