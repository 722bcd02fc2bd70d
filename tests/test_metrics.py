"""GET /metrics: what is counted (requests, verdicts, runs, deliveries, queue depths), who
may read it, and that a web process killed and started again takes no count with it
(real gunicorn in prometheus_client's multiprocess mode)."""

from __future__ import annotations

import os
import signal
import subprocess

import redis
import requests
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from gateway.embedded import free_port
from tests.conftest import Stack, wait_until

#: A database of the session Redis for these stacks alone: the session stack's workers
#: (database 1) must not take their jobs, whose counts are checked here.
DB = 14
METRICS_TOKEN = "scrape-token-0123456789"
API_TOKEN = "an-api-token-of-some-length-0123"


def parse(text: str) -> list[tuple[str, dict[str, str], float]]:
    return [
        (sample.name, sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]


def value(text: str, name: str, **labels: str) -> float:
    """The sum of the samples called ``name`` whose labels include ``labels``."""
    return sum(v for n, found, v in parse(text) if n == name and labels.items() <= found.items())


def scrape(client, **headers) -> str:
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.data
    assert response.content_type.startswith("text/plain; version=0.0.4")
    return response.get_data(as_text=True)


def test_a_miss_and_a_hit_are_counted_by_verdict_and_route(client, work, task_id):
    before = scrape(client)
    body = {"task_name": "demo.echo", "task_id": task_id, "input_data": {"n": 1}}
    assert client.post("/v1/tasks", json=body).status_code == 202
    work()
    assert client.post("/v1/tasks", json=body).status_code == 200
    assert client.get(f"/v1/tasks/{task_id}/status").status_code == 200
    after = scrape(client)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("gateway_reuse_verdicts_total", state="miss") == 1
    assert grew("gateway_reuse_verdicts_total", state="completed") == 1
    assert grew("gateway_http_requests_total", route="/v1/tasks", status="202") == 1
    assert grew("gateway_http_requests_total", route="/v1/tasks", status="200") == 1
    # The URL rule, never the path: one series for every task id.
    assert grew("gateway_http_requests_total", route="/v1/tasks/<task_id:task_id>/status", status="200") == 1
    assert not [labels for _, labels, _ in parse(after) if task_id in labels.get("route", "")]
    assert grew("gateway_http_request_duration_seconds_count", route="/v1/tasks") == 2
    # The in-process worker ran the handler in this process: its run is counted here.
    assert grew("gateway_runs_started_total", task_name="demo.echo") == 1
    assert grew("gateway_runs_ended_total", task_name="demo.echo", outcome="success") == 1
    assert grew("gateway_run_duration_seconds_count", task_name="demo.echo") == 1


def test_unmatched_paths_share_one_series(client):
    before = scrape(client)
    assert client.get("/no/such/path/123").status_code == 404
    assert client.get("/another/unknown").status_code == 404
    after = scrape(client)
    assert (
        value(after, "gateway_http_requests_total", route="unmatched", status="404")
        - value(before, "gateway_http_requests_total", route="unmatched", status="404")
        == 2
    )


def test_queue_depths_are_read_at_scrape_time(client, task_id):
    body = {"task_name": "demo.echo", "task_id": task_id, "input_data": {}}
    assert client.post("/v1/tasks", json=body).status_code == 202  # no worker: it waits in the queue
    text = scrape(client)
    assert value(text, "gateway_queue_jobs", queue="demo", state="queued") == 1
    assert value(text, "gateway_queue_jobs", queue="callbacks", state="queued") == 0
    assert ("gateway_queue_workers", {"queue": "demo"}, 0.0) in parse(text)


def test_metrics_answer_while_redis_is_down(make_app):
    app = make_app(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0", REDIS_CONNECT_TIMEOUT_SECONDS=0.2)
    client = app.test_client()
    assert client.post("/v1/tasks", json={"task_name": "demo.echo", "input_data": {}}).status_code == 503
    text = scrape(client)
    assert "gateway_queue_jobs{" not in text  # left out, not an error
    assert value(text, "gateway_redis_errors_total", where="request", error="ConnectionError") >= 1
    assert value(text, "gateway_http_requests_total", route="/v1/tasks", status="503") >= 1


def test_metrics_need_no_api_token_unless_the_operator_set_a_metrics_token(make_app):
    open_metrics = make_app(API_TOKENS={API_TOKEN: "tenant-a"}).test_client()
    assert open_metrics.get("/v1/tasks/supported-tasks").status_code == 401
    assert open_metrics.get("/metrics").status_code == 200

    guarded = make_app(API_TOKENS={API_TOKEN: "tenant-a"}, METRICS_TOKEN=METRICS_TOKEN).test_client()
    assert guarded.get("/metrics").status_code == 401
    # An API token is no scrape credential, nor the other way round.
    assert guarded.get("/metrics", headers={"Authorization": f"Bearer {API_TOKEN}"}).status_code == 401
    supported = guarded.get("/v1/tasks/supported-tasks", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert supported.status_code == 401
    scrape(guarded, Authorization=f"Bearer {METRICS_TOKEN}")


# -- real processes ------------------------------------------------------------------------


def own_stack(redis_server, tmp_path, workers: int, env: dict) -> Stack:
    redis.Redis(port=redis_server.port, db=DB).flushdb()
    return Stack(redis_server, tmp_path, workers=workers, db=DB, env=env)


def web_worker_pids(master_pid: int) -> set[int]:
    found = subprocess.run(["pgrep", "-P", str(master_pid)], capture_output=True, text=True).stdout.split()
    return {int(pid) for pid in found}


def healthz_counts_by_process(folder) -> dict[int, float]:
    """pid → the /healthz answers that process counted, from its own file."""
    counts = {}
    for path in folder.glob("counter_*.db"):
        pid = int(path.stem.split("_")[1])
        merged = MultiProcessCollector.merge([str(path)])
        counts[pid] = sum(
            s.value
            for family in merged
            for s in family.samples
            if s.name == "gateway_http_requests_total" and s.labels.get("route") == "/healthz"
        )
    return counts


def healthz_answers(stack) -> float:
    text = requests.get(stack.base + "/metrics", timeout=5).text
    return value(text, "gateway_http_requests_total", route="/healthz", status="200")


def test_a_killed_web_process_takes_no_count_with_it(redis_server, tmp_path):
    folder = tmp_path / "metrics"
    env = {"GATEWAY_WEB_WORKERS": "2", "PROMETHEUS_MULTIPROC_DIR": str(folder)}
    stack = own_stack(redis_server, tmp_path, 0, env)
    try:
        for _ in range(40):
            assert requests.get(stack.base + "/healthz", timeout=5).status_code == 200
        # Each process moves its request counts into its file within a second.
        assert wait_until(lambda: healthz_answers(stack) == 40, timeout=10)
        before = healthz_answers(stack)
        pids = web_worker_pids(stack.web.pid)
        assert len(pids) == 2
        # The process that counted most of them (new connections spread over both).
        counts = healthz_counts_by_process(folder)
        victim = max(pids, key=lambda pid: counts.get(pid, 0))
        assert counts[victim] > 0
        os.kill(victim, signal.SIGKILL)
        # gunicorn starts another in its place
        assert wait_until(lambda: len(web_worker_pids(stack.web.pid) - {victim}) == 2, timeout=20)
        for _ in range(10):
            requests.get(stack.base + "/healthz", timeout=5)
        assert wait_until(lambda: healthz_answers(stack) == before + 10, timeout=10)
        assert healthz_counts_by_process(folder)[victim] == counts[victim]  # its file stays, as it was
    finally:
        stack.stop()


def test_runs_and_deliveries_of_a_worker_sharing_the_folder_show_in_the_web_metrics(redis_server, tmp_path, receiver):
    folder = tmp_path / "metrics"
    stack = own_stack(redis_server, tmp_path, 1, {"PROMETHEUS_MULTIPROC_DIR": str(folder)})
    try:
        body = {"task_name": "demo.echo", "task_id": "m-1", "input_data": {"a": 1}, "callback": receiver.url()}
        assert stack.post(body).status_code == 202
        receiver.wait_for(1, timeout=20)

        def counted() -> bool:
            text = requests.get(stack.base + "/metrics", timeout=5).text
            sent = value(text, "gateway_delivery_tries_total", outcome="sent") == 1
            return sent and value(text, "gateway_reuse_verdicts_total", state="miss") == 1  # (a second late at most)

        assert wait_until(counted, timeout=10)
        text = requests.get(stack.base + "/metrics", timeout=5).text
        assert value(text, "gateway_runs_started_total", task_name="demo.echo") == 1
        assert value(text, "gateway_runs_ended_total", task_name="demo.echo", outcome="success") == 1
        assert value(text, "gateway_run_duration_seconds_count", task_name="demo.echo") == 1
        assert value(text, "gateway_delivery_duration_seconds_count") == 1
        assert value(text, "gateway_queue_workers", queue="demo") == 1
        # A real `flask worker` serves every queue: the gateway is ready.
        assert requests.get(stack.base + "/readyz", timeout=10).status_code == 200
    finally:
        stack.stop()


def test_a_worker_serves_its_own_metrics_on_its_port(redis_server, tmp_path, receiver):
    port = free_port()
    receiver.responses.append((500, {}))  # one retry, then sent
    stack = own_stack(
        redis_server, tmp_path, 1, {"GATEWAY_METRICS_PORT": str(port), "GATEWAY_METRICS_TOKEN": METRICS_TOKEN}
    )
    try:
        body = {"task_name": "demo.echo", "task_id": "m-2", "input_data": {}, "callback": receiver.url()}
        assert stack.post(body).status_code == 202
        receiver.wait_for(2, timeout=20)
        url = f"http://127.0.0.1:{port}/metrics"
        assert requests.get(url, timeout=5).status_code == 401

        def text() -> str:
            return requests.get(url, headers={"Authorization": f"Bearer {METRICS_TOKEN}"}, timeout=5).text

        # Deliveries are made by the forked delivery process: counted in the same folder.
        assert wait_until(lambda: value(text(), "gateway_delivery_tries_total", outcome="sent") == 1, timeout=10)
        assert value(text(), "gateway_delivery_tries_total", outcome="retry") == 1
        assert value(text(), "gateway_runs_ended_total", task_name="demo.echo", outcome="success") == 1
        # The web process, with no shared folder, shows its own counts only.
        web = requests.get(stack.base + "/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}, timeout=5)
        assert value(web.text, "gateway_runs_started_total") == 0
    finally:
        stack.stop()


def test_gunicorn_makes_and_removes_a_private_folder_when_none_is_given(redis_server, tmp_path):
    assert "PROMETHEUS_MULTIPROC_DIR" not in os.environ
    stack = own_stack(redis_server, tmp_path / "logs", 0, {"TMPDIR": str(tmp_path)})
    try:
        folders = list(tmp_path.glob("gateway-metrics-*"))
        assert len(folders) == 1
        assert requests.get(stack.base + "/healthz", timeout=5).status_code == 200
    finally:
        stack.stop()
    assert not list(tmp_path.glob("gateway-metrics-*"))


def test_a_file_another_process_has_just_created_does_not_fail_a_scrape(tmp_path):
    """A process creates its file, then sizes it: a scrape in between read an empty file
    (struct.error, a 500 once in the suite)."""
    from gateway.metrics import _FolderCollector

    (tmp_path / "counter_4242.db").touch()
    assert list(_FolderCollector(None, path=str(tmp_path)).collect()) == []
