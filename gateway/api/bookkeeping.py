"""What every HTTP request leaves behind, in one place: its request id (echoed in
``X-Request-ID``), its log line (``requestlog``), and its count, latency and verdict in
the metrics (``metrics.TALLY``).

One WSGI middleware around the whole app (ProxyFix included), not Flask hooks: each
``before_request``/``after_request`` function costs every request Flask's coroutine check
and a call, plus the context proxies it reads, and the reuse hit pays all of it
(docs/PERFORMANCE.md, "Third round"). Here a request costs two clock reads, one object,
the ``start_response`` it is answered through, and what the line and the tally write. The
views tell the line what they learn (``requestlog.note``, ``note_verdict``); the tenant
comes from ``tenancy`` through the environ, since Flask's ``g`` is gone when the app returns.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from flask import Request

from gateway import logs, metrics, tenancy
from gateway.api import requestlog

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from flask import Flask

_clock = time.perf_counter
_UNMATCHED = metrics.UNMATCHED
_HEADER = requestlog.HEADER
_TENANT = tenancy.ENVIRON_KEY
_KEPT = "gateway.request"


class KeptRequest(Request):
    """Flask's request, also kept in its environ for ``RequestBookkeeping``, which reads it
    (its URL rule, path, view arguments) after Flask has cleared ``werkzeug.request``;
    the bookkeeping takes it out again, so no reference cycle outlives the request."""

    def __init__(self, environ: dict, populate_request: bool = True, shallow: bool = False) -> None:
        super().__init__(environ, populate_request, shallow)
        environ[_KEPT] = self


class RequestBookkeeping:
    """The app's WSGI callable, wrapped: see the module's docstring."""

    def __init__(self, wsgi_app: Callable, write_line: Callable[[str], None], render: Callable[..., str]) -> None:
        self.wsgi_app = wsgi_app
        self._write_line = write_line
        self._render = render
        self._logger = logging.getLogger(requestlog.LOGGER_NAME)
        self._answered = metrics.TALLY.answered

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        started = _clock()
        line = requestlog.begin(environ.get("HTTP_X_REQUEST_ID"))
        request_id = line.request_id
        answered: list[str] = []

        def start(status: str, headers: list, exc_info=None):
            answered.append(status)
            headers.append((_HEADER, request_id))
            return start_response(status, headers, exc_info)

        try:
            return self.wsgi_app(environ, start)
        finally:
            # An exception out of the app (none in practice: Flask answers them) is a 500
            # to gunicorn, and counted as one.
            status = int(answered[-1][:3]) if answered else 500
            self._finish(environ, environ.pop(_KEPT, None), line, status, _clock() - started)
            requestlog.end()

    def _finish(
        self, environ: dict, request: KeptRequest | None, line: requestlog.RequestLine, status: int, seconds: float
    ) -> None:
        # The request object Flask made (None if the app failed before): its URL rule names
        # the route in the metrics, its path and view arguments go in the line.
        rule = request.url_rule if request is not None else None
        self._answered(_UNMATCHED if rule is None else rule.rule, status, seconds, line.verdict)
        if not self._logger.isEnabledFor(logging.INFO):
            return
        if request is None:
            method, path = environ.get("REQUEST_METHOD", ""), environ.get("PATH_INFO", "")
        else:
            method, path = request.method, request.path
            if line.task_id is None and request.view_args:
                line.task_id = request.view_args.get("task_id")
                if environ.get("QUERY_STRING"):
                    line.task_name = request.args.get("task_name")
        self._write_line(
            self._render(
                line,
                method,
                path,
                status,
                environ.get(_TENANT),
                environ.get("REMOTE_ADDR"),
                round(seconds * 1000, 3),
            )
        )


def init_app(app: Flask) -> None:
    """Last of the app's WSGI wrappers (after ``proxies``), so that it times all of them and
    reads the client address ProxyFix decided. Needs ``logs.init_app`` first."""
    handler: logs.GatewayHandler = app.extensions["gateway.log_handler"]
    app.request_class = KeptRequest
    render = requestlog.text_line if app.config["LOG_FORMAT"] == "text" else requestlog.json_line
    app.wsgi_app = RequestBookkeeping(app.wsgi_app, handler.write_line, render)  # type: ignore[method-assign]
