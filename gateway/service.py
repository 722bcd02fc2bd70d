"""What each API operation does, between the store and the queues.

Routes parse and answer; this module decides what to enqueue after the store's
verdict. Nothing here touches Redis keys or makes HTTP calls.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from redis.exceptions import RedisError

from gateway import documents, jsontext
from gateway.exceptions import ClaimLost, DocumentGone
from gateway.queues import get_queues
from gateway.replies import Resent, Retried
from gateway.store import Verdict, get_store
from gateway.watches import get_watches

if TYPE_CHECKING:
    from gateway.replies import Cancelled


def create_task(task_id: str, task_name: str, input_data: dict, callback: str | None, policy: str = "") -> Verdict:
    """Claim the stage and start what the verdict asks for; the verdict is what the answer tells.

    ``policy``: the caller's reuse policy (``schemas.claim_policy``), "" for the default."""
    store = get_store()
    # The claim also leaves the trace the sweeper follows if this process dies before
    # the enqueue below (``Watches.watch_claim``).
    verdict = store.claim(task_id, task_name, input_data, callback, policy)
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


def cancel_task(task_id: str, task_name: str | None = None) -> Cancelled:
    """Fail the task's live stages (or only ``task_name``'s), take the queued runs out of
    their queues, and tell the subscribers. Running handlers learn it at their next check
    (``runcontrol``)."""
    cancelled = get_store().cancel(task_id, task_name)
    queues = get_queues()
    for name, token in cancelled.pending.items():
        queues.remove_run(token, name)
    for name, input_json in cancelled.inputs.items():
        state = {"status": documents.StageStatus.FAILED.value, "error": "cancelled", "duration": None}
        result = documents.stage_view(name, state, input_json, None)
        queues.enqueue_deliveries(task_id, name, [d for stage, d in cancelled.due if stage == name], result)
    return cancelled


def retry_task(task_id: str, task_name: str | None = None, callback: str | None = None) -> Retried:
    """Run the task's failed stages (or only ``task_name``) again, ``callback`` subscribed
    to each new run; what was retried."""
    retried = get_store().retry(task_id, task_name=task_name, callback_url=callback)
    queues = get_queues()
    for name in retried.task_names:
        queues.enqueue_run(task_id, name, retried.token)
    return retried


def resend_delivery(task_id: str, delivery_id: str) -> Resent:
    """Send a recorded delivery again, with the stage's current result (``lua/resend_delivery.lua``)."""
    store = get_store()
    # Watched before the script marks it queued: a process dying before the enqueue below
    # leaves a trace the sweeper follows (it forgets the entry if the resend is refused).
    task_name = store.delivery_stage(task_id, delivery_id)
    if task_name is not None:
        get_watches().watch_delivery_later(task_id, task_name, delivery_id)
    resent = store.resend(task_id, delivery_id)
    result = documents.stage_view(resent.task_name, resent.stage, resent.input_json, resent.output_json)
    get_queues().enqueue_delivery(
        task_id, resent.task_name, delivery_id, jsontext.dumps(result), try_number=resent.try_number
    )
    return resent


def delete_task(task_id: str, *, force: bool) -> None:
    get_store().delete(task_id, force=force)
