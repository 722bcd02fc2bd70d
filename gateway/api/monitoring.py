"""What operators and their tools ask of a web process: ``/healthz`` (liveness),
``/readyz`` (readiness, ``gateway.health``) and ``/metrics`` (Prometheus, ``gateway.metrics``;
``api/bookkeeping`` counts every request).

None of them needs an API token: a load balancer and Prometheus have none. ``/metrics``
asks for ``GATEWAY_METRICS_TOKEN`` when the operator set one (docs/OPERATIONS.md,
"Metrics": why not the API tokens).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import Blueprint, Response, current_app, jsonify, request
from prometheus_client import CollectorRegistry

from gateway import health, metrics
from gateway.api.operations import error, operation
from gateway.exceptions import GatewayError
from gateway.queues import get_queues
from gateway.version import __version__

if TYPE_CHECKING:
    from flask import Flask

bp = Blueprint("monitoring", __name__)

_CHECKS = {
    "type": "object",
    "required": ["store_redis", "queue_redis", "scripts_missing", "queues_without_workers"],
    "properties": {
        "store_redis": {"type": "string", "description": '"ok", or why it could not be used'},
        "queue_redis": {"type": "string", "description": '"ok", or why it could not be used'},
        "scripts_missing": {"type": "array", "items": {"type": "string"}},
        "queues_without_workers": {"type": "array", "items": {"type": "string"}},
    },
}
ALIVE = {
    "type": "object",
    "required": ["status", "version"],
    "properties": {"status": {"type": "string", "enum": ["ok"]}, "version": {"type": "string"}},
}
READY = {
    "type": "object",
    "required": ["status", "version", "checks"],
    "properties": {"status": {"type": "string", "enum": ["ready"]}, "version": {"type": "string"}, "checks": _CHECKS},
}


def _json(schema: dict, description: str = "OK") -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


class NotReady(GatewayError):
    status_code = 503
    code = "not_ready"


class MetricsUnauthorized(GatewayError):
    status_code = 401
    code = "unauthorized"


@bp.get("/healthz")
@operation(
    "Liveness: the process answers (Redis is not asked; no token needed)",
    responses={"200": _json(ALIVE)},
)
def healthz():
    return jsonify({"status": "ok", "version": __version__})


@bp.get("/readyz")
@operation(
    "Readiness: Redis reachable, Lua scripts loaded, a worker for every queue (no token needed)",
    responses={
        "200": _json(READY),
        "503": error("Not ready (not_ready): details say which check failed"),
    },
)
def readyz():
    readiness = health.check()
    if not readiness.ready:
        reasons = readiness.reasons()
        current_app.logger.warning("not ready: %s", "; ".join(reasons))
        raise NotReady("Not ready: " + "; ".join(reasons) + ".", readiness.as_dict())
    return jsonify({"status": "ready", "version": __version__, "checks": readiness.as_dict()})


@bp.get("/metrics", endpoint="metrics")
@operation(
    "Prometheus metrics, text format 0.0.4 (no API token; GATEWAY_METRICS_TOKEN when set)",
    responses={
        "200": {
            "description": "The metrics (docs/OPERATIONS.md, Metrics)",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        },
        "401": error("GATEWAY_METRICS_TOKEN is set and was not presented as a Bearer token"),
    },
)
def metrics_view():
    if not metrics.token_accepted(current_app.config["METRICS_TOKEN"], request.headers.get("Authorization")):
        raise MetricsUnauthorized("GATEWAY_METRICS_TOKEN is set: Authorization: Bearer <it>.")
    body = metrics.exposition(current_app.extensions["gateway.metrics.scrape"])
    return Response(body, content_type=metrics.CONTENT_TYPE)


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
    scrape = CollectorRegistry(auto_describe=False)
    scrape.register(metrics.QueueDepths(lambda: [get_queues(app).get(name) for name in health.queue_names()]))
    app.extensions["gateway.metrics.scrape"] = scrape
