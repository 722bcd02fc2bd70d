"""Readiness: whether this gateway can do its work now (``GET /readyz``).

Ready means: the store's Redis and every queue Redis answer (within the clients' connect
and socket timeouts), every Lua script is loaded there (``SCRIPT EXISTS``: the gateway's
on the store, RQ's on the queues), and each node queue and the callback queue has at
least one RQ worker seen recently. Liveness (``/healthz``) asks nothing of Redis.

A script that is missing is loaded here when the Redis user may (``SCRIPT LOAD``), as a
request would load it on first use: a Redis restarted without its script cache must not
keep a gateway "not ready" that would serve fine. With an ``EVALSHA``-only user it stays
missing until ``flask --app wsgi scripts load``, and so does readiness.

"Seen recently" is RQ's own notion: a worker's hash (``rq:worker:<name>``) lives while
it sends heartbeats and expires ``worker_ttl + 60`` seconds (480 by default) after the
last; the worker sets of a queue (``rq:workers:<queue>``) may still name an expired one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from redis.exceptions import RedisError
from rq.worker_registration import WORKERS_BY_QUEUE_KEY

from gateway import scripts, tasks
from gateway.queues import CALLBACK_QUEUE, get_queues
from gateway.store import get_store

if TYPE_CHECKING:
    from redis import Redis


@dataclass
class Readiness:
    #: "ok", or why that Redis could not be used.
    store_redis: str = "ok"
    queue_redis: str = "ok"
    scripts_missing: list[str] = field(default_factory=list)
    queues_without_workers: list[str] = field(default_factory=list)

    @property
    def ready(self) -> bool:
        return (
            self.store_redis == "ok"
            and self.queue_redis == "ok"
            and not self.scripts_missing
            and not self.queues_without_workers
        )

    def reasons(self) -> list[str]:
        found = []
        if self.store_redis != "ok":
            found.append(f"store Redis: {self.store_redis}")
        if self.queue_redis != "ok":
            found.append(f"queue Redis: {self.queue_redis}")
        if self.scripts_missing:
            found.append(f"Lua scripts not loaded: {', '.join(self.scripts_missing)}")
        if self.queues_without_workers:
            found.append(f"no worker for queues: {', '.join(self.queues_without_workers)}")
        return found

    def as_dict(self) -> dict:
        return {
            "store_redis": self.store_redis,
            "queue_redis": self.queue_redis,
            "scripts_missing": self.scripts_missing,
            "queues_without_workers": self.queues_without_workers,
        }


def _failure(error: RedisError) -> str:
    return f"{type(error).__name__}: {error}"[:200]


def _ensure_scripts(client: Redis, sources: dict[str, str]) -> list[str]:
    """Names of ``sources`` that Redis lacks after trying to load them."""
    missing = {name: sources[name] for name, _sha, loaded in scripts.check_loaded(client, sources) if not loaded}
    if missing:
        try:
            scripts.load_all(client, missing)
        except RedisError:  # NOPERM: an EVALSHA-only user; the operator loads them
            return sorted(missing)
    return []


def queue_names() -> list[str]:
    """The queues that need a worker: each node's, and the callbacks'."""
    return [*tasks.by_node(), CALLBACK_QUEUE]


def _queues_without_workers(names: list[str]) -> list[str]:
    queues = get_queues()
    without = []
    for name in names:
        connection = queues.get(name).connection
        keys = connection.smembers(WORKERS_BY_QUEUE_KEY % name)
        if not keys:
            without.append(name)
            continue
        with connection.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.exists(key)
            if not any(pipe.execute()):
                without.append(name)
    return without


def check() -> Readiness:
    """Each condition of readiness, checked against the app's Redis clients."""
    result = Readiness()
    store = get_store()
    try:
        store.client.ping()
        result.scripts_missing += _ensure_scripts(store.client, scripts.read_sources())
    except RedisError as error:
        result.store_redis = _failure(error)
    names = queue_names()
    # One queue Redis today (GATEWAY_QUEUE_REDIS_URL); each distinct connection once.
    connections = {id(c): c for c in (get_queues().get(name).connection for name in names)}
    try:
        for connection in connections.values():
            connection.ping()
            result.scripts_missing += _ensure_scripts(connection, scripts.rq_sources())
        result.queues_without_workers = _queues_without_workers(names)
    except RedisError as error:
        result.queue_redis = _failure(error)
    return result
