"""The quickstart (``python -m gateway.serve``, what ``scripts/serve.sh`` runs), as real
processes: it never uses a Redis it did not start, says "gateway on" only once the
gateway answers, restarts a worker that dies, and leaves no process behind."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import redis
import requests
from standardwebhooks import Webhook

from gateway.embedded import DataDirInUse, EmbeddedRedis, EmbeddedRedisError, free_port
from gateway.scripts import read_sources, rq_sources
from gateway.serve import bind_address, start_up_message
from gateway.testing.waiting import poll_until

ROOT = Path(__file__).resolve().parent.parent


# -- processes, read from /proc --------------------------------------------------------


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, parent pid, start time) of a process, None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], int(fields[1]), int(fields[19])


def descendants(pid: int) -> dict[int, int]:
    """pid → start time of every living process below ``pid``."""
    parents: dict[int, list[int]] = {}
    starts: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) and stat[0] != "Z":
            parents.setdefault(stat[1], []).append(int(entry.name))
            starts[int(entry.name)] = stat[2]
    found: dict[int, int] = {}
    todo = [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found[child] = starts[child]
            todo.append(child)
    return found


def alive(processes: dict[int, int]) -> list[int]:
    """Those of ``processes`` (pid → start time) still running (zombies are not)."""
    return [pid for pid, start in processes.items() if (stat := _stat(pid)) and stat[0] != "Z" and stat[2] == start]


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


# -- the quickstart as a user runs it ---------------------------------------------------


class Serve:
    """``python -m gateway.serve`` with its own data folder and address; its output is read
    line by line as it comes."""

    def __init__(self, tmp_path: Path, env: dict[str, str] | None = None, embedded_port: int | None = None) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = {
            **{name: value for name, value in os.environ.items() if not name.startswith("GATEWAY_")},
            "PYTHONPATH": str(ROOT),
            "GATEWAY_BIND": f"127.0.0.1:{self.port}",
            "GATEWAY_EMBEDDED_REDIS_DIR": str(tmp_path / "redis"),
            "GATEWAY_WEB_WORKERS": "1",
            **(env or {}),
        }
        if embedded_port is None:
            command = [sys.executable, "-m", "gateway.serve"]
        else:  # the same code with another preferred port than 6390, which may be anyone's
            command = [
                sys.executable, "-c",
                f"import sys, gateway.serve as s; s.EMBEDDED_PORT = {embedded_port}; sys.exit(s.main())",
            ]  # fmt: skip
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            command, cwd=ROOT, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_line(self, text: str, timeout: float = 60) -> str:
        line = poll_until(lambda: next((line for line in self.lines if text in line), None), timeout)
        assert line, f"no line with {text!r} in:\n{self.output()[-4000:]}"
        return line

    def workers(self) -> list[int]:
        """The worker processes the quickstart started (not what they forked)."""
        return [
            pid
            for pid in descendants(self.process.pid)
            if "wsgi worker" in cmdline(pid) and (stat := _stat(pid)) and stat[1] == self.process.pid
        ]

    def task_succeeds(self) -> bool:
        task_id = f"serve-{uuid.uuid4().hex[:10]}"
        body = {"task_name": "demo.echo", "task_id": task_id, "input_data": {"text": "hi"}}
        assert requests.post(self.base + "/v1/tasks", json=body, timeout=10).status_code == 202
        url = f"{self.base}/v1/tasks/{task_id}/status"
        return bool(poll_until(lambda: requests.get(url, timeout=10).json()["status"] == "completed", 30, 0.2))

    def terminate(self, timeout: float = 60) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def kill(self) -> None:
        # Cleanup after a failed test: the whole tree, since the quickstart may not have.
        processes = descendants(self.process.pid)
        self.process.kill()
        self.process.wait()
        for pid in alive(processes):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture
def serve(tmp_path):
    started: list[Serve] = []

    def start(**kwargs) -> Serve:
        started.append(Serve(tmp_path, **kwargs))
        return started[-1]

    yield start
    for running in started:
        if running.process.poll() is None:
            running.kill()


@pytest.fixture
def other_redis(tmp_path):
    """Someone else's Redis, on a port the quickstart is told about."""
    server = EmbeddedRedis(tmp_path / "other-redis").start()
    yield server
    server.stop()


def untouched(server: EmbeddedRedis) -> bool:
    """No key and no script of the gateway or of RQ in ``server``."""
    client = redis.Redis(host="127.0.0.1", port=server.port)
    shas = [hashlib.sha1(source.encode()).hexdigest() for source in {**read_sources(), **rq_sources()}.values()]
    try:
        return client.info("keyspace") == {} and not any(client.script_exists(*shas))
    finally:
        client.close()


def test_embedded_redis_refuses_a_port_another_redis_answers_on(tmp_path, other_redis):
    ours = EmbeddedRedis(tmp_path / "ours", other_redis.port)

    with pytest.raises(EmbeddedRedisError, match=f"port {other_redis.port} is taken by another Redis"):
        ours.start(timeout=5)

    assert ours.process is None
    assert redis.Redis(host="127.0.0.1", port=other_redis.port).ping()


def test_embedded_redis_refuses_a_data_folder_in_use(tmp_path, other_redis):
    with pytest.raises(DataDirInUse, match=f"in use by another embedded Redis \\(port {other_redis.port}\\)"):
        EmbeddedRedis(other_redis.data_dir).start()


def test_busy_default_port_gets_a_redis_of_our_own(serve, other_redis):
    quickstart = serve(embedded_port=other_redis.port)

    line = quickstart.wait_line("embedded Redis on")
    announced = quickstart.wait_line("gateway on")

    assert f":{other_redis.port}/" not in line
    assert f"port {other_redis.port} is in use" in quickstart.output()
    assert f"http://127.0.0.1:{quickstart.port}" in announced
    # Said only once the gateway answers: its health check passes at once.
    assert requests.get(quickstart.base + "/v1/tasks/health", timeout=5).status_code == 200
    assert quickstart.task_succeeds()
    assert untouched(other_redis)
    assert quickstart.terminate() == 0


def test_forced_port_that_is_busy_is_a_clear_error(serve, other_redis):
    quickstart = serve(env={"GATEWAY_EMBEDDED_REDIS_PORT": str(other_redis.port)})

    code = quickstart.process.wait(60)
    time.sleep(0.2)  # the reader thread takes the last lines

    assert code == 2
    assert f"GATEWAY_EMBEDDED_REDIS_PORT={other_redis.port}: the port is in use" in quickstart.output()
    assert "gateway on" not in quickstart.output()
    assert untouched(other_redis)


def test_dead_worker_is_replaced_and_a_stop_leaves_no_process(serve):
    quickstart = serve()
    quickstart.wait_line("gateway on")
    assert requests.get(quickstart.base + "/v1/tasks/health", timeout=5).status_code == 200
    worker = poll_until(lambda: next(iter(quickstart.workers()), None), 30)
    assert worker, quickstart.output()
    scheduler = poll_until(lambda: descendants(worker), 30)
    assert scheduler, "RQ's scheduler is a process forked by the worker"

    os.kill(worker, signal.SIGKILL)

    quickstart.wait_line("worker started again")
    assert quickstart.process.poll() is None
    assert alive(scheduler) == [], "the dead worker's scheduler was stopped with it"
    assert [pid for pid in quickstart.workers() if pid != worker]
    assert quickstart.task_succeeds()

    everything = descendants(quickstart.process.pid)
    assert quickstart.terminate() == 0
    assert alive(everything) == []


# -- what the quickstart says ------------------------------------------------------------


def start_up(quickstart: Serve) -> dict[str, str]:
    """The start-up message's lines after "gateway on", by label ("Redis", "first task"…)."""
    quickstart.wait_line("first task:")
    lines = quickstart.lines[quickstart.lines.index(quickstart.wait_line("gateway on")) + 1 :]
    return {label.strip(): text.strip() for label, _, text in (line.partition(":") for line in lines[:3])}


def test_start_up_says_where_it_listens_where_redis_keeps_its_data_and_how_to_submit(serve, tmp_path):
    quickstart = serve(env={"GATEWAY_WEB_WORKERS": "3"})

    said = start_up(quickstart)

    assert f"http://127.0.0.1:{quickstart.port}" in quickstart.wait_line("gateway on")
    assert said["Redis"].startswith("embedded, redis://127.0.0.1:")
    assert said["Redis"].endswith(f"data and AOF in {tmp_path / 'redis'}")
    assert said["callbacks"] == (
        "signed with the secret in var/callback-signing-secret; receivers on this machine allowed"
    )
    # The command it prints works as printed (the README starts with it).
    answer = subprocess.run(said["first task"], shell=True, capture_output=True, text=True, timeout=30)
    assert '"task_id":"task-demo-001"' in answer.stdout.replace(" ", "")
    assert quickstart.terminate() == 0


def test_open_api_warning_is_said_once_whatever_the_number_of_processes(serve):
    quickstart = serve(env={"GATEWAY_WEB_WORKERS": "3"})
    start_up(quickstart)
    assert quickstart.workers()
    time.sleep(2)  # the worker and the web workers have built their apps by now

    assert quickstart.output().count("GATEWAY_API_TOKENS is not set") == 1
    assert quickstart.terminate() == 0


def test_callbacks_are_signed_with_the_secret_the_quickstart_keeps(serve, receiver):
    quickstart = serve()
    start_up(quickstart)
    secret = (ROOT / "var" / "callback-signing-secret").read_text().strip()
    body = {"task_name": "demo.echo", "task_id": f"signed-{uuid.uuid4().hex[:8]}", "input_data": {}}

    assert requests.post(quickstart.base + "/v1/tasks", json={**body, "callback": receiver.url()}, timeout=10).ok
    [delivery] = receiver.wait_for(1, timeout=30)

    assert Webhook(secret).verify(delivery["raw"], delivery["headers"])["status"] == "completed"
    assert quickstart.terminate() == 0


def test_with_your_own_redis_callbacks_to_this_machine_are_refused(serve, other_redis):
    quickstart = serve(env={"GATEWAY_REDIS_URL": other_redis.url})

    said = start_up(quickstart)
    body = {"task_name": "demo.echo", "input_data": {}, "callback": "http://127.0.0.1:8789/hook"}
    refused = requests.post(quickstart.base + "/v1/tasks", json=body, timeout=10)

    assert said["Redis"] == f"yours, {other_redis.url} (GATEWAY_REDIS_URL); data where that server keeps it"
    assert "public addresses only" in said["callbacks"]
    assert refused.status_code == 400
    assert "callback" in refused.json()["error"]["details"]
    assert quickstart.terminate() == 0


def test_start_up_never_shows_a_redis_password_and_fits_the_address():
    env = {"GATEWAY_REDIS_URL": "redis://gateway:s3cret-pass@redis.internal:6379/0"}
    said = {
        bind: start_up_message({**env, "GATEWAY_BIND": bind}, bind_address(bind), None, None)
        for bind in ("unix:/tmp/gateway.sock", "0.0.0.0:8788", "[::1]:8788")
    }

    for text in said.values():
        assert "s3cret-pass" not in text
        assert "redis://gateway:***@redis.internal:6379/0" in text
    assert "curl -s --unix-socket /tmp/gateway.sock http://localhost/v1/tasks " in said["unix:/tmp/gateway.sock"]
    assert "curl -s http://127.0.0.1:8788/v1/tasks " in said["0.0.0.0:8788"]
    assert "curl -s -g http://[::1]:8788/v1/tasks " in said["[::1]:8788"]
