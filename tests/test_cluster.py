"""The gateway on a real Redis Cluster (issue 13): 3 primaries and 3 replicas on loopback
(``redis_cluster``), queues on a Redis of their own, real gunicorn and RQ workers.

Task ids are chosen so that their documents land on each of the three primaries (the
slot of the document key against ``CLUSTER SLOTS``); the scenarios are the core ones of
the single-Redis suite.
"""

from __future__ import annotations

import json
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis
import requests
from redis.cluster import RedisCluster

from gateway import create_app, keys
from gateway.exceptions import ConfigError
from gateway.testing.redis_cluster import task_ids_on
from gateway.testing.stack import GatewayStack
from tests.conftest import STACK_ENV, base_config, wait_until

QUEUE_DB = 14  # the cluster stack's queue Redis: a database of the session Redis of its own
TOKENS = {"alpha-token-0123456789": "alpha", "beta-token-01234567890": "beta"}
ALPHA = {"Authorization": "Bearer alpha-token-0123456789"}
BETA = {"Authorization": "Bearer beta-token-01234567890"}
CONCURRENCY = 40


@pytest.fixture(scope="module")
def queue_url(redis_server):
    redis.Redis(port=redis_server.port, db=QUEUE_DB).flushdb()
    return redis_server.url_for(QUEUE_DB)


@pytest.fixture(scope="module")
def cluster_stack(redis_cluster, queue_url, tmp_path_factory):
    env = {
        **STACK_ENV,
        "GATEWAY_REDIS_CLUSTER": "true",
        "GATEWAY_QUEUE_REDIS_URL": queue_url,
        "GATEWAY_API_TOKENS": json.dumps(TOKENS),
        "GATEWAY_WEB_WORKERS": "2",
    }
    stack = GatewayStack(redis_cluster.url, tmp_path_factory.mktemp("cluster-stack"), env)
    stack.start(2, registered=2)
    yield stack
    stack.stop()


def on_each_primary(redis_cluster, prefix: str, tenant: str = "alpha") -> list[str]:
    """One task id per primary: its document (scoped to ``tenant``) is in that primary's slots."""
    unique = f"{prefix}-{uuid.uuid4().hex[:6]}"
    return [
        task_ids_on(
            redis_cluster, primary, f"{unique}-{index}", lambda t: keys.task_document(f"{tenant}/{t}" if tenant else t)
        )[0]
        for index, primary in enumerate(redis_cluster.primary_ports())
    ]


def post(stack, body: dict, headers=ALPHA, wait: float | None = None) -> requests.Response:
    params = {"wait": wait} if wait is not None else None
    return requests.post(stack.base + "/v1/tasks", json=body, headers=headers, params=params, timeout=30)


def status(stack, task_id: str, headers=ALPHA, wait: float | None = None) -> requests.Response:
    params = {"wait": wait} if wait is not None else None
    return requests.get(f"{stack.base}/v1/tasks/{task_id}/status", headers=headers, params=params, timeout=30)


def stage_status(stack, task_id: str, task_name: str, headers=ALPHA) -> str | None:
    stage = status(stack, task_id, headers).json().get("stages", {}).get(task_name)
    return stage and stage["status"]


def test_task_ids_land_on_every_primary(redis_cluster):
    ids = on_each_primary(redis_cluster, "spread")
    owners = {redis_cluster.primary_of_key(keys.task_document(f"alpha/{t}")) for t in ids}
    assert owners == set(redis_cluster.primary_ports()) and len(owners) == 3


def test_origin_scenario_on_each_primary(cluster_stack, redis_cluster):
    """Stage x, hit x, stage y, hit x: on every primary, with ?wait= woken by the end."""
    for task_id in on_each_primary(redis_cluster, "origin"):
        x = {"task_name": "demo.echo", "task_id": task_id, "input_data": {"text": "x"}}
        y = {"task_name": "demo.sleep", "task_id": task_id, "input_data": {"seconds": 0.1}}
        first = post(cluster_stack, x, wait=20)
        assert first.status_code == 200, first.text  # ended while it waited
        assert first.json()["reuse_info"]["state"] == "miss"
        hit = post(cluster_stack, x)
        assert hit.status_code == 200 and hit.json()["reuse_info"]["reuse_hit"] is True
        assert post(cluster_stack, y).status_code == 202
        assert status(cluster_stack, task_id, wait=20).json()["stages"]["demo.sleep"]["status"] == "SUCCESS"
        again = post(cluster_stack, x)
        assert again.status_code == 200 and again.json()["result"]["output"] == first.json()["result"]["output"]
        stages = status(cluster_stack, task_id).json()["stages"]
        assert set(stages) == {"demo.echo", "demo.sleep"}
        assert stages["demo.echo"]["attempt"] == 1


def test_concurrent_identical_creates_run_once(cluster_stack, redis_cluster, run_log):
    for task_id in on_each_primary(redis_cluster, "same"):
        body = {"task_name": "testing.count", "task_id": task_id, "input_data": {"log": run_log.path, "seconds": 1}}
        with ThreadPoolExecutor(CONCURRENCY) as pool:
            responses = list(pool.map(lambda b: post(cluster_stack, b), [body] * CONCURRENCY))
        # 200: on a busy machine the run may have ended before the last requests came in.
        assert {r.status_code for r in responses} <= {200, 202}
        states = [r.json()["reuse_info"]["state"] for r in responses]
        assert states.count("miss") == 1
        wait_until(lambda t=task_id: stage_status(cluster_stack, t, "testing.count") == "SUCCESS", timeout=30)
    assert len(run_log.lines()) == 3  # one run per task, on each primary


def test_concurrent_task_names_keep_every_stage(cluster_stack, redis_cluster):
    for task_id in on_each_primary(redis_cluster, "names"):
        bodies = [
            {"task_name": f"testing.stage_{i:02d}", "task_id": task_id, "input_data": {"i": i}}
            for i in range(CONCURRENCY)
        ]
        with ThreadPoolExecutor(CONCURRENCY) as pool:
            responses = list(pool.map(lambda body: post(cluster_stack, body), bodies))
        assert [r.status_code for r in responses] == [202] * CONCURRENCY

        def all_done(t=task_id):
            stages = status(cluster_stack, t).json()["stages"]
            return len(stages) == CONCURRENCY and all(s["status"] == "SUCCESS" for s in stages.values())

        wait_until(all_done, timeout=30)
        stages = status(cluster_stack, task_id).json()["stages"]
        assert {name: s["output"] for name, s in stages.items()} == {
            f"testing.stage_{i:02d}": {"i": i} for i in range(CONCURRENCY)
        }


def test_callbacks_on_pending_and_completed_hits(cluster_stack, redis_cluster, receiver, run_log):
    for task_id in on_each_primary(redis_cluster, "calls"):
        body = {"task_name": "testing.count", "task_id": task_id, "input_data": {"log": run_log.path, "seconds": 0.5}}
        assert post(cluster_stack, {**body, "callback": receiver.url(f"/{task_id}/miss")}).status_code == 202
        pending = post(cluster_stack, {**body, "callback": receiver.url(f"/{task_id}/pending")})
        assert pending.status_code == 202 and pending.json()["reuse_info"]["reuse_hit"] is True
        wait_until(lambda t=task_id: stage_status(cluster_stack, t, "testing.count") == "SUCCESS", timeout=30)
        completed = post(cluster_stack, {**body, "callback": receiver.url(f"/{task_id}/completed")})
        assert completed.status_code == 200 and completed.json()["reuse_info"]["state"] == "completed"
    delivered = receiver.wait_for(9, timeout=30)
    assert sorted(r["path"].rsplit("/", 1)[1] for r in delivered) == sorted(["completed", "miss", "pending"] * 3)
    assert len(run_log.lines()) == 3  # the pending and completed hits ran nothing


def test_tenants_keep_their_own_documents(cluster_stack, redis_cluster):
    task_id = f"shared-{uuid.uuid4().hex[:8]}"
    body = {"task_name": "demo.echo", "task_id": task_id}
    alpha = post(cluster_stack, {**body, "input_data": {"who": "alpha"}}, ALPHA, wait=20)
    beta = post(cluster_stack, {**body, "input_data": {"who": "beta"}}, BETA, wait=20)
    assert alpha.json()["reuse_info"]["state"] == beta.json()["reuse_info"]["state"] == "miss"
    assert status(cluster_stack, task_id, ALPHA).json()["stages"]["demo.echo"]["output"] == {"who": "alpha"}
    assert status(cluster_stack, task_id, BETA).json()["stages"]["demo.echo"]["output"] == {"who": "beta"}
    other = f"alpha-only-{uuid.uuid4().hex[:8]}"
    assert post(cluster_stack, {**body, "task_id": other, "input_data": {}}, ALPHA).status_code == 202
    assert status(cluster_stack, other, BETA).status_code == 404


# -- in-process: the app's own view of the cluster ----------------------------------------


@pytest.fixture
def cluster_app(redis_cluster, redis_server, queue_url):
    return create_app(
        {**base_config(redis_server, QUEUE_DB), "REDIS_URL": redis_cluster.url, "REDIS_CLUSTER": True,
         "QUEUE_REDIS_URL": queue_url}
    )  # fmt: skip


def test_the_store_is_a_cluster_client_and_scripts_keep_to_one_slot(cluster_app):
    from gateway.store import get_store
    from gateway.watches import get_watches

    assert isinstance(get_store(cluster_app).client, RedisCluster)
    # The run watch list lives in the queue Redis and is written by Python: no script
    # gets a key beside its task document (RedisCluster refuses keys of two slots).
    assert get_watches(cluster_app).scripts_write_runs is False


def test_scripts_load_and_check_every_node(cluster_app, redis_cluster):
    runner = cluster_app.test_cli_runner()
    loaded = runner.invoke(args=["scripts", "load"])
    assert loaded.exit_code == 0, loaded.output
    nodes = {line.split()[0] for line in loaded.output.splitlines() if line.startswith("127.0.0.1:")}
    assert nodes == {f"127.0.0.1:{port}" for port in redis_cluster.ports}  # replicas too
    checked = runner.invoke(args=["scripts", "check"])
    assert checked.exit_code == 0 and "MISSING" not in checked.output

    with redis_cluster.client(redis_cluster.primary_ports()[0]) as node:
        node.script_flush()
    checked = runner.invoke(args=["scripts", "check"])
    assert checked.exit_code != 0 and "MISSING" in checked.output
    assert runner.invoke(args=["scripts", "load"]).exit_code == 0


def test_noscript_after_a_flush_reloads_and_answers(cluster_app, redis_cluster):
    """A primary that lost its scripts (a failover to a replica that never loaded them, a
    new node after resharding): the first call loads the script and tries once more."""
    client = cluster_app.test_client()
    task_ids = on_each_primary(redis_cluster, "noscript", tenant="")
    for port in redis_cluster.primary_ports():
        with redis_cluster.client(port) as node:
            node.script_flush()
    for task_id in task_ids:
        response = client.post("/v1/tasks", json={"task_name": "demo.echo", "task_id": task_id, "input_data": {}})
        assert response.status_code == 202, response.json


def test_cluster_needs_a_queue_redis(redis_cluster):
    with pytest.raises(ConfigError, match="GATEWAY_QUEUE_REDIS_URL is required"):
        create_app({"REDIS_URL": redis_cluster.url, "REDIS_CLUSTER": True})
    with pytest.raises(ConfigError, match="only database 0"):
        create_app({"REDIS_URL": redis_cluster.url.replace("/0", "/3"), "REDIS_CLUSTER": True,
                    "QUEUE_REDIS_URL": "redis://127.0.0.1:1/0"})  # fmt: skip
    # The queue Redis may come from the node map's "*" instead; never the cluster itself.
    create_app({"REDIS_URL": redis_cluster.url, "REDIS_CLUSTER": True,
                "QUEUE_REDIS_URLS": '{"*": "redis://127.0.0.1:1/0"}'})  # fmt: skip
    itself = f'{{"demo": "{redis_cluster.url}", "*": "redis://127.0.0.1:1/0"}}'
    with pytest.raises(ConfigError, match="cannot be the Redis Cluster"):
        create_app({"REDIS_URL": redis_cluster.url, "REDIS_CLUSTER": True, "QUEUE_REDIS_URLS": itself})


def test_store_copy_moves_a_single_redis_deployment_to_the_cluster(cluster_app, redis_server):
    """The data step of the migration (docs/SCALING.md): the documents of a single Redis,
    copied with ``flask --app wsgi store copy --from``, are served by the cluster app as
    they were (a completed stage is a hit, the status document is the same, TTL kept)."""
    from gateway.worker import build_worker

    source_db = 9
    redis.Redis(port=redis_server.port, db=source_db).flushdb()
    single = create_app(base_config(redis_server, source_db))
    prefix = f"copied-{uuid.uuid4().hex[:6]}"
    bodies = [{"task_name": "demo.echo", "task_id": f"{prefix}-{n}", "input_data": {"n": n}} for n in range(30)]
    for body in bodies:
        assert single.test_client().post("/v1/tasks", json=body).status_code == 202
    with single.app_context():
        build_worker().work(burst=True, logging_level="WARNING")
    before = single.test_client().get(f"/v1/tasks/{prefix}-7/status").json

    copied = cluster_app.test_cli_runner().invoke(args=["store", "copy", "--from", redis_server.url_for(source_db)])
    assert copied.exit_code == 0, copied.output
    assert "copied 30 task documents" in copied.output

    client = cluster_app.test_client()
    assert client.get(f"/v1/tasks/{prefix}-7/status").json == before
    for body in bodies:
        hit = client.post("/v1/tasks", json=body)
        assert hit.status_code == 200 and hit.json["reuse_info"]["state"] == "completed", hit.json
    from gateway.store import get_redis

    assert 0 < get_redis(cluster_app).pttl(keys.task_document(f"{prefix}-7")) <= 86400 * 1000


def test_a_resharded_slot_is_followed(cluster_app, redis_cluster):
    """The slot of a task moves to another primary while the app holds the old slot map:
    during the move a request is redirected with ASK, after it with MOVED; both are
    followed and the document is the same one. (Last in this module: it moves a slot.)"""
    from redis.crc import key_slot

    client = cluster_app.test_client()
    task_id = on_each_primary(redis_cluster, "moved", tenant="")[0]
    body = {"task_name": "demo.echo", "task_id": task_id, "input_data": {"v": 1}}
    assert client.post("/v1/tasks", json=body).status_code == 202

    key = keys.task_document(task_id)
    slot = key_slot(key.encode())
    source = redis_cluster.primary_of_slot(slot)
    target = next(port for port in redis_cluster.primary_ports() if port != source)
    ids = {port: redis_cluster.client(port).execute_command("CLUSTER MYID").decode() for port in (source, target)}
    with redis_cluster.client(source) as src, redis_cluster.client(target) as dst:
        dst.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", ids[source])
        src.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", ids[target])
        src.execute_command("MIGRATE", "127.0.0.1", target, "", 0, 5000, "KEYS", key)
        # Migrating: the source answers ASK for the key it no longer has.
        pending = client.post("/v1/tasks", json=body)
        assert pending.json["reuse_info"]["reuse_hit"] is True, pending.json  # the same document
        for port in redis_cluster.primary_ports():
            with redis_cluster.client(port) as node:
                node.execute_command("CLUSTER SETSLOT", slot, "NODE", ids[target])
    # Moved: the source answers MOVED; the app's map still names it.
    again = client.post("/v1/tasks", json=body)
    assert again.json["reuse_info"]["reuse_hit"] is True, again.json
    assert redis_cluster.primary_of_slot(slot) == target
    assert client.get(f"/v1/tasks/{task_id}/status").json["stages"]["demo.echo"]["attempt"] == 1
