"""The built-in ``demo.*`` tasks: for trying the gateway and for its tests.

Registered only with ``GATEWAY_DEMO_TASKS=true`` (the quickstart and the tests set it):
in production they would let any caller hold a worker or fill a queue for nothing.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.tasks import Handler, TaskContext

#: The longest ``demo.sleep`` (seconds); more, or a non-finite number, fails the stage.
MAX_SLEEP_SECONDS = 60
#: How often ``demo.sleep`` reports its progress.
SLEEP_STEP_SECONDS = 1.0


def echo(input_data: dict, ctx: TaskContext) -> dict:
    """Output = input."""
    return input_data


def sleep(input_data: dict, ctx: TaskContext) -> dict:
    """Sleep ``input_data.seconds`` (default 1, 0 to 60), reporting progress every
    ``SLEEP_STEP_SECONDS``, then report how long. A cancel stops it within about half a
    second (``ctx.sleep``)."""
    given = input_data.get("seconds", 1)
    try:
        seconds = float(given)
    except (TypeError, ValueError):
        seconds = math.nan
    if isinstance(given, bool) or not 0 <= seconds <= MAX_SLEEP_SECONDS:
        raise ValueError(f"demo.sleep: seconds must be a number from 0 to {MAX_SLEEP_SECONDS}, got {given!r}")
    for step in range(math.ceil(seconds / SLEEP_STEP_SECONDS)):
        slept = step * SLEEP_STEP_SECONDS
        ctx.progress(slept / seconds, f"slept {slept:g} of {seconds:g} s")
        ctx.sleep(min(SLEEP_STEP_SECONDS, seconds - slept))
    ctx.progress(1.0, f"slept {seconds:g} s")
    return {"slept": seconds}


def fail(input_data: dict, ctx: TaskContext) -> dict:
    """Always raise, with ``input_data.message``."""
    raise RuntimeError(input_data.get("message", "demo.fail was asked to fail"))


#: task name → handler, registered by ``gateway.tasks.load_modules`` when enabled.
DEMO_TASKS: dict[str, Handler] = {"demo.echo": echo, "demo.sleep": sleep, "demo.fail": fail}
