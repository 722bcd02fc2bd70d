"""Requests that wait for a stage to end (``?wait=``), and the one listener per web
process that wakes them.

Every script that ends a stage publishes the task document's key on one channel
(``keys.stage_ended_channel``, from ``lua/include/end_stage.lua``; ``delete_task.lua``
too). A web process holds one subscription, on a daemon thread started by the first
request that waits, in the process that serves it: never in gunicorn's master, which
forks its workers after loading the app (``preload_app``), and a thread does not survive
a fork. The thread sets the ``threading.Event`` of every request waiting on that key;
the request reads its task again and answers, or waits on for what is left of its time.

No end is missed: a request registers its event *before* it reads the state. An end
published after the registration sets the event; one published before it was saved
before the read (a script is atomic), so the read sees it. While the subscription is
down nothing is heard, so every (re)subscription wakes every waiter to read again, and
until it is back waiters also read again every ``REREAD_WHILE_DEAF_SECONDS``. There is
no polling while the listener is connected.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from flask import current_app

from gateway import keys
from gateway.backoff import Backoff
from gateway.connections import get_connections, listener_pubsub

if TYPE_CHECKING:
    import redis
    from flask import Flask

log = logging.getLogger(__name__)

Read = TypeVar("Read")

#: How long the listener blocks in one read of its socket; it also bounds how long a
#: dead connection goes unnoticed between redis-py's health checks.
LISTEN_SLICE_SECONDS = 5.0
#: While the listener is not subscribed, waiters read their task again this often.
REREAD_WHILE_DEAF_SECONDS = 2.0
#: Reads of waiting requests in flight at once, per process. One end wakes every waiter
#: of its task together; unbounded, each would take (and first open) a connection of its
#: own, and a burst of 200 connects can overflow Redis's accept queue on a busy machine
#: (dropped SYNs outlast the 1 s connect timeout: 503). A read takes well under a
#: millisecond, so the last of 200 waits a few milliseconds more.
READS_AT_ONCE = 16


class StageEnds:
    """The waiters of one web process, by task document key, and their listener."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._channel = keys.stage_ended_channel()
        self._lock = threading.Lock()
        self._reads = threading.BoundedSemaphore(READS_AT_ONCE)
        self._waiters: dict[str, set[threading.Event]] = {}
        self._listener_pid: int | None = None
        #: True while the listener's subscription is confirmed (read without the lock).
        self.subscribed = False

    # -- waiting -------------------------------------------------------------------

    def wait(self, doc_key: str, read: Callable[[], Read], done: Callable[[Read], bool], seconds: float) -> Read:
        """``read()`` until ``done`` says so or ``seconds`` are over; the last read.

        Each read after the first follows a wake-up for ``doc_key`` (or a re-subscription,
        or the deaf-listener fallback); the last is made once the time is over, so the
        answer is what it would be without waiting."""
        deadline = time.monotonic() + seconds
        event = threading.Event()
        self._ensure_listener()
        self._register(doc_key, event)
        try:
            while True:
                event.clear()  # before the read: a set after it is a later end
                with self._reads:
                    value = read()
                left = deadline - time.monotonic()
                if done(value) or left <= 0:
                    return value
                event.wait(left if self.subscribed else min(left, REREAD_WHILE_DEAF_SECONDS))
        finally:
            self._unregister(doc_key, event)

    def waiting(self) -> int:
        """How many requests of this process wait now."""
        with self._lock:
            return sum(len(events) for events in self._waiters.values())

    def _register(self, doc_key: str, event: threading.Event) -> None:
        with self._lock:
            self._waiters.setdefault(doc_key, set()).add(event)

    def _unregister(self, doc_key: str, event: threading.Event) -> None:
        with self._lock:
            events = self._waiters.get(doc_key)
            if events is not None:
                events.discard(event)
                if not events:
                    del self._waiters[doc_key]

    def _wake(self, doc_key: str) -> None:
        with self._lock:
            events = list(self._waiters.get(doc_key, ()))
        for event in events:
            event.set()

    def _wake_all(self) -> None:
        with self._lock:
            events = [event for events in self._waiters.values() for event in events]
        for event in events:
            event.set()

    # -- the listener --------------------------------------------------------------

    def _ensure_listener(self) -> None:
        """Start the listener in this process, once (after a fork, once more)."""
        pid = os.getpid()
        if self._listener_pid == pid:
            return
        with self._lock:
            if self._listener_pid == pid:
                return
            if self._listener_pid is not None:
                # Forked from a process that listened: its waiters are not ours.
                self._waiters = {}
            self.subscribed = False
            thread = threading.Thread(target=self._listen, name="gateway-stage-ends", daemon=True)
            thread.start()
            self._listener_pid = pid

    def _listen(self) -> None:
        backoff = Backoff(first=0.1, cap=5.0)
        while True:
            pubsub = listener_pubsub(self._client)  # on a cluster: any node, a random one each time
            try:
                pubsub.subscribe(self._channel)
                while True:
                    message = pubsub.get_message(timeout=LISTEN_SLICE_SECONDS)
                    if message is not None:
                        self._on_message(message, backoff)
            except Exception as error:  # noqa: BLE001 - the listener must outlive any failure
                # One warning per outage, not one per attempt.
                level = logging.WARNING if self.subscribed else logging.DEBUG
                log.log(level, "stage-end listener lost its Redis subscription (%s); reconnecting", error)
            finally:
                self.subscribed = False
                try:
                    pubsub.close()
                except Exception:  # noqa: BLE001, S110 - closing a broken connection
                    pass
            time.sleep(backoff.next())

    def _on_message(self, message: dict[str, Any], backoff: Backoff) -> None:
        kind = message["type"]
        if kind == "message":
            data = message["data"]
            self._wake(data.decode() if isinstance(data, bytes) else data)
        elif kind == "subscribe":
            # Also after redis-py reconnected by itself: ends published meanwhile were not
            # heard, so everyone reads again.
            self.subscribed = True
            backoff.reset()
            self._wake_all()


def get_stage_ends(app: Flask | None = None) -> StageEnds:
    return (app or current_app).extensions["gateway.stage_ends"]


def init_app(app: Flask) -> None:
    """Needs ``connections.init_app`` first. Starts nothing: the listener starts with the
    first wait, in the process that serves it."""
    app.extensions["gateway.stage_ends"] = StageEnds(get_connections(app).store)
