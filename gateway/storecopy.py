"""Copying task documents from one Redis into the app's store: the data step of moving a
single-Redis deployment onto a Redis Cluster (docs/SCALING.md, "Migrating").

Only task documents move (``gw:task:*``, found with ``SCAN``, never ``KEYS``), each with
``DUMP``/``RESTORE ... REPLACE`` and its remaining TTL, so a document arrives as it was,
byte for byte. RQ's keys and the watch lists stay where they are: the old Redis goes on
as the queue Redis. Run it while no gateway process writes (web and workers stopped); a
second run copies everything again (``REPLACE``), so it can be repeated safely.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway import keys

if TYPE_CHECKING:
    import redis
    from redis.cluster import RedisCluster

#: Every task document's key matches this (``keys.task_document``).
DOCUMENT_PATTERN = f"{keys.PREFIX}:task:*"


@dataclass
class CopyReport:
    copied: int = 0
    expired: int = 0  # gone between the SCAN and the DUMP

    def summary(self) -> str:
        return f"copied {self.copied} task documents ({self.expired} expired meanwhile)"


def copy_documents(
    source: redis.Redis,
    target: redis.Redis | RedisCluster,
    *,
    batch: int = 500,
    progress: Callable[[CopyReport], None] | None = None,
) -> CopyReport:
    """Copy every task document of ``source`` (a single Redis, replies as bytes) into
    ``target``, ``batch`` keys per round trip on each side."""
    report = CopyReport()
    pending: list[bytes] = []
    for key in source.scan_iter(match=DOCUMENT_PATTERN, count=1000):
        pending.append(key)
        if len(pending) >= batch:
            _copy_batch(source, target, pending, report)
            pending = []
            if progress is not None:
                progress(report)
    if pending:
        _copy_batch(source, target, pending, report)
    return report


def _copy_batch(
    source: redis.Redis, target: redis.Redis | RedisCluster, batch: list[bytes], report: CopyReport
) -> None:
    read = source.pipeline(transaction=False)
    for key in batch:
        read.dump(key)
        read.pttl(key)
    replies = read.execute()
    # A cluster pipeline groups the commands by slot owner: one round trip per primary.
    write = target.pipeline(transaction=False)
    for key, dumped, ttl in zip(batch, replies[::2], replies[1::2], strict=True):
        if dumped is None:
            report.expired += 1
            continue
        write.restore(key, max(int(ttl), 0), dumped, replace=True)  # ttl -1 (none) -> 0 (none)
        report.copied += 1
    write.execute()
