"""One error shape for everything: ``{"error": {"code", "message", "details"}}``."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from flask import current_app, jsonify
from marshmallow import ValidationError
from redis.exceptions import AskError, ClusterError, RedisClusterException, RedisError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from werkzeug.exceptions import HTTPException

from gateway import metrics
from gateway.exceptions import GatewayError, StoreUnavailable, WriteNotReplicated

if TYPE_CHECKING:
    from flask import Flask

log = logging.getLogger(__name__)

#: Codes for the HTTP errors Flask/Werkzeug raise themselves.
HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def error_response(status: int, code: str, message: str, details: dict[str, Any] | None = None):
    response = jsonify({"error": {"code": code, "message": message, "details": details or {}}})
    response.status_code = status
    return response


def _gateway_error(error: GatewayError):
    response = error_response(error.status_code, error.code, error.message, error.details)
    if error.status_code == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="gateway"'
    return response


def _validation_error(error: ValidationError):
    details = error.messages if isinstance(error.messages, dict) else {"_schema": error.messages}
    return error_response(400, "validation_error", "The request is not valid; see details.", details)


def _http_error(error: HTTPException):
    status = error.code or 500
    message, details = error.description or error.name, {}
    if status == 413:
        limit = current_app.config["MAX_CONTENT_LENGTH"]
        message, details = f"The request body is larger than the limit of {limit} bytes.", {"limit_bytes": limit}
    response = error_response(status, HTTP_CODES.get(status, "http_error"), message, details)
    if status == 405 and error.valid_methods:
        response.headers["Allow"] = ", ".join(error.valid_methods)
    return response


#: Seconds a 503 for an unavailable store asks the caller to wait (a Redis restart or a
#: cluster failover takes about this to a few seconds).
RETRY_AFTER_SECONDS = "1"


def _unavailable(error: StoreUnavailable):
    response = _gateway_error(error)
    response.headers["Retry-After"] = RETRY_AFTER_SECONDS
    return response


def _redis_down(error: Exception):
    # Also a Redis Cluster between a primary's failure and its replica's promotion:
    # CLUSTERDOWN, TRYAGAIN, MOVED/ASK left after the client's bounded retries, or no
    # node to read the slot map from (RedisClusterException, not a RedisError).
    log.warning("Redis unavailable: %s", error)
    metrics.redis_error("request", error)
    return _unavailable(StoreUnavailable("The task store (Redis) is unavailable; try again shortly."))


def _redis_refused(error: RedisError):
    # OOM (maxmemory), READONLY (a replica after failover), LOADING: Redis is there but
    # will not serve; callers should retry, as with an outage. Logged in full, as it may
    # also be our bug.
    log.error("Redis refused a command: %s", error, exc_info=error)
    metrics.redis_error("request", error)
    return _unavailable(StoreUnavailable("The task store (Redis) refused the request; try again shortly."))


def _unexpected(error: Exception):
    log.exception("unhandled error")
    return error_response(500, "internal_error", "An internal error occurred; it has been logged.")


def init_app(app: Flask) -> None:
    app.register_error_handler(GatewayError, _gateway_error)
    app.register_error_handler(WriteNotReplicated, _unavailable)
    app.register_error_handler(ValidationError, _validation_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(RedisConnectionError, _redis_down)
    app.register_error_handler(RedisTimeoutError, _redis_down)
    for cluster_error in (ClusterError, TryAgainError, AskError, RedisClusterException):
        app.register_error_handler(cluster_error, _redis_down)
    app.register_error_handler(RedisError, _redis_refused)
    app.register_error_handler(Exception, _unexpected)
