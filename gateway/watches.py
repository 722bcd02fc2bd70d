"""The two watch lists the sweeper follows (the gateway's outbox): which runs and which
due deliveries to look at, and when.

Sorted sets in each queue Redis (``keys.run_watch``, ``keys.delivery_watch``), scored by
the time (epoch ms) at which the sweeper should look at a member. An entry lives on the
queue Redis of its task's node (``queue_redis``), beside the jobs it watches, so that
each sweeper reads the lists of its own server only. This module alone knows where the
run entries are written: when a node's queue Redis is the store's Redis, the run scripts
(``claim_stage``, ``start_run``, ``finish_run``, ``retry_task``) write them in the same
atomic step, and the store asks here for the KEYS and ARGV to pass; otherwise the web
process and the worker write them here, one round trip each (docs/DESIGN.md, "Redis
layout"). One ``Watches`` per app, kept in ``app.extensions``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from flask import current_app

from gateway import keys
from gateway.queue_redis import get_queue_redis

if TYPE_CHECKING:
    from flask import Flask
    from redis import Redis
    from redis.client import Pipeline

    from gateway.queue_redis import QueueRedis, QueueRedisMap

#: What a script appends when it does not write the watch list: no KEYS, no ARGV.
_NOTHING: tuple[list[str], list[Any]] = ([], [])
_NO_KEYS: list[str] = []


class Watches:
    def __init__(self, servers: QueueRedisMap, config: dict[str, Any]) -> None:
        self.servers = servers
        self._server_of = servers.by_task  # the reuse-hit path's one dict get
        #: The default queue Redis's client (tests, and one-server deployments).
        self.connection = servers.default.client
        self.run_lease_ms = int(float(config["RUN_LEASE_SECONDS"]) * 1000)
        # A delivery try ends within its HTTP timeout; past this it was lost.
        self.delivery_grace_ms = int(
            (float(config["CALLBACK_TIMEOUT_SECONDS"]) + float(config["DELIVERY_GRACE_SECONDS"])) * 1000
        )
        #: Whether the run scripts write the run watch list of every node themselves: only
        #: possible when it lives in the store's Redis (never with a Redis Cluster store,
        #: which RQ cannot share), so that every other script keeps to its task's slot.
        #: With several queue Redis servers only the nodes on the store's write in scripts
        #: (``QueueRedis.holds_store``), and a retry (whose stages the script picks) never.
        self.scripts_write_runs = all(server.holds_store for server in servers.all())
        self._script_keys = [keys.run_watch()]
        self._claim_watch_lease = f" {self.run_lease_ms} "

    # -- what the run scripts write themselves -------------------------------------

    def watch_claim(self, task_id: str, task_name: str) -> tuple[list[str], str]:
        """Watch the run a claim may start; returns the KEYS ``claim_stage.lua`` appends
        and the end of its terms (ARGV[3]: the time of the look and the member) to write
        the entry itself, in the same atomic step (and then a hit costs no write). Where
        it cannot, the entry is written now, before the claim (one entry per stage,
        however many requests): a process dying between a claim and its enqueue must
        leave a trace the sweeper follows. On the reuse-hit path: one dict get."""
        server = self._server_of.get(task_name) or self.servers.for_task(task_name)
        if not server.holds_store:
            self._watch_run_on(server.client, task_id, task_name, self.lease_check_ms())
            return _NO_KEYS, ""
        return self._script_keys, f"{self._claim_watch_lease}{keys.watch_member(task_id, task_name)}"

    def run_script_args(self, task_id: str, task_name: str) -> tuple[list[str], list[Any]]:
        """The KEYS and ARGV ``start_run.lua`` and ``finish_run.lua`` append to move or
        drop the run's entry."""
        if not self.servers.for_task(task_name).holds_store:
            return _NOTHING
        return self._script_keys, [keys.watch_member(task_id, task_name)]

    def retry_script_args(self, task_id: str) -> tuple[list[str], list[Any]]:
        """The KEYS and ARGV ``retry_task.lua`` appends; it builds each stage's member."""
        if not self.scripts_write_runs:
            return _NOTHING
        return self._script_keys, [task_id, self.run_lease_ms]

    # -- a run's life, where the scripts did not write it --------------------------

    def run_started(self, task_id: str, task_name: str) -> None:
        if not self.servers.for_task(task_name).holds_store:  # otherwise start_run moved it
            self.watch_run(task_id, task_name, self.lease_check_ms())

    def run_renewed(self, task_id: str, task_name: str) -> None:
        self.watch_run(task_id, task_name, self.lease_check_ms())

    def run_finished(self, task_id: str, task_name: str, *, deliveries_queued: bool) -> None:
        """Only once its deliveries are queued: until then the run's entry lets the
        sweeper find them if the process dies. With none due, finish_run dropped it."""
        if deliveries_queued or not self.servers.for_task(task_name).holds_store:
            self.forget_run(task_id, task_name)

    # -- runs ----------------------------------------------------------------------

    def lease_check_ms(self) -> int:
        """When to look at a run that gives no sign of life: one run lease from now."""
        return _now_ms() + self.run_lease_ms

    def watch_run(self, task_id: str, task_name: str, check_at_ms: int) -> None:
        self._watch_run_on(self._client(task_name), task_id, task_name, check_at_ms)

    def _watch_run_on(self, client: Redis, task_id: str, task_name: str, check_at_ms: int) -> None:
        client.zadd(keys.run_watch(), {keys.watch_member(task_id, task_name): check_at_ms})

    def watch_run_in(self, pipe: Pipeline, task_id: str, task_name: str) -> None:
        """The run's entry, one lease from now, as a command of ``pipe`` (a transaction on
        the queue Redis of the run's node), so that it is written with what else the
        pipeline holds."""
        pipe.zadd(keys.run_watch(), {keys.watch_member(task_id, task_name): self.lease_check_ms()})

    def forget_run(self, task_id: str, task_name: str) -> None:
        self._client(task_name).zrem(keys.run_watch(), keys.watch_member(task_id, task_name))

    def due_runs(self, server: QueueRedis, now_ms: int, limit: int) -> list[tuple[str, ...]]:
        """The runs due on ``server``'s list (each sweeper reads its own server's)."""
        return self._due(server.client, keys.run_watch(), now_ms, limit)

    # -- deliveries ----------------------------------------------------------------

    def watch_delivery(self, task_id: str, task_name: str, delivery_id: str, due_ms: int) -> None:
        """Look at the delivery once its try, due at ``due_ms``, should have ended."""
        member = keys.watch_member(task_id, task_name, delivery_id)
        self._client(task_name).zadd(keys.delivery_watch(), {member: due_ms + self.delivery_grace_ms})

    def watch_delivery_later(self, task_id: str, task_name: str, delivery_id: str) -> None:
        self.watch_delivery(task_id, task_name, delivery_id, _now_ms())

    def delivery_watched(self, task_id: str, task_name: str, delivery_id: str) -> bool:
        member = keys.watch_member(task_id, task_name, delivery_id)
        return self._client(task_name).zscore(keys.delivery_watch(), member) is not None

    def forget_delivery(self, task_id: str, task_name: str, delivery_id: str) -> None:
        self._client(task_name).zrem(keys.delivery_watch(), keys.watch_member(task_id, task_name, delivery_id))

    def due_deliveries(self, server: QueueRedis, now_ms: int, limit: int) -> list[tuple[str, ...]]:
        return self._due(server.client, keys.delivery_watch(), now_ms, limit)

    # -- entries on a server that no longer serves their node ------------------------

    def move_run(self, server: QueueRedis, task_id: str, task_name: str) -> None:
        """Hand an entry found on ``server`` (its node was mapped there before) to the
        sweeper of its node's server now, due at once; the entry is written there first."""
        self.watch_run(task_id, task_name, 0)
        server.client.zrem(keys.run_watch(), keys.watch_member(task_id, task_name))

    def move_delivery(self, server: QueueRedis, task_id: str, task_name: str, delivery_id: str) -> None:
        member = keys.watch_member(task_id, task_name, delivery_id)
        self._client(task_name).zadd(keys.delivery_watch(), {member: 0})
        server.client.zrem(keys.delivery_watch(), member)

    def _client(self, task_name: str) -> Redis:
        return self.servers.for_task(task_name).client

    def _due(self, client: Redis, key: str, now_ms: int, limit: int) -> list[tuple[str, ...]]:
        members = client.zrangebyscore(key, "-inf", now_ms, start=0, num=limit)
        return [tuple(member.decode().split("\t")) for member in members]


def _now_ms() -> int:
    return int(time.time() * 1000)


def get_watches(app: Flask | None = None) -> Watches:
    app = app or current_app
    return app.extensions["gateway.watches"]


def init_app(app: Flask) -> None:
    """Needs ``queue_redis.init_app`` first; ``store`` and ``queues`` need this first."""
    app.extensions["gateway.watches"] = Watches(get_queue_redis(app), app.config)
