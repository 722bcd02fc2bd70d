"""Single-Task Gateway: runs single-step tasks for REST callers, keeps every stage in
Redis, reuses finished stages and pushes results to callback URLs."""

from __future__ import annotations

from typing import Any

from flask import Flask

__version__ = "0.1.0"


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """The application factory: config, store, queues, task registry, API, CLI."""
    from gateway import api, config, queues, scripts, signing, store, sweeper, tasks, tenancy, worker
    from gateway.api import jsonio

    app = Flask(__name__)
    # Reading app.logger installs Flask's handler (with a time) on the "gateway" logger,
    # which every gateway.* module logs through: at once, so that it is there in every
    # process before anything logs (a worker's retries to reach Redis, for one).
    _ = app.logger
    config.load(app, test_config)
    app.json = jsonio.GatewayJSONProvider(app)
    store.init_app(app)
    queues.init_app(app)
    tasks.load_modules(app.config["TASK_MODULES"], demo_tasks=app.config["DEMO_TASKS"])
    tenancy.init_app(app)
    signing.init_app(app)
    api.init_app(app)
    app.cli.add_command(scripts.scripts_cli)
    app.cli.add_command(worker.worker_command)
    app.cli.add_command(sweeper.sweep_command)
    app.cli.add_command(signing.tenants_cli)
    return app
