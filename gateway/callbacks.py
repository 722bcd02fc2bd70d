"""Callback delivery: the payload, Standard Webhooks signing, and the one HTTP call.

The only module that makes outbound HTTP requests. It connects to an address that
``urlpolicy`` vetted, never to a second DNS answer, and follows no redirects.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from standardwebhooks import Webhook

from gateway import __version__, documents, jsontext, urlpolicy
from gateway.tenancy import public

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

    With several secrets (rotation) the signatures are space-separated, the list
    form of the standard, so a receiver holding either secret verifies.
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
class Outcome:
    """The result of one delivery attempt."""

    delivered: bool
    status_code: int | None = None
    error: str | None = None
    #: True when retrying cannot help: 410 Gone, or a URL the policy refuses.
    final: bool = False
    #: Seconds the receiver asked us to wait (Retry-After), if it did.
    retry_after: float | None = None


class _PinnedAddressAdapter(HTTPAdapter):
    """Connects to one vetted address while keeping the URL's host for Host and TLS."""

    def __init__(self, address: str, hostname: str) -> None:
        self._address = address
        self._hostname = hostname
        super().__init__(max_retries=0)

    def build_connection_pool_key_attributes(self, request, verify, cert=None):
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(request, verify, cert)
        host_params["host"] = self._address
        if host_params["scheme"] == "https":
            pool_kwargs["server_hostname"] = self._hostname
            pool_kwargs["assert_hostname"] = self._hostname
        return host_params, pool_kwargs


def post(url: str, body: str, request_headers: dict[str, str], *, timeout: float, policy: urlpolicy.Policy) -> Outcome:
    """POST one delivery attempt; never raises for network trouble, only reports it."""
    parts = urlsplit(url)
    try:
        urlpolicy.check_url(url, policy)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        address = urlpolicy.resolve_vetted(parts.hostname, port, policy)
    except urlpolicy.UrlRefused as error:
        return Outcome(False, error=f"refused: {error}", final=True)
    except OSError as error:
        return Outcome(False, error=str(error))

    session = requests.Session()
    session.trust_env = False  # no proxies from the environment: we connect where we vetted
    session.mount(f"{parts.scheme}://", _PinnedAddressAdapter(address, parts.hostname))
    host_header = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
    if ":" in parts.hostname:
        host_header = f"[{parts.hostname}]" + ("" if parts.port is None else f":{parts.port}")
    try:
        response = session.post(
            url,
            data=body.encode("utf-8"),
            headers={**request_headers, "Host": host_header},
            timeout=timeout,
            allow_redirects=False,
            stream=True,
        )
        response.close()
    except requests.RequestException as error:
        return Outcome(False, error=f"{type(error).__name__}: {error}")
    finally:
        session.close()
    code = response.status_code
    if 200 <= code < 300:
        return Outcome(True, status_code=code)
    return Outcome(
        False,
        status_code=code,
        error=f"HTTP {code}",
        final=code == 410,
        retry_after=_retry_after(response.headers.get("Retry-After")),
    )


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
