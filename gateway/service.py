"""What each API operation does, between the store and the queues.

Routes parse and answer; this module decides what to enqueue after the store's
verdict. Nothing here touches Redis keys or makes HTTP calls.
"""

from __future__ import annotations

import contextlib

from redis.exceptions import RedisError

from gateway import documents
from gateway.exceptions import ClaimLost, DocumentGone
from gateway.queues import get_queues
from gateway.store import Verdict, get_store


def create_task(task_id: str, task_name: str, input_data: dict, callback: str | None) -> Verdict:
    """Claim the stage and start what the verdict asks for; the verdict is what the answer tells."""
    store = get_store()
    # The claim also leaves the trace the sweeper follows if this process dies before
    # the enqueue below (``Watches.watch_claim``).
    verdict = store.claim(task_id, task_name, input_data, callback)
    if not verdict.hit:
        try:
            get_queues().enqueue_run(task_id, task_name, verdict.token)
        except RedisError as error:
            # Without its job the claimed run would look alive for a whole queue lease:
            # end it FAILED now (best effort; the store may be down too) and answer 503.
            with contextlib.suppress(RedisError, ClaimLost, DocumentGone):
                store.finish(
                    task_id, task_name, verdict.token, output_json=None, error=f"not queued: {error}", duration=0
                )
            raise
    elif verdict.delivery_due:
        result = documents.stage_view(verdict.task_name, verdict.stage, verdict.input_json, verdict.output_json)
        get_queues().enqueue_deliveries(task_id, task_name, [verdict.delivery_id], result)
    return verdict


def cancel_task(task_id: str) -> list[str]:
    """Fail the task's live stages and tell their subscribers; the names of those stages."""
    cancelled = get_store().cancel(task_id)
    queues = get_queues()
    for task_name, input_json in cancelled.inputs.items():
        state = {"status": documents.StageStatus.FAILED.value, "error": "cancelled", "duration": None}
        result = documents.stage_view(task_name, state, input_json, None)
        queues.enqueue_deliveries(task_id, task_name, [d for name, d in cancelled.due if name == task_name], result)
    return list(cancelled.inputs)


def retry_task(task_id: str) -> list[str]:
    """Run the task's failed stages again; the names of those stages."""
    retried = get_store().retry(task_id)
    queues = get_queues()
    for task_name in retried.task_names:
        queues.enqueue_run(task_id, task_name, retried.token)
    return retried.task_names


def delete_task(task_id: str, *, force: bool) -> None:
    get_store().delete(task_id, force=force)
