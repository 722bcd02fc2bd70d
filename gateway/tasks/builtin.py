"""The built-in ``demo.*`` tasks: for trying the gateway and for its tests."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from gateway.tasks import task

if TYPE_CHECKING:
    from gateway.tasks import TaskContext


@task("demo.echo")
def echo(input_data: dict, ctx: TaskContext) -> dict:
    """Output = input."""
    return input_data


@task("demo.sleep")
def sleep(input_data: dict, ctx: TaskContext) -> dict:
    """Sleep ``input_data.seconds`` (default 1), then report how long."""
    seconds = float(input_data.get("seconds", 1))
    time.sleep(seconds)
    return {"slept": seconds}


@task("demo.fail")
def fail(input_data: dict, ctx: TaskContext) -> dict:
    """Always raise, with ``input_data.message``."""
    raise RuntimeError(input_data.get("message", "demo.fail was asked to fail"))
