"""What happened lately, for the console's overview: the recent failed stages and failed
delivery tries (bounded lists, newest first) and per-minute counts of runs and delivery
tries over the last hour.

Written by the worker processes where a run starts or ends (``jobs.run_stage``, and the
sweeper for a lost run it fails) and where a delivery try ends (``jobs.deliver``), never
by the web process: a request, a reuse hit above all, writes nothing here. They go to the
default queue Redis (``GATEWAY_QUEUE_REDIS_URL``), a single server even when the store is
a Redis Cluster, whose scripts may touch only one task's slot: these keys are global, so
no store script could keep them. A failure is written at once (one pipelined round
trip); the counters are added up in the process and written at most once a second
(``FLUSH_SECONDS``, from the lease keeper's thread), so that a run that succeeds costs a
dict update, not a round trip: a run's own Redis work is 7 round trips. A read is one
round trip of a few commands whatever the keyspace holds (no SCAN, no KEYS).

Keys (``keys``): ``gw:recent:failed-stages`` and ``gw:recent:failed-deliveries`` (every
tenant), the same with ``:<tenant>`` (one tenant), each the ``KEPT`` newest JSON entries;
``gw:activity:<epoch minute>``, a hash of counters (``runs_started``, ... and
``runs_started:<tenant>``, ...) that expires ``ACTIVITY_TTL_SECONDS`` after its last write.

Recording is best effort: a Redis error is logged and never fails a run or a delivery
(its entry or counts are dropped), and a process that dies loses the counts of its last
second. Times are the writing process's clock, as are the minutes' buckets.
"""

from __future__ import annotations

import atexit
import functools
import json
import logging
import os
import threading
import time
import weakref
from collections import Counter
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from flask import current_app

from gateway import keys, leases
from gateway.connections import get_connections
from gateway.tenancy import public, tenant_of

if TYPE_CHECKING:
    from flask import Flask
    from redis import Redis
    from redis.client import Pipeline

log = logging.getLogger(__name__)

#: Entries kept in each recent list (every tenant's, and each tenant's own).
KEPT = 200
#: The overview's window: this many minutes, the current one last.
ACTIVITY_MINUTES = 60
#: A minute's counters outlive the window by an hour: a late reader still finds them.
ACTIVITY_TTL_SECONDS = 2 * 3600
#: The counters of ``activity()``, in its order.
COUNTERS = ("runs_started", "runs_completed", "runs_failed", "deliveries_sent", "deliveries_failed")
#: Counts wait this long in the process before they are written (one round trip).
FLUSH_SECONDS = 1.0
#: An entry's error is cut to this many characters (the task page shows it whole).
ERROR_CHARS = 500


def redacted_url(url: str) -> str:
    """The callback URL without what may be a credential: no user or password, no query,
    no fragment (``https://user:pw@host/hook?token=x`` → ``https://host/hook``)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def _iso(seconds: float) -> str:
    moment = datetime.fromtimestamp(seconds, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _cut(text: str | None) -> str | None:
    return text if text is None or len(text) <= ERROR_CHARS else text[: ERROR_CHARS - 1] + "…"


class Recent:
    """Records and reads the recent events of one queue Redis (its client: replies as bytes)."""

    def __init__(self, connection: Redis, *, kept: int = KEPT, flush_seconds: float = FLUSH_SECONDS) -> None:
        self.connection = connection
        self.kept = kept
        self.flush_seconds = flush_seconds
        self._exit_hook = False
        self._reset()
        # A forked child (the delivery process) must not write its parent's counts again,
        # nor wait on a lock or a flush that only the parent's threads would release.
        os.register_at_fork(after_in_child=functools.partial(_reset_in_child, weakref.ref(self)))

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[tuple[int, str]] = Counter()  # (epoch minute, field) → not yet written
        self._flush_due = False

    # -- writes (worker processes) -----------------------------------------------------

    def record_run_started(self, task_id: str) -> None:
        """A worker started a run (``store.start`` succeeded)."""
        self._count(time.time(), "runs_started", tenant_of(task_id))

    def record_run_ended(self, task_id: str, task_name: str, error: str | None) -> None:
        """A run ended: SUCCESS without ``error``, FAILED with it (its handler's failure, or
        the sweeper's verdict on a run whose attempts were all lost)."""
        tenant, now = tenant_of(task_id), time.time()
        self._count(now, "runs_failed" if error is not None else "runs_completed", tenant)
        if error is not None:
            entry = {"task_id": public(task_id), "task_name": task_name, "tenant": tenant,
                     "error": _cut(error), "ended_at": _iso(now)}  # fmt: skip
            self._push(keys.recent_failed_stages, tenant, entry)

    def record_delivery_try(
        self,
        task_id: str,
        task_name: str,
        delivery_id: str,
        *,
        url: str,
        delivered: bool,
        error: str | None,
        attempt: int,
        final: bool,
    ) -> None:
        """A delivery try ended: ``delivered`` (2xx), or failed with ``error``; ``final``
        when no try follows (sent, or given up)."""
        tenant, now = tenant_of(task_id), time.time()
        self._count(now, "deliveries_sent" if delivered else "deliveries_failed", tenant)
        if not delivered:
            entry = {"task_id": public(task_id), "task_name": task_name, "tenant": tenant,
                     "delivery_id": delivery_id, "url": redacted_url(url), "error": _cut(error),
                     "at": _iso(now), "attempt": attempt, "final": final}  # fmt: skip
            self._push(keys.recent_failed_deliveries, tenant, entry)

    def flush(self) -> None:
        """Write the counts added up so far (the lease keeper's thread calls it
        ``flush_seconds`` after the first of them; tests, to read them at once)."""
        with self._lock:
            counts, self._counts = self._counts, Counter()
            self._flush_due = False
        if not counts:
            return

        def write(pipe: Pipeline) -> None:
            for (minute, field), count in counts.items():
                pipe.hincrby(keys.activity_minute(minute), field, count)
            for minute in {minute for minute, _ in counts}:
                pipe.expire(keys.activity_minute(minute), ACTIVITY_TTL_SECONDS)

        self._write(write)

    def _count(self, now: float, counter: str, tenant: str | None) -> None:
        minute = int(now // 60)
        with self._lock:
            self._counts[minute, counter] += 1
            if tenant:
                self._counts[minute, f"{counter}:{tenant}"] += 1
            if self._flush_due:
                return
            self._flush_due = True
            first = not self._exit_hook
            self._exit_hook = True
        if first:  # a worker stopping gracefully writes its last counts (weakly: tests make many apps)
            atexit.register(_flush_at_exit, weakref.ref(self))
        leases.keeper.call_later(self.flush_seconds, self.flush)

    def _push(self, key_of: Any, tenant: str | None, entry: dict[str, Any]) -> None:
        # ASCII: a lone surrogate in an error (from a caller's input) must not fail the encode.
        text = json.dumps(entry, separators=(",", ":"))

        def write(pipe: Pipeline) -> None:
            for key in (key_of(None), key_of(tenant)) if tenant else (key_of(None),):
                pipe.lpush(key, text)
                pipe.ltrim(key, 0, self.kept - 1)

        self._write(write)

    def _write(self, write: Any) -> None:
        try:
            with self.connection.pipeline(transaction=False) as pipe:
                write(pipe)
                pipe.execute()
        except Exception:  # best effort: the run or delivery itself is already recorded
            log.warning("could not record recent events for the console", exc_info=True)

    # -- reads (the console) -----------------------------------------------------------

    def failed_stages(self, tenant: str | None, limit: int = 50) -> list[dict]:
        """The newest failed stages, newest first: ``{task_id, task_name, tenant, error,
        ended_at}`` (``task_id`` as its tenant's caller knows it; ISO 8601 UTC time).
        ``tenant`` None: every tenant's (an operator's view)."""
        return self._read(keys.recent_failed_stages(tenant), limit)

    def failed_deliveries(self, tenant: str | None, limit: int = 50) -> list[dict]:
        """The newest failed delivery tries, newest first: ``{task_id, task_name, tenant,
        delivery_id, url, error, at, attempt, final}``; ``url`` without userinfo or query,
        ``final`` when no try follows it. ``tenant`` None: every tenant's."""
        return self._read(keys.recent_failed_deliveries(tenant), limit)

    def _read(self, key: str, limit: int) -> list[dict]:
        limit = max(0, min(int(limit), self.kept))
        if not limit:
            return []
        return [json.loads(item) for item in self.connection.lrange(key, 0, limit - 1)]

    def activity(self, tenant: str | None = None, *, now: float | None = None) -> dict[str, list[int]]:
        """Per-minute counts over the last ``ACTIVITY_MINUTES`` minutes, oldest first, the
        current (partial) minute last: ``minutes`` holds each minute's start in epoch
        seconds, and each of ``COUNTERS`` a list of as many counts. ``runs_completed``
        counts runs that ended SUCCESS, ``runs_failed`` those that ended FAILED (a
        cancelled run is neither); ``deliveries_sent`` tries answered 2xx,
        ``deliveries_failed`` tries that failed (retried or not). ``tenant`` None: all."""
        self.flush()  # this process's own counts first (none in a web process; a test's worker)
        current = int((time.time() if now is None else now) // 60)
        minutes = list(range(current - ACTIVITY_MINUTES + 1, current + 1))
        fields = [f"{counter}:{tenant}" if tenant else counter for counter in COUNTERS]
        with self.connection.pipeline(transaction=False) as pipe:
            for minute in minutes:
                pipe.hmget(keys.activity_minute(minute), fields)
            rows = pipe.execute()
        result: dict[str, list[int]] = {"minutes": [minute * 60 for minute in minutes]}
        for index, counter in enumerate(COUNTERS):
            result[counter] = [int(row[index] or 0) for row in rows]
        return result


def _reset_in_child(ref: weakref.ref[Recent]) -> None:
    recent = ref()
    if recent is not None:
        recent._reset()


def _flush_at_exit(ref: weakref.ref[Recent]) -> None:
    recent = ref()
    if recent is not None:
        recent.flush()


def get_recent(app: Flask | None = None) -> Recent:
    app = app or current_app
    return app.extensions["gateway.recent"]


def init_app(app: Flask) -> None:
    """Needs ``connections.init_app`` first."""
    app.extensions["gateway.recent"] = Recent(get_connections(app).queue)
