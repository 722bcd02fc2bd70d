"""Capped exponential back-off, and a worker's wait for Redis at its start with it."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from redis.exceptions import RedisError

if TYPE_CHECKING:
    from redis import Redis

log = logging.getLogger(__name__)

FIRST_DELAY_SECONDS = 1.0
MAX_DELAY_SECONDS = 30.0


class Backoff:
    """Delays of 1, 2, 4, … seconds, at most 30, until ``reset``."""

    def __init__(self, first: float = FIRST_DELAY_SECONDS, cap: float = MAX_DELAY_SECONDS) -> None:
        self._first = first
        self._cap = cap
        self._next = first

    def next(self) -> float:
        delay = self._next
        self._next = min(self._next * 2, self._cap)
        return delay

    def reset(self) -> None:
        self._next = self._first


def redis_address(client: Redis) -> str:
    """``host:port/db`` (or the socket path) of a client, without its credentials."""
    pool = getattr(client, "connection_pool", None)
    if pool is None:  # a RedisCluster: its startup node
        node = client.get_default_node()
        return f"{node.name if node else '?'} (cluster)"
    kwargs = pool.connection_kwargs
    where = kwargs.get("path") or f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}"
    return f"{where}/{kwargs.get('db', 0)}"


def wait_for_redis(clients: list[Redis], timeout: float | None) -> bool:
    """Ping every client until all answer, backing off between attempts; False once
    ``timeout`` seconds are over (None: never).

    One log line per failed attempt and no traceback: a worker started before its Redis
    (or pointed at a wrong address) says so plainly instead of filling the log.
    """
    started = time.monotonic()
    backoff = Backoff()
    attempt = 0
    while True:
        attempt += 1
        try:
            for client in clients:
                client.ping()
            return True
        except RedisError as error:
            address = redis_address(client)
            elapsed = time.monotonic() - started
            left = None if timeout is None else timeout - elapsed
            if left is not None and left <= 0:
                log.error(
                    "worker cannot reach Redis at %s (%s) after %d attempts in %.0f s "
                    "(GATEWAY_WORKER_START_TIMEOUT_SECONDS=%s): giving up",
                    address, error, attempt, elapsed, timeout,
                )  # fmt: skip
                return False
            delay = backoff.next() if left is None else min(backoff.next(), left)
            log.warning("worker cannot reach Redis at %s (%s); attempt %d, next in %.1f s",
                        address, error, attempt, delay)  # fmt: skip
            time.sleep(delay)
