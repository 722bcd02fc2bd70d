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


@task("testing.cooperate")
def cooperate(input_data: dict, ctx) -> dict:
    """Work for up to ``input_data.seconds`` (default 30), checking for a cancel the way
    ``input_data.how`` says ("sleep", "progress" or "cancelled"), and append to
    ``input_data.log`` how it ended: "stopped: <how>" or "ran to the end"."""
    from gateway.tasks import RunCancelled

    how = input_data["how"]
    deadline = time.monotonic() + float(input_data.get("seconds", 30))

    def note(line: str) -> None:
        with open(input_data["log"], "a") as log:
            log.write(line + "\n")

    note("started")
    try:
        while time.monotonic() < deadline:
            if how == "sleep":
                ctx.sleep(0.2)
            elif how == "progress":
                ctx.progress(0.5, "working")
                time.sleep(0.01)
            elif ctx.cancelled:
                note("stopped: cancelled")
                return {"stopped": True}
            else:
                time.sleep(0.01)
    except RunCancelled:
        note(f"stopped: {how}")
        raise
    note("ran to the end")
    return {"stopped": False}


@task("testing.progress_burst")
def progress_burst(input_data: dict, ctx) -> dict:
    """Report progress ``input_data.reports`` times as fast as it can, the last report
    being ``input_data.last`` ([fraction, message]), then return at once."""
    reports = int(input_data["reports"])
    for number in range(reports):
        ctx.progress(number / reports, f"report {number}")
    fraction, message = input_data["last"]
    ctx.progress(fraction, message)
    return {"reports": reports + 1}


@task("testing.slow_first")
def slow_first(input_data: dict, ctx) -> dict:
    """Sleep ``input_data.seconds`` on the stage's first run only (the file
    ``input_data.marker`` says a run started before), appending one line per run to
    ``input_data.log``: a run that a stopping worker hands back ends quickly next time."""
    with open(input_data["log"], "a") as log:
        log.write(f"{ctx.task_id} {ctx.attempt} {os.getpid()}\n")
    if not os.path.exists(input_data["marker"]):
        open(input_data["marker"], "w").close()
        time.sleep(float(input_data["seconds"]))
    return {"done": True}
