"""What a request that waits (``?wait=<seconds>``) reads, and when it stops waiting.

The waiting itself (wake-ups, no missed end) is ``stage_ends``; this module says what
"ended" means for each operation: one stage ``SUCCESS``/``FAILED``, or no stage of the
task ``PENDING``/``RUNNING``. Each answer is a fresh read, so when the time runs out it
is the answer the request would have had without waiting.
"""

from __future__ import annotations

from typing import Any

from gateway import keys
from gateway.documents import StageStatus
from gateway.exceptions import StageNotFound, TaskNotFound
from gateway.stage_ends import get_stage_ends
from gateway.store import get_store

#: Stage statuses that are still to end.
LIVE = frozenset({StageStatus.PENDING.value, StageStatus.RUNNING.value})


def stage_view(task_ref: str, task_name: str, seconds: float) -> dict[str, Any]:
    """The single-stage view (``/result?task_name=``) once the stage ended, or when
    ``seconds`` are over. Raises what ``Store.read_stage`` raises, when it raises."""
    store = get_store()
    return get_stage_ends().wait(
        keys.task_document(task_ref),
        lambda: store.read_stage(task_ref, task_name),
        lambda view: view["status"] not in LIVE,
        seconds,
    )


def ended_stage_view(task_ref: str, task_name: str, seconds: float) -> dict[str, Any] | None:
    """For a create request: the stage's view once it ended, None when ``seconds`` ran
    out first or the task is gone meanwhile (the caller then answers as without wait)."""
    try:
        view = stage_view(task_ref, task_name, seconds)
    except (TaskNotFound, StageNotFound):
        return None
    return None if view["status"] in LIVE else view


def document(task_ref: str, task_name: str | None, seconds: float) -> dict[str, Any]:
    """The whole document once the stage ``task_name`` ended (when given; a task without
    it has nothing to wait for) or no stage is live, or when ``seconds`` are over."""
    store = get_store()

    def ended(doc: dict[str, Any]) -> bool:
        stages = doc["stages"]
        if task_name is not None:
            return stages.get(task_name, {}).get("status") not in LIVE
        return all(stage["status"] not in LIVE for stage in stages.values())

    return get_stage_ends().wait(keys.task_document(task_ref), lambda: store.read(task_ref), ended, seconds)
