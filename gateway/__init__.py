"""Single-Task Gateway: runs single-step tasks for REST callers, keeps every stage in
Redis, reuses finished stages and pushes results to callback URLs.

The app factory sits on top: nothing in the package imports it (``wsgi.py`` does)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gateway.version import __version__

if TYPE_CHECKING:
    from flask import Flask

__all__ = ["__version__", "create_app"]


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """The application factory: config, Redis clients, store, queues, task registry, API, CLI."""
    from flask import Flask

    from gateway import (
        api,
        cli,
        config,
        connections,
        logs,
        proxies,
        queue_redis,
        queues,
        recent,
        signing,
        stage_ends,
        store,
        tasks,
        tenancy,
        watches,
    )
    from gateway.api import bookkeeping, jsonio, monitoring
    from gateway.console import init_app as init_console

    app = Flask(__name__)
    # Reading app.logger installs Flask's handler on the "gateway" logger, for what the
    # config says while it loads; logs.init_app then puts the gateway's handler (JSON or
    # text) in its place, before anything else logs (a worker's retries to reach Redis).
    _ = app.logger
    config.load(app, test_config)
    logs.init_app(app)
    app.json = jsonio.GatewayJSONProvider(app)
    connections.init_app(app)
    queue_redis.init_app(app)
    watches.init_app(app)
    store.init_app(app)
    queues.init_app(app)
    stage_ends.init_app(app)
    recent.init_app(app)
    tasks.load_modules(app.config["TASK_MODULES"], demo_tasks=app.config["DEMO_TASKS"])
    tenancy.init_app(app)
    signing.init_app(app)
    api.init_app(app)
    proxies.init_app(app)
    init_console(app)
    monitoring.init_app(app)
    bookkeeping.init_app(app)
    cli.init_app(app)
    return app
