"""The two watch lists the sweeper follows (the gateway's outbox): which runs and which
due deliveries to look at, and when.

Sorted sets in the queue Redis (``keys.run_watch``, ``keys.delivery_watch``), scored by
the time (epoch ms) at which the sweeper should look at a member. This module alone knows
where the run entries are written: when the queue Redis is the store's Redis, the run
scripts (``claim_stage``, ``start_run``, ``finish_run``, ``retry_task``) write them in the
same atomic step, and the store asks here for the KEYS and ARGV to pass; otherwise the web
process and the worker write them here, one round trip each (docs/DESIGN.md, "Redis
layout"). One ``Watches`` per app, kept in ``app.extensions``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from flask import current_app

from gateway import keys
from gateway.connections import get_connections

if TYPE_CHECKING:
    from flask import Flask
    from redis import Redis
    from redis.client import Pipeline

#: What a script appends when it does not write the watch list: no KEYS, no ARGV.
_NOTHING: tuple[list[str], list[Any]] = ([], [])


class Watches:
    def __init__(self, connection: Redis, config: dict[str, Any], *, scripts_write_runs: bool) -> None:
        self.connection = connection
        self.run_lease_ms = int(float(config["RUN_LEASE_SECONDS"]) * 1000)
        # A delivery try ends within its HTTP timeout; past this it was lost.
        self.delivery_grace_ms = int(
            (float(config["CALLBACK_TIMEOUT_SECONDS"]) + float(config["DELIVERY_GRACE_SECONDS"])) * 1000
        )
        #: Whether the run scripts write the run watch list themselves: only possible when
        #: it lives in the store's Redis (never with a Redis Cluster store, which RQ
        #: cannot share), so that every other script keeps to its task's slot.
        self.scripts_write_runs = scripts_write_runs
        self._script_keys = [keys.run_watch()] if scripts_write_runs else []

    # -- what the run scripts write themselves -------------------------------------

    def watch_claim(self, task_id: str, task_name: str) -> tuple[list[str], list[Any]]:
        """Watch the run a claim may start; returns the KEYS and ARGV ``claim_stage.lua``
        appends to write the entry itself, in the same atomic step (and then a hit costs
        no write). Where it cannot, the entry is written now, before the claim (one entry
        per stage, however many requests): a process dying between a claim and its
        enqueue must leave a trace the sweeper follows."""
        if not self.scripts_write_runs:
            self.watch_run(task_id, task_name, self.lease_check_ms())
            return _NOTHING
        return self._script_keys, [keys.watch_member(task_id, task_name), self.run_lease_ms]

    def run_script_args(self, task_id: str, task_name: str) -> tuple[list[str], list[Any]]:
        """The KEYS and ARGV ``start_run.lua`` and ``finish_run.lua`` append to move or
        drop the run's entry."""
        if not self.scripts_write_runs:
            return _NOTHING
        return self._script_keys, [keys.watch_member(task_id, task_name)]

    def retry_script_args(self, task_id: str) -> tuple[list[str], list[Any]]:
        """The KEYS and ARGV ``retry_task.lua`` appends; it builds each stage's member."""
        if not self.scripts_write_runs:
            return _NOTHING
        return self._script_keys, [task_id, self.run_lease_ms]

    # -- a run's life, where the scripts did not write it --------------------------

    def run_started(self, task_id: str, task_name: str) -> None:
        if not self.scripts_write_runs:  # otherwise start_run moved the entry itself
            self.watch_run(task_id, task_name, self.lease_check_ms())

    def run_renewed(self, task_id: str, task_name: str) -> None:
        self.watch_run(task_id, task_name, self.lease_check_ms())

    def run_finished(self, task_id: str, task_name: str, *, deliveries_queued: bool) -> None:
        """Only once its deliveries are queued: until then the run's entry lets the
        sweeper find them if the process dies. With none due, finish_run dropped it."""
        if deliveries_queued or not self.scripts_write_runs:
            self.forget_run(task_id, task_name)

    # -- runs ----------------------------------------------------------------------

    def lease_check_ms(self) -> int:
        """When to look at a run that gives no sign of life: one run lease from now."""
        return _now_ms() + self.run_lease_ms

    def watch_run(self, task_id: str, task_name: str, check_at_ms: int) -> None:
        self.connection.zadd(keys.run_watch(), {keys.watch_member(task_id, task_name): check_at_ms})

    def watch_run_in(self, pipe: Pipeline, task_id: str, task_name: str) -> None:
        """The run's entry, one lease from now, as a command of ``pipe`` (a transaction on
        this connection), so that it is written with what else the pipeline holds."""
        pipe.zadd(keys.run_watch(), {keys.watch_member(task_id, task_name): self.lease_check_ms()})

    def forget_run(self, task_id: str, task_name: str) -> None:
        self.connection.zrem(keys.run_watch(), keys.watch_member(task_id, task_name))

    def due_runs(self, now_ms: int, limit: int) -> list[tuple[str, ...]]:
        return self._due(keys.run_watch(), now_ms, limit)

    # -- deliveries ----------------------------------------------------------------

    def watch_delivery(self, task_id: str, task_name: str, delivery_id: str, due_ms: int) -> None:
        """Look at the delivery once its try, due at ``due_ms``, should have ended."""
        member = keys.watch_member(task_id, task_name, delivery_id)
        self.connection.zadd(keys.delivery_watch(), {member: due_ms + self.delivery_grace_ms})

    def watch_delivery_later(self, task_id: str, task_name: str, delivery_id: str) -> None:
        self.watch_delivery(task_id, task_name, delivery_id, _now_ms())

    def delivery_watched(self, task_id: str, task_name: str, delivery_id: str) -> bool:
        member = keys.watch_member(task_id, task_name, delivery_id)
        return self.connection.zscore(keys.delivery_watch(), member) is not None

    def forget_delivery(self, task_id: str, task_name: str, delivery_id: str) -> None:
        self.connection.zrem(keys.delivery_watch(), keys.watch_member(task_id, task_name, delivery_id))

    def due_deliveries(self, now_ms: int, limit: int) -> list[tuple[str, ...]]:
        return self._due(keys.delivery_watch(), now_ms, limit)

    def _due(self, key: str, now_ms: int, limit: int) -> list[tuple[str, ...]]:
        members = self.connection.zrangebyscore(key, "-inf", now_ms, start=0, num=limit)
        return [tuple(member.decode().split("\t")) for member in members]


def _now_ms() -> int:
    return int(time.time() * 1000)


def get_watches(app: Flask | None = None) -> Watches:
    app = app or current_app
    return app.extensions["gateway.watches"]


def init_app(app: Flask) -> None:
    """Needs ``connections.init_app`` first; ``store`` and ``queues`` need this first."""
    connections = get_connections(app)
    app.extensions["gateway.watches"] = Watches(connections.queue, app.config, scripts_write_runs=connections.shared)
