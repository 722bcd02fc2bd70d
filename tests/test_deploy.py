"""The shipped deployment files, run as an operator runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import requests

from gateway.embedded import free_port
from tests.conftest import ROOT, STACK_DB, base_config, wait_until

_OWN_SOCKET_VARIABLES = ("XDG_RUNTIME_DIR", "GATEWAY_CONTROL_SOCKET")


def _gunicorn(redis_server, home, *, extra_env: dict[str, str] | None = None):
    """gunicorn with the shipped gunicorn.conf.py (one worker unless extra_env says)."""
    process, _ = _gunicorn_and_port(redis_server, home, extra_env=extra_env)
    return process


def _gunicorn_and_port(redis_server, home, *, extra_env: dict[str, str] | None = None):
    port = free_port()
    env = {
        **{
            name: value
            for name, value in os.environ.items()
            if name not in ("XDG_RUNTIME_DIR", "GATEWAY_CONTROL_SOCKET")
        },
        "HOME": str(home),
        "PYTHONPATH": str(ROOT),
        "GATEWAY_REDIS_URL": base_config(redis_server, STACK_DB)["REDIS_URL"],
        "GATEWAY_WEB_WORKERS": "1",
        "GATEWAY_TASK_MODULES": "tests.plugin_tasks",
        **(extra_env or {}),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "gunicorn.conf.py"), "--bind", f"127.0.0.1:{port}",
         "wsgi:app"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip

    def healthy():
        try:
            return requests.get(f"http://127.0.0.1:{port}/v1/tasks/health", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    wait_until(healthy, timeout=20)
    return process, port


def _stop(process):
    process.terminate()
    process.wait(15)


def test_gunicorn_opens_no_per_user_control_socket_by_default(redis_server, tmp_path):
    # gunicorn 27 puts its control socket at ~/.gunicorn/gunicorn.ctl: two instances of
    # one user would replace each other's.
    first = _gunicorn(redis_server, tmp_path)
    second = _gunicorn(redis_server, tmp_path)
    try:
        time.sleep(0.5)
        assert not (tmp_path / ".gunicorn").exists() or not any((tmp_path / ".gunicorn").iterdir())
    finally:
        _stop(first)
        _stop(second)


def test_gunicorn_control_socket_at_a_path_of_its_own(redis_server, tmp_path):
    path = tmp_path / "gateway-a.ctl"
    process = _gunicorn(redis_server, tmp_path, extra_env={"GATEWAY_CONTROL_SOCKET": str(path)})
    try:
        wait_until(path.exists, timeout=10)
        assert not (tmp_path / ".gunicorn").exists()
    finally:
        _stop(process)


def _chunks(raw: bytes, size: int = 100):
    """A generator body: requests sends it with Transfer-Encoding: chunked, no Content-Length."""
    for start in range(0, len(raw), size):
        yield raw[start : start + size]


def _padded_body(length: int) -> bytes:
    # A valid JSON object followed by spaces: any cut inside the padding is still valid
    # JSON, so a body cut at the limit and parsed would be accepted (202).
    raw = json.dumps({"task_name": "testing.empty", "task_id": f"c-{length}", "input_data": {}}).encode()
    return raw + b" " * (length - len(raw))


def test_chunked_body_over_the_limit_is_413_and_under_it_accepted(redis_server, tmp_path):
    limit = 2000
    process, port = _gunicorn_and_port(redis_server, tmp_path, extra_env={"GATEWAY_MAX_INPUT_BYTES": str(limit)})
    url = f"http://127.0.0.1:{port}/v1/tasks"
    headers = {"Content-Type": "application/json"}
    try:
        for length in (limit + 1, 3 * limit):
            response = requests.post(url, data=_chunks(_padded_body(length)), headers=headers, timeout=10)
            assert response.request.headers.get("Transfer-Encoding") == "chunked"
            assert response.status_code == 413, (length, response.text)
            assert response.json()["error"]["code"] == "payload_too_large"
            assert response.json()["error"]["details"] == {"limit_bytes": limit}
        for length in (limit - 1, limit):
            response = requests.post(url, data=_chunks(_padded_body(length)), headers=headers, timeout=10)
            assert response.status_code == 202, (length, response.text)
    finally:
        _stop(process)
