"""Where the gateway's log lines go and what they look like: one JSON object per line
(``GATEWAY_LOG_FORMAT=json``, the default) or a readable line (``text``, the quickstart),
on standard error, from every process (gunicorn, the RQ workers, the sweeper, commands).

One handler on the root logger formats every record: the gateway's own loggers
(``gateway.*``), RQ's (``rq.*``) and, through ``gunicorn.conf.py``'s ``logconfig_dict``,
gunicorn's. Each line carries the ``request_id`` of the request it serves, when there is
one: the request's own (``requestlog``), or the one a run or delivery job was queued
with (``jobs``), kept here in a context variable that ``queues`` reads when it enqueues.

What never goes into a line: tokens, signing secrets, a callback URL's userinfo or query
string (``callback_target``, ``redact``), and user data (inputs, outputs). The loggers
log ids, names, statuses and errors; RQ logs job ids and our short job descriptions
(``queues``), never a job's arguments.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from collections import deque
from contextvars import ContextVar
from json.encoder import encode_basestring_ascii
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from flask import Flask

#: The request id of what this thread is doing now: a request, a job, a sweep; None
#: outside them. Set by ``requestlog.begin`` (per request), ``jobs`` (per job), ``sweeper``.
REQUEST_ID: ContextVar[str | None] = ContextVar("gateway_request_id", default=None)

#: Attributes every LogRecord has: the rest were passed in ``extra`` and become fields.
_RECORD_ATTRIBUTES = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}

quote = encode_basestring_ascii  # JSON string literal; C-accelerated, escapes every control character


def request_id() -> str | None:
    return REQUEST_ID.get()


# -- time stamps: ISO 8601 UTC with milliseconds, the seconds' part cached -----------------

_second: int = -1
_second_text: str = ""


def timestamp(now: float) -> str:
    """``2026-11-29T08:41:57.068Z`` for the epoch time ``now``."""
    global _second, _second_text
    whole = int(now)
    if whole != _second:
        # Two threads may both compute it in the same second: same text, no harm.
        _second_text, _second = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)), whole
    return f"{_second_text}.{int((now - whole) * 1000):03d}Z"


def text_value(value: object) -> str:
    """A field's value for a text line: plain when it is one printable word, else quoted
    as JSON (no newline or space from a caller can split or forge a line)."""
    if value is None:
        return "-"
    text = str(value)
    return text if text.isprintable() and " " not in text and text else quote(text)


# -- formatters --------------------------------------------------------------------------


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    """The ``extra`` fields of a record, with the current request id when it has none."""
    fields = {key: value for key, value in record.__dict__.items() if key not in _RECORD_ATTRIBUTES}
    if "request_id" not in fields:
        current = REQUEST_ID.get()
        if current is not None:
            fields["request_id"] = current
    return fields


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``time``, ``level``, ``logger``, ``message``, then the
    record's ``extra`` fields, then ``error`` (an exception's traceback) when there is one.

    The standard library's ``json`` rather than python-json-logger: the library costs
    ~18 us a record against ~13 us here (most of both is ``logging`` itself), and the
    per-request line, which must cost a few microseconds on the reuse hit, is written
    without a record at all (``requestlog``) in this same shape."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": timestamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update(_fields(record))
        if record.exc_info:
            line["traceback"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["traceback"] = record.exc_text
        if record.stack_info:
            line["stack"] = record.stack_info
        return json.dumps(line, ensure_ascii=True, separators=(",", ":"), default=str)


class TextFormatter(logging.Formatter):
    """``<time> <LEVEL> <logger>: <message> key=value ...``: for a person at a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{timestamp(record.created)} {record.levelname} {record.name}: {record.getMessage()}"
        fields = _fields(record)
        if fields:
            line += " " + " ".join(f"{key}={text_value(value)}" for key, value in fields.items())
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def formatter(log_format: str) -> logging.Formatter:
    return TextFormatter() if log_format == "text" else JsonFormatter()


class GatewayHandler(logging.StreamHandler):
    """The one handler on the root logger: writes to the standard error of the moment
    (``sys.stderr`` looked up at each write, so a test's capture or a redirected stream
    is followed, and a closed one never kept).

    Request lines (``write_line``) may wait to be written in batches, at most
    ``batch_seconds`` (``GATEWAY_LOG_FLUSH_SECONDS``) after they were made, by a thread of
    the handler's own: one ``write`` system call per batch instead of one per request,
    which was a measurable part of the reuse hit (docs/PERFORMANCE.md, "Fourth round").
    Every other record is written at once, after the request lines still waiting, so a
    process's lines keep their order; so is everything at a graceful exit (``flush``, from
    ``logging.shutdown`` and gunicorn's ``worker_exit``). A process killed outright loses
    the lines of its last ``batch_seconds``."""

    def __init__(self, log_format: str = "json") -> None:
        logging.Handler.__init__(self)
        self.setFormatter(formatter(log_format))
        #: How long a request line may wait; 0: each is written as it is made.
        self.batch_seconds = 0.0
        self._forget_lines()
        os.register_at_fork(after_in_child=self._forget_lines)

    def _forget_lines(self) -> None:
        # In a forked child too: the parent writes its own waiting lines, and its writer
        # thread does not exist here.
        # deque: append and popleft are atomic, so a line is never lost between threads.
        self._lines: deque[str] = deque()
        self._lines_waiting = threading.Event()
        self._writer: threading.Thread | None = None
        self._writer_lock = threading.Lock()

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass  # StreamHandler sets it; the stream is always the current sys.stderr

    def write_line(self, line: str) -> None:
        """Write a line formatted elsewhere (``requestlog``), now or with the next batch; a
        broken stream never breaks the request that logs."""
        if not self.batch_seconds:
            self.acquire()
            try:
                self._write(line)
            finally:
                self.release()
            return
        self._lines.append(line)
        # After the append: a writer that has already cleared the event writes this line
        # in the batch it is about to take; one that has not cleared it yet is woken again.
        if not self._lines_waiting.is_set():
            self._wake_writer()

    def _wake_writer(self) -> None:
        if self._writer is None:
            with self._writer_lock:
                if self._writer is None:
                    self._writer = threading.Thread(target=self._write_batches, name="gateway-log-lines", daemon=True)
                    self._writer.start()
        self._lines_waiting.set()

    def _write_batches(self) -> None:
        while True:
            self._lines_waiting.wait()
            time.sleep(self.batch_seconds)
            self._lines_waiting.clear()
            self.write_waiting_lines()

    def write_waiting_lines(self) -> None:
        """Write the request lines that wait, in one write."""
        lines = self._lines
        if not lines:
            return
        self.acquire()
        try:
            self._write("".join([lines.popleft() for _ in range(len(lines))]))
        finally:
            self.release()

    def emit(self, record: logging.LogRecord) -> None:
        self.write_waiting_lines()  # the requests that came before this record, first
        super().emit(record)

    def flush(self) -> None:
        self.write_waiting_lines()
        super().flush()

    @staticmethod
    def _write(text: str) -> None:
        try:
            sys.stderr.write(text)
        except (OSError, ValueError):
            pass


def root_handler() -> GatewayHandler:
    """The gateway's handler on the root logger, put there if it is not yet (by an
    earlier app of this process, or by gunicorn's ``logconfig_dict``)."""
    root = logging.getLogger()
    for handler in root.handlers:
        if isinstance(handler, GatewayHandler):
            return handler
    handler = GatewayHandler()
    root.addHandler(handler)
    return handler


def configure(log_format: str, level: str, flush_seconds: float = 0.0) -> GatewayHandler:
    """Send every record to standard error in ``log_format``; ``level`` for the gateway's
    loggers (RQ's worker logger has the worker's ``--log-level``); request lines written
    in batches at most ``flush_seconds`` apart (0: each at once)."""
    from flask.logging import default_handler

    handler = root_handler()
    handler.setFormatter(formatter(log_format))
    handler.batch_seconds = flush_seconds
    gateway_logger = logging.getLogger("gateway")
    # Flask's own handler (added when app.logger is first read) would write each line twice.
    gateway_logger.removeHandler(default_handler)
    gateway_logger.setLevel(level.upper())
    # urllib3 (under requests, which posts the callbacks) logs each request line, query
    # string included, at DEBUG: never, whatever the root logger's level.
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    return handler


def _gunicorn_logger_class() -> type:
    from gunicorn.glogging import Logger

    class GunicornLogger(Logger):
        """gunicorn's logger, writing access lines only when an access log is configured
        (``accesslog``, from ``GATEWAY_ACCESS_LOG``). gunicorn 27 also counts a
        ``logconfig_dict`` as asking for them, and builds each request's fields before its
        access logger (``WARNING``, no handler of its own) drops them: ~14 k instructions
        per request (bench/instructions.py)."""

        def _compute_access_log_enabled(self) -> bool:  # gunicorn 27's, pinned in requirements.txt
            return bool(self.cfg.accesslog)

    return GunicornLogger


def __getattr__(name: str) -> Any:
    # gunicorn imports ``gateway.logs.GunicornLogger`` (gunicorn.conf.py's logger_class); made
    # on first use, so that processes which are not gunicorn's never import gunicorn.
    if name == "GunicornLogger":
        globals()[name] = cls = _gunicorn_logger_class()
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def gunicorn_logconfig(log_format: str) -> dict[str, Any]:
    """``logconfig_dict`` for gunicorn.conf.py: gunicorn's error (and access, when on) lines
    go through the gateway's root handler, so they are JSON too, one handler for all."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "root": {"level": "WARNING", "handlers": ["gateway"]},
        "loggers": {
            "gunicorn.error": {"handlers": [], "propagate": True, "qualname": "gunicorn.error"},
            "gunicorn.access": {"handlers": [], "propagate": True, "qualname": "gunicorn.access"},
        },
        "handlers": {"gateway": {"()": "gateway.logs.GatewayHandler", "log_format": log_format}},
        "formatters": {},
    }


# -- what may be logged of a callback URL ------------------------------------------------


def callback_target(url: str) -> str:
    """``scheme://host[:port]/path`` of a callback URL: no userinfo, query or fragment."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "(unparsable URL)"
    return f"{parts.scheme}://{host}{port}{parts.path}"


def redact(text: str | None, url: str) -> str | None:
    """``text`` (an error message) without the URL's userinfo and query string, which an
    HTTP library may quote in its messages."""
    if not text:
        return text
    try:
        parts = urlsplit(url)
        secrets = [parts.query, parts.fragment, parts.username, parts.password]
    except ValueError:
        return "(error not shown: unparsable callback URL)"
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    return text


def init_app(app: Flask) -> None:
    """Needs ``config.load`` first (GATEWAY_LOG_FORMAT, GATEWAY_LOG_LEVEL, GATEWAY_LOG_FLUSH_SECONDS)."""
    app.extensions["gateway.log_handler"] = configure(
        app.config["LOG_FORMAT"], app.config["LOG_LEVEL"], float(app.config["LOG_FLUSH_SECONDS"])
    )
