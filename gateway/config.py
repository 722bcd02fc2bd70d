"""Configuration defaults; every value can be overridden by a ``GATEWAY_*`` variable."""

from __future__ import annotations

from typing import Any

from gateway import urlpolicy

#: Defaults, read before ``from_prefixed_env("GATEWAY")``. ``GATEWAY_TASK_TTL_SECONDS=60``
#: sets ``TASK_TTL_SECONDS``; values are parsed as JSON where they can be.
DEFAULTS: dict[str, Any] = {
    # The task documents. The quickstart (serve.py) starts an embedded Redis when unset.
    "REDIS_URL": "redis://127.0.0.1:6379/0",
    # The RQ queues; defaults to REDIS_URL.
    "QUEUE_REDIS_URL": None,
    "REDIS_CONNECT_TIMEOUT_SECONDS": 1.0,
    "REDIS_SOCKET_TIMEOUT_SECONDS": 2.0,
    "TASK_TTL_SECONDS": 86400,
    # Request body limit (Flask's MAX_CONTENT_LENGTH is set from it) → 413.
    "MAX_INPUT_BYTES": 1024 * 1024,
    "MAX_JSON_DEPTH": 64,
    # Largest JSON a handler may return; more ends the stage FAILED.
    "MAX_OUTPUT_BYTES": 1024 * 1024,
    "MAX_STAGES_PER_TASK": 100,
    "MAX_CALLBACKS_PER_STAGE": 100,
    # Bytes a stage's callback records may take as stored when one is added (finished ones
    # make room, oldest first): each claim reads the stage, so this bounds its Redis time.
    "MAX_CALLBACK_BYTES_PER_STAGE": 64 * 1024,
    "TASK_MODULES": "",
    # JSON object token → tenant, or "@/path/to/tokens.json"; unset: open API, one namespace.
    "API_TOKENS": None,
    "RUN_LEASE_SECONDS": 60,
    # Runs lost (lease over without an end) before a stage ends FAILED instead of rerunning.
    "MAX_ATTEMPTS": 3,
    # How often each worker's sweeper looks for lost runs and lost deliveries.
    "SWEEP_INTERVAL_SECONDS": 2.0,
    # A delivery try not recorded this long after its HTTP timeout was lost with its worker.
    "DELIVERY_GRACE_SECONDS": 30,
    "QUEUE_LEASE_SECONDS": 3600,
    # A worker that cannot reach Redis at its start retries (1, 2, 4 … 30 s apart) and
    # exits with status 1 after this many seconds; unset: it retries forever.
    "WORKER_START_TIMEOUT_SECONDS": None,
    # RQ's hard limit on one handler run.
    "JOB_TIMEOUT_SECONDS": 3600,
    # One "whsec_..." secret, or a JSON list of them while rotating.
    "CALLBACK_SIGNING_SECRET": None,
    # JSON object tenant → "whsec_..." (or a list while rotating), or "@/path/to/file.json":
    # replaces that tenant's secret derived from CALLBACK_SIGNING_SECRET (gateway.signing).
    "TENANT_SIGNING_SECRETS": None,
    "CALLBACK_TIMEOUT_SECONDS": 10.0,
    # Delay before each retry; its length is the number of retries.
    "CALLBACK_RETRY_INTERVALS": [5, 30, 120, 600, 1800],
    # A Retry-After longer than this is cut to it.
    "CALLBACK_MAX_RETRY_AFTER_SECONDS": 3600,
    "CALLBACK_ALLOW_PRIVATE_NETWORKS": False,
    # Hosts (exact, or "*.suffix") that may be or resolve to non-public addresses.
    "CALLBACK_ALLOWED_HOSTS": [],
    # Read by the quickstart (serve.py) only, not by the app: its embedded Redis's port
    # (None: 6390, or a free port when that is busy) and data folder (None: var/redis).
    "EMBEDDED_REDIS_PORT": None,
    "EMBEDDED_REDIS_DIR": None,
}


def load(app, test_config: dict[str, Any] | None = None) -> None:
    """Fill ``app.config``: defaults, then the environment, then ``test_config``."""
    app.config.from_mapping(DEFAULTS)
    app.config.from_prefixed_env("GATEWAY")
    if test_config:
        app.config.from_mapping(test_config)
    app.config["MAX_CONTENT_LENGTH"] = int(app.config["MAX_INPUT_BYTES"])
    if app.config["QUEUE_REDIS_URL"] is None:
        app.config["QUEUE_REDIS_URL"] = app.config["REDIS_URL"]
    app.config["TASK_MODULES"] = _split_modules(app.config["TASK_MODULES"])
    app.config["CALLBACK_SIGNING_SECRETS"] = _secrets(app.config["CALLBACK_SIGNING_SECRET"])
    app.config["CALLBACK_POLICY"] = urlpolicy.Policy.from_config(app.config)
    if app.config["TASK_TTL_SECONDS"] < app.config["QUEUE_LEASE_SECONDS"]:
        app.logger.warning(
            "GATEWAY_TASK_TTL_SECONDS (%s) is shorter than GATEWAY_QUEUE_LEASE_SECONDS (%s): a document can "
            "expire while its run waits in the queue, and that run and its callbacks are then dropped",
            app.config["TASK_TTL_SECONDS"],
            app.config["QUEUE_LEASE_SECONDS"],
        )


def _split_modules(value: str | list[str]) -> list[str]:
    if isinstance(value, list):
        return value
    return [name.strip() for name in value.split(",") if name.strip()]


def _secrets(value: str | list[str] | None) -> list[str]:
    if not value:
        return []
    return [value] if isinstance(value, str) else list(value)
