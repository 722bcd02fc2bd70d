"""One log line per HTTP request, and its request id.

The id is the caller's ``X-Request-ID`` when it is sane (1 to 128 characters of
``A-Z a-z 0-9`` and ``! # $ % & ' * + - . ^ _ ` | ~ / = : @``: an HTTP token, a UUID, base64),
else one made here (``_Ids``); it is echoed in the answer's ``X-Request-ID`` and carried by
the runs and deliveries the request queues (``logs.REQUEST_ID``, read by ``queues``).

``api/bookkeeping`` begins and ends each request's line, and writes it at the end of the
request, without a ``LogRecord``: on the reuse hit
(~300 us of CPU) ``logging`` alone would cost ~7 us and ``json.dumps`` ~4 us more; this
costs ~3 us and writes the same shape as ``logs.JsonFormatter`` (``bench/profile_hit.py``,
docs/OPERATIONS.md "Logs"). ``GATEWAY_LOG_LEVEL=WARNING`` turns it off.
"""

from __future__ import annotations

import itertools
import os
import re
import time
from contextvars import ContextVar

from gateway import logs

LOGGER_NAME = "gateway.request"
HEADER = "X-Request-ID"
_sane_request_id = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~/=:@-]{1,128}").fullmatch

_quote = logs.quote


class RequestLine:
    """What the line of the request under way says, filled as the request goes."""

    __slots__ = ("request_id", "task_id", "task_name", "verdict")

    def __init__(self, request_id: str) -> None:
        self.request_id = request_id
        self.task_id: str | None = None
        self.task_name: str | None = None
        self.verdict: str | None = None


_CURRENT: ContextVar[RequestLine | None] = ContextVar("gateway_request_line", default=None)


def note(task_id: str, task_name: str) -> None:
    """Tell the request's line which task and stage it is about (the create view reads
    them from the body; the other views' come from the path and query)."""
    current = _CURRENT.get()
    if current is not None:
        current.task_id, current.task_name = task_id, task_name


def note_verdict(verdict: str) -> None:
    """Tell the request's line the verdict its claim came to."""
    current = _CURRENT.get()
    if current is not None:
        current.verdict = verdict


class _Ids:
    """Request ids made here: a random prefix per process (made again in each forked
    gunicorn worker) and a counter, ``3f9a1c2b7d4e-1a``: unique without a system call."""

    def __init__(self) -> None:
        self.renew()
        os.register_at_fork(after_in_child=self.renew)

    def renew(self) -> None:
        self.prefix = os.urandom(6).hex() + "-"
        self.counter = itertools.count(1)

    def next(self) -> str:
        return f"{self.prefix}{next(self.counter):x}"


_ids = _Ids()


def begin(given_id: str | None) -> RequestLine:
    """The line of a request that has just come in with ``X-Request-ID: given_id`` (or
    none), made the current one of this thread: for ``note``, and for what it logs."""
    line = RequestLine(given_id if given_id is not None and _sane_request_id(given_id) else _ids.next())
    _CURRENT.set(line)
    logs.REQUEST_ID.set(line.request_id)
    return line


def end() -> None:
    """The request is answered: what this thread logs next is no longer its."""
    _CURRENT.set(None)
    logs.REQUEST_ID.set(None)


def _null_or(value: str | None) -> str:
    return "null" if value is None else _quote(value)


def json_line(current: RequestLine, method: str, path: str, status: int, tenant, client, duration_ms: float) -> str:
    return (
        f'{{"time":"{logs.timestamp(time.time())}","level":"INFO","logger":"{LOGGER_NAME}","message":"request",'
        f'"request_id":{_quote(current.request_id)},"method":{_quote(method)},"path":{_quote(path)},'
        f'"status":{status},"verdict":{_null_or(current.verdict)},"task_id":{_null_or(current.task_id)},'
        f'"task_name":{_null_or(current.task_name)},"tenant":{_null_or(tenant)},"duration_ms":{duration_ms},'
        f'"client":{_null_or(client)}}}\n'
    )


def text_line(current: RequestLine, method: str, path: str, status: int, tenant, client, duration_ms: float) -> str:
    value = logs.text_value
    return (
        f"{logs.timestamp(time.time())} INFO {LOGGER_NAME}: {value(method)} {value(path)} {status} {duration_ms} ms "
        f"verdict={value(current.verdict)} task_id={value(current.task_id)} task_name={value(current.task_name)} "
        f"tenant={value(tenant)} client={value(client)} request_id={value(current.request_id)}\n"
    )
