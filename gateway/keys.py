"""Every Redis key the gateway uses for task documents, built in one place.

All keys of one task carry the hash tag ``{<task_id>}`` so that one Lua script
touches one Redis Cluster slot.
"""

from __future__ import annotations

PREFIX = "gw"


def task_document(task_id: str) -> str:
    """The hash that holds a task's whole document.

    Fields: ``meta`` (timestamps, stage count, the latest request's task name, callback
    URL and delivery id), ``request_input`` (the latest request's input, only when it
    differs from its stage's), and per stage ``s:<name>``
    (state JSON, touched by Lua), ``i:<name>`` and ``o:<name>`` (input and output,
    opaque JSON that Lua never decodes).
    """
    return f"{PREFIX}:task:{{{task_id}}}"


# The two watch lists live in each queue Redis (the one of the task's node, ``queue_redis``),
# beside RQ's own keys. Each is a sorted set
# scored by the time (epoch ms) at which the sweeper should look at a member; a member is
# a hint, and the sweeper checks the document before it acts. When the queue Redis is the
# store Redis (``watches.Watches.scripts_write_runs``; never so with a Redis Cluster
# store, which RQ cannot share), the run scripts (claim_stage, retry_task, start_run,
# finish_run) keep ``run_watch`` in the same atomic step; otherwise the web process and
# the worker write it themselves, and every script stays within one task's slot
# (docs/DESIGN.md, "Redis layout").


def run_watch() -> str:
    """Runs that are PENDING or RUNNING; member ``<task_id>\\t<task_name>``."""
    return f"{PREFIX}:watch:runs"


def delivery_watch() -> str:
    """Deliveries that are due; member ``<task_id>\\t<task_name>\\t<delivery_id>``."""
    return f"{PREFIX}:watch:deliveries"


def watch_member(*parts: str) -> str:
    """A watch list member: its parts joined by tabs (task ids and names cannot hold one)."""
    return "\t".join(parts)


def stage_ended_channel() -> str:
    """The pub/sub channel on which every script that ends a stage (``lua/include/end_stage.lua``)
    or deletes a document publishes the task document's key; the web processes' listeners
    wake the requests waiting for it (``stage_ends``). A channel, not a key: the Lua
    scripts name it literally, and tests/test_wait.py checks that they agree."""
    return f"{PREFIX}:stage-ended"


def console_secret() -> str:
    """The random key that signs the console's session cookies when
    ``GATEWAY_CONSOLE_SECRET`` is unset: made once (``SET NX``) and read by every process."""
    return f"{PREFIX}:console:secret"


# The console's recent events (``recent``) live in the default queue Redis, one server
# even when the store is a cluster: global keys that no task script could keep.


def recent_failed_stages(tenant: str | None = None) -> str:
    """The newest failed stages (JSON entries, newest first, bounded); every tenant's, or
    one tenant's (tenant names hold no ':')."""
    return f"{PREFIX}:recent:failed-stages" + (f":{tenant}" if tenant else "")


def recent_failed_deliveries(tenant: str | None = None) -> str:
    """The newest failed delivery tries, as ``recent_failed_stages``."""
    return f"{PREFIX}:recent:failed-deliveries" + (f":{tenant}" if tenant else "")


def activity_minute(minute: int) -> str:
    """A hash of the run and delivery counters of one minute (epoch seconds // 60)."""
    return f"{PREFIX}:activity:{minute}"
