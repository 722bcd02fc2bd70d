"""Callback delivery: the payload, Standard Webhooks signing, and the one HTTP call.

The only module that makes outbound HTTP requests. It connects to an address that
``urlpolicy`` vetted, never to a second DNS answer, follows no redirects, and ends each
try at its deadline however slowly the receiver answers.
"""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any

import requests
from requests.adapters import HTTPAdapter
from standardwebhooks import Webhook
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from gateway import documents, jsontext, urlpolicy
from gateway.tenancy import public
from gateway.version import __version__

if TYPE_CHECKING:
    from collections.abc import Iterator

USER_AGENT = f"SingleTaskGateway/{__version__}"


def payload(task_id: str, task_name: str, entry: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    """The callback body: the result as it was when the delivery became due, and the
    reuse_info that the request which asked for this delivery received."""
    info = None
    if entry.get("reuse"):
        # Answered from an existing stage; a request that started a run gets null.
        info = documents.reuse_info(task_name, entry["reuse_state"], entry.get("input_matches"), entry.get("cached_ms"))
    return {
        "task_id": public(task_id),
        "task_name": task_name,
        "status": documents.TASK_STATUS[result["status"]],
        "result": result,
        "reuse_info": info,
        "timestamp": documents.iso(time.time() * 1000),
    }


def headers(delivery_id: str, body: str, secrets: list[str]) -> dict[str, str]:
    """Content type, User-Agent and the Standard Webhooks headers.

    ``secrets`` are those of the delivery's tenant (``signing.secrets_for``). With
    several (rotation) the signatures are space-separated, the list form of the
    standard, so a receiver holding either secret verifies.
    """
    now = datetime.now(UTC)
    result = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "webhook-id": delivery_id,
        "webhook-timestamp": str(int(now.timestamp())),
    }
    if secrets:
        result["webhook-signature"] = " ".join(Webhook(secret).sign(delivery_id, now, body) for secret in secrets)
    return result


@dataclass(frozen=True)
class TryOutcome:
    """The result of one delivery attempt."""

    delivered: bool
    status_code: int | None = None
    error: str | None = None
    #: True when retrying cannot help: 410 Gone, or a URL the policy refuses.
    final: bool = False
    #: Seconds the receiver asked us to wait (Retry-After), if it did.
    retry_after: float | None = None


def next_try(
    outcome: TryOutcome, try_number: int, *, intervals: list[float], max_retry_after: float
) -> tuple[documents.DeliveryStatus, float]:
    """The retry schedule: what try ``try_number`` that ended with ``outcome`` leaves the
    delivery (sent, failed, or queued for another try) and how many
    seconds to wait before that next try (0 when there is none).

    Try ``n`` is followed by try ``n + 1`` after ``intervals[n - 1]`` seconds
    (``GATEWAY_CALLBACK_RETRY_INTERVALS``), or after the receiver's Retry-After when that
    is longer, capped at ``max_retry_after`` (``GATEWAY_CALLBACK_MAX_RETRY_AFTER_SECONDS``).
    A refusal that retrying cannot change (``TryOutcome.final``) or the last interval used
    up fails the delivery.
    """
    if outcome.delivered:
        return documents.DeliveryStatus.SENT, 0.0
    if outcome.final or try_number > len(intervals):
        return documents.DeliveryStatus.FAILED, 0.0
    delay = float(intervals[try_number - 1])
    if outcome.retry_after is not None:
        delay = max(delay, min(outcome.retry_after, max_retry_after))
    return documents.DeliveryStatus.QUEUED, delay


class _Deadline:
    """The end of one try: at it, every socket of the try is shut down.

    requests' timeout bounds each socket operation, so a receiver that trickles its
    answer a byte at a time holds a try for as long as it likes (and urllib3's
    ``Timeout(total=...)`` is also applied per read). A timer thread that shuts the
    sockets down wakes any blocked connect, send or read at once.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._at = time.monotonic() + seconds
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self.expired = False
        self._timer: threading.Timer | None = None

    def remaining(self) -> float:
        return self._at - time.monotonic()

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
            if self.expired:
                _shut(sock)

    @contextmanager
    def running(self) -> Iterator[None]:
        """Arm the timer for the block; the try's sockets register while it runs."""
        self._timer = threading.Timer(max(0.0, self.remaining()), self._expire)
        self._timer.daemon = True
        token = _current_deadline.set(self)
        self._timer.start()
        try:
            yield
        finally:
            self._timer.cancel()
            _current_deadline.reset(token)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._sockets:
                _shut(sock)


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)  # not close(): the fd stays ours until urllib3 closes it
    except OSError:  # already closed
        pass


# The deadline of the try running in this thread (context), for the connections below.
_current_deadline: ContextVar[_Deadline | None] = ContextVar("callback_deadline", default=None)


def _watched(sock: socket.socket) -> socket.socket:
    deadline = _current_deadline.get()
    if deadline is not None:
        deadline.watch(sock)
    return sock


class _DeadlineHTTPConnection(HTTPConnection):
    def _new_conn(self) -> socket.socket:
        return _watched(super()._new_conn())


class _DeadlineHTTPSConnection(HTTPSConnection):
    def _new_conn(self) -> socket.socket:  # the raw socket: shutting it down also ends TLS
        return _watched(super()._new_conn())


class _DeadlineHTTPPool(HTTPConnectionPool):
    ConnectionCls = _DeadlineHTTPConnection


class _DeadlineHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _DeadlineHTTPSConnection


class _PinnedAddressAdapter(HTTPAdapter):
    """Connects to one vetted address while keeping the URL's host for Host and TLS,
    with every socket under the try's deadline."""

    def __init__(self, address: str, hostname: str) -> None:
        self._address = address
        self._hostname = hostname
        super().__init__(max_retries=0)

    def init_poolmanager(self, *args, **kwargs) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _DeadlineHTTPPool, "https": _DeadlineHTTPSPool}

    def build_connection_pool_key_attributes(self, request, verify, cert=None):
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(request, verify, cert)
        host_params["host"] = self._address
        if host_params["scheme"] == "https":
            pool_kwargs["server_hostname"] = self._hostname
            pool_kwargs["assert_hostname"] = self._hostname
        return host_params, pool_kwargs


def post(
    url: str, body: str, request_headers: dict[str, str], *, timeout: float, policy: urlpolicy.Policy
) -> TryOutcome:
    """POST one delivery attempt within ``timeout`` seconds in all (resolving,
    connecting, sending, and the answer's status line and headers; the body is not
    read). Never raises: whatever goes wrong is reported as a failed attempt."""
    deadline = _Deadline(timeout)
    try:
        target = urlpolicy.check_url(url, policy)
        address = urlpolicy.resolve_vetted(target.host, target.port, policy)
    except urlpolicy.UrlRefused as error:
        return TryOutcome(False, error=f"refused: {error}", final=True)
    except OSError as error:
        return TryOutcome(False, error=str(error))
    if deadline.remaining() <= 0:
        return _timed_out(timeout)

    session = requests.Session()
    session.trust_env = False  # no proxies from the environment: we connect where we vetted
    session.mount(f"{target.scheme}://", _PinnedAddressAdapter(address, target.host))
    try:
        with deadline.running():
            response = session.post(
                target.url,
                data=body.encode("utf-8"),
                headers={**request_headers, "Host": target.host_header},
                timeout=deadline.remaining(),  # per operation; the deadline bounds the sum
                allow_redirects=False,
                stream=True,
            )
            response.close()
    except Exception as error:  # network trouble, or anything requests/urllib3 raise
        if deadline.expired:
            return _timed_out(timeout)
        return TryOutcome(False, error=f"{type(error).__name__}: {error}")
    finally:
        session.close()
    code = response.status_code
    if 200 <= code < 300:
        return TryOutcome(True, status_code=code)
    return TryOutcome(
        False,
        status_code=code,
        error=f"HTTP {code}",
        final=code == 410,
        retry_after=_retry_after(response.headers.get("Retry-After")),
    )


def _timed_out(timeout: float) -> TryOutcome:
    return TryOutcome(False, error=f"Timeout: no complete answer within {timeout:g} s")


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def dumps(data: dict[str, Any]) -> str:
    """The body as sent and signed: UTF-8, a lone surrogate from a caller's input written
    as its ``\\u`` escape (``jsontext``)."""
    return jsontext.dumps(data)
