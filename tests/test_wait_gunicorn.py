"""200 requests waiting (``?wait=``) on real gunicorn, started with the shipped
gunicorn.conf.py: ordinary requests are still answered while they wait, and every
waiter gets its answer when the run ends (bench/wait.py measures the same with numbers)."""

from __future__ import annotations

import http.client
import json
import threading

import pytest
import requests

from tests.conftest import Stack

WAIT_DB = 12  # apart from the other stacks' databases: their workers must not take our jobs
WAITERS = 200
#: Far longer than the test needs: a waiter answered before the run ends is a failure.
WAIT_SECONDS = 300


class RawWaiter(threading.Thread):
    """One waiting GET on its own connection (http.client: ~nothing per thread)."""

    def __init__(self, port: int, path: str) -> None:
        super().__init__(daemon=True)
        self.port, self.path = port, path
        self.status: int | None = None
        self.body: dict | None = None

    def run(self) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=WAIT_SECONDS + 60)
        try:
            connection.request("GET", self.path)
            response = connection.getresponse()
            self.status, self.body = response.status, json.loads(response.read())
        finally:
            connection.close()


@pytest.fixture
def wait_stack(redis_server, tmp_path):
    import redis

    redis.Redis(port=redis_server.port, db=WAIT_DB).flushdb()
    running = Stack(redis_server, tmp_path, workers=0, db=WAIT_DB, env={"GATEWAY_MAX_WAIT_SECONDS": str(WAIT_SECONDS)})
    yield running
    running.stop()


def test_200_waiters_do_not_starve_other_requests_and_all_hear_the_end(wait_stack):
    stack = wait_stack
    session = requests.Session()
    session.headers["Connection"] = "close"  # each request on a new connection, to any worker process
    body = {"task_id": "waited", "task_name": "demo.echo", "input_data": {"n": 200}}
    assert session.post(stack.base + "/v1/tasks", json=body, timeout=10).status_code == 202

    waiters = [RawWaiter(stack.port, f"/v1/tasks/waited/result?task_name=demo.echo&wait={WAIT_SECONDS}")]
    waiters += [RawWaiter(stack.port, f"/v1/tasks/waited/status?wait={WAIT_SECONDS}") for _ in range(WAITERS - 1)]
    for waiter in waiters:
        waiter.start()

    # Ordinary traffic while they wait: creates, reads, health; each must be answered.
    for number in range(40):
        other = {"task_id": f"other-{number}", "task_name": "demo.echo", "input_data": {"n": number}}
        assert session.post(stack.base + "/v1/tasks", json=other, timeout=10).status_code == 202
        assert session.get(f"{stack.base}/v1/tasks/other-{number}/status", timeout=10).status_code == 200
        assert session.get(stack.base + "/v1/tasks/health", timeout=10).status_code == 200
    assert not any(waiter.status for waiter in waiters), "a waiter was answered before the run ended"

    stack.start_worker()
    for waiter in waiters:
        waiter.join(60)
    unanswered = [(waiter.status, waiter.body) for waiter in waiters if waiter.status != 200]
    assert not unanswered, f"{len(unanswered)} waiters: {unanswered[:3]}\n{stack.web.log_tail()}"
    assert waiters[0].body["status"] == "SUCCESS" and waiters[0].body["output"] == {"n": 200}
    assert all(waiter.body["stages"]["demo.echo"]["status"] == "SUCCESS" for waiter in waiters[1:])
