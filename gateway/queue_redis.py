"""The queue Redis servers: which one serves each node (``GATEWAY_QUEUE_REDIS_URLS``), one
client per server, made once per app and kept in ``app.extensions``.

A queue Redis holds, for the nodes mapped to it (a *node group*), everything of RQ's and
of the sweeper's: the node queues (runs), a ``callbacks`` queue (the deliveries of those
nodes' stages), RQ's scheduler and registries, and the two watch lists (``watches``).
Nothing there needs a step atomic with the state store: each enqueue, with its watch
entry, is one transaction on one queue Redis. Each group has its own workers and sweeper
(``flask --app wsgi worker --group NODE``); docs/OPERATIONS.md, "Queues on several Redis
servers".

Without a map every node is on ``GATEWAY_QUEUE_REDIS_URL`` (the store's Redis by default):
one group, ``"*"``, as before.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from flask import current_app

from gateway import tasks
from gateway.connections import connect, get_connections

if TYPE_CHECKING:
    from flask import Flask
    from redis import Redis

#: The map's key for every node it does not name.
EVERY_OTHER_NODE = "*"


class NodeGroupError(ValueError):
    """Queues asked of one worker that live on several queue Redis servers, or an unknown
    group; the message says what to start instead."""


@dataclass(eq=False)
class QueueRedis:
    """One queue Redis server and the node group it serves."""

    url: str
    client: Redis
    #: The nodes the map names for it, and ``"*"`` when it also serves every node not named.
    names: tuple[str, ...]
    #: Whether it is the store's Redis, so that the run scripts may write its run watch
    #: list in their own atomic step (``watches``).
    holds_store: bool

    @property
    def label(self) -> str:
        """The group as an operator names it (``--group``): its nodes, ``*`` included."""
        return ",".join(self.names)


@dataclass(eq=False)
class QueueRedisMap:
    """Node → queue Redis. ``for_task`` is one dict get once a task name was seen."""

    default: QueueRedis
    #: The servers other than the default, by each node the map names for them.
    named: dict[str, QueueRedis]
    #: Task name → server, filled by ``for_task``: a hot path may read it directly.
    by_task: dict[str, QueueRedis] = field(default_factory=dict, repr=False)

    @property
    def single(self) -> bool:
        """Whether every node is on one queue Redis (the default deployment)."""
        return not self.named

    def for_node(self, node: str) -> QueueRedis:
        return self.named.get(node, self.default)

    def for_task(self, task_name: str) -> QueueRedis:
        server = self.by_task.get(task_name)
        if server is None:
            # Task names come from the registry (the API refuses others): bounded.
            server = self.by_task[task_name] = self.for_node(tasks.node_of(task_name))
        return server

    def all(self) -> list[QueueRedis]:
        """Every queue Redis server, the default first."""
        return [self.default, *dict.fromkeys(self.named.values())]

    def group(self, name: str) -> QueueRedis:
        """The server of the group an operator names by one of its nodes (or ``*``);
        ``NodeGroupError`` for a name that is neither in the map nor a registered node."""
        if name != EVERY_OTHER_NODE and name not in self.named and name not in self.default.names:
            if name not in tasks.by_node():
                known = sorted({*self.named, *self.default.names, *tasks.by_node()})
                raise NodeGroupError(f"--group {name}: no such node (known: {', '.join(known)})")
        return self.default if name == EVERY_OTHER_NODE else self.for_node(name)

    def nodes_of(self, server: QueueRedis) -> list[str]:
        """The registered nodes whose runs are queued on ``server``."""
        return [node for node in tasks.by_node() if self.for_node(node) is server]

    def server_for_queues(self, queue_names: list[str], callback_queue: str) -> QueueRedis:
        """The one server of the node queues in ``queue_names`` (the callback queue is on
        every server, and alone it means the default's); ``NodeGroupError`` when they span
        several servers."""
        servers = list(dict.fromkeys(self.for_node(name) for name in queue_names if name != callback_queue))
        if len(servers) > 1:
            groups = "; ".join(f"{', '.join(n for n in queue_names if self.for_node(n) is s)} on group {s.label}"
                               for s in servers)  # fmt: skip
            raise NodeGroupError(
                f"the queues asked for live on {len(servers)} queue Redis servers (GATEWAY_QUEUE_REDIS_URLS: "
                f"{groups}); start one worker per server (--group NODE, or --queues of one group)"
            )
        return servers[0] if servers else self.default


def build(config: dict, default_client: Redis, *, store_shared: bool) -> QueueRedisMap:
    """The map from ``config["QUEUE_REDIS_URLS"]`` (``gateway.config.queue_redis_urls``):
    one client per distinct URL, the default's being ``default_client``."""
    urls: dict[str, str] = config["QUEUE_REDIS_URLS"]
    default_url = urls[EVERY_OTHER_NODE]
    by_url: dict[str, list[str]] = {}
    for name, url in urls.items():
        by_url.setdefault(url, []).append(name)
    servers: dict[str, QueueRedis] = {}
    for url, names in by_url.items():
        is_default = url == default_url
        servers[url] = QueueRedis(
            url=url,
            client=default_client if is_default else connect(url, config, decode_responses=False),
            names=tuple(sorted(names, key=lambda n: (n == EVERY_OTHER_NODE, n))),
            # ``connections.shared`` says whether the default is the store's Redis (never
            # with a Cluster store). Another server counts as apart even if it names the
            # store's Redis: correct too, at one more round trip per run.
            holds_store=store_shared and is_default,
        )
    default = servers[default_url]
    named = {name: servers[url] for name, url in urls.items() if name != EVERY_OTHER_NODE and url != default_url}
    return QueueRedisMap(default=default, named=named)


def get_queue_redis(app: Flask | None = None) -> QueueRedisMap:
    app = app or current_app
    return app.extensions["gateway.queue_redis"]


def init_app(app: Flask) -> None:
    """Needs ``connections.init_app`` first; ``watches`` and ``queues`` need this first."""
    connections = get_connections(app)
    app.extensions["gateway.queue_redis"] = build(app.config, connections.queue, store_shared=connections.shared)
