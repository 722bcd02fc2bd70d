"""The task registry: ``task_name`` → handler, filled by the ``@task`` decorator.

A handler is ``handler(input_data: dict, ctx: TaskContext) -> dict``; what it returns
becomes the stage's output. The node part of the name is the RQ queue that runs it.
"""

from __future__ import annotations

import importlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gateway import runcontrol
from gateway.exceptions import RunCancelled as RunCancelled  # handlers import it from here
from gateway.exceptions import WorkerStopping as WorkerStopping  # and this one

if TYPE_CHECKING:
    from gateway.runcontrol import RunControl

TASK_NAME = re.compile(r"^[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class TaskContext:
    """What a handler may know about the run it serves."""

    #: The caller's ``task_id``, as it sent it (two tenants may use the same one).
    task_id: str
    task_name: str
    attempt: int
    #: The calling tenant's name (``GATEWAY_API_TOKENS``); None without tokens.
    tenant: str | None = None
    #: The run's progress and cancellation, set by the worker (``jobs.run_stage``). A
    #: context made without it (a handler's unit test) validates progress and writes
    #: nothing, sleeps plainly, and is never cancelled.
    _control: RunControl | None = field(default=None, repr=False, compare=False)

    def progress(self, fraction: float, message: str | None = None) -> None:
        """Report how far the run got, 0 to 1, and optionally what it is doing (at most
        ``runcontrol.MAX_PROGRESS_MESSAGE_CHARS`` characters); ``/status`` shows the latest.

        Cheap in a tight loop: only the latest report is written, at most twice a second.
        Raises ``RunCancelled`` once the run is cancelled; TypeError or ValueError for a
        value out of range."""
        value = runcontrol.checked_progress(fraction, message)
        if self._control is not None:
            self._control.progress(value)

    def sleep(self, seconds: float) -> None:
        """``time.sleep`` that ends with ``RunCancelled`` as soon as the run is cancelled
        (within about half a second)."""
        seconds = runcontrol.checked_seconds(seconds)
        if self._control is None:
            time.sleep(seconds)
        else:
            self._control.sleep(seconds)

    @property
    def cancelled(self) -> bool:
        """Whether the run was cancelled (or replaced, or its task deleted): whatever the
        handler returns now is discarded, so it should stop. Looks at Redis at most every
        half second; a read in between costs nothing."""
        return self._control is not None and self._control.claim_gone()


Handler = Callable[[dict, TaskContext], dict]

_registry: dict[str, Handler] = {}


def task(name: str) -> Callable[[Handler], Handler]:
    """Register the decorated function as the handler of ``name`` (``node.method``)."""
    if not TASK_NAME.match(name):
        raise ValueError(f"task name {name!r} is not <node>.<method> in [a-z][a-z0-9_]*")

    def register(handler: Handler) -> Handler:
        existing = _registry.get(name)
        if existing is not None and existing is not handler:
            raise ValueError(f"task {name!r} is already registered by {existing.__module__}")
        _registry[name] = handler
        return handler

    return register


def get_handler(name: str) -> Handler | None:
    return _registry.get(name)


def is_registered(name: str) -> bool:
    return name in _registry


def by_name() -> list[str]:
    return sorted(_registry)


def node_of(name: str) -> str:
    """The node (and RQ queue name) of a task name."""
    return name.split(".", 1)[0]


def by_node() -> dict[str, list[str]]:
    """Registered task names grouped by node, both sorted."""
    grouped: dict[str, list[str]] = {}
    for name in sorted(_registry):
        grouped.setdefault(node_of(name), []).append(name)
    return grouped


def load_modules(module_names: list[str], *, demo_tasks: bool = False) -> None:
    """Register the ``demo.*`` tasks if ``demo_tasks`` (``GATEWAY_DEMO_TASKS``), else make
    sure they are absent, and import every module named in ``GATEWAY_TASK_MODULES``."""
    from gateway.tasks.builtin import DEMO_TASKS

    for name, handler in DEMO_TASKS.items():
        if demo_tasks:
            task(name)(handler)
        elif _registry.get(name) is handler:
            # The registry is per process: an app built before in this process (tests) may
            # have registered them.
            del _registry[name]
    for module_name in module_names:
        importlib.import_module(module_name)
