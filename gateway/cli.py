"""The operator's ``flask --app wsgi ...`` commands: thin ``click`` wrappers over plain
functions of the modules that own the work (``scripts``, ``signing``, ``sweeper``,
``worker``). ``create_app`` registers them (``init_app``)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click
from flask.cli import AppGroup, with_appcontext
from redis.exceptions import RedisError

from gateway import scripts, signing, sweeper, worker
from gateway.connections import get_connections
from gateway.queue_redis import NodeGroupError, get_queue_redis
from gateway.queues import get_queues

if TYPE_CHECKING:
    from flask import Flask
    from redis import Redis


def _script_targets() -> list[tuple[Redis, dict[str, str]]]:
    """(client, name → source) for the store Redis and each queue Redis."""
    queue_clients = get_queues().all_connections()
    return [(get_connections().store, scripts.read_sources()), *((c, scripts.rq_sources()) for c in queue_clients)]


scripts_cli = AppGroup("scripts", help="Load or check the Lua scripts (the gateway's and RQ's) in Redis.")


@scripts_cli.command("load")
def load_scripts_command() -> None:
    """Load every Lua script into Redis and print its name and SHA."""
    try:
        for client, sources in _script_targets():
            for name, sha in scripts.load_all(client, sources).items():
                click.echo(f"{name} {sha}")
    except RedisError as error:
        raise click.ClickException(f"could not load scripts: {error}") from error


@scripts_cli.command("check")
def check_scripts_command() -> None:
    """Exit non-zero unless every Lua script is loaded in Redis."""
    missing = []
    try:
        for client, sources in _script_targets():
            for name, sha, loaded in scripts.check_loaded(client, sources):
                click.echo(f"{name} {sha} {'loaded' if loaded else 'MISSING'}")
                if not loaded:
                    missing.append(name)
    except RedisError as error:
        raise click.ClickException(f"could not check scripts: {error}") from error
    if missing:
        raise click.ClickException(
            f"{len(missing)} script(s) missing: {', '.join(missing)}; run `{scripts.LOAD_COMMAND}`."
        )


@click.group("tenants")
def tenants_cli() -> None:
    """Tenants (GATEWAY_API_TOKENS)."""


@tenants_cli.command("secret")
@click.argument("tenant")
@with_appcontext
def tenant_secret_command(tenant: str) -> None:
    """Print TENANT's current callback signing secret (one line), for its receiver."""
    try:
        click.echo(signing.current_secret(tenant))
    except LookupError as error:
        raise click.ClickException(str(error)) from None


@click.command("sweep")
@click.option(
    "--group", help="The node group (one of its nodes, or '*') whose queue Redis to sweep (default: every one)."
)
@with_appcontext
def sweep_command(group: str | None) -> None:
    """Run one sweep: re-run or fail lost runs, re-send lost deliveries."""
    servers = get_queue_redis()
    try:
        chosen = [servers.group(group)] if group is not None else servers.all()
    except NodeGroupError as error:
        raise click.ClickException(str(error)) from None
    unreachable = []
    for server in chosen:
        try:
            report = sweeper.sweep_once(server)
        except RedisError as error:
            unreachable.append(server.label)
            click.echo(f"group {server.label}: its queue Redis (or the store) did not answer: {error}", err=True)
            continue
        for action in report.actions:
            click.echo(action)
        click.echo(report.summary() if servers.single else f"group {server.label}: {report.summary()}")
    if unreachable:
        raise click.ClickException(f"not swept: group {', '.join(unreachable)}")


@click.command("worker")
@click.option("--queues", "queue_names", help="Comma-separated queues to serve (default: all, or the --group's).")
@click.option(
    "--group",
    help="With GATEWAY_QUEUE_REDIS_URLS: the node group to serve, named by one of its nodes or '*' (every node "
    "the map does not name): its node queues and its callbacks queue, on its queue Redis.",
)
@click.option("--burst", is_flag=True, help="Drain the queues, then exit.")
@click.option(
    "--log-level", default="WARNING", show_default=True, help="RQ's log level; INFO logs every job (about 5% slower)."
)
@with_appcontext
def worker_command(queue_names: str | None, group: str | None, burst: bool, log_level: str) -> None:
    """Run a worker for the node queues and, in a process of its own, one for the
    callback queue, with RQ's scheduler (it carries callback retries) and the sweeper,
    on the queue Redis of one node group."""
    names = [name.strip() for name in queue_names.split(",") if name.strip()] if queue_names else None
    try:
        started = worker.run(names, group=group, burst=burst, log_level=log_level)
    except NodeGroupError as error:
        raise click.ClickException(str(error)) from None
    if not started:
        sys.exit(1)


def init_app(app: Flask) -> None:
    for command in (scripts_cli, worker_command, sweep_command, tenants_cli):
        app.cli.add_command(command)
