"""What each API operation does, between the store and the queues.

Routes parse and answer; this module decides what to enqueue after the store's
verdict. Nothing here touches Redis keys or makes HTTP calls.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

from redis.exceptions import RedisError

from gateway import documents
from gateway.exceptions import ClaimLost, DocumentGone
from gateway.queues import get_queues
from gateway.store import Verdict, get_store
from gateway.tenancy import public

MESSAGES = {
    "miss": "Accepted: the stage will run.",
    "completed": "Reused: the stage already completed; its cached result is returned.",
    "pending": "Reused: the stage is queued; the callback, if any, is sent when it ends.",
    "running": "Reused: the stage is running; the callback, if any, is sent when it ends.",
    "empty_output": "Accepted: the stage completed with empty output and runs again.",
    "stale": "Accepted: the earlier run stopped answering and the stage runs again.",
    "failed": "Accepted: the stage failed before and runs again.",
}


def create_task(task_id: str, task_name: str, input_data: dict, callback: str | None) -> tuple[str, int]:
    """Claim the stage, start what the verdict asks for, and build the response body (JSON text)."""
    store, queues = get_store(), get_queues()
    # The claim also leaves the trace the sweeper follows if this process dies before
    # the enqueue below (``Watches.watch_claim``).
    verdict = store.claim(task_id, task_name, input_data, callback)
    text = create_response(verdict)
    if not verdict.hit:
        try:
            queues.enqueue_run(task_id, task_name, verdict.token)
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
        queues.enqueue_deliveries(task_id, task_name, [verdict.delivery_id], result)
    return text, 200 if verdict.state == "completed" else 202


def create_response(verdict: Verdict) -> str:
    """The answer's JSON text; a completed hit's ``result`` carries the stored input and
    output as stored (``documents.stage_view_json``)."""
    completed = verdict.state == "completed"
    body: dict[str, Any] = {
        "task_id": verdict.task_id,
        "status": "completed" if completed else "pending",
        "message": MESSAGES[verdict.state],
        "reuse_info": documents.reuse_info(verdict.task_name, verdict.state, verdict.input_matches, verdict.cached_ms),
        "callback_status": "queued" if verdict.delivery_id else None,
    }
    text = json.dumps(body, separators=(",", ":"))
    if not completed:
        return text
    result = documents.stage_view_json(verdict.task_name, verdict.stage, verdict.input_json, verdict.output_json)
    return f'{text[:-1]},"result":{result}}}'


def cancel_task(task_id: str) -> dict[str, Any]:
    cancelled = get_store().cancel(task_id)
    queues = get_queues()
    for task_name, input_json in cancelled.inputs.items():
        state = {"status": documents.StageStatus.FAILED.value, "error": "cancelled", "duration": None}
        result = documents.stage_view(task_name, state, input_json, None)
        queues.enqueue_deliveries(task_id, task_name, [d for name, d in cancelled.due if name == task_name], result)
    return {"task_id": public(task_id), "cancelled": sorted(cancelled.inputs)}


def retry_task(task_id: str) -> dict[str, Any]:
    retried = get_store().retry(task_id)
    queues = get_queues()
    for task_name in retried.task_names:
        queues.enqueue_run(task_id, task_name, retried.token)
    return {"task_id": public(task_id), "retried": retried.task_names}


def delete_task(task_id: str, *, force: bool) -> dict[str, Any]:
    get_store().delete(task_id, force=force)
    return {"task_id": public(task_id), "deleted": True}
