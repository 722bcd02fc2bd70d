"""A worker's warm stop with a limit: asked to stop (SIGTERM), a run worker lets the run
under way go on for ``GATEWAY_WORKER_STOP_SECONDS``; a run still going then is interrupted
and handed back to its queue, and the worker exits.

RQ's own warm stop waits for the job however long it runs. A supervisor (systemd's
``TimeoutStopSec``, Kubernetes' grace period, ``docker stop``'s timeout) then kills the
process, and the run is found only once its lease is over (the sweeper, up to
``GATEWAY_RUN_LEASE_SECONDS`` later), counted as a lost run. Handed back, it is PENDING
again at once (``lua/hand_back_run.lua``, same attempt number, not counted as lost) and
queued for another worker. A second SIGTERM hands it back at once.

How the handler is stopped: it runs in the worker's main thread (``SimpleWorker``), and
a timer thread sends that thread ``INTERRUPT_SIGNAL`` when the limit is over. Its Python
handler raises ``WorkerStopping`` there, in the handler's code (a blocking ``sleep`` or
socket read is interrupted too), but only while a handler runs (``interruptible``): never
inside the worker's own bookkeeping. SIGALRM is RQ's (the job timeout); SIGUSR1 is free.
A handler that swallows a ``BaseException`` is not stopped, and is killed with its
worker by the supervisor.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import TYPE_CHECKING

from gateway.exceptions import WorkerStopping

if TYPE_CHECKING:
    from collections.abc import Iterator

INTERRUPT_SIGNAL = signal.SIGUSR1


class StopLimit:
    """The process's one: whether a handler runs in the main thread now, and the timer
    that interrupts it."""

    def __init__(self) -> None:
        self._interruptible = False  # read by the signal handler, in the main thread
        self._timer: threading.Timer | None = None

    @contextmanager
    def interruptible(self) -> Iterator[None]:
        """Around a handler's call: ``WorkerStopping`` may be raised in it."""
        self._interruptible = threading.current_thread() is threading.main_thread()
        try:
            yield
        finally:
            self._interruptible = False

    def arm(self, seconds: float) -> None:
        """The worker was asked to stop: interrupt a handler still running in ``seconds``.
        Call from the main thread (a signal handler)."""
        signal.signal(INTERRUPT_SIGNAL, self._on_interrupt)  # before any timer can fire
        if self._timer is not None:
            return
        main = threading.main_thread().ident
        assert main is not None
        self._timer = threading.Timer(seconds, signal.pthread_kill, (main, INTERRUPT_SIGNAL))
        self._timer.daemon = True
        self._timer.start()

    def interrupt_now(self) -> None:
        """In a signal handler of the main thread (a second SIGTERM): stop the handler now."""
        if self._interruptible:
            raise WorkerStopping("the worker was asked again to stop")

    def running(self) -> bool:
        return self._interruptible

    def _on_interrupt(self, signum: int, frame: object) -> None:
        if self._interruptible:
            raise WorkerStopping("the worker was asked to stop and its stop limit is over")


#: The process's limit (``jobs.run_stage`` marks its handler's call with it).
limit = StopLimit()
