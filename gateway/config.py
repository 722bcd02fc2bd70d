"""Configuration: one table of every ``GATEWAY_*`` setting (default and field), checked
whole before anything starts.

``GATEWAY_TASK_TTL_SECONDS=60`` sets ``TASK_TTL_SECONDS``. An empty value counts as unset.
``create_app(test_config)`` values go through the same fields. A bad value raises
``ConfigError`` with one line naming the variable; the entry points print it and exit.
"""

from __future__ import annotations

import difflib
import os
import urllib.parse
from collections.abc import Mapping
from typing import Any

from marshmallow import ValidationError

from gateway import urlpolicy
from gateway.config_fields import (
    Boolean,
    List,
    NodeUrls,
    Number,
    Secrets,
    TenantSecrets,
    Text,
    TokenList,
    Tokens,
    modules,
)
from gateway.exceptions import ConfigError

PREFIX = "GATEWAY_"
_REDIS_URL = r"^(redis|rediss|unix)://"
_URL_WHAT = "a redis://, rediss:// or unix:// URL"
_NODE = r"^[a-z][a-z0-9_]*$"  # the node part of a task name (``tasks.TASK_NAME``)


def _seconds(minimum: float = 0, *, above: bool = False, **kwargs: Any) -> Number:
    return Number(minimum=minimum, above=above, unit="seconds", **kwargs)


def _whole(minimum: int = 1, unit: str = "", **kwargs: Any) -> Number:
    return Number(minimum=minimum, whole=True, unit=unit, **kwargs)


#: name → (default, field). Adding a setting is one line here (and a row in
#: docs/OPERATIONS.md).
SETTINGS: dict[str, tuple[Any, Any]] = {
    # The task documents. The quickstart (serve.py) starts an embedded Redis when unset.
    "REDIS_URL": ("redis://127.0.0.1:6379/0", Text(pattern=_REDIS_URL, what=_URL_WHAT)),
    # The RQ queues; defaults to REDIS_URL.
    "QUEUE_REDIS_URL": (None, Text(pattern=_REDIS_URL, what=_URL_WHAT, allow_none=True)),
    # JSON object node → queue Redis URL ("*": every node not named, as QUEUE_REDIS_URL):
    # node groups on Redis servers of their own (``queue_redis``). Unset: all on QUEUE_REDIS_URL.
    "QUEUE_REDIS_URLS": (
        {},
        NodeUrls(node=_NODE, url=_REDIS_URL, what='node (or "*") → redis://, rediss:// or unix:// URL'),
    ),
    # GATEWAY_REDIS_URL names one startup node of a Redis Cluster (db 0); the queues then
    # need their own Redis (QUEUE_REDIS_URL): RQ cannot run on a cluster.
    "REDIS_CLUSTER": (False, Boolean()),
    # Replicas that must acknowledge each write script (Redis WAIT) before it counts; 0: none.
    "REDIS_WAIT_REPLICAS": (0, _whole(0)),
    # How long a write waits for them; fewer acknowledgements in time answer 503.
    "REDIS_WAIT_TIMEOUT_SECONDS": (0.5, _seconds(above=True)),
    "REDIS_CONNECT_TIMEOUT_SECONDS": (1.0, _seconds(above=True)),
    "REDIS_SOCKET_TIMEOUT_SECONDS": (2.0, _seconds(above=True)),
    "TASK_TTL_SECONDS": (86400, _whole(1, "seconds")),
    # Request body limit (Flask's MAX_CONTENT_LENGTH is set from it) → 413.
    "MAX_INPUT_BYTES": (1024 * 1024, _whole(1, "bytes")),
    "MAX_JSON_DEPTH": (64, _whole(1)),
    # Largest JSON a handler may return; more ends the stage FAILED.
    "MAX_OUTPUT_BYTES": (1024 * 1024, _whole(1, "bytes")),
    "MAX_STAGES_PER_TASK": (100, _whole(1)),
    # 0 refuses every callback.
    "MAX_CALLBACKS_PER_STAGE": (100, _whole(0)),
    # Bytes a stage's callback records may take as stored when one is added (finished ones
    # make room, oldest first): each claim reads the stage, so this bounds its Redis time.
    "MAX_CALLBACK_BYTES_PER_STAGE": (64 * 1024, _whole(4096, "bytes")),
    # Python modules whose @task handlers are registered (comma-separated or a JSON list).
    "TASK_MODULES": ([], modules()),
    # The built-in demo.* tasks: for the quickstart and the tests, never production.
    "DEMO_TASKS": (False, Boolean()),
    # JSON object token → tenant, or "@/path/to/tokens.json"; unset: open API, one namespace.
    "API_TOKENS": (None, Tokens(allow_none=True)),
    "RUN_LEASE_SECONDS": (60, _seconds(above=True)),
    # Runs lost (lease over without an end) before a stage ends FAILED instead of rerunning.
    "MAX_ATTEMPTS": (3, _whole(1)),
    # How often each worker's sweeper looks for lost runs and lost deliveries.
    "SWEEP_INTERVAL_SECONDS": (2.0, _seconds(above=True)),
    # A delivery try not recorded this long after its HTTP timeout was lost with its worker.
    "DELIVERY_GRACE_SECONDS": (30, _seconds(0)),
    "QUEUE_LEASE_SECONDS": (3600, _seconds(above=True)),
    # Longest ?wait= a request may ask for (larger values are cut to it); 0: never wait.
    "MAX_WAIT_SECONDS": (30, _seconds(0)),
    # RQ's hard limit on one handler run.
    "JOB_TIMEOUT_SECONDS": (3600, _whole(1, "seconds")),
    # A worker asked to stop (SIGTERM) lets its run go on this long, then hands it back to
    # its queue and exits (gateway.warmstop); keep it below the supervisor's kill timeout.
    "WORKER_STOP_SECONDS": (20.0, _seconds(0)),
    # A worker that cannot reach Redis at start exits non-zero after this long; unset: never.
    "WORKER_START_TIMEOUT_SECONDS": (None, _seconds(0, allow_none=True)),
    # One "whsec_..." secret, or a JSON list of them while rotating.
    "CALLBACK_SIGNING_SECRET": (None, Secrets(allow_none=True)),
    # JSON object tenant → "whsec_..." (or a list while rotating), or "@/path/to/file.json":
    # replaces that tenant's secret derived from CALLBACK_SIGNING_SECRET (gateway.signing).
    "TENANT_SIGNING_SECRETS": ({}, TenantSecrets()),
    "CALLBACK_TIMEOUT_SECONDS": (10.0, _seconds(above=True)),
    # Delay before each retry; its length is the number of retries.
    "CALLBACK_RETRY_INTERVALS": (
        [5, 30, 120, 600, 1800],
        List(_seconds(0), what="a JSON list or comma-separated numbers of seconds ≥ 0"),
    ),
    # A Retry-After longer than this is cut to it.
    "CALLBACK_MAX_RETRY_AFTER_SECONDS": (3600, _seconds(0)),
    "CALLBACK_ALLOW_PRIVATE_NETWORKS": (False, Boolean()),
    # Hosts (exact, or "*.suffix") that may be or resolve to non-public addresses.
    "CALLBACK_ALLOWED_HOSTS": ([], List(Text(), what="host names (or host:port), comma-separated or a JSON list")),
    # Logs on standard error: one JSON object per line, or "text" for a person (the
    # quickstart); the level of the gateway's loggers (INFO logs each request, run and
    # delivery try; WARNING only failures). docs/OPERATIONS.md, "Logs".
    "LOG_FORMAT": ("json", Text(pattern=r"^(json|text)$", what="json or text")),
    "LOG_LEVEL": ("INFO", Text(pattern=r"^(?i:debug|info|warning|error|critical)$", what="a log level name")),
    # The longest a request line waits to be written with others, in one write (0: each
    # at once). A process killed outright (SIGKILL, OOM) loses that much of its lines.
    "LOG_FLUSH_SECONDS": (0.2, _seconds(0)),
    # Proxies in front of gunicorn whose X-Forwarded-For/-Proto/-Host are believed (a hop
    # count; 0 believes none). 1 behind the shipped nginx (gateway.proxies).
    "TRUSTED_PROXIES": (0, _whole(0)),
    # Bearer token a scrape of /metrics must present (not an API token); unset: /metrics is
    # open, like /healthz (it shows route, task and queue names, no ids or user data).
    "METRICS_TOKEN": (
        None,
        Text(pattern=r"^\S{16,}$", what="at least 16 characters, no spaces", secret=True, allow_none=True),
    ),  # fmt: skip
    # A `flask worker` serves its own /metrics on this port (unset: none; its counts then
    # reach Prometheus only through a PROMETHEUS_MULTIPROC_DIR shared with gunicorn).
    "METRICS_PORT": (None, _whole(1, allow_none=True)),
    "METRICS_HOST": ("127.0.0.1", Text()),
    # Read by the quickstart (serve.py) only, not by the app: its embedded Redis's port
    # (unset: 6390, or a free port when that is busy) and data folder (unset: var/redis).
    "EMBEDDED_REDIS_PORT": (None, _whole(1, allow_none=True)),
    "EMBEDDED_REDIS_DIR": (None, Text(allow_none=True)),
    # Operator tokens of the console (/console): they see every tenant's tasks.
    "CONSOLE_TOKENS": ([], TokenList()),
    # The key that signs the console's session cookies, shared by every web process;
    # unset: a random key kept in Redis (gateway.console.session).
    "CONSOLE_SECRET": (None, Text(pattern=r"^.{32,}$", what="at least 32 characters", secret=True, allow_none=True)),
}

#: Every setting's default (the settings table without its fields).
DEFAULTS: dict[str, Any] = {name: default for name, (default, _field) in SETTINGS.items()}

#: Variables read outside this module (gunicorn.conf.py, the quickstart, logging): known
#: names, so that they draw no "misspelled" warning.
OTHER_VARIABLES = frozenset(
    {
        "GATEWAY_BIND",
        "GATEWAY_WEB_WORKERS",
        "GATEWAY_WEB_THREADS",
        "GATEWAY_ACCESS_LOG",
        "GATEWAY_CONTROL_SOCKET",
        "GATEWAY_PIDFILE",
        "GATEWAY_EMBEDDED_REDIS_PORT",
    }
)


def known_variables() -> frozenset[str]:
    return frozenset(PREFIX + name for name in SETTINGS) | OTHER_VARIABLES


def _describe(value: Any, field: Any) -> str:
    # A secret's value stays out of logs, even a wrong one (it may be a real one misplaced).
    return " (value not shown)" if getattr(field, "secret", False) else f", got {value!r}"


def validate(given: Mapping[str, Any]) -> dict[str, Any]:
    """The checked value of each setting in ``given`` (others pass through unchanged)."""
    checked: dict[str, Any] = {}
    for name, value in given.items():
        if name not in SETTINGS:
            checked[name] = value
            continue
        field = SETTINGS[name][1]
        if value is None and field.allow_none:
            checked[name] = None
            continue
        try:
            checked[name] = field.deserialize(value)
        except ValidationError as error:
            message = " ".join(str(m) for m in error.messages) if isinstance(error.messages, list) else error.messages
            raise ConfigError(f"{PREFIX}{name}: {message}{_describe(value, field)}") from None
    return checked


def from_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    """The settings given by ``GATEWAY_*`` variables; an empty one counts as unset."""
    return {name: environ[PREFIX + name] for name in SETTINGS if environ.get(PREFIX + name, "").strip() != ""}


def check_environment(environ: Mapping[str, str]) -> None:
    """Raise ``ConfigError`` for the first bad ``GATEWAY_*`` value in ``environ``: for a
    launcher (the quickstart) to refuse before it starts any process."""
    queue_redis_urls({**validate(DEFAULTS), **validate(from_environment(environ))})


def queue_redis_urls(settings: Mapping[str, Any]) -> dict[str, str]:
    """Each node's queue Redis URL, ``"*"`` for every node not named (always there), from
    checked settings: ``QUEUE_REDIS_URLS`` over ``QUEUE_REDIS_URL`` over ``REDIS_URL``.
    ``ConfigError`` when ``QUEUE_REDIS_URLS``'s ``"*"`` and ``QUEUE_REDIS_URL`` disagree."""
    urls = dict(settings["QUEUE_REDIS_URLS"] or {})
    default = settings["QUEUE_REDIS_URL"]
    if default is not None and urls.get("*", default) != default:
        raise ConfigError(
            f'{PREFIX}QUEUE_REDIS_URLS: its "*" entry and {PREFIX}QUEUE_REDIS_URL both name the queue Redis '
            "of every other node, and they differ; set only one of them (or the same URL in both)"
        )
    urls["*"] = urls.get("*") or default or settings["REDIS_URL"]
    return urls


def misspelled(environ: Mapping[str, str]) -> list[str]:
    """A warning for each ``GATEWAY_*`` variable that is no setting, naming the closest one."""
    known = known_variables()
    warnings = []
    for variable in sorted(environ):
        if not variable.startswith(PREFIX) or variable in known:
            continue
        closest = difflib.get_close_matches(variable, known, n=1, cutoff=0.6)
        hint = f"; did you mean {closest[0]}?" if closest else ""
        warnings.append(f"{variable} is not a setting of the gateway and is ignored{hint}")
    return warnings


def check_cluster(settings: Mapping[str, Any]) -> None:
    """A cluster store needs a queue Redis of its own and database 0 (a cluster has no other)."""
    if not settings["REDIS_CLUSTER"]:
        return
    named = {settings["QUEUE_REDIS_URL"], *(settings["QUEUE_REDIS_URLS"] or {}).values()} - {None}
    if settings["QUEUE_REDIS_URL"] is None and "*" not in (settings["QUEUE_REDIS_URLS"] or {}):
        raise ConfigError(
            f"{PREFIX}QUEUE_REDIS_URL is required with {PREFIX}REDIS_CLUSTER=true: RQ's queues cannot live "
            "on a Redis Cluster; name a separate Redis for them"
        )
    if settings["REDIS_URL"] in named:
        raise ConfigError(
            f"{PREFIX}QUEUE_REDIS_URL(S): a queue Redis cannot be the Redis Cluster ({PREFIX}REDIS_URL) itself"
        )
    url = urllib.parse.urlsplit(settings["REDIS_URL"])
    if url.scheme == "unix":
        raise ConfigError(f"{PREFIX}REDIS_URL: a Redis Cluster is reached over TCP, not a unix:// socket")
    if url.path.strip("/") not in ("", "0"):
        raise ConfigError(f"{PREFIX}REDIS_URL: a Redis Cluster has only database 0, got {settings['REDIS_URL']!r}")


def load(app, test_config: dict[str, Any] | None = None) -> None:
    """Fill ``app.config``: defaults, then the environment, then ``test_config``, all
    checked; raises ``ConfigError`` naming the first bad variable."""
    for warning in misspelled(os.environ):
        app.logger.warning(warning)
    settings = {
        **validate(DEFAULTS),
        **validate(from_environment(os.environ)),
        **validate(test_config or {}),
    }
    app.config.from_mapping(settings)
    app.config["MAX_CONTENT_LENGTH"] = app.config["MAX_INPUT_BYTES"]
    check_cluster(app.config)
    if app.config["REDIS_WAIT_REPLICAS"] and (
        app.config["REDIS_WAIT_TIMEOUT_SECONDS"] >= app.config["REDIS_SOCKET_TIMEOUT_SECONDS"]
    ):
        raise ConfigError(
            f"{PREFIX}REDIS_WAIT_TIMEOUT_SECONDS ({app.config['REDIS_WAIT_TIMEOUT_SECONDS']}) must be below "
            f"{PREFIX}REDIS_SOCKET_TIMEOUT_SECONDS ({app.config['REDIS_SOCKET_TIMEOUT_SECONDS']}): a WAIT "
            "blocks its connection that long"
        )
    app.config["QUEUE_REDIS_URLS"] = queue_redis_urls(app.config)
    app.config["QUEUE_REDIS_URL"] = app.config["QUEUE_REDIS_URLS"]["*"]
    app.config["CALLBACK_SIGNING_SECRETS"] = list(app.config["CALLBACK_SIGNING_SECRET"] or [])
    app.config["CALLBACK_POLICY"] = urlpolicy.Policy.from_config(app.config)
    if app.config["TASK_TTL_SECONDS"] < app.config["QUEUE_LEASE_SECONDS"]:
        app.logger.warning(
            "GATEWAY_TASK_TTL_SECONDS (%s) is shorter than GATEWAY_QUEUE_LEASE_SECONDS (%s): a document can "
            "expire while its run waits in the queue, and that run and its callbacks are then dropped",
            app.config["TASK_TTL_SECONDS"],
            app.config["QUEUE_LEASE_SECONDS"],
        )
