"""What the gateway reads from RQ: JSON job data naming one of the gateway's own job
functions, and nothing else that RQ would import, call or post to.

Anyone who can write to the queue Redis can write a job. With RQ's default serializer
(pickle), merely reading such a job's data, meta or result runs code of the writer's
choosing; and a job's function, its success/failure/stopped callbacks and its webhooks
name code that the worker imports and calls, or URLs that it posts to. So here:

- job data, meta and results are JSON (``SERIALIZER``): reading them runs nothing;
- a worker runs a job only if its function is one of ``ALLOWED_FUNCTIONS``, checked by
  name before anything is imported; any other job fails unrun and is not retried;
- RQ's per-job callbacks and webhooks are never called: the gateway sets none, so any
  found in Redis were written by someone else.

Jobs written by an older gateway (pickle) are unreadable here and fail unrun like any
other foreign job; the sweeper queues their runs and deliveries again (docs/SECURITY.md).
"""

from __future__ import annotations

from typing import Any

from rq.exceptions import DeserializationError
from rq.job import Job
from rq.serializers import JSONSerializer

SERIALIZER = JSONSerializer
#: The only functions a gateway worker runs (``gateway.jobs``).
ALLOWED_FUNCTIONS = frozenset({"gateway.jobs.run_stage", "gateway.jobs.deliver"})


class RefusedJob(Exception):
    """A job a gateway worker will not run (its failure reason in RQ's failed registry)."""


class GatewayJob(Job):
    """RQ's ``Job`` that runs only the gateway's functions and never calls a job's
    callbacks or webhooks."""

    def refusal(self) -> str | None:
        """Why this job must not run, or None for one of the gateway's own."""
        try:
            name = self.func_name
            instance = self.instance
        except DeserializationError:
            return "its data is not JSON (a job of an older gateway version, or not the gateway's)"
        if not isinstance(name, str) or name not in ALLOWED_FUNCTIONS:
            return f"{name!r} is not a gateway job function"
        if instance is not None:
            return "it names a method of an object"
        return None

    @property
    def func(self) -> Any:
        reason = self.refusal()
        if reason is not None:
            raise RefusedJob(f"job {self.id} refused: {reason}")
        return super().func

    @property
    def should_retry(self) -> bool:
        return self.refusal() is None and super().should_retry

    @property
    def success_callback(self) -> None:
        return None

    @property
    def failure_callback(self) -> None:
        return None

    @property
    def stopped_callback(self) -> None:
        return None

    def send_webhooks(self, status: Any, *, exc_string: str | None = None) -> None:
        return None
