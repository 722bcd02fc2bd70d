"""The examples, run as a user runs them: the ``examples.tasks.words`` plugin through real
gunicorn and RQ workers that load it with ``GATEWAY_TASK_MODULES``, and the sample
receiver (``examples/receiver/app.py``) as a real HTTP server on loopback, verifying the
signed callbacks of a completed hit, a pending hit and a failure, and dropping a
duplicate. The README's callback example is run against the real quickstart."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis
import requests
from standardwebhooks import Webhook

from gateway.embedded import free_port
from gateway.testing.waiting import poll_until
from tests.conftest import ROOT, SECRET, Stack, wait_until
from tests.test_serve import Serve

EXAMPLES_DB = 10  # apart from the other stacks' databases: their workers must not take our jobs


class ReceiverProcess:
    """``python examples/receiver/app.py --port P``, its output read line by line."""

    def __init__(self, secret: str | None = None, shell_command: str | None = None) -> None:
        """Started with ``secret``, or by ``shell_command`` (a documented command line),
        to which ``--port`` is added."""
        self.port = free_port()
        self.lines: list[str] = []
        env = {"PATH": os.environ["PATH"], "PYTHONUNBUFFERED": "1"}
        if shell_command is None:
            command: str | list[str] = [sys.executable, str(ROOT / "examples" / "receiver" / "app.py")]
            command += ["--port", str(self.port)]
            env["WEBHOOK_SECRET"] = secret or ""
        else:
            command = f"{shell_command} --port {self.port}"
        # A session of its own: a shell's children are stopped with it.
        self.process = subprocess.Popen(
            command, shell=shell_command is not None, cwd=ROOT, env=env, start_new_session=True,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        threading.Thread(target=self._read, daemon=True).start()
        wait_until(self._answers, timeout=30)

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def _answers(self) -> bool:
        try:
            requests.get(self.url(), timeout=1)
        except requests.RequestException:
            return False
        return True

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def shown(self) -> dict[str, dict[str, str]]:
        """delivery id → the fields the receiver showed for it, as printed."""
        deliveries: dict[str, dict[str, str]] = {}
        current: dict[str, str] | None = None
        for line in list(self.lines):
            if match := re.fullmatch(r"callback ([0-9a-f]{32}) verified", line):
                current = deliveries.setdefault(match.group(1), {})
            elif current is not None and line.startswith("  "):
                name, _, value = line.strip().partition(" ")
                current[name] = value.strip()
            else:
                current = None
        return deliveries

    def wait_shown(self, task_id: str, count: int = 1) -> list[dict[str, str]]:
        """The deliveries shown for ``task_id`` once there are ``count`` of them (complete)."""

        def found():
            mine = [fields for fields in self.shown().values() if fields.get("task_id") == task_id]
            return mine if len(mine) == count and all("result.duration" in f for f in mine) else None

        deliveries = poll_until(found, 30)
        assert deliveries, f"no {count} callback(s) for {task_id} in:\n" + "\n".join(self.lines[-60:])
        return deliveries

    def close(self) -> None:
        os.killpg(self.process.pid, signal.SIGTERM)
        self.process.wait(15)


@pytest.fixture(scope="module")
def sample_receiver():
    receiver = ReceiverProcess(SECRET)
    yield receiver
    receiver.close()


class Gateway:
    """gunicorn and a delivery worker loading the example plugin, and nothing else; runs
    wait in the ``text`` queue until ``run_queued`` drains it (so that a test can send a
    second request while the first run is still pending)."""

    def __init__(self, redis_server, tmp_path: Path) -> None:
        redis.Redis(port=redis_server.port, db=EXAMPLES_DB).flushdb()
        env = {"GATEWAY_TASK_MODULES": "examples.tasks.words", "GATEWAY_DEMO_TASKS": "false"}
        self.stack = Stack(redis_server, tmp_path, workers=0, db=EXAMPLES_DB, env=env)
        self.env = self.stack.env
        self.delivery_log = open(tmp_path / "delivery-worker.log", "w")  # noqa: SIM115 (closed in stop)
        self.delivery_worker = subprocess.Popen(
            [sys.executable, "-m", "flask", "--app", "wsgi", "worker", "--queues", "callbacks"],
            cwd=ROOT, env=self.env, stdout=self.delivery_log, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def post(self, body: dict) -> requests.Response:
        return self.stack.post(body)

    def status(self, task_id: str) -> dict:
        return self.stack.status(task_id)

    def run_queued(self) -> None:
        """A run worker for the ``text`` node, as an operator starts one, until the queue is empty."""
        command = [sys.executable, "-m", "flask", "--app", "wsgi", "worker", "--queues", "text", "--burst"]
        subprocess.run(command, cwd=ROOT, env=self.env, check=True, timeout=60, capture_output=True)

    def stop(self) -> None:
        self.delivery_worker.terminate()
        self.delivery_worker.wait(30)
        self.delivery_log.close()
        self.stack.stop()


@pytest.fixture(scope="module")
def gateway(redis_server, tmp_path_factory):
    running = Gateway(redis_server, tmp_path_factory.mktemp("examples"))
    yield running
    running.stop()


def count_words(task_id: str, text: object, callback: str | None = None) -> dict:
    body: dict = {"task_name": "text.word_count", "task_id": task_id, "input_data": {"text": text}}
    if callback:
        body["callback"] = callback
    return body


@pytest.fixture
def words_task_id():
    return f"words-{uuid.uuid4().hex[:10]}"


def test_the_plugin_is_registered_on_its_own_node(gateway):
    supported = requests.get(gateway.stack.base + "/v1/tasks/supported-tasks", timeout=10).json()
    assert supported == {"nodes": {"text": ["text.word_count"]}, "tasks": ["text.word_count"]}


def test_a_run_and_a_completed_hit_are_pushed_and_verified(gateway, sample_receiver, words_task_id):
    request = count_words(words_task_id, "The cat and the hat. The end!", sample_receiver.url())

    assert gateway.post(request).status_code == 202
    gateway.run_queued()
    [first] = sample_receiver.wait_shown(words_task_id)
    hit = gateway.post(request)
    [_, second] = sample_receiver.wait_shown(words_task_id, 2)

    output = {"words": 7, "distinct": 5, "top": [{"word": "the", "count": 3}, {"word": "cat", "count": 1},
                                                 {"word": "and", "count": 1}]}  # fmt: skip
    assert (first["status"], first["result.status"], first["reuse_info"]) == ("completed", "SUCCESS", "null")
    assert json.loads(first["result.output"]) == output
    assert first["task_name"] == "text.word_count"
    assert hit.status_code == 200 and hit.json()["result"]["output"] == output
    assert json.loads(second["reuse_info"])["state"] == "completed"
    assert second["result.output"] == first["result.output"]


def test_a_pending_hit_is_pushed_when_the_run_ends(gateway, sample_receiver, words_task_id):
    assert gateway.post(count_words(words_task_id, "one two two")).status_code == 202  # queued, no worker yet

    pending = gateway.post(count_words(words_task_id, "one two two", sample_receiver.url()))
    [record] = gateway.status(words_task_id)["stages"]["text.word_count"]["callbacks"]
    assert (record["status"], record["attempts"]) == ("queued", 0)  # waits for the run
    gateway.run_queued()
    [shown] = sample_receiver.wait_shown(words_task_id)

    assert pending.status_code == 202
    assert pending.json()["reuse_info"]["state"] == "pending"
    assert json.loads(shown["reuse_info"])["state"] == "pending"
    assert json.loads(shown["result.output"])["words"] == 3


def test_a_failed_run_is_pushed_with_its_error(gateway, sample_receiver, words_task_id):
    assert gateway.post(count_words(words_task_id, 42, sample_receiver.url())).status_code == 202
    gateway.run_queued()
    [shown] = sample_receiver.wait_shown(words_task_id)

    assert (shown["status"], shown["result.status"], shown["result.output"]) == ("failed", "FAILED", "null")
    assert json.loads(shown["result.error"]) == "ValueError: input_data.text must be a string, got int"


def test_the_receiver_drops_a_duplicate_and_refuses_a_bad_signature(gateway, sample_receiver, words_task_id):
    assert gateway.post(count_words(words_task_id, "hello", sample_receiver.url())).status_code == 202
    gateway.run_queued()
    sample_receiver.wait_shown(words_task_id)
    [record] = gateway.status(words_task_id)["stages"]["text.word_count"]["callbacks"]
    delivery_id = record["delivery_id"]

    # The same delivery again, as the gateway sends it when it missed the first answer.
    body = json.dumps({"task_id": words_task_id, "note": "the same delivery, sent again"})
    now = datetime.now(UTC)
    headers = {"webhook-id": delivery_id, "webhook-timestamp": str(int(now.timestamp())),
               "webhook-signature": Webhook(SECRET).sign(delivery_id, now, body),
               "Content-Type": "application/json"}  # fmt: skip
    again = requests.post(sample_receiver.url(), data=body, headers=headers, timeout=10)
    forged = requests.post(sample_receiver.url(), data=body + " ", headers=headers, timeout=10)

    assert again.status_code == 204
    assert poll_until(lambda: f"duplicate {delivery_id}: already handled, ignored" in sample_receiver.lines, 10)
    assert forged.status_code == 400
    assert len(sample_receiver.wait_shown(words_task_id)) == 1


# -- the README's callback example, against the real quickstart --------------------------

README = ROOT / "README.md"


def readme_command(name: str) -> str:
    """The shell command of the README block marked ``<!-- check: name -->``, on one line."""
    match = re.search(rf"<!-- check: {name} -->\n```sh\n(.*?)\n```", README.read_text(), re.DOTALL)
    assert match, f"no block <!-- check: {name} --> in README.md"
    return match.group(1).replace("\\\n", " ")


def readme_output() -> dict[str, str]:
    """The receiver output the README shows: label → value."""
    text = README.read_text()
    block = text[text.index("callback d9115cfa") :].split("```")[0]
    return {name: value.strip() for name, _, value in (line.strip().partition(" ") for line in block.splitlines()[1:])}


def test_the_readme_callback_example_works_as_written(tmp_path):
    quickstart = Serve(tmp_path, env={"GATEWAY_WEB_WORKERS": "1"})
    receiver = None
    try:
        quickstart.wait_line("first task:")
        python = readme_command("receiver").replace(".venv/bin/python", sys.executable)
        receiver = ReceiverProcess(shell_command=python)
        callback = readme_command("callback").replace("localhost:8788", f"127.0.0.1:{quickstart.port}")
        callback = callback.replace("127.0.0.1:8789", f"127.0.0.1:{receiver.port}")

        answer = subprocess.run(callback, shell=True, cwd=ROOT, capture_output=True, text=True, timeout=30)
        [shown] = receiver.wait_shown("task-demo-002")

        assert json.loads(answer.stdout)["reuse_info"]["state"] == "miss"
        documented = readme_output()
        assert set(shown) == set(documented)
        volatile = {"timestamp", "result.duration"}
        assert {k: v for k, v in shown.items() if k not in volatile} == {
            k: v for k, v in documented.items() if k not in volatile
        }
        assert quickstart.terminate() == 0
    finally:
        if receiver is not None:
            receiver.close()
        if quickstart.process.poll() is None:
            quickstart.kill()


# -- docs/TASKS.md's handler tests, as a reader runs them ----------------------------------


def test_the_handler_tests_of_the_task_guide_pass(redis_server, tmp_path):
    guide = (ROOT / "docs" / "TASKS.md").read_text()
    match = re.search(r"<!-- check: handler-tests -->\n```python\n(.*?)\n```", guide, re.DOTALL)
    assert match, "no block <!-- check: handler-tests --> in docs/TASKS.md"
    quickstart_url = "redis://127.0.0.1:6390/15"
    assert quickstart_url in match.group(1)
    test_file = tmp_path / "test_words.py"
    test_file.write_text(match.group(1).replace(quickstart_url, f"redis://127.0.0.1:{redis_server.port}/11"))

    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(test_file)]
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}, "PYTHONPATH": str(ROOT)}
    finished = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)

    assert finished.returncode == 0, finished.stdout[-3000:]
    assert "2 passed" in finished.stdout
