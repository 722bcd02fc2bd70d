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
from gateway.connections import get_connections, node_clients
from gateway.queue_redis import NodeGroupError, get_queue_redis

if TYPE_CHECKING:
    from flask import Flask
    from redis import Redis


def _script_targets() -> list[tuple[str, Redis, dict[str, str]]]:
    """(label, client, name → source) for the store Redis (each node of a cluster, replicas
    too, so that a promoted replica holds them) and each queue Redis (labelled by its node
    group when there are several)."""
    gateway_sources = scripts.read_sources()
    queue_servers = get_queue_redis().all()
    return [
        *((label, client, gateway_sources) for label, client in node_clients(get_connections().store)),
        *(
            (f"[{server.label}]" if len(queue_servers) > 1 else "", server.client, scripts.rq_sources())
            for server in queue_servers
        ),
    ]


def _line(label: str, text: str) -> str:
    """A cluster node's lines start with its address, a queue Redis's with its node group
    when there are several; a single Redis's as before."""
    return f"{label} {text}" if label else text


scripts_cli = AppGroup("scripts", help="Load or check the Lua scripts (the gateway's and RQ's) in Redis.")


@scripts_cli.command("load")
def load_scripts_command() -> None:
    """Load every Lua script into Redis and print its name and SHA."""
    try:
        for label, client, sources in _script_targets():
            for name, sha in scripts.load_all(client, sources).items():
                click.echo(_line(label, f"{name} {sha}"))
    except RedisError as error:
        raise click.ClickException(f"could not load scripts: {error}") from error


@scripts_cli.command("check")
def check_scripts_command() -> None:
    """Exit non-zero unless every Lua script is loaded in Redis."""
    missing = []
    try:
        for label, client, sources in _script_targets():
            for name, sha, loaded in scripts.check_loaded(client, sources):
                click.echo(_line(label, f"{name} {sha} {'loaded' if loaded else 'MISSING'}"))
                if not loaded:
                    missing.append(_line(label, name))
    except RedisError as error:
        raise click.ClickException(f"could not check scripts: {error}") from error
    if missing:
        raise click.ClickException(
            f"{len(missing)} script(s) missing: {', '.join(missing)}; run `{scripts.LOAD_COMMAND}`."
        )


store_cli = AppGroup("store", help="The task documents' Redis.")


@store_cli.command("copy")
@click.option("--from", "source_url", required=True, help="The Redis to copy task documents from (redis://...).")
def copy_store_command(source_url: str) -> None:
    """Copy every task document (gw:task:*, with its TTL) from another Redis into this
    app's store, e.g. into a Redis Cluster (docs/SCALING.md, "Migrating"). Run it while
    no gateway process writes; running it again copies everything again."""
    import redis

    from gateway.storecopy import copy_documents

    source = redis.Redis.from_url(source_url, socket_timeout=30, socket_connect_timeout=5)
    try:
        report = copy_documents(
            source,
            get_connections().store,
            progress=lambda r: click.echo(f"  {r.copied} copied", err=True) if r.copied % 50_000 < 500 else None,
        )
    except RedisError as error:
        raise click.ClickException(f"could not copy: {error}") from error
    finally:
        source.close()
    click.echo(report.summary())


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
    for command in (scripts_cli, worker_command, sweep_command, tenants_cli, store_cli):
        app.cli.add_command(command)
