"""Tasks for the tests, loaded the way an operator's plugin is: GATEWAY_TASK_MODULES."""

from __future__ import annotations

import os
import time

from gateway.tasks import task


@task("testing.count")
def count(input_data: dict, ctx) -> dict:
    """Append one line per run to ``input_data["log"]`` (so tests count runs across
    processes), sleep ``input_data.get("seconds", 0)``, then echo the input."""
    with open(input_data["log"], "a") as log:
        log.write(f"{ctx.task_id} {ctx.task_name} {ctx.attempt} {os.getpid()}\n")
    time.sleep(float(input_data.get("seconds", 0)))
    return {"echo": input_data}


@task("testing.empty")
def empty(input_data: dict, ctx) -> dict:
    return {}


@task("testing.not_a_dict")
def not_a_dict(input_data: dict, ctx) -> list:
    return [1, 2, 3]


@task("testing.not_json")
def not_json(input_data: dict, ctx) -> dict:
    return {"when": object()}


@task("testing.huge")
def huge(input_data: dict, ctx) -> dict:
    return {"blob": "x" * int(input_data["size"])}


def _register_stage(number: int) -> None:
    @task(f"testing.stage_{number:02d}")
    def stage(input_data: dict, ctx) -> dict:
        return input_data


for _number in range(50):
    _register_stage(_number)


@task("testing.context")
def context(input_data: dict, ctx) -> dict:
    """What the handler was told about its run."""
    return {"task_id": ctx.task_id, "tenant": ctx.tenant, "task_name": ctx.task_name, "attempt": ctx.attempt}
