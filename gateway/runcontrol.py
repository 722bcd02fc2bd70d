"""What a running handler reaches of its run through its context: progress reports,
coalesced into at most two writes a second, and whether the run's claim is gone
(cancelled, replaced by another attempt, or its task deleted).

``jobs.run_stage`` makes one ``RunControl`` per run and gives it to the handler's
``TaskContext``; ``ctx.progress``, ``ctx.sleep`` and ``ctx.cancelled`` land here.

How a handler learns that its run was cancelled, whichever comes first:

- the lease renewal (every third of ``GATEWAY_RUN_LEASE_SECONDS``) finds the claim gone
  and sets the flag (``lose_claim``);
- a progress write, made by the lease keeper's thread, is refused (the claim is gone);
- ``ctx.sleep`` and ``ctx.cancelled`` ask Redis themselves, at most every
  ``CHECK_INTERVAL_SECONDS``: a sleeping handler stops within about that.

A check is one small script call (``lua/report_progress.lua`` without a fraction), made in
the handler's own thread; the flag read between two checks costs nothing.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import TYPE_CHECKING

from gateway.exceptions import RunCancelled

if TYPE_CHECKING:
    from collections.abc import Callable

    from gateway.leases import LeaseKeeper

    #: (fraction, message)
    Progress = tuple[float, str | None]
    #: Writes a progress (or, given None, only looks); True while the run's claim is current.
    Report = Callable[[Progress | None], bool]

log = logging.getLogger(__name__)

#: The longest progress message, in characters (docs/TASKS.md, API reference §5.1).
MAX_PROGRESS_MESSAGE_CHARS = 200
#: The shortest time between two progress writes of one run: a handler may report in a
#: tight loop, and only the latest value is written.
WRITE_INTERVAL_SECONDS = 0.5
#: The shortest time between two claim checks of ``ctx.sleep``/``ctx.cancelled``.
CHECK_INTERVAL_SECONDS = 0.5

CANCELLED_MESSAGE = "the run's claim is gone (cancelled, replaced by another attempt, or its task deleted)"


def checked_progress(fraction: object, message: object) -> Progress:
    """``(fraction, message)`` as stored; TypeError or ValueError says what is wrong."""
    if isinstance(fraction, bool) or not isinstance(fraction, int | float):
        raise TypeError(f"progress must be a number from 0 to 1, got {type(fraction).__name__}")
    if not 0 <= fraction <= 1:  # NaN is not either
        raise ValueError(f"progress must be a number from 0 to 1, got {fraction!r}")
    if message is None:
        return float(fraction), None
    if not isinstance(message, str):
        raise TypeError(f"progress message must be a string or None, got {type(message).__name__}")
    if len(message) > MAX_PROGRESS_MESSAGE_CHARS:
        raise ValueError(f"progress message is {len(message)} characters, more than {MAX_PROGRESS_MESSAGE_CHARS}")
    # A lone surrogate cannot be sent to Redis as UTF-8: keep it as its escape.
    return float(fraction), message.encode("utf-8", "backslashreplace").decode("utf-8") or None


def checked_seconds(seconds: object) -> float:
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise TypeError(f"seconds must be a number, got {type(seconds).__name__}")
    if not 0 <= seconds < math.inf:
        raise ValueError(f"seconds must be a finite number from 0, got {seconds!r}")
    return float(seconds)


class RunControl:
    """One run's progress and cancellation, shared by its handler's thread and the lease
    keeper's thread."""

    def __init__(self, report: Report, keeper: LeaseKeeper) -> None:
        self._report = report
        self._keeper = keeper
        self._lock = threading.Lock()  # the fields below
        self._writing = threading.Lock()  # one write at a time; ``close`` waits for one under way
        self._claim_gone = threading.Event()
        self._latest: Progress | None = None  # reported, not yet written
        self._write_scheduled = False
        self._closed = False
        self._last_write = -math.inf
        self._last_check = time.monotonic()  # the run just started: its claim was current

    # -- the handler's side ---------------------------------------------------------

    def progress(self, value: Progress) -> None:
        """Keep ``value`` as the latest and have it written within WRITE_INTERVAL_SECONDS
        (by the keeper's thread: this call does no I/O). RunCancelled once the claim is gone."""
        with self._lock:
            self._latest = value
            if not self._write_scheduled and not self._closed:
                self._write_scheduled = True
                self._keeper.call_later(self._last_write + WRITE_INTERVAL_SECONDS - time.monotonic(), self._flush)
        if self._claim_gone.is_set():
            raise RunCancelled(CANCELLED_MESSAGE)

    def claim_gone(self) -> bool:
        """Whether the run's claim is gone: the flag, refreshed from Redis when the last
        look is CHECK_INTERVAL_SECONDS old. A failed look (Redis down) says no."""
        if self._claim_gone.is_set():
            return True
        if time.monotonic() - self._last_check >= CHECK_INTERVAL_SECONDS:
            self._last_check = time.monotonic()
            try:
                current = self._report(None)
            except Exception:  # a hiccup must not stop the handler; the next look retries
                log.warning("claim check failed", exc_info=True)
                return False
            if not current:
                self._claim_gone.set()
        return self._claim_gone.is_set()

    def sleep(self, seconds: float) -> None:
        """Sleep ``seconds``, looking at the claim every CHECK_INTERVAL_SECONDS, and raise
        RunCancelled as soon as it is gone (a renewal or a progress write that finds it gone
        wakes the sleep at once)."""
        end = time.monotonic() + seconds
        while not self.claim_gone():
            left = end - time.monotonic()
            if left <= 0:
                return
            self._claim_gone.wait(min(left, CHECK_INTERVAL_SECONDS))
        raise RunCancelled(CANCELLED_MESSAGE)

    # -- the worker's side ----------------------------------------------------------

    def lose_claim(self) -> None:
        """The lease renewal found the claim gone."""
        self._claim_gone.set()

    def close(self) -> None:
        """The handler ended: write the progress it reported last if that is not written
        yet (so that it is kept after the end), then write no more."""
        with self._writing:
            with self._lock:
                value, self._latest, self._closed = self._latest, None, True
            if value is not None and not self._claim_gone.is_set():
                try:
                    self._write(value)
                except Exception:  # progress is worth no failed run
                    log.warning("progress write failed", exc_info=True)

    def _flush(self) -> None:
        """The delayed write (keeper's thread): the latest value, unless the run ended."""
        with self._writing:
            with self._lock:
                value, self._latest, self._write_scheduled = self._latest, None, False
                if self._closed or value is None:
                    return
                self._last_write = time.monotonic()
            self._write(value)

    def _write(self, value: Progress) -> None:
        current = self._report(value)
        self._last_check = time.monotonic()
        if not current:
            self._claim_gone.set()
