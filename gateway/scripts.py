"""The Lua scripts of ``lua/``: registered once per client, called by SHA, loaded by operators
(``cli``: ``scripts load``/``scripts check``)."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from redis.cluster import RedisCluster
from redis.exceptions import (
    AskError,
    ClusterDownError,
    NoPermissionError,
    NoScriptError,
    RedisError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.exceptions import ScriptsNotLoaded, WriteNotReplicated
from gateway.luasource import LUA_DIR, flattened_sources

if TYPE_CHECKING:
    from redis import Redis
    from redis.commands.core import Script

LOAD_COMMAND = "flask --app wsgi scripts load"


@functools.cache
def read_sources() -> dict[str, str]:
    """Script name (file stem) → Lua source as Redis runs it (includes expanded), for
    every script in ``lua/`` (read once; see ``gateway.luasource``)."""
    return flattened_sources(LUA_DIR)


class Scripts:
    """One client's registered scripts, called by SHA.

    redis-py's ``Script`` sends ``EVALSHA`` and, on ``NOSCRIPT``, loads the script and
    tries again. A Redis user that may only ``EVALSHA`` gets a permission error on that
    load instead; both cases become ``ScriptsNotLoaded``, naming the operator command.
    """

    def __init__(self, client: Redis, sources: dict[str, str] | None = None) -> None:
        """``sources``: name → Lua source, the gateway's own (``read_sources``) unless given
        (another release's, in tests/test_upgrade.py)."""
        self._client = client
        self._scripts: dict[str, Script] = {
            name: client.register_script(source) for name, source in (sources or read_sources()).items()
        }

    def missing(self) -> list[str]:
        """Names of the scripts Redis does not hold (``SCRIPT EXISTS``)."""
        present = self._client.script_exists(*(script.sha for script in self._scripts.values()))
        return [name for name, ok in zip(self._scripts, present, strict=True) if not ok]

    def __call__(self, name: str, keys: list[str], args: list[object]) -> object:
        script = self._scripts[name]
        try:
            try:
                # EVALSHA straight away: ``Script.__call__`` adds three layers of calls on
                # every request, a few percent of a reuse hit.
                return self._client.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
            except NoScriptError:
                return script(keys=keys, args=args)  # loads it (SCRIPT LOAD) and tries again
        except NoScriptError as error:
            raise _not_loaded(name) from error
        except NoPermissionError as error:
            # Denied SCRIPT LOAD after NOSCRIPT; any other denial is not ours to rename.
            if "script" not in str(error).lower():
                raise
            raise _not_loaded(name) from error


class ClusterScripts(Scripts):
    """Scripts on a Redis Cluster, sent straight to the primary of their slot.

    ``RedisCluster.execute_command`` spends about 100 us of Python per call on routing
    policies and metrics (more than the rest of a reuse hit's Redis call); the slot map
    it keeps answers the same question in a few. What only the cluster client handles
    is left to it: a ``MOVED``/``ASK`` (resharding), ``TRYAGAIN`` or ``CLUSTERDOWN`` reply
    means the script did not run here, and the call is made again through it (it follows
    the redirection and updates the map); a ``NOSCRIPT`` too (its load reaches every
    primary). A connection error re-reads the slot map, so that the next call goes to
    the promoted replica, and is raised: the script may have run, and the request
    answers 503 as with a single Redis."""

    def __init__(self, client: RedisCluster) -> None:
        super().__init__(client)
        self._cluster = client

    def __call__(self, name: str, keys: list[str], args: list[object]) -> object:
        cluster = self._cluster
        node = cluster.get_node_from_key(keys[0])
        try:
            return cluster.get_redis_connection(node).execute_command(
                "EVALSHA", self._scripts[name].sha, len(keys), *keys, *args
            )
        except (NoScriptError, AskError, TryAgainError, ClusterDownError):
            return super().__call__(name, keys, args)
        except (RedisConnectionError, RedisTimeoutError):
            _refresh_slots(cluster, node.name)
            raise


class ReplicatedScripts(Scripts):
    """Scripts whose writes count once ``replicas`` replicas hold them
    (``GATEWAY_REDIS_WAIT_REPLICAS``): each call is ``EVALSHA`` then ``WAIT`` in one
    round trip on one connection (``WAIT`` waits for what its own connection wrote), to
    the primary of the script's slot. Fewer acknowledgements within ``timeout_ms`` raise
    ``WriteNotReplicated`` (503): the write was made and may be lost in a failover, and
    the caller's retry finds it (a create is idempotent by task id)."""

    def __init__(self, client: Redis | RedisCluster, replicas: int, timeout_ms: int) -> None:
        super().__init__(client)
        self._replicas = replicas
        self._timeout_ms = timeout_ms
        self._cluster = client if isinstance(client, RedisCluster) else None

    def __call__(self, name: str, keys: list[str], args: list[object]) -> object:
        script = self._scripts[name]
        for attempt in range(2):
            node, node_name = self._node_for(keys[0])
            try:
                with node.pipeline(transaction=False) as pipe:
                    pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
                    pipe.execute_command("WAIT", self._replicas, self._timeout_ms)
                    result, acknowledged = pipe.execute(raise_on_error=False)
            except RedisError:
                if self._cluster is not None:
                    _refresh_slots(self._cluster, node_name)  # the node may be gone: the next call asks the cluster
                raise
            if isinstance(result, NoScriptError) and attempt == 0:
                self._load(node, name, script.script)  # a failover or a new node: load, try once more
                continue
            if isinstance(result, AskError) and self._cluster is not None and attempt == 0:
                _refresh_slots(self._cluster)  # MOVED (or ASK): the slot moved
                continue
            if isinstance(result, NoScriptError):
                raise _not_loaded(name) from result
            if isinstance(result, Exception):
                raise result
            if isinstance(acknowledged, Exception):
                raise acknowledged
            if acknowledged < self._replicas:
                raise WriteNotReplicated(
                    f"The write was not acknowledged by {self._replicas} replica(s) within "
                    f"{self._timeout_ms} ms (only {acknowledged}); try again shortly.",
                    {"replicas": acknowledged, "required": self._replicas},
                )
            return result
        raise AssertionError("unreachable")

    def _node_for(self, key: str) -> tuple[Redis, str | None]:
        if self._cluster is None:
            return self._client, None
        node = self._cluster.get_node_from_key(key)
        return self._cluster.get_redis_connection(node), node.name

    @staticmethod
    def _load(node: Redis, name: str, source: str) -> None:
        try:
            node.script_load(source)
        except NoPermissionError as error:
            raise _not_loaded(name) from error


def make_scripts(client: Redis | RedisCluster, config: dict) -> Scripts:
    """The store's scripts, chosen once at start (no branch per call): plain, routed by
    slot on a cluster, or waiting for replicas after each call."""
    replicas = int(config["REDIS_WAIT_REPLICAS"])
    if replicas:
        return ReplicatedScripts(client, replicas, int(float(config["REDIS_WAIT_TIMEOUT_SECONDS"]) * 1000))
    if isinstance(client, RedisCluster):
        return ClusterScripts(client)
    return Scripts(client)


def _refresh_slots(cluster: RedisCluster, failed_node: str | None = None) -> None:
    """Read the slot map again (after a node failed us; asked last, so that a dead node
    costs no connect timeout more), best effort: the error at hand is what the caller sees."""
    try:
        cluster.nodes_manager.initialize(last_failed_node_name=failed_node)
    except Exception:  # noqa: BLE001, S110
        pass


def _not_loaded(name: str) -> ScriptsNotLoaded:
    return ScriptsNotLoaded(
        f"Lua script {name!r} is not loaded in Redis and this client may not load it; "
        f"an operator must run `{LOAD_COMMAND}`.",
        {"script": name},
    )


def load_all(client: Redis, sources: dict[str, str] | None = None) -> dict[str, str]:
    """``SCRIPT LOAD`` every script (the gateway's unless ``sources`` is given); name → SHA."""
    return {name: client.script_load(source) for name, source in (sources or read_sources()).items()}


def rq_sources() -> dict[str, str]:
    """The Lua scripts RQ runs on the queue Redis (unique enqueues, scheduler locks), so
    that a queue user restricted to ``EVALSHA`` works once an operator loaded them."""
    from rq import scripts as rq_scripts

    names = ("UNIQUE_ENQUEUE_SCRIPT", "UNIQUE_SCHEDULE_SCRIPT", "ACQUIRE_OR_REFRESH_LOCK_SCRIPT", "RELEASE_LOCK_SCRIPT")
    return {f"rq:{name.removesuffix('_SCRIPT').lower()}": getattr(rq_scripts, name) for name in names}


def check_loaded(client: Redis, sources: dict[str, str]) -> list[tuple[str, str, bool]]:
    """(name, SHA, whether Redis holds it) for each of ``sources`` (``SCRIPT EXISTS``)."""
    shas = {name: client.register_script(source).sha for name, source in sources.items()}
    present = client.script_exists(*shas.values())
    return [(name, sha, bool(ok)) for (name, sha), ok in zip(shas.items(), present, strict=True)]
