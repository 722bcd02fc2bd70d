"""Waiting for a condition that other processes bring about: the one polling loop."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class WaitTimeout(AssertionError):
    """A condition did not hold in time. An ``AssertionError``, so that a test that waits
    in vain fails (rather than errors) and says what it waited for."""


def poll_until(predicate: Callable[[], T], timeout: float, interval: float = 0.05) -> T | None:
    """The predicate's first truthy value, or None once ``timeout`` seconds are over (it is
    asked once more after the deadline, so a slow first call still gets its answer)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            return None
        time.sleep(interval)


def wait_until(predicate: Callable[[], T], timeout: float = 10.0, interval: float = 0.05, *, what: str = "") -> T:
    """The predicate's first truthy value; ``WaitTimeout`` once ``timeout`` seconds are over."""
    value = poll_until(predicate, timeout, interval)
    if not value:
        raise WaitTimeout(f"timed out after {timeout:g} s waiting for {what or 'the condition'}")
    return value
