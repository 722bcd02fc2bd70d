"""Reading, cancel/delete/retry, handler failures, and the operator's commands."""

from __future__ import annotations

import pytest
import redis

from gateway import create_app, scripts
from tests.conftest import Stack, base_config
from tests.test_reuse import create, stage

#: The Redis user of docs/OPERATIONS.md and docs/SECURITY.md ("Least-privilege Redis").
LEAST_PRIVILEGE_RULES = [
    "+@all", "-@admin", "-@dangerous", "-@scripting",
    "+evalsha", "+script|exists",  # the Lua scripts, by SHA only
    "+info", "+client|setname", "+client|info",  # RQ: server version, worker name and address
]  # fmt: skip


def create_least_privilege_user(admin: redis.Redis, name: str, password: str) -> None:
    rules = list(LEAST_PRIVILEGE_RULES)
    if int(admin.info("server")["redis_version"].split(".")[0]) >= 7:
        rules.append("+evalsha_ro")  # EVALSHA_RO exists from Redis 7 on
    admin.execute_command("ACL", "SETUSER", name, "reset", "on", f">{password}", "~*", "&*", *rules)


def test_supported_tasks_are_grouped_by_node(client):
    body = client.get("/v1/tasks/supported-tasks").json
    assert body["nodes"]["demo"] == ["demo.echo", "demo.fail", "demo.sleep"]
    assert "testing.count" in body["nodes"]["testing"]
    assert "demo.echo" in body["tasks"]


def test_health_reports_ok(client):
    body = client.get("/v1/tasks/health").json
    assert body["status"] == "ok"
    assert body["redis"] == "ok"


def test_result_of_one_stage_is_the_single_stage_view(client, work, task_id):
    create(client, task_id, "demo.echo", {"q": 1})
    work()
    view = client.get(f"/v1/tasks/{task_id}/result?task_name=demo.echo").json
    assert view == {
        "task_name": "demo.echo", "status": "SUCCESS", "input_params": {"q": 1}, "output": {"q": 1},
        "error": None, "duration": view["duration"],
    }  # fmt: skip
    assert client.get(f"/v1/tasks/{task_id}/result").json == client.get(f"/v1/tasks/{task_id}/status").json


def test_document_describes_the_latest_request(client, work, task_id, receiver):
    create(client, task_id, "demo.echo", {"first": True})
    work()
    create(client, task_id, "demo.fail", {"second": True}, callback=receiver.url())
    document = client.get(f"/v1/tasks/{task_id}/status").json
    assert document["workflow_id"] == task_id
    assert document["status"] == "pending"
    assert document["input_params"] == {
        "task_name": "demo.fail", "input_data": {"second": True}, "callback_url": receiver.url(),
    }  # fmt: skip
    assert document["callback_status"] == "queued"
    work()
    receiver.wait_for(1)
    document = client.get(f"/v1/tasks/{task_id}/status").json
    assert document["status"] == "failed"
    assert document["callback_status"] == "sent"
    assert document["created_at"] <= document["updated_at"]


def test_task_id_is_generated_when_absent(client):
    response = client.post("/v1/tasks", json={"task_name": "demo.echo", "input_data": {}})
    task_id = response.json["task_id"]
    assert task_id.startswith("task-") and len(task_id) == 41
    assert client.get(f"/v1/tasks/{task_id}/status").status_code == 200


def test_document_expires_after_ttl_and_late_writes_do_not_revive_it(make_app, task_id, receiver):
    import time

    from gateway.worker import build_worker

    app = make_app(TASK_TTL_SECONDS=1)
    client = app.test_client()
    create(client, task_id, "demo.echo", callback=receiver.url())
    time.sleep(1.5)
    assert client.get(f"/v1/tasks/{task_id}/status").status_code == 404
    with app.app_context():  # the run and its delivery come too late
        build_worker().work(burst=True, logging_level="WARNING")
    assert client.get(f"/v1/tasks/{task_id}/status").status_code == 404
    assert receiver.requests == []


def test_cancel_ends_live_stages_failed_and_tells_subscribers(client, work, task_id, receiver, run_log):
    create(client, task_id, "demo.echo")
    work()
    create(client, task_id, "testing.count", {"log": run_log.path}, callback=receiver.url())
    response = client.delete(f"/v1/tasks/{task_id}")
    assert response.status_code == 200
    assert (response.json["task_id"], response.json["cancelled"]) == (task_id, ["testing.count"])
    assert response.json["was_running"] == []
    cancelled = stage(client, task_id, "testing.count")
    assert cancelled["status"] == "FAILED"
    assert cancelled["error"] == "cancelled"
    work()  # the queued run finds its claim void and does nothing
    assert run_log.lines() == []
    [delivered] = receiver.wait_for(1)
    assert delivered["json"]["status"] == "failed"
    assert stage(client, task_id, "demo.echo")["status"] == "SUCCESS"


def test_delete_refuses_live_stages_unless_forced(client, work, task_id):
    create(client, task_id, "demo.echo")
    response = client.post(f"/v1/tasks/{task_id}/delete", json={"force": False})
    assert response.status_code == 409
    assert response.json["error"]["code"] == "task_busy"
    assert response.json["error"]["details"]["stages"] == ["demo.echo"]
    assert client.post(f"/v1/tasks/{task_id}/delete", json={"force": True}).json == {
        "task_id": task_id, "deleted": True,
    }  # fmt: skip
    assert client.get(f"/v1/tasks/{task_id}/status").status_code == 404
    work()  # the orphaned run must not recreate the document
    assert client.get(f"/v1/tasks/{task_id}/status").status_code == 404


def test_delete_without_body_deletes_finished_task(client, work, task_id):
    create(client, task_id, "demo.echo")
    work()
    assert client.post(f"/v1/tasks/{task_id}/delete").status_code == 200
    assert client.get(f"/v1/tasks/{task_id}/status").status_code == 404


def test_retry_reruns_failed_stages_in_place(client, work, task_id):
    create(client, task_id, "demo.echo")
    create(client, task_id, "demo.fail", {"message": "x"})
    work()
    response = client.post(f"/v1/tasks/{task_id}/retry")
    assert response.json == {"task_id": task_id, "retried": ["demo.fail"], "callback_status": None}
    assert stage(client, task_id, "demo.fail")["status"] == "PENDING"
    assert stage(client, task_id, "demo.fail")["attempt"] == 2
    work()
    assert stage(client, task_id, "demo.fail")["status"] == "FAILED"
    assert stage(client, task_id, "demo.echo")["attempt"] == 1


def test_handler_results_that_are_not_json_objects_fail_the_stage(make_app, work, task_id):
    app = make_app(MAX_OUTPUT_BYTES=1000)
    client = app.test_client()
    create(client, task_id, "testing.not_a_dict")
    create(client, task_id, "testing.not_json")
    create(client, task_id, "testing.huge", {"size": 2000})
    work(app)
    document = client.get(f"/v1/tasks/{task_id}/status").json["stages"]
    assert document["testing.not_a_dict"]["status"] == "FAILED"
    assert "expected a JSON object" in document["testing.not_a_dict"]["error"]
    assert "not JSON" in document["testing.not_json"]["error"]
    assert "more than the limit of 1000" in document["testing.huge"]["error"]


def test_running_stage_lease_is_renewed_by_the_heartbeat(make_app, task_id, run_log):
    """A run longer than its lease stays alive: a new request is a running hit."""
    import threading
    import time

    from gateway.worker import build_worker

    app = make_app(RUN_LEASE_SECONDS=0.3)
    client = app.test_client()
    create(client, task_id, "testing.count", {"log": run_log.path, "seconds": 1.2})

    responses = []

    def ask_later():
        time.sleep(0.9)  # three leases long, while the handler runs
        responses.append(create(client, task_id, "testing.count", {"log": run_log.path, "seconds": 1.2}))

    asker = threading.Thread(target=ask_later)
    asker.start()
    with app.app_context():  # RQ's worker needs the main thread for its signal handlers
        build_worker().work(burst=True, logging_level="WARNING")
    asker.join()
    assert responses[0].json["reuse_info"]["state"] == "running"
    assert len(run_log.lines()) == 1


def test_scripts_cli_load_and_check(redis_server):
    app = create_app(base_config(redis_server, 0))
    runner = app.test_cli_runner()
    redis.Redis(port=redis_server.port).script_flush()
    missing = runner.invoke(args=["scripts", "check"])
    assert missing.exit_code != 0
    assert "flask --app wsgi scripts load" in missing.output
    loaded = runner.invoke(args=["scripts", "load"])
    assert loaded.exit_code == 0
    for name in scripts.read_sources():
        assert name in loaded.output
    checked = runner.invoke(args=["scripts", "check"])
    assert checked.exit_code == 0, checked.output
    assert "MISSING" not in checked.output


def test_evalsha_only_users_work_once_an_operator_loaded_the_scripts(redis_server, task_id, receiver):
    """The app and the worker both on a Redis user that may run scripts only by SHA."""
    from gateway.worker import build_worker

    admin = redis.Redis(port=redis_server.port)
    create_least_privilege_user(admin, "gateway", "secret-pass")
    restricted_url = f"redis://gateway:secret-pass@127.0.0.1:{redis_server.port}/0"
    app = create_app({**base_config(redis_server, 0), "REDIS_URL": restricted_url, "QUEUE_REDIS_URL": restricted_url})
    client = app.test_client()
    body = {"task_name": "demo.echo", "task_id": task_id, "input_data": {"n": 1}, "callback": receiver.url()}
    try:
        admin.script_flush()
        response = client.post("/v1/tasks", json=body)
        assert response.status_code == 503
        assert response.json["error"]["code"] == "scripts_not_loaded"
        assert "flask --app wsgi scripts load" in response.json["error"]["message"]
        # The restricted user can neither load them nor fall back to EVAL.
        restricted = redis.Redis.from_url(restricted_url)
        for command in (("EVAL", "return 1", 0), ("SCRIPT", "LOAD", "return 1")):
            with pytest.raises(redis.exceptions.NoPermissionError):
                restricted.execute_command(*command)

        operator = create_app(base_config(redis_server, 0))  # the operator's own, privileged user
        assert operator.test_cli_runner().invoke(args=["scripts", "load"]).exit_code == 0
        assert app.test_cli_runner().invoke(args=["scripts", "check"]).exit_code == 0

        assert client.post("/v1/tasks", json=body).status_code == 202
        assert client.post("/v1/tasks", json=body).json["reuse_info"]["state"] == "pending"
        with app.app_context():
            build_worker().work(burst=True, with_scheduler=True, logging_level="WARNING")
        [delivered] = receiver.wait_for(1)  # one URL waiting on one run: one delivery
        assert delivered["json"]["result"]["output"] == {"n": 1}
        assert client.post("/v1/tasks", json=body).status_code == 200
    finally:
        admin.acl_deluser("gateway")


def test_the_least_privilege_user_runs_the_stack_and_is_refused_admin_commands(redis_server, tmp_path, receiver):
    """gunicorn and a real ``flask worker`` (run and delivery workers, RQ's scheduler
    carrying a retry, the sweeper) on the documented user, which cannot change ACLs or
    configuration, nor run Lua of its own."""
    db = 8
    admin = redis.Redis(port=redis_server.port, db=db)
    admin.flushdb()
    create_least_privilege_user(admin, "gateway-lp", "lp-pass")
    restricted_url = f"redis://gateway-lp:lp-pass@127.0.0.1:{redis_server.port}/{db}"
    restricted = redis.Redis.from_url(restricted_url)
    try:
        refused = [
            ("ACL", "SETUSER", "gateway-lp", "+@all"),
            ("CONFIG", "SET", "maxmemory", "1"),
            ("EVAL", "return 1", 0),
            ("FUNCTION", "LOAD", "#!lua name=x\nredis.register_function('x', function() return 1 end)"),
            ("SCRIPT", "LOAD", "return 1"),
            ("DEBUG", "SLEEP", "0"),  # (not SHUTDOWN or FLUSHALL: if allowed, they would hit other tests)
        ]
        for command in refused:
            # FUNCTION does not exist before Redis 7: unknown there, denied from 7 on.
            with pytest.raises(redis.exceptions.ResponseError, match="(?i)permission|unknown command"):
                restricted.execute_command(*command)
        assert admin.execute_command("ACL", "GETUSER", "gateway-lp") is not None  # unchanged, still there

        operator = create_app(base_config(redis_server, db))  # the operator's own user loads the scripts
        assert operator.test_cli_runner().invoke(args=["scripts", "load"]).exit_code == 0
        receiver.responses.append((503, {}))  # the first try fails: RQ's scheduler sends the retry
        stack = Stack(redis_server, tmp_path, workers=1, db=db, env={"GATEWAY_REDIS_URL": restricted_url})
        try:
            body = {"task_name": "testing.empty", "task_id": "lp", "input_data": {}, "callback": receiver.url()}
            assert stack.post(body).status_code == 202
            first, retry = receiver.wait_for(2, timeout=20)
            assert retry["json"]["task_id"] == "lp"
            record = stack.status("lp")["stages"]["testing.empty"]
            assert record["status"] == "SUCCESS"
        finally:
            stack.stop()
        logs = "".join(path.read_text() for path in tmp_path.glob("*.log"))
        assert "NOPERM" not in logs and "permission" not in logs.lower()
        assert "not supported" not in logs  # RQ's words for a denied CLIENT SETNAME
        assert "Traceback" not in logs
    finally:
        admin.acl_deluser("gateway-lp")
