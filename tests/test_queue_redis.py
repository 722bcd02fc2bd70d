"""Queues on several Redis servers (GATEWAY_QUEUE_REDIS_URLS): each node's runs, its
stages' deliveries and its watch lists on its own queue Redis, the task documents on the
store Redis; one worker set and one sweeper per queue Redis. In-process, against two more
real Redis servers (tests/test_queue_redis_stack.py runs real processes)."""

from __future__ import annotations

import json
import time

import pytest
import redis

from gateway import create_app, keys
from gateway.exceptions import ConfigError
from gateway.queue_redis import get_queue_redis
from gateway.queues import get_queues
from gateway.store import get_store
from gateway.sweeper import sweep_once
from gateway.testing.redis_server import RedisServer
from gateway.watches import get_watches
from gateway.worker import build_worker, worker_queue_redis
from tests.conftest import IN_PROCESS_DB, base_config
from tests.test_reuse import create, stage, stage_state

LOST_FAST = {"RUN_LEASE_SECONDS": 0.2, "QUEUE_LEASE_SECONDS": 0.2, "MAX_ATTEMPTS": 3}


@pytest.fixture(scope="module")
def queue_servers():
    """Two queue Redis servers apart from the session's (the store's): A for node demo,
    B for every other node (testing)."""
    with RedisServer() as a, RedisServer() as b:
        yield a, b


@pytest.fixture
def split_app(make_app, queue_servers):
    a, b = queue_servers
    for server in (a, b):
        with server.client() as client:
            client.flushdb()

    def factory(**overrides):
        return make_app(**{"QUEUE_REDIS_URLS": {"demo": a.url, "*": b.url}, **overrides})

    return factory


def drain(app, group: str) -> None:
    """What a burst worker started with ``--group group`` does."""
    with app.app_context():
        server, names = worker_queue_redis(None, group)
        build_worker(names, server).work(burst=True, logging_level="WARNING")


def rq_keys(server: RedisServer, pattern: str) -> set[str]:
    with server.client() as client:
        return {key.decode() for key in client.keys(pattern)}


def watch_members(server: RedisServer, key: str) -> set[str]:
    with server.client() as client:
        return {member.decode() for member in client.zrange(key, 0, -1)}


def test_each_node_is_queued_and_run_on_its_own_queue_redis(split_app, queue_servers, redis_server, receiver, run_log):
    a, b = queue_servers
    app = split_app()
    client = app.test_client()
    create(client, "t-demo", "demo.echo", {"v": 1}, callback=receiver.url("/demo"))
    create(client, "t-testing", "testing.count", {"log": run_log.path}, callback=receiver.url("/testing"))

    assert rq_keys(a, "rq:queue:*") == {"rq:queue:demo"}
    assert rq_keys(b, "rq:queue:*") == {"rq:queue:testing"}
    # The watch entry of each run is on its node's server, beside its job.
    assert watch_members(a, keys.run_watch()) == {"t-demo\tdemo.echo"}
    assert watch_members(b, keys.run_watch()) == {"t-testing\ttesting.count"}
    # The documents are on the store Redis, and nothing of RQ's or the sweeper's is.
    with redis_server.client(IN_PROCESS_DB) as store:
        assert store.exists(keys.task_document("t-demo"), keys.task_document("t-testing")) == 2
        assert store.keys("rq:*") == [] and store.keys("gw:watch:*") == []
    assert rq_keys(a, "gw:task:*") == rq_keys(b, "gw:task:*") == set()

    drain(app, "demo")  # A's worker: its run and its delivery, nothing of B's
    assert stage(client, "t-demo", "demo.echo")["status"] == "SUCCESS"
    assert stage(client, "t-testing", "testing.count")["status"] == "PENDING"
    assert [r["path"] for r in receiver.wait_for(1)] == ["/demo"]

    drain(app, "*")  # B's worker
    assert stage(client, "t-testing", "testing.count")["status"] == "SUCCESS"
    assert sorted(r["path"] for r in receiver.wait_for(2)) == ["/demo", "/testing"]
    assert len(run_log.lines()) == 1
    for server in (a, b):  # every run and delivery ended: nothing left to watch
        assert watch_members(server, keys.run_watch()) == watch_members(server, keys.delivery_watch()) == set()


def test_a_lost_run_of_node_b_is_found_by_b_sweeper_only(split_app, queue_servers, receiver, run_log):
    app = split_app(**LOST_FAST)
    client = app.test_client()
    create(client, "t-lost", "testing.count", {"log": run_log.path}, callback=receiver.url())
    token = stage_state(app, "t-lost", "testing.count")["token"]
    with app.app_context():
        # What B's worker did before it was killed: took the job and started the run.
        get_queues().get("testing").empty()
        get_store().start("t-lost", "testing.count", token)
        get_watches().watch_run("t-lost", "testing.count", 0)
    time.sleep(0.3)
    with app.app_context():
        servers = get_queue_redis()
        server_a, server_b = servers.for_node("demo"), servers.for_node("testing")
        assert sweep_once(server_a).runs_checked == 0  # A's sweeper does not see B's runs
        report = sweep_once(server_b)
    assert (report.runs_checked, report.runs_rerun) == (1, 1)
    drain(app, "*")
    assert stage(client, "t-lost", "testing.count")["status"] == "SUCCESS"
    assert stage(client, "t-lost", "testing.count")["attempt"] == 2
    [delivered] = receiver.wait_for(1)
    assert delivered["json"]["status"] == "completed"


def test_an_entry_on_a_server_that_no_longer_serves_its_node_is_moved(split_app, queue_servers, run_log):
    """After the map changed (node demo moved from B to A), B's sweeper hands demo's
    entries to A's, whose sweeper re-enqueues the run there."""
    a, b = queue_servers
    app = split_app()
    client = app.test_client()
    create(client, "t-moved", "demo.echo", {"v": 2})
    with a.client() as client_a, b.client() as client_b:
        client_a.flushdb()  # the run was queued on B, before the map changed
        client_b.zadd(keys.run_watch(), {"t-moved\tdemo.echo": 0})
    with app.app_context():
        servers = get_queue_redis()
        assert sweep_once(servers.for_node("testing")).moved == 1
        assert watch_members(b, keys.run_watch()) == set()
        assert sweep_once(servers.for_node("demo")).runs_requeued == 1
    drain(app, "demo")
    assert stage(client, "t-moved", "demo.echo")["status"] == "SUCCESS"


def test_a_worker_serves_one_queue_redis(split_app, queue_servers):
    a, b = queue_servers
    app = split_app()
    runner = app.test_cli_runner()
    refused = runner.invoke(args=["worker", "--burst"])
    assert refused.exit_code == 1
    assert "GATEWAY_QUEUE_REDIS_URLS puts the queues on 2 Redis servers" in refused.output
    assert "--group NODE" in refused.output and "groups: *, demo" in refused.output
    mixed = runner.invoke(args=["worker", "--burst", "--queues", "demo,testing"])
    assert mixed.exit_code == 1 and "2 queue Redis servers" in mixed.output
    misspelt = runner.invoke(args=["worker", "--burst", "--group", "dmeo"])
    assert misspelt.exit_code == 1 and "--group dmeo: no such node (known: *, demo, testing)" in misspelt.output
    with app.app_context():
        server, names = worker_queue_redis(None, "demo")
        assert (server.url, names) == (a.url, ["demo", "callbacks"])
        server, names = worker_queue_redis(None, "*")
        assert (server.url, names) == (b.url, ["testing", "callbacks"])
        server, names = worker_queue_redis(["callbacks"], "demo")  # a delivery worker of A
        assert (server.url, names) == (a.url, ["callbacks"])
        assert worker_queue_redis(["testing", "callbacks"], None)[0].url == b.url


def test_accessors_for_code_that_reaches_every_queue_redis(split_app, queue_servers):
    a, b = queue_servers
    app = split_app()
    with app.app_context():
        queues = get_queues()
        ports = [c.connection_pool.connection_kwargs["port"] for c in queues.all_connections()]
        assert ports == [b.port, a.port]  # the default ("*") first
        assert queues.redis_for("demo").connection_pool.connection_kwargs["port"] == a.port
        assert queues.redis_for("testing") is queues.redis_for("any_other_node") is queues.all_connections()[0]


def test_scripts_load_reaches_every_queue_redis(split_app, queue_servers):
    app = split_app()
    result = app.test_cli_runner().invoke(args=["scripts", "load"])
    assert result.exit_code == 0, result.output
    for server in queue_servers:
        with server.client() as client:
            assert client.script_exists(*_rq_shas(result.output)) == [True] * len(_rq_shas(result.output))


def _rq_shas(output: str) -> list[str]:
    from gateway import scripts

    names = set(scripts.rq_sources())
    return [line.split()[1] for line in output.splitlines() if line.split()[0] in names]


def test_sweep_command_sweeps_each_queue_redis(split_app):
    runner = split_app().test_cli_runner()
    result = runner.invoke(args=["sweep"])
    assert result.exit_code == 0, result.output
    assert "group demo: runs checked 0" in result.output
    assert "group *: runs checked 0" in result.output
    one = runner.invoke(args=["sweep", "--group", "demo"])
    assert (one.exit_code, one.output.count("runs checked")) == (0, 1)
    assert runner.invoke(args=["sweep", "--group", "nope"]).exit_code == 1


def test_a_down_queue_redis_stops_only_its_nodes(split_app, queue_servers, task_id):
    """Creates of demo (on A, down) get 503; testing (on B) goes on."""
    with RedisServer() as gone:
        url = gone.url
    app = split_app(QUEUE_REDIS_URLS={"demo": url, "*": queue_servers[1].url})
    client = app.test_client()
    refused = create(client, task_id, "demo.echo", {"v": 1})
    assert refused.status_code == 503
    assert create(client, task_id, "testing.empty", {}).status_code == 202
    drain(app, "*")
    assert stage(client, task_id, "testing.empty")["status"] == "SUCCESS"


def test_the_quickstart_starts_one_worker_per_queue_redis():
    from gateway.serve import worker_args

    store = {"GATEWAY_REDIS_URL": "redis://s:6379/0"}
    assert worker_args(store) == [[]]  # as before: one worker, every queue
    assert worker_args({**store, "GATEWAY_QUEUE_REDIS_URLS": '{"demo": "redis://s:6379/0"}'}) == [[]]
    urls = '{"demo": "redis://q1:6379/0", "ffmpeg": "redis://q1:6379/0", "gpu": "redis://q2:6379/0"}'
    assert worker_args({**store, "GATEWAY_QUEUE_REDIS_URLS": urls}) == [
        ["--group", "demo"],
        ["--group", "gpu"],
        ["--group", "*"],
    ]


# -- configuration ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("{not json", "GATEWAY_QUEUE_REDIS_URLS: is not valid JSON"),
        ('["redis://q1:6379/0"]', "GATEWAY_QUEUE_REDIS_URLS: must be a JSON object of node"),
        ('{"Demo": "redis://q1:6379/0"}', "GATEWAY_QUEUE_REDIS_URLS: has the key 'Demo', which is no node name"),
        ('{"demo": "http://q1:6379/0"}', "GATEWAY_QUEUE_REDIS_URLS: maps 'demo' to no Redis URL"),
        ('{"demo": 6379}', "GATEWAY_QUEUE_REDIS_URLS: maps 'demo' to no Redis URL"),
    ],
)
def test_a_bad_map_is_refused_in_one_line_naming_the_variable(redis_server, value, message, monkeypatch):
    monkeypatch.setenv("GATEWAY_QUEUE_REDIS_URLS", value)
    with pytest.raises(ConfigError) as refused:
        create_app(base_config(redis_server, IN_PROCESS_DB))
    assert str(refused.value).startswith(message)
    assert "\n" not in str(refused.value)


def test_a_map_that_contradicts_queue_redis_url_is_refused(redis_server, monkeypatch):
    monkeypatch.setenv("GATEWAY_QUEUE_REDIS_URLS", '{"*": "redis://q0:6379/0", "demo": "redis://:pw@q1:6379/0"}')
    monkeypatch.setenv("GATEWAY_QUEUE_REDIS_URL", "redis://q9:6379/0")
    with pytest.raises(ConfigError) as refused:
        create_app(base_config(redis_server, IN_PROCESS_DB))
    assert str(refused.value).startswith('GATEWAY_QUEUE_REDIS_URLS: its "*" entry and GATEWAY_QUEUE_REDIS_URL')
    assert "pw" not in str(refused.value)  # a URL may hold a password: never echoed


def test_the_map_and_queue_redis_url_agree(redis_server, queue_servers):
    a, b = queue_servers
    store_url = base_config(redis_server, IN_PROCESS_DB)["REDIS_URL"]
    # "*" absent: every other node is on GATEWAY_QUEUE_REDIS_URL, or else the store's Redis.
    app = create_app({**base_config(redis_server, IN_PROCESS_DB), "QUEUE_REDIS_URLS": {"demo": a.url}})
    assert app.config["QUEUE_REDIS_URLS"] == {"demo": a.url, "*": store_url}
    with app.app_context():
        assert get_watches().scripts_write_runs is False  # demo's runs are not on the store's Redis
        assert get_queue_redis().for_node("testing").holds_store is True
    config = {**base_config(redis_server, IN_PROCESS_DB), "QUEUE_REDIS_URLS": json.dumps({"demo": a.url})}
    app = create_app({**config, "QUEUE_REDIS_URL": b.url})
    assert app.config["QUEUE_REDIS_URLS"] == {"demo": a.url, "*": b.url}
    # "*" given: it is GATEWAY_QUEUE_REDIS_URL.
    app = create_app({**base_config(redis_server, IN_PROCESS_DB), "QUEUE_REDIS_URLS": {"*": b.url}})
    assert app.config["QUEUE_REDIS_URL"] == b.url
    with app.app_context():
        assert get_queue_redis().single


def test_without_a_map_everything_is_on_one_queue_redis(app):
    with app.app_context():
        servers = get_queue_redis()
        assert servers.single and len(get_queues().all_connections()) == 1
        assert get_watches().scripts_write_runs is True  # the store's Redis: scripts write the runs' entries
        assert app.config["QUEUE_REDIS_URLS"] == {"*": app.config["REDIS_URL"]}


def test_a_node_on_the_store_redis_keeps_its_watch_entry_in_the_claim_script(make_app, queue_servers, redis_server):
    """A mixed map: testing stays on the store's Redis (the claim script writes its entry
    in the same step); demo is apart (the web process writes it on A)."""
    a, _ = queue_servers
    with a.client() as client:
        client.flushdb()
    store_url = base_config(redis_server, IN_PROCESS_DB)["REDIS_URL"]
    app = make_app(QUEUE_REDIS_URLS={"demo": a.url, "*": store_url})
    client = app.test_client()
    create(client, "t-mixed", "testing.empty", {})
    create(client, "t-mixed", "demo.echo", {"v": 1})
    with redis.Redis(port=redis_server.port, db=IN_PROCESS_DB) as store:
        assert {m.decode() for m in store.zrange(keys.run_watch(), 0, -1)} == {"t-mixed\ttesting.empty"}
    assert watch_members(a, keys.run_watch()) == {"t-mixed\tdemo.echo"}
    drain(app, "demo")
    drain(app, "*")
    assert stage(client, "t-mixed", "demo.echo")["status"] == stage(client, "t-mixed", "testing.empty")["status"]
    assert stage(client, "t-mixed", "demo.echo")["status"] == "SUCCESS"
    with redis.Redis(port=redis_server.port, db=IN_PROCESS_DB) as store:
        assert store.zcard(keys.run_watch()) == 0
    assert watch_members(a, keys.run_watch()) == set()
