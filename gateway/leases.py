"""Run leases kept alive while their handlers run: one thread per process renews them
(and makes the runs' coalesced progress writes, ``runcontrol``)."""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

log = logging.getLogger(__name__)


@dataclass(eq=False)
class _Lease:
    renew: Callable[[], bool]
    interval: float  # seconds between renewals
    due: float  # time.monotonic() of the next renewal
    renewing: bool = False
    once: bool = False  # a one-time call (``call_later``), not a lease


class LeaseKeeper:
    """One thread per process renews the lease of every run the process is running, each
    every third of its lease.

    A thread started and joined per run cost ~3% of a worker's CPU (and a GIL hand-off)
    for the rare run that lasts a third of a lease. This thread sleeps until the next
    renewal is due, so a run shorter than that costs a set insert and removal. It is
    woken only when it has nothing to wait for, or a lease is due before its next look.
    """

    def __init__(self) -> None:
        self._reset()
        # A forked child (RQ's forking workers) has the state but not the thread.
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._cond = threading.Condition()
        self._leases: set[_Lease] = set()
        self._wake_at = math.inf  # when the thread looks next
        self._thread: threading.Thread | None = None

    @contextmanager
    def hold(self, renew: Callable[[], bool], interval: float) -> Iterator[None]:
        """Renew every ``interval`` seconds while the block runs; ``renew`` returns False
        once the claim is gone. No renewal runs or starts after the block."""
        lease = _Lease(renew, interval, time.monotonic() + interval)
        self._add(lease)
        try:
            yield
        finally:
            with self._cond:
                self._leases.discard(lease)
                while lease.renewing:
                    self._cond.wait()

    def call_later(self, delay: float, call: Callable[[], object]) -> None:
        """Call ``call`` once, from the keeper's thread, ``delay`` seconds from now: a
        run's progress write, coalesced (``runcontrol``). Nothing waits for it; the caller
        makes it harmless once its run ended."""

        def once() -> bool:
            call()
            return False

        self._add(_Lease(once, 0.0, time.monotonic() + max(delay, 0.0), once=True))

    def _add(self, lease: _Lease) -> None:
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="lease-keeper", daemon=True)
                self._thread.start()
            self._leases.add(lease)
            if lease.due < self._wake_at:
                self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                now = time.monotonic()
                due = [lease for lease in self._leases if lease.due <= now]
                if not due:
                    self._wake_at = min((lease.due for lease in self._leases), default=math.inf)
                    self._cond.wait(None if self._wake_at == math.inf else self._wake_at - now)
                    continue
                for lease in due:
                    lease.renewing = True
                    lease.due = now + lease.interval
                    if lease.once:
                        self._leases.discard(lease)
            for lease in due:  # outside the lock: a slow Redis must not hold up the runs
                keep = True
                try:
                    keep = lease.renew()
                except Exception:  # a Redis hiccup must not end the renewals; the next one retries
                    log.warning("delayed call failed" if lease.once else "lease renewal failed", exc_info=True)
                with self._cond:
                    lease.renewing = False
                    if not keep:  # claim lost (cancelled or superseded): the finish will be ignored
                        self._leases.discard(lease)
                    self._cond.notify_all()


#: The process's keeper (``jobs.run_stage`` holds each run's lease with it).
keeper = LeaseKeeper()
