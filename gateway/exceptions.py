"""Small, precisely named exceptions; ``api.errors`` turns each into an HTTP answer."""

from __future__ import annotations

from typing import Any


class GatewayError(Exception):
    """An error a client can cause or must be told about."""

    status_code = 400
    code = "bad_request"

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}


class ValidationFailed(GatewayError):
    code = "validation_error"


class TaskNotFound(GatewayError):
    status_code = 404
    code = "task_not_found"


class StageNotFound(GatewayError):
    status_code = 404
    code = "stage_not_found"


class TaskBusy(GatewayError):
    status_code = 409
    code = "task_busy"


class NothingToCancel(GatewayError):
    """A cancel found no PENDING or RUNNING stage (of the task, or the one named)."""

    status_code = 409
    code = "nothing_to_cancel"


class TooManyStages(GatewayError):
    status_code = 409
    code = "too_many_stages"


class TooManyCallbacks(GatewayError):
    status_code = 409
    code = "too_many_callbacks"


class CallbackRecordsTooLarge(TooManyCallbacks):
    """A stage's callback records would exceed GATEWAY_MAX_CALLBACK_BYTES_PER_STAGE."""

    code = "callback_records_too_large"


class InputMismatch(GatewayError):
    """``if_input_differs: "reject"`` and the stage holds another input (nothing written)."""

    status_code = 409
    code = "input_mismatch"


class NothingToRetry(GatewayError):
    """A retry found no FAILED stage (of the task, or the one named)."""

    status_code = 409
    code = "nothing_to_retry"


class DeliveryNotFound(GatewayError):
    """No callback record of the task has this delivery id (never made, or forgotten)."""

    status_code = 404
    code = "delivery_not_found"


class DeliveryQueued(GatewayError):
    """A resend of a delivery that is still queued: its tries are not over."""

    status_code = 409
    code = "delivery_queued"


class StageLive(GatewayError):
    """A resend while the delivery's stage runs again: it has no current result yet."""

    status_code = 409
    code = "stage_live"


class StoreUnavailable(GatewayError):
    status_code = 503
    code = "store_unavailable"


class ScriptsNotLoaded(StoreUnavailable):
    code = "scripts_not_loaded"


class WriteNotReplicated(StoreUnavailable):
    """A write was made but fewer replicas than GATEWAY_REDIS_WAIT_REPLICAS acknowledged it in time."""


class ClaimLost(Exception):
    """A run's claim is no longer current: a newer attempt or a cancel replaced it."""


class RunCancelled(BaseException):
    """Raised in a handler by ``ctx.progress``/``ctx.sleep`` once its run's claim is gone
    (cancelled, replaced or deleted): whatever it returned would be discarded.

    A ``BaseException``, like ``asyncio.CancelledError``, so that a handler's ``except
    Exception`` does not swallow it by mistake; ``jobs.run_stage`` catches it."""


class WorkerStopping(BaseException):
    """Raised in a handler whose worker was asked to stop (SIGTERM) and waited
    ``GATEWAY_WORKER_STOP_SECONDS`` for it, or was asked twice: the run is handed back to
    its queue (``gateway.warmstop``). A ``BaseException`` for the reason RunCancelled is."""


class DocumentGone(Exception):
    """The task document expired or was deleted; late writes must not recreate it."""


class ConfigError(ValueError):
    """A ``GATEWAY_*`` setting is invalid; the message is one line naming the variable."""
