"""What each API operation does, between the store and the queues.

Routes parse and answer; this module decides what to enqueue after the store's
verdict. Nothing here touches Redis keys or makes HTTP calls.
"""

from __future__ import annotations

from typing import Any

from gateway import documents
from gateway.queues import get_queues
from gateway.store import Verdict, get_store

MESSAGES = {
    "miss": "Accepted: the stage will run.",
    "completed": "Reused: the stage already completed; its cached result is returned.",
    "pending": "Reused: the stage is queued; the callback, if any, is sent when it ends.",
    "running": "Reused: the stage is running; the callback, if any, is sent when it ends.",
    "empty_output": "Accepted: the stage completed with empty output and runs again.",
    "stale": "Accepted: the earlier run stopped answering and the stage runs again.",
    "failed": "Accepted: the stage failed before and runs again.",
}


def create_task(task_id: str, task_name: str, input_data: dict, callback: str | None) -> tuple[dict, int]:
    """Claim the stage, start what the verdict asks for, and build the response body."""
    verdict = get_store().claim(task_id, task_name, input_data, callback)
    queues = get_queues()
    if not verdict.hit:
        queues.enqueue_run(task_id, task_name, verdict.token)
    elif verdict.delivery_due:
        queues.enqueue_delivery(task_id, task_name, verdict.delivery_id)
    return create_response(verdict), 200 if verdict.state == "completed" else 202


def create_response(verdict: Verdict) -> dict[str, Any]:
    completed = verdict.state == "completed"
    body: dict[str, Any] = {
        "task_id": verdict.task_id,
        "status": "completed" if completed else "pending",
        "message": MESSAGES[verdict.state],
        "reuse_info": documents.reuse_info(verdict.task_name, verdict.state, verdict.input_matches, verdict.cached_ms),
        "callback_status": "queued" if verdict.delivery_id else None,
    }
    if completed:
        body["result"] = documents.stage_view(verdict.task_name, verdict.stage, verdict.input_json, verdict.output_json)
    return body


def cancel_task(task_id: str) -> dict[str, Any]:
    cancelled, due = get_store().cancel(task_id)
    queues = get_queues()
    for task_name, delivery_id in due:
        queues.enqueue_delivery(task_id, task_name, delivery_id)
    return {"task_id": task_id, "cancelled": cancelled}


def retry_task(task_id: str) -> dict[str, Any]:
    token, retried = get_store().retry(task_id)
    queues = get_queues()
    for task_name in retried:
        queues.enqueue_run(task_id, task_name, token)
    return {"task_id": task_id, "retried": retried}


def delete_task(task_id: str, *, force: bool) -> dict[str, Any]:
    get_store().delete(task_id, force=force)
    return {"task_id": task_id, "deleted": True}
