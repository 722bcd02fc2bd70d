"""Configuration is checked whole at start: a bad ``GATEWAY_*`` value stops the gateway
with one line naming the variable; the demo tasks exist only with GATEWAY_DEMO_TASKS=true."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time

import pytest

from gateway import config, create_app, tasks
from gateway.exceptions import ConfigError
from gateway.tasks.builtin import MAX_SLEEP_SECONDS
from tests.conftest import ROOT, SECRET, base_config

TOKEN = "a-token-of-twenty-chars"

BAD_VALUES = [
    ("GATEWAY_TASK_TTL_SECONDS", "abc", "must be a whole number of seconds ≥ 1, got 'abc'"),
    ("GATEWAY_TASK_TTL_SECONDS", "-5", "≥ 1"),
    ("GATEWAY_TASK_TTL_SECONDS", "0", "≥ 1"),
    ("GATEWAY_TASK_TTL_SECONDS", "1.5", "whole number"),
    ("GATEWAY_MAX_INPUT_BYTES", "0", "≥ 1"),
    ("GATEWAY_CALLBACK_TIMEOUT_SECONDS", "0", "> 0"),
    ("GATEWAY_CALLBACK_TIMEOUT_SECONDS", "nan", "> 0"),
    ("GATEWAY_SWEEP_INTERVAL_SECONDS", "inf", "> 0"),
    ("GATEWAY_CALLBACK_ALLOW_PRIVATE_NETWORKS", "Flase", "must be true or false"),
    ("GATEWAY_CALLBACK_ALLOW_PRIVATE_NETWORKS", "2", "must be true or false"),
    ("GATEWAY_DEMO_TASKS", "enabled", "must be true or false"),
    ("GATEWAY_CALLBACK_RETRY_INTERVALS", "5,soon,120", "numbers of seconds ≥ 0"),
    ("GATEWAY_CALLBACK_RETRY_INTERVALS", "[5, -1]", "numbers of seconds ≥ 0"),
    ("GATEWAY_CALLBACK_RETRY_INTERVALS", "[5, 30", "not valid JSON"),
    ("GATEWAY_CALLBACK_SIGNING_SECRET", "whsec_AAA=", "this one is 2 bytes"),
    ("GATEWAY_CALLBACK_SIGNING_SECRET", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_"),
    ("GATEWAY_CALLBACK_SIGNING_SECRET", "whsec_not*base64*at*all*not*base64*at*all", "not base64"),
    ("GATEWAY_CALLBACK_SIGNING_SECRET", f'["{SECRET}", "whsec_AAA="]', "this one is 2 bytes"),
    ("GATEWAY_TENANT_SIGNING_SECRETS", '{"alpha": "whsec_AAA="}', "this one is 2 bytes"),
    ("GATEWAY_TENANT_SIGNING_SECRETS", '["whsec_x"]', "JSON object"),
    ("GATEWAY_API_TOKENS", f'{{" {TOKEN} ": "alpha"}}', "surrounding whitespace"),
    ("GATEWAY_API_TOKENS", f'{{"{TOKEN}\\n": "alpha"}}', "surrounding whitespace"),
    ("GATEWAY_API_TOKENS", "@/nonexistent/tokens.json", "cannot be read"),
    ("GATEWAY_REDIS_URL", "localhost:6379", "redis://"),
    ("GATEWAY_WORKER_START_TIMEOUT_SECONDS", "-1", "≥ 0"),
    ("GATEWAY_MAX_CALLBACK_BYTES_PER_STAGE", "4095", "≥ 4096"),
    ("GATEWAY_TASK_MODULES", "tests.plugin_tasks, not a module", "module names"),
]


@pytest.fixture(autouse=True)
def demo_tasks_back():
    """Apps built here without the demo tasks remove them from the process's registry."""
    yield
    tasks.load_modules([], demo_tasks=True)


@pytest.fixture
def clean_environ(monkeypatch):
    for name in list(os.environ):
        if name.startswith("GATEWAY_"):
            monkeypatch.delenv(name)
    return monkeypatch


def config_without(redis_server, *names: str) -> dict:
    """The tests' config without ``names``, so that the environment decides them."""
    return {k: v for k, v in base_config(redis_server, 0).items() if k not in names}


@pytest.mark.parametrize(("variable", "value", "message"), BAD_VALUES, ids=lambda v: str(v)[:40])
def test_a_bad_variable_stops_create_app_naming_it(redis_server, clean_environ, variable, value, message):
    clean_environ.setenv(variable, value)
    with pytest.raises(ConfigError) as raised:
        create_app(config_without(redis_server, variable.removeprefix("GATEWAY_")))
    line = str(raised.value)
    assert line.startswith(f"{variable}: ")
    assert message in line
    assert "\n" not in line


def test_a_secret_is_never_shown_in_the_error(redis_server, clean_environ):
    clean_environ.setenv("GATEWAY_API_TOKENS", f'{{" {TOKEN}": "alpha"}}')
    clean_environ.setenv("GATEWAY_CALLBACK_SIGNING_SECRET", "whsec_c2hvcnQ=")
    for name in ("API_TOKENS", "CALLBACK_SIGNING_SECRET"):
        with pytest.raises(ConfigError) as raised:
            create_app({**config_without(redis_server, name), **({"API_TOKENS": None} if name != "API_TOKENS" else {})})
        assert TOKEN not in str(raised.value) and "c2hvcnQ" not in str(raised.value)


@pytest.mark.parametrize(
    ("overrides", "variable"),
    [
        ({"TASK_TTL_SECONDS": -1}, "GATEWAY_TASK_TTL_SECONDS"),
        ({"CALLBACK_ALLOW_PRIVATE_NETWORKS": "False "}, None),
        ({"CALLBACK_ALLOW_PRIVATE_NETWORKS": "sure"}, "GATEWAY_CALLBACK_ALLOW_PRIVATE_NETWORKS"),
        ({"CALLBACK_SIGNING_SECRET": "whsec_AAA="}, "GATEWAY_CALLBACK_SIGNING_SECRET"),
        ({"API_TOKENS": {f"{TOKEN} ": "alpha"}}, "GATEWAY_API_TOKENS"),
        ({"MAX_ATTEMPTS": True}, "GATEWAY_MAX_ATTEMPTS"),
    ],
    ids=str,
)
def test_test_config_goes_through_the_same_checks(redis_server, clean_environ, overrides, variable):
    config = {**base_config(redis_server, 0), **overrides}
    if variable is None:
        assert create_app(config).config["CALLBACK_ALLOW_PRIVATE_NETWORKS"] is False
        return
    with pytest.raises(ConfigError, match=f"^{variable}: "):
        create_app(config)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        *[(word, True) for word in ("true", "True", "TRUE", "1", "yes", "Yes", "on", "ON")],
        *[(word, False) for word in ("false", "False", "FALSE", "0", "no", "NO", "off", "Off")],
        *[(word, ConfigError) for word in ("t", "f", "y", "n", "2", "-1", "truee", "enabled", "null", "[]")],
    ],
)
def test_booleans_accept_the_usual_words_and_nothing_else(redis_server, clean_environ, text, expected):
    clean_environ.setenv("GATEWAY_CALLBACK_ALLOW_PRIVATE_NETWORKS", text)
    config = config_without(redis_server, "CALLBACK_ALLOW_PRIVATE_NETWORKS")
    if expected is ConfigError:
        with pytest.raises(ConfigError, match="^GATEWAY_CALLBACK_ALLOW_PRIVATE_NETWORKS: must be true or false"):
            create_app(config)
    else:
        assert create_app(config).config["CALLBACK_ALLOW_PRIVATE_NETWORKS"] is expected


@pytest.mark.parametrize("text", ["5,30,120", "5, 30, 120", "[5, 30, 120]"])
def test_retry_intervals_are_a_list_in_either_spelling(redis_server, clean_environ, text):
    clean_environ.setenv("GATEWAY_CALLBACK_RETRY_INTERVALS", text)
    app = create_app(config_without(redis_server, "CALLBACK_RETRY_INTERVALS"))
    assert app.config["CALLBACK_RETRY_INTERVALS"] == [5, 30, 120]


def test_lists_and_secrets_from_the_environment(redis_server, clean_environ, tmp_path):
    tokens = tmp_path / "tokens.json"
    tokens.write_text(f'{{"{TOKEN}": "alpha"}}')
    clean_environ.setenv("GATEWAY_CALLBACK_ALLOWED_HOSTS", "hooks.internal, *.corp.example")
    clean_environ.setenv("GATEWAY_CALLBACK_SIGNING_SECRET", SECRET)
    clean_environ.setenv("GATEWAY_API_TOKENS", f"@{tokens}")
    clean_environ.setenv("GATEWAY_TASK_MODULES", "tests.plugin_tasks")
    clean_environ.setenv("GATEWAY_WORKER_START_TIMEOUT_SECONDS", "")  # empty: unset
    app = create_app({"REDIS_URL": base_config(redis_server, 0)["REDIS_URL"]})
    assert app.config["CALLBACK_ALLOWED_HOSTS"] == ["hooks.internal", "*.corp.example"]
    assert app.config["CALLBACK_SIGNING_SECRETS"] == [SECRET]
    assert app.config["TASK_MODULES"] == ["tests.plugin_tasks"]
    assert app.config["WORKER_START_TIMEOUT_SECONDS"] is None
    assert app.config["MAX_CONTENT_LENGTH"] == app.config["MAX_INPUT_BYTES"]
    assert app.config["QUEUE_REDIS_URL"] == app.config["REDIS_URL"]


def test_a_misspelled_variable_is_named_with_the_closest_valid_one(redis_server, clean_environ, caplog):
    clean_environ.setenv("GATEWAY_TASK_TTL_SECOND", "60")
    clean_environ.setenv("GATEWAY_CALBACK_ALLOW_PRIVATE_NETWORKS", "true")
    clean_environ.setenv("GATEWAY_WEB_WORKERS", "2")  # read by gunicorn.conf.py: known
    with caplog.at_level(logging.WARNING):
        create_app(base_config(redis_server, 0))
    assert "GATEWAY_TASK_TTL_SECOND is not a setting" in caplog.text
    assert "did you mean GATEWAY_TASK_TTL_SECONDS?" in caplog.text
    assert "did you mean GATEWAY_CALLBACK_ALLOW_PRIVATE_NETWORKS?" in caplog.text
    assert "GATEWAY_WEB_WORKERS" not in caplog.text


def test_false_spelled_False_refuses_a_metadata_callback(redis_server, clean_environ, task_id):
    # Before: "False" stayed a non-empty string, counted as true, and this was accepted.
    clean_environ.setenv("GATEWAY_CALLBACK_ALLOW_PRIVATE_NETWORKS", "False")
    app = create_app(config_without(redis_server, "CALLBACK_ALLOW_PRIVATE_NETWORKS"))
    response = app.test_client().post(
        "/v1/tasks",
        json={
            "task_name": "demo.echo",
            "task_id": task_id,
            "input_data": {},
            "callback": "http://169.254.169.254/latest/meta-data/",
        },
    )
    assert response.status_code == 400, response.get_data(as_text=True)
    assert "callback" in response.json["error"]["details"]
    assert "Unknown field" not in response.get_data(as_text=True)


def _run(command: list[str], variable: str, value: str) -> subprocess.CompletedProcess:
    env = {name: v for name, v in os.environ.items() if not name.startswith("GATEWAY_")}
    env.update({"PYTHONPATH": str(ROOT), "GATEWAY_REDIS_URL": "redis://127.0.0.1:1/0", variable: value})
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    "command",
    [
        [sys.executable, "-m", "flask", "--app", "wsgi", "worker"],
        [sys.executable, "-m", "flask", "--app", "wsgi", "scripts", "check"],
        [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "gunicorn.conf.py"), "--bind", "127.0.0.1:0", "wsgi:app"],
        [sys.executable, "-m", "gateway.serve"],
    ],
    ids=["worker", "scripts-check", "gunicorn", "quickstart"],
)
def test_entry_points_print_one_line_naming_the_variable_and_exit(command):
    result = _run(command, "GATEWAY_TASK_TTL_SECONDS", "abc")
    assert result.returncode != 0
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert lines == [
        "gateway: configuration error: GATEWAY_TASK_TTL_SECONDS: must be a whole number of seconds ≥ 1, got 'abc'"
    ]


def test_a_launcher_can_check_the_environment_before_starting_anything():
    # The quickstart (gateway/serve.py) checks the environment it will hand its processes.
    config.check_environment({"GATEWAY_TASK_TTL_SECONDS": "60", "GATEWAY_DEMO_TASKS": "yes", "OTHER": "x"})
    with pytest.raises(ConfigError, match="^GATEWAY_DEMO_TASKS: must be true or false"):
        config.check_environment({"GATEWAY_DEMO_TASKS": "please"})


# -- demo tasks (GATEWAY_DEMO_TASKS) ------------------------------------------------------


def test_without_the_flag_there_are_no_demo_tasks(redis_server, clean_environ, task_id):
    app = create_app(config_without(redis_server, "DEMO_TASKS"))
    client = app.test_client()
    supported = client.get("/v1/tasks/supported-tasks").json
    assert "demo" not in str(supported)
    assert "testing" in str(supported)  # the plugin's tasks are still there
    response = client.post("/v1/tasks", json={"task_name": "demo.echo", "task_id": task_id, "input_data": {}})
    assert response.status_code == 400
    assert "not registered" in response.get_data(as_text=True)


@pytest.mark.parametrize("seconds", [1e9, -1, "forever", True])
def test_demo_sleep_refuses_an_unbounded_time_fast(make_app, work, task_id, seconds):
    app = make_app()
    client = app.test_client()
    body = {"task_name": "demo.sleep", "task_id": task_id, "input_data": {"seconds": seconds}}
    assert client.post("/v1/tasks", json=body).status_code == 202
    started = time.monotonic()
    work(app)
    assert time.monotonic() - started < 30  # a bound, not a benchmark: it must not sleep
    stage = client.get(f"/v1/tasks/{task_id}/status").json["stages"]["demo.sleep"]
    assert stage["status"] == "FAILED"
    assert f"seconds must be a number from 0 to {MAX_SLEEP_SECONDS}" in stage["error"]
