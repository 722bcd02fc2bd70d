"""API tokens and tenants: who is calling, and the namespace their task ids live in.

With ``GATEWAY_API_TOKENS`` set (a JSON object token → tenant, or ``@/path/to/file``
holding one), every ``/v1`` endpoint but health needs ``Authorization: Bearer <token>``.
A tenant's task ids are scoped as ``<tenant>/<task_id>`` before they reach the store, so
tenant B's ``task-1`` is another document than tenant A's: no read, reuse, delete, cancel
or callback can cross. Without tokens there is one unnamed tenant and ids are unscoped.
"""

from __future__ import annotations

import hashlib
import re
from typing import TYPE_CHECKING

from flask import current_app, request

from gateway.exceptions import GatewayError

if TYPE_CHECKING:
    from flask import Flask

TENANT_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# Only the tasks blueprint authenticates (/openapi.json is outside it); of its endpoints,
# health stays open for load balancers.
OPEN_ENDPOINTS = {"tasks.health"}
# Liveness, readiness and metrics (api/monitoring.py), outside the blueprint: open to a
# load balancer and Prometheus (/metrics has GATEWAY_METRICS_TOKEN of its own).
OPEN_ENDPOINTS |= {"monitoring.healthz", "monitoring.readyz", "monitoring.metrics"}

#: Where the request's tenant is kept: in the WSGI environ, not Flask's ``g``, since its
#: log line (``api/bookkeeping``) is written when ``g`` is gone. Unset: no tenant.
ENVIRON_KEY = "gateway.tenant"


class Unauthorized(GatewayError):
    status_code = 401
    code = "unauthorized"


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


def load_tokens(tokens: dict[str, str] | None) -> dict[bytes, str]:
    """Token digest → tenant, from ``GATEWAY_API_TOKENS`` as ``config`` read and checked
    it (``config_fields.Tokens``). Only digests are kept, so no token sits in memory or logs."""
    return {_digest(token): tenant for token, tenant in (tokens or {}).items()}


def authenticate() -> None:
    """``before_request`` of the tasks blueprint when the app has tokens: keep the
    request's tenant (``ENVIRON_KEY``) from the bearer token, or refuse with 401. (Without
    tokens it stays unset: one unnamed tenant.)"""
    tokens: dict[bytes, str] = current_app.extensions["gateway.tokens"]
    if not tokens or request.endpoint in OPEN_ENDPOINTS:
        return
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        raise Unauthorized("An API token is required: Authorization: Bearer <token>.")
    # Looked up by its SHA-256 digest: how long the lookup takes says nothing about how
    # much of a real token a guess got right.
    tenant = tokens.get(_digest(presented.strip()))
    if tenant is None:
        raise Unauthorized("The API token is not valid.")
    request.environ[ENVIRON_KEY] = tenant


def requires_tokens(app: Flask) -> bool:
    """Whether the app has API tokens, so that its ``/v1`` requests must authenticate."""
    return bool(app.extensions.get("gateway.tokens"))


def scoped(task_id: str) -> str:
    """The store's id for the calling tenant's ``task_id``."""
    # Through the object, not the proxy: ~2k instructions against ~10k, on every create.
    tenant = request._get_current_object().environ.get(ENVIRON_KEY)  # type: ignore[attr-defined]
    return f"{tenant}/{task_id}" if tenant else task_id


def public(scoped_id: str) -> str:
    """The caller's ``task_id`` of a store id (task ids cannot hold '/')."""
    return scoped_id.rsplit("/", 1)[-1]


def tenant_of(scoped_id: str) -> str | None:
    """The tenant of a store id; None for an unscoped one (no tokens)."""
    tenant, slash, _ = scoped_id.rpartition("/")
    return tenant if slash else None


#: Said once per start of the web server (``gunicorn.conf.py``'s ``on_starting`` hook, in
#: gunicorn's master): not by each process that builds the app (web workers, RQ workers,
#: ``flask`` commands), which would repeat it many times in the quickstart's output.
OPEN_API_WARNING = (
    "GATEWAY_API_TOKENS is not set: the API is open to anyone who can reach it, and all "
    "callers share one namespace of task ids"
)


def init_app(app: Flask) -> None:
    app.extensions["gateway.tokens"] = load_tokens(app.config["API_TOKENS"])
