"""The console's recent events (gateway/recent.py): failed stages, failed delivery tries
and per-minute activity, written by the workers, read per tenant; a reuse hit writes none."""

from __future__ import annotations

import threading
import time

import pytest
import redis
import requests

from gateway import keys
from gateway.connections import get_connections
from gateway.recent import FLUSH_SECONDS, KEPT, Recent, get_recent, redacted_url
from gateway.store import get_store
from gateway.sweeper import sweep_once
from tests.conftest import Stack, wait_until
from tests.test_sweeper import LOST_FAST, start_and_die
from tests.test_tenancy import TOKEN_A, TOKEN_B, create

RECENT_DB = 14  # apart from the other stacks' databases: their workers must not take our jobs
# The in-process tests' queue Redis: counts that another test's app still holds are written
# up to a second after it ended (``recent.FLUSH_SECONDS``), to its own queue database.
QUEUE_DB = 15
TOKENS = {TOKEN_A: "alpha", TOKEN_B: "beta"}


def total(activity: dict, counter: str) -> int:
    return sum(activity[counter])


def counts(activity: dict) -> dict[str, int]:
    """Each counter's total over the hour."""
    return {name: total(activity, name) for name in activity if name != "minutes"}


@pytest.fixture
def own_queue(redis_server):
    """Config for an app whose queue Redis (jobs, recent events) is a database of its own."""
    redis.Redis(port=redis_server.port, db=QUEUE_DB).flushdb()
    return {"QUEUE_REDIS_URL": redis_server.url_for(QUEUE_DB)}


@pytest.fixture
def tenant_app(make_app, own_queue):
    return make_app(API_TOKENS=TOKENS, **own_queue)


def recorded(app):
    """The app's Recent, its counts written."""
    with app.app_context():
        recent = get_recent()
    recent.flush()
    return recent


def test_failed_stages_are_listed_newest_first_per_tenant(tenant_app, work):
    # An earlier test's app whose queue Redis was the store writes its last activity counts
    # there up to FLUSH_SECONDS after it ended (seen when test_console ran just before):
    # let them come, then start from a store without them.
    time.sleep(FLUSH_SECONDS + 0.2)
    with tenant_app.app_context():
        store = get_connections().store
        for key in store.scan_iter("gw:activity:*"):
            store.delete(key)
    client = tenant_app.test_client()
    create(client, TOKEN_A, "a-1", "demo.fail", {"message": "first"})
    work(tenant_app)
    create(client, TOKEN_B, "b-1", "demo.fail", {"message": "second"})
    create(client, TOKEN_A, "a-ok", "demo.echo")
    work(tenant_app)
    recent = recorded(tenant_app)
    every = recent.failed_stages(None)
    alpha = recent.failed_stages("alpha")
    beta = recent.failed_stages("beta")
    assert [(e["task_id"], e["tenant"]) for e in every] == [("b-1", "beta"), ("a-1", "alpha")]
    assert every[1]["task_name"] == "demo.fail"
    assert every[1]["error"] == "RuntimeError: first"
    assert every[1]["ended_at"].endswith("Z")
    assert [e["task_id"] for e in alpha] == ["a-1"]
    assert [e["task_id"] for e in beta] == ["b-1"]
    assert recent.failed_stages("gamma") == []
    assert len(recent.failed_stages(None, limit=1)) == 1
    # All in the queue Redis, none in the store's (which may be a cluster: no global keys there).
    with tenant_app.app_context():
        store_keys = set(get_connections().store.scan_iter("gw:*"))
    assert store_keys and not {key for key in store_keys if key.startswith(("gw:recent", "gw:activity"))}


def test_each_failed_delivery_try_is_listed_with_a_redacted_url(tenant_app, work, receiver):
    receiver.responses = [500] * 4  # the first try and the three retries (CALLBACK_RETRY_INTERVALS)
    client = tenant_app.test_client()
    url = receiver.url("/hook") + "?token=secret-in-query"
    create(client, TOKEN_B, "b-cb", "demo.echo", callback=url)
    work(tenant_app)
    receiver.wait_for(4)
    work(tenant_app)  # nothing left: the retries ran in the burst
    recent = recorded(tenant_app)
    beta = recent.failed_deliveries("beta")
    alpha = recent.failed_deliveries("alpha")
    every = recent.failed_deliveries(None)
    activity = recent.activity("beta")
    assert alpha == []
    assert every == beta
    assert [e["attempt"] for e in beta] == [4, 3, 2, 1]  # newest first
    assert [e["final"] for e in beta] == [True, False, False, False]
    newest = beta[0]
    assert newest["url"] == receiver.url("/hook")
    assert "secret" not in str(beta)
    assert (newest["task_id"], newest["task_name"], newest["tenant"]) == ("b-cb", "demo.echo", "beta")
    assert newest["error"] == "HTTP 500"
    assert newest["at"].endswith("Z")
    status = client.get("/v1/tasks/b-cb/status", headers={"Authorization": f"Bearer {TOKEN_B}"}).json
    assert newest["delivery_id"] == status["stages"]["demo.echo"]["callbacks"][0]["delivery_id"]
    assert (total(activity, "deliveries_failed"), total(activity, "deliveries_sent")) == (4, 0)


def test_redacted_url_drops_credentials_query_and_fragment():
    assert redacted_url("https://user:pw@example.com:8443/a/b?token=x#frag") == "https://example.com:8443/a/b"
    assert redacted_url("http://[::1]:80/hook") == "http://[::1]:80/hook"
    assert redacted_url("http://[") == ""


def test_activity_counts_what_ran(tenant_app, work, receiver):
    receiver.plan("/beta", [503])  # alpha's callback is sent; beta's first try fails, its retry is sent
    client = tenant_app.test_client()
    for number in range(3):
        create(client, TOKEN_A, f"ok-{number}", "demo.echo")
    create(client, TOKEN_A, "cb", "demo.echo", callback=receiver.url("/alpha"))
    create(client, TOKEN_B, "bad", "demo.fail", callback=receiver.url("/beta"))
    work(tenant_app)
    receiver.wait_for(3)
    recent = recorded(tenant_app)
    every, alpha, beta = (recent.activity(tenant) for tenant in (None, "alpha", "beta"))
    assert counts(every) == {"runs_started": 5, "runs_completed": 4, "runs_failed": 1, "deliveries_sent": 2,
                             "deliveries_failed": 1}  # fmt: skip
    assert (total(alpha, "runs_started"), total(alpha, "runs_completed"), total(alpha, "runs_failed")) == (4, 4, 0)
    assert (total(beta, "runs_started"), total(beta, "runs_failed")) == (1, 1)
    assert (total(alpha, "deliveries_sent"), total(beta, "deliveries_sent"), total(beta, "deliveries_failed")) == (
        1, 1, 1,
    )  # fmt: skip
    # 60 minutes, oldest first, each a minute's start; the current minute is the last.
    minutes = every["minutes"]
    assert len(minutes) == 60 and all(len(every[name]) == 60 for name in counts(every))
    assert all(later - earlier == 60 for earlier, later in zip(minutes, minutes[1:], strict=False))
    assert minutes[-1] <= time.time() < minutes[-1] + 60


def test_activity_of_minutes_out_of_the_window_is_not_counted(tenant_app):
    recent = recorded(tenant_app)
    now = time.time()
    recent.record_run_started("t-1")
    recent.flush()
    assert total(recent.activity(now=now), "runs_started") == 1
    assert total(recent.activity(now=now + 3600), "runs_started") == 0
    assert 0 < recent.connection.ttl(keys.activity_minute(int(now // 60))) <= 2 * 3600


def test_counts_are_written_within_a_second_without_a_flush(tenant_app):
    """A worker's counts wait in the process (one round trip a second, not one per run);
    the lease keeper's thread writes them. Another process reads them."""
    recent = recorded(tenant_app)
    for _ in range(3):
        recent.record_run_started("alpha/t-1")
    reader = Recent(recent.connection)
    wait_until(lambda: total(reader.activity("alpha"), "runs_started") == 3, 5, what="the counts written")


def test_activity_includes_the_counts_of_its_own_process(tenant_app, work):
    create(tenant_app.test_client(), TOKEN_A, "a-1", "demo.echo")
    work(tenant_app)
    with tenant_app.app_context():
        assert counts(get_recent().activity("alpha"))["runs_completed"] == 1


def test_recent_lists_stay_bounded(tenant_app):
    recent = recorded(tenant_app)
    for number in range(KEPT + 25):
        recent.record_run_ended(f"alpha/t-{number}", "demo.fail", f"failure {number}")
    recent.flush()
    connection = recent.connection
    assert connection.llen(keys.recent_failed_stages()) == KEPT
    assert connection.llen(keys.recent_failed_stages("alpha")) == KEPT
    newest = recent.failed_stages("alpha", limit=KEPT + 100)
    assert len(newest) == KEPT
    assert newest[0]["task_id"] == f"t-{KEPT + 24}"
    assert newest[-1]["task_id"] == "t-25"


def test_a_run_the_sweeper_fails_is_listed(make_app, own_queue, work, task_id, run_log):
    app = make_app(**{**LOST_FAST, "MAX_ATTEMPTS": 1}, **own_queue)
    client = app.test_client()
    body = {"task_name": "testing.count", "task_id": task_id, "input_data": {"log": run_log.path}}
    assert client.post("/v1/tasks", json=body).status_code == 202
    start_and_die(app, task_id, "testing.count")
    time.sleep(0.3)
    with app.app_context():
        assert sweep_once().runs_failed == 1
    recent = recorded(app)
    [entry] = recent.failed_stages(None)
    activity = recent.activity()
    assert (entry["task_id"], entry["tenant"]) == (task_id, None)
    assert entry["error"].startswith("run lost")
    assert total(activity, "runs_failed") == 1


def test_recording_never_fails_a_run(make_app, work, task_id):
    """The queue Redis of the recent events is down (here: a port nobody listens on, the
    rest on the real Redis): the run still ends SUCCESS."""
    from gateway.embedded import free_port

    app = make_app()
    dead = redis.Redis(port=free_port(), socket_connect_timeout=0.5, socket_timeout=0.5)
    app.extensions["gateway.recent"] = Recent(dead)
    client = app.test_client()
    client.post("/v1/tasks", json={"task_name": "demo.echo", "task_id": task_id, "input_data": {}})
    work(app)
    with app.app_context():
        assert get_store().read_stage(task_id, "demo.echo")["status"] == "SUCCESS"
    app.extensions["gateway.recent"].flush()  # now, not from the keeper's thread during a later test


# --- real gunicorn and worker processes ----------------------------------------------


@pytest.fixture(scope="module")
def tenant_stack(redis_server, tmp_path_factory):
    redis.Redis(port=redis_server.port, db=RECENT_DB).flushdb()
    env = {"GATEWAY_API_TOKENS": f'{{"{TOKEN_A}": "alpha", "{TOKEN_B}": "beta"}}',
           "GATEWAY_CALLBACK_RETRY_INTERVALS": "[0]"}  # fmt: skip
    running = Stack(redis_server, tmp_path_factory.mktemp("recent"), workers=1, db=RECENT_DB, env=env)
    yield running
    running.stop()


def post(stack, token, body):
    return requests.post(stack.base + "/v1/tasks", json=body, headers={"Authorization": f"Bearer {token}"}, timeout=10)


def read_recent(stack):
    """A Recent on the stack's queue Redis, as the console's web process reads it."""
    return Recent(stack.redis())


def test_worker_processes_record_failures_per_tenant(tenant_stack, receiver):
    receiver.responses = [500, 500]
    body = {"task_name": "demo.fail", "task_id": "broken", "input_data": {"message": "boom"},
            "callback": receiver.url()}  # fmt: skip
    assert post(tenant_stack, TOKEN_A, body).status_code == 202
    receiver.wait_for(2, timeout=20)
    recent = read_recent(tenant_stack)
    wait_until(lambda: len(recent.failed_deliveries("alpha")) == 2, 10, what="both failed tries recorded")
    [stage] = recent.failed_stages("alpha")
    assert (stage["task_id"], stage["tenant"], stage["error"]) == ("broken", "alpha", "RuntimeError: boom")
    assert recent.failed_stages("beta") == []
    assert recent.failed_deliveries("beta") == []
    assert {e["url"] for e in recent.failed_deliveries(None)} == {receiver.url()}
    # The counts, which the worker processes write within a second (and nothing pending after).
    expected = {"runs_started": 1, "runs_completed": 0, "runs_failed": 1, "deliveries_sent": 0, "deliveries_failed": 2}
    wait_until(lambda: counts(recent.activity("alpha")) == expected, 10, what="the workers' counts")


def test_a_reuse_hit_writes_no_recent_event(tenant_stack):
    """MONITOR sees every command the server runs: during a reuse hit (of a completed
    stage, answered by gunicorn), none touches the recent lists or activity counters."""
    body = {"task_name": "demo.echo", "task_id": "reused", "input_data": {"n": 1}}
    assert post(tenant_stack, TOKEN_B, body).status_code == 202
    # Its counts written (a second at most), no worker has any left to write.
    wait_until(lambda: total(read_recent(tenant_stack).activity("beta"), "runs_completed") == 1, 10)
    end = f"end-of-hit-{time.monotonic_ns()}"
    seen: list[str] = []
    client = tenant_stack.redis()
    ready = threading.Event()

    def watch():
        with client.monitor() as monitor:
            ready.set()
            for command in monitor.listen():
                seen.append(command["command"])
                if end in command["command"]:
                    return

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    ready.wait(5)
    time.sleep(0.2)  # MONITOR is in effect once the server answered it
    hit = post(tenant_stack, TOKEN_B, body)
    tenant_stack.redis().echo(end)
    watcher.join(10)
    assert hit.status_code == 200 and hit.json()["reuse_info"]["reuse_hit"] is True, hit.text
    assert any("reused" in command for command in seen), "MONITOR saw the hit's claim"
    touched = [command for command in seen if "gw:recent" in command or "gw:activity" in command]
    assert touched == []
