"""The Redis clients: the one factory every client comes from, and the app's two (the
store's and the queues'), made once per app and kept in ``app.extensions``.

With ``GATEWAY_REDIS_CLUSTER`` the store's client is a ``redis.cluster.RedisCluster``,
chosen here once: the store calls the same methods on either, so a single Redis pays no
branch per call. The cluster client reads the slot map from the startup node when it is
made, routes each script by its first key's slot, follows ``MOVED``/``ASK`` and re-reads
the map after a failover. Its retries are bounded (``CLUSTER_RETRIES``), so a request
for a slot without a reachable primary fails in about the connect timeout and answers
503 (``api.errors``) while the other slots go on.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import redis
from flask import current_app
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
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


#: Attempts after the first that the cluster client makes for one command after a
#: connection error or CLUSTERDOWN, each after re-reading the slot map: one covers a
#: primary that moved or a pooled connection that broke; more would hold a request for
#: a whole failover (seconds) instead of answering 503 at once.
CLUSTER_RETRIES = 1


def connect_cluster(url: str, config: dict[str, Any]) -> RedisCluster:
    """A cluster client from one startup node; it reads the slot map now (a node must
    answer) and finds the other nodes there."""
    return RedisCluster.from_url(
        url,
        decode_responses=True,
        socket_connect_timeout=float(config["REDIS_CONNECT_TIMEOUT_SECONDS"]),
        socket_timeout=float(config["REDIS_SOCKET_TIMEOUT_SECONDS"]),
        retry=Retry(NoBackoff(), CLUSTER_RETRIES),
        health_check_interval=30,
    )


def connect_store(config: dict[str, Any]) -> redis.Redis | RedisCluster:
    """The task store's client: a cluster client with ``GATEWAY_REDIS_CLUSTER``."""
    if config["REDIS_CLUSTER"]:
        return connect_cluster(config["REDIS_URL"], config)
    return connect(config["REDIS_URL"], config, decode_responses=True)


def listener_pubsub(client: redis.Redis | RedisCluster) -> redis.client.PubSub:
    """A pub/sub connection for a long-lived ``SUBSCRIBE`` (``stage_ends``).

    On a cluster a ``PUBLISH`` reaches every node, replicas included, so any node will
    do: a random one each time, so that a resubscription after a node died tries
    another instead of the dead one the slot map may still name."""
    if isinstance(client, RedisCluster):
        return client.pubsub(node=random.choice(client.get_nodes()))
    return client.pubsub()


def node_clients(client: redis.Redis | RedisCluster) -> list[tuple[str, redis.Redis]]:
    """(label, client) for every server behind ``client``: itself, or each node of a
    cluster (primaries first), for commands every node must get (``SCRIPT LOAD``)."""
    if isinstance(client, RedisCluster):
        nodes = client.get_primaries() + client.get_replicas()
        return [(node.name, client.get_redis_connection(node)) for node in nodes]
    return [("", client)]


@dataclass(frozen=True)
class Connections:
    #: The task documents' Redis (``GATEWAY_REDIS_URL``), or its cluster; replies decoded as text.
    store: redis.Redis | RedisCluster
    #: RQ's Redis (``GATEWAY_QUEUE_REDIS_URL``, the store's by default); replies as bytes,
    #: as RQ expects them. It also holds the watch lists (``watches``).
    queue: redis.Redis
    #: Whether both URLs name the same Redis, so that one script can reach both.
    shared: bool
    #: Whether the store is a Redis Cluster.
    cluster: bool = False


def get_connections(app: Flask | None = None) -> Connections:
    app = app or current_app
    return app.extensions["gateway.connections"]


def init_app(app: Flask) -> None:
    config = app.config
    app.extensions["gateway.connections"] = Connections(
        store=connect_store(config),
        queue=connect(config["QUEUE_REDIS_URL"], config, decode_responses=False),
        shared=config["QUEUE_REDIS_URL"] == config["REDIS_URL"] and not config["REDIS_CLUSTER"],
        cluster=bool(config["REDIS_CLUSTER"]),
    )
