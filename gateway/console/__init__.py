"""The operator console: server-rendered pages under ``/console`` (Jinja templates,
one stylesheet, one small script, all served by the app), behind the API's tokens.

``views`` has the pages and actions, ``session`` who is signed in, ``security`` the
headers, ``taskpage``/``timeline`` a task's page, ``overview``/``charts`` the overview.
Nothing here runs on an API request: the blueprint's hooks are its own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flask import Flask


def init_app(app: Flask) -> None:
    """Needs ``tenancy.init_app`` (the API's tokens) and ``store.init_app`` first."""
    from gateway.api.operations import undocumented
    from gateway.console import session, views

    app.extensions["gateway.console.sessions"] = session.Sessions(app)
    app.register_blueprint(views.bp)
    # Pages, not API operations: /openapi.json leaves them out.
    for endpoint, view in app.view_functions.items():
        if endpoint.startswith(f"{views.bp.name}."):
            undocumented(view)
