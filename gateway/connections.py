"""The Redis clients: the one factory every client comes from, and the app's two (the
store's and the queues'), made once per app and kept in ``app.extensions``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import redis
from flask import current_app
from redis.backoff import NoBackoff
from redis.retry import Retry

if TYPE_CHECKING:
    from flask import Flask


def connect(url: str, config: dict[str, Any], *, decode_responses: bool) -> redis.Redis:
    """A client that fails fast: a request must answer 503 in seconds, not hang."""
    return redis.Redis.from_url(
        url,
        decode_responses=decode_responses,
        socket_connect_timeout=float(config["REDIS_CONNECT_TIMEOUT_SECONDS"]),
        socket_timeout=float(config["REDIS_SOCKET_TIMEOUT_SECONDS"]),
        # One quick retry covers a pooled connection that a Redis restart closed.
        retry=Retry(NoBackoff(), 1),
        health_check_interval=30,
    )


@dataclass(frozen=True)
class Connections:
    #: The task documents' Redis (``GATEWAY_REDIS_URL``); replies decoded as text.
    store: redis.Redis
    #: RQ's Redis (``GATEWAY_QUEUE_REDIS_URL``, the store's by default); replies as bytes,
    #: as RQ expects them. It also holds the watch lists (``watches``).
    queue: redis.Redis
    #: Whether both URLs name the same Redis, so that one script can reach both.
    shared: bool


def get_connections(app: Flask | None = None) -> Connections:
    app = app or current_app
    return app.extensions["gateway.connections"]


def init_app(app: Flask) -> None:
    config = app.config
    app.extensions["gateway.connections"] = Connections(
        store=connect(config["REDIS_URL"], config, decode_responses=True),
        queue=connect(config["QUEUE_REDIS_URL"], config, decode_responses=False),
        shared=config["QUEUE_REDIS_URL"] == config["REDIS_URL"],
    )
