"""The console's pages: sign-in, the overview, a task's page and its actions.

Every page needs a signed-in session (``session``) unless no token is configured; every
POST carries the session's CSRF token in a hidden field; every response carries the
security headers (``security``). Actions call the same service functions as the API, so
the console can do nothing the viewer's token could not do through the API.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from flask import (
    Blueprint,
    abort,
    current_app,
    g,
    redirect,
    render_template,
    request,
    send_from_directory,
    url_for,
)
from markupsafe import Markup
from redis.exceptions import RedisError

from gateway import documents, service
from gateway.api.schemas import TASK_ID_PATTERN
from gateway.console import overview, security, taskpage
from gateway.console.session import ConsoleSession, get_sessions
from gateway.exceptions import GatewayError, TaskNotFound
from gateway.store import get_store
from gateway.tenancy import TENANT_NAME
from gateway.watches import get_watches

bp = Blueprint("console", __name__, url_prefix="/console", template_folder="templates")
STATIC_FOLDER = Path(__file__).resolve().parent / "static"
#: How long a browser may keep the stylesheet and the script without asking again.
STATIC_MAX_AGE_SECONDS = 300

#: Endpoints open without signing in.
PUBLIC_ENDPOINTS = frozenset({"console.login", "console.login_submit", "console.static"})
_TASK_ID = re.compile(TASK_ID_PATTERN.removesuffix("$") + r"\Z")
#: What a finished action says on the page it returns to (``?done=``).
DONE_MESSAGES = {
    "resent": "The delivery was queued again.",
    "retried": "The failed stages were queued again.",
    "cancelled": "The live stages were cancelled.",
    "deleted": "The task was deleted.",
}


# -- every request ---------------------------------------------------------------------


@bp.before_request
def _sign_in_and_check_form():
    sessions = get_sessions()
    g.console_session = sessions.load(request)
    g.console_viewer = sessions.viewer(g.console_session)
    if request.method == "POST" and not g.console_session.csrf_matches(request.form.get("csrf_token")):
        return _page("console/error.html", 400, message="The form has expired. Reload the page and try again.")
    if g.console_viewer is None and request.endpoint not in PUBLIC_ENDPOINTS:
        target = request.full_path.rstrip("?") if request.method == "GET" else None
        return redirect(url_for("console.login", next=target), 303)
    return None


@bp.after_request
def _save_session_and_secure(response):
    session = g.get("console_session")
    if session is not None:
        get_sessions().save(session, response, secure=request.is_secure)
    return security.add_headers(response, page=request.endpoint != "console.static")


@bp.app_template_filter("iso")
def _iso(ms: float | None) -> str | None:
    return documents.iso(ms)


@bp.app_template_filter("clock")
def _clock(iso_time: str | None) -> Markup | str:
    """An ISO time as a ``<time>`` showing the time of day (UTC, to the millisecond),
    the whole ISO text on hover: the tables stay narrow."""
    if not iso_time:
        return "—"
    shown = iso_time.partition("T")[2].removesuffix("Z") or iso_time
    return Markup('<time datetime="{0}" title="{0}">{1}</time>').format(iso_time, shown)


@bp.app_template_global()
def csrf_token() -> str:
    return g.console_session.csrf


@bp.app_template_global()
def task_url(endpoint: str, task_id: str, tenant: str | None, **values) -> str:
    """The URL of a task's page or action: with ``?tenant=`` for an operator, who sees
    every tenant (a tenant's own token needs none)."""
    if tenant and g.console_viewer.operator and not g.console_viewer.open:
        values["tenant"] = tenant
    return url_for(endpoint, task_id=task_id, **values)


NOT_FOUND = "No such page, or no such task for your token."


@bp.errorhandler(GatewayError)
def _gateway_error(error: GatewayError):
    # One answer for a task that does not exist and one of another tenant's.
    message = NOT_FOUND if isinstance(error, TaskNotFound) else error.message
    return _page("console/error.html", error.status_code, message=message)


@bp.errorhandler(404)
def _not_found(error):
    return _page("console/error.html", 404, message=NOT_FOUND)


@bp.errorhandler(RedisError)
def _redis_down(error: RedisError):
    current_app.logger.warning("console: Redis unavailable: %s", error)
    return _page("console/error.html", 503, message="Redis is unavailable; try again shortly.")


def _page(template: str, status: int = 200, **context):
    return render_template(template, viewer=g.get("console_viewer"), **context), status


# -- files ----------------------------------------------------------------------------


@bp.get("/static/<path:filename>")
def static(filename: str):
    """The stylesheet and the script (the app's, not a CDN's); open without a session."""
    return send_from_directory(STATIC_FOLDER, filename, max_age=STATIC_MAX_AGE_SECONDS)


# -- signing in and out ----------------------------------------------------------------


@bp.get("/login")
def login():
    if g.console_viewer is not None:
        return redirect(url_for("console.index"), 303)
    return _page("console/login.html", next=request.args.get("next", ""))


@bp.post("/login")
def login_submit():
    target = security.local_target(request.form.get("next"), url_for("console.index"))
    session = get_sessions().sign_in(request.form.get("token", ""))
    if session is None:
        # Said without the token, here and in every log.
        return _page("console/login.html", 401, next=target, problem="That token is not valid.")
    g.console_session = session
    return redirect(target, 303)


@bp.post("/logout")
def logout():
    g.console_session = ConsoleSession()
    return redirect(url_for("console.login"), 303)


# -- the overview -----------------------------------------------------------------------


@bp.get("")
def index():
    data = overview.build(g.console_viewer)
    return _page("console/overview.html", overview=data, done=DONE_MESSAGES.get(request.args.get("done", "")))


@bp.get("/find")
def find():
    task_id = request.args.get("task_id", "").strip()
    tenant = request.args.get("tenant", "").strip() or None
    if not _TASK_ID.match(task_id):
        return _page("console/error.html", 404, message="That is not a task id.")
    return redirect(_task_url(task_id, tenant), 303)


# -- a task ------------------------------------------------------------------------------


def _task_url(task_id: str, tenant: str | None, **values) -> str:
    return task_url("console.task", task_id, tenant, **values)


def _scope(task_id: str) -> tuple[str, str | None]:
    """The store id of the page's task and its tenant, as the viewer may see it: a
    tenant's token reaches its own tenant's tasks only (404 for any other, as the API)."""
    if not _TASK_ID.match(task_id):
        abort(404)
    viewer = g.console_viewer
    asked = request.args.get("tenant") or None
    if viewer.open:
        tenant = None
    elif viewer.operator:
        if asked is not None and not TENANT_NAME.match(asked):
            abort(404)
        tenant = asked
    else:
        if asked is not None and asked != viewer.tenant:
            abort(404)
        tenant = viewer.tenant
    return (f"{tenant}/{task_id}" if tenant else task_id), tenant


def _task_page(task_id: str, status: int = 200, **context):
    store_id, tenant = _scope(task_id)
    fields = get_store().read_fields(store_id)  # TaskNotFound → 404
    page = taskpage.build(task_id, tenant, fields, time.time() * 1000)
    watches = get_watches()
    taskpage.add_next_tries(page, store_id, watches.servers, watches.delivery_grace_ms)
    return _page("console/task.html", status, task=page, **context)


@bp.get("/tasks/<task_id>")
def task(task_id: str):
    return _task_page(task_id, done=DONE_MESSAGES.get(request.args.get("done", "")))


def _act(task_id: str, action, done: str):
    """Run an action on the task; back to its page (303), or the page with the refusal."""
    store_id, tenant = _scope(task_id)
    try:
        action(store_id)
    except TaskNotFound:
        raise
    except GatewayError as refusal:
        return _task_page(task_id, refusal.status_code, problem=refusal.message)
    return redirect(_task_url(task_id, tenant, done=done), 303)


@bp.post("/tasks/<task_id>/deliveries/<delivery_id>/resend")
def resend(task_id: str, delivery_id: str):
    return _act(task_id, lambda store_id: service.resend_delivery(store_id, delivery_id), "resent")


@bp.post("/tasks/<task_id>/retry")
def retry(task_id: str):
    task_name = request.form.get("task_name") or None
    return _act(task_id, lambda store_id: service.retry_task(store_id, task_name), "retried")


def _confirm(task_id: str, action: str, task_name: str | None = None):
    """The page that asks before ``action`` (cancel, delete) is posted."""
    _, tenant = _scope(task_id)
    return _page(
        "console/confirm.html",
        action=action,
        task_id=task_id,
        tenant=tenant,
        task_name=task_name,
        back=_task_url(task_id, tenant),
    )


@bp.get("/tasks/<task_id>/cancel")
def cancel_confirm(task_id: str):
    return _confirm(task_id, "cancel", request.args.get("task_name") or None)


@bp.post("/tasks/<task_id>/cancel")
def cancel(task_id: str):
    task_name = request.form.get("task_name") or None
    return _act(task_id, lambda store_id: service.cancel_task(store_id, task_name), "cancelled")


@bp.get("/tasks/<task_id>/delete")
def delete_confirm(task_id: str):
    return _confirm(task_id, "delete")


@bp.post("/tasks/<task_id>/delete")
def delete(task_id: str):
    store_id, _ = _scope(task_id)
    force = request.form.get("force") == "1"
    try:
        service.delete_task(store_id, force=force)
    except TaskNotFound:
        raise
    except GatewayError as refusal:
        return _task_page(task_id, refusal.status_code, problem=refusal.message)
    return redirect(url_for("console.index", done="deleted"), 303)
