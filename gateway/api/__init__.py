"""The HTTP API: the ``/v1/tasks`` blueprint and its error handling."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flask import Flask


def init_app(app: Flask) -> None:
    from gateway.api import errors, openapi, routes

    app.url_map.converters["task_id"] = routes.TaskIdConverter
    # Werkzeug would answer "/v1//tasks" with a 308 redirect to "/v1/tasks" in HTML, which
    # no error handler sees (Flask returns routing redirects as they are): a path is
    # either a route or a JSON 404. No rule ends in "/", so strict slashes never redirect.
    app.url_map.merge_slashes = False
    errors.init_app(app)
    app.register_blueprint(routes.bp)
    app.register_blueprint(openapi.bp)
