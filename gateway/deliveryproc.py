"""The delivery worker of ``flask --app wsgi worker``: a forked process beside the run
worker that serves only the callback queue, so that a delivery never waits behind a run.

It is started again if it dies, told of every SIGTERM/SIGINT the command gets, and
stopped (and waited for) when the command ends. If the command's process is killed
outright, the kernel sends the delivery process SIGTERM (Linux ``PR_SET_PDEATHSIG``):
no delivery worker outlives its command.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from typing import TYPE_CHECKING

from gateway.backoff import Backoff

if TYPE_CHECKING:
    from collections.abc import Callable

    from flask import Flask

log = logging.getLogger(__name__)

#: How often the keeper looks whether the delivery process still runs.
CHECK_INTERVAL_SECONDS = 1.0
#: A delivery process that ran this long before dying starts again at once.
HEALTHY_AFTER_SECONDS = 60.0
_PR_SET_PDEATHSIG = 1


class DeliveryProcess:
    """One forked process running ``serve()`` in an app context, started again by a
    keeper thread of the command's process when it dies."""

    def __init__(self, app: Flask, serve: Callable[[], None]) -> None:
        self._app = app
        self._serve = serve
        self._context = multiprocessing.get_context("fork")
        self._process: multiprocessing.process.BaseProcess | None = None
        self._started_at = 0.0
        self._stopping = threading.Event()  # no more restarts
        # The keeper lives until the process is gone: the kernel's SIGTERM on the death of
        # the thread that forked it (PR_SET_PDEATHSIG) would be a second, cold, stop.
        self._ended = threading.Event()
        # Reentrant: a signal handler (main thread) may take it while start() holds it.
        self._lock = threading.RLock()
        self._keeper = threading.Thread(target=self._keep, name="delivery-process-keeper", daemon=True)

    def start(self) -> None:
        self._spawn()
        self._keeper.start()

    def signal(self, signum: int) -> None:
        """Pass on a signal the command got (SIGTERM: finish the delivery under way, then exit)."""
        if signum in (signal.SIGTERM, signal.SIGINT):
            self._stopping.set()
        with self._lock:
            if self._process is not None and self._process.is_alive():
                os.kill(self._process.pid, signum)

    def stop(self) -> None:
        """SIGTERM the delivery process (unless it was already told) and wait for it."""
        already_told = self._stopping.is_set()
        self._stopping.set()
        with self._lock:
            process = self._process
        if process is None:
            return
        if not already_told and process.is_alive():
            os.kill(process.pid, signal.SIGTERM)
        process.join()
        self._ended.set()

    def _spawn(self) -> None:
        with self._lock:
            if self._stopping.is_set():
                return  # stop() has begun: it waits for the process it saw, start no other
            # The fork copies only this thread; the child sets its own signal handlers.
            self._process = self._context.Process(
                target=_child_main, args=(self._app, self._serve, os.getpid()), name="gateway-deliveries"
            )
            self._process.start()
            self._started_at = time.monotonic()

    def _keep(self) -> None:
        backoff = Backoff()
        while not self._ended.wait(CHECK_INTERVAL_SECONDS):
            process = self._process
            if self._stopping.is_set() or process is None or process.is_alive():
                continue
            if time.monotonic() - self._started_at > HEALTHY_AFTER_SECONDS:
                backoff.reset()
            delay = backoff.next()
            log.warning("delivery worker (pid %s) exited with %s; starting again in %.0f s", process.pid,
                        process.exitcode, delay)  # fmt: skip
            if self._stopping.wait(delay):
                continue
            self._spawn()


def _child_main(app: Flask, serve: Callable[[], None], parent_pid: int) -> None:
    # The parent's handlers (RQ's, bound to the run worker) must not run here.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    die_with_parent()
    if os.getppid() != parent_pid:  # the parent died before the line above took effect
        sys.exit(0)
    with app.app_context():
        serve()


def die_with_parent() -> None:
    """Ask Linux for a SIGTERM when the thread that forked this process ends (the main
    thread of the command, or the keeper thread that lives as long as this process)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        log.warning("could not tie this process's life to its parent's (prctl)")
