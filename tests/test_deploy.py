"""The shipped deployment files, run as an operator runs them."""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import redis
import requests
from standardwebhooks import Webhook

from gateway.embedded import free_port
from tests.conftest import ROOT, SECRET, STACK_DB, Receiver, Stack, base_config, wait_until

_OWN_SOCKET_VARIABLES = ("XDG_RUNTIME_DIR", "GATEWAY_CONTROL_SOCKET")


def _gunicorn(redis_server, home, *, extra_env: dict[str, str] | None = None):
    """gunicorn with the shipped gunicorn.conf.py (one worker unless extra_env says)."""
    process, _ = _gunicorn_and_port(redis_server, home, extra_env=extra_env)
    return process


def _gunicorn_and_port(
    redis_server, home, *, extra_env: dict[str, str] | None = None, workers: int | None = 1, log: Path | None = None
) -> tuple[subprocess.Popen, int]:
    """gunicorn with the shipped gunicorn.conf.py; ``workers=None`` keeps its default;
    its output to ``log`` when given."""
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
        "GATEWAY_TASK_MODULES": "tests.plugin_tasks",
        **({"GATEWAY_WEB_WORKERS": str(workers)} if workers else {}),
        **(extra_env or {}),
    }
    if not workers:
        env.pop("GATEWAY_WEB_WORKERS", None)
    with open(log or os.devnull, "ab") as output:  # the child keeps its own copy
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "gunicorn.conf.py"), "--bind", f"127.0.0.1:{port}",
             "wsgi:app"],
            cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT,
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


# --- nginx in front (docs/deploy/nginx.conf) ------------------------------------------

NGINX_CONF = ROOT / "docs" / "deploy" / "nginx.conf"
JSON_TYPE = {"Content-Type": "application/json"}
# The only two lines the test changes in the shipped file: where nginx listens, and where
# gunicorn is.
LISTEN_LINE = "listen 8080;"
UPSTREAM_LINE = "server 127.0.0.1:8788;"
WITHOUT_NGINX = "SKIP_NGINX_TESTS"  # not GATEWAY_*: that prefix is the config's


def _nginx_binary() -> str:
    """nginx, which scripts/setup.sh installs: a missing one fails the test (CI must run
    these), unless SKIP_NGINX_TESTS=1 says to skip them."""
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if found:
        return found
    if os.environ.get(WITHOUT_NGINX) == "1":
        pytest.skip(f"nginx is not installed and {WITHOUT_NGINX}=1")
    pytest.fail(
        f"nginx is not installed: scripts/setup.sh installs it with apt-get when run as root; "
        f"or set {WITHOUT_NGINX}=1 to skip the tests of docs/deploy/nginx.conf",
        pytrace=False,
    )


class Nginx:
    """nginx running the shipped docs/deploy/nginx.conf as a child (not a daemon), with a
    prefix of its own (pid, logs, temporary files) and only its two addresses changed."""

    def __init__(self, upstream_port: int):
        binary = _nginx_binary()
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        # Started as root, nginx's workers run as nobody: they must reach the prefix.
        self.prefix = Path(tempfile.mkdtemp(prefix="gateway-nginx-"))
        self.prefix.chmod(0o755)
        shipped = NGINX_CONF.read_text()
        assert shipped.count(LISTEN_LINE) == 1 and shipped.count(UPSTREAM_LINE) == 1
        config = shipped.replace(LISTEN_LINE, f"listen 127.0.0.1:{self.port};").replace(
            UPSTREAM_LINE, f"server 127.0.0.1:{upstream_port};"
        )
        (self.prefix / "nginx.conf").write_text(config)
        self.log = self.prefix / "nginx.out"
        with open(self.log, "w") as output:
            self.process = subprocess.Popen(
                [binary, "-p", f"{self.prefix}/", "-c", str(self.prefix / "nginx.conf"), "-g", "daemon off;"],
                stdout=output, stderr=subprocess.STDOUT,
            )  # fmt: skip
        wait_until(self._listening, timeout=10)

    def _listening(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"nginx exited: {self.log.read_text()}")
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
        except OSError:
            return False
        return True

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
        shutil.rmtree(self.prefix, ignore_errors=True)


@pytest.fixture(scope="module")
def deployment(redis_server, tmp_path_factory):
    """The documented deployment: nginx (docs/deploy/nginx.conf) in front of gunicorn with
    the shipped gunicorn.conf.py and its default workers and threads."""
    gunicorn, gunicorn_port = _gunicorn_and_port(redis_server, tmp_path_factory.mktemp("home"), workers=None)
    nginx = Nginx(gunicorn_port)
    yield nginx
    nginx.stop()
    _stop(gunicorn)


def _exchange(port: int, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes as one request; the status, headers (lower-case names) and body."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        try:
            connection.sendall(raw)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused before all of it was sent (a body too large): the answer is there
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = connection.recv(65536)
            assert chunk, f"connection closed before a response: {received!r}"
            received += chunk
        head, body = received.split(b"\r\n\r\n", 1)
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        headers = {name.lower(): value.strip() for name, value in (line.split(":", 1) for line in header_lines)}
        length = int(headers.get("content-length", 0))
        while len(body) < length:
            chunk = connection.recv(65536)
            assert chunk, "connection closed inside the body"
            body += chunk
    return int(status_line.split(" ")[1]), headers, body


def _assert_json_error(status: int, headers: dict[str, str], body: bytes, expected_status: int, code: str) -> dict:
    assert status == expected_status, body
    assert headers["content-type"] == "application/json", body
    error = json.loads(body)["error"]
    assert error["code"] == code, error
    assert error["message"]
    assert isinstance(error["details"], dict)
    return error


def _request(method: str, target: bytes, *headers: bytes, body: bytes = b"") -> bytes:
    lines = [method.encode() + b" " + target + b" HTTP/1.1", b"Host: gateway.test", b"Connection: close", *headers]
    if body:
        lines.append(b"Content-Length: " + str(len(body)).encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


NGINX_ERRORS = {
    "request line over 4094 bytes": (_request("GET", b"/v1/tasks/" + b"a" * 4100 + b"/status"), 414, "uri_too_long"),
    "header line over 4094 bytes": (
        _request("GET", b"/v1/tasks/health", b"Authorization: Bearer " + b"a" * 5000),
        431,
        "headers_too_large",
    ),
    "not HTTP": (b"GARBAGE\r\n\r\n", 400, "bad_request"),
    "no Host": (b"GET /v1/tasks/health HTTP/1.1\r\n\r\n", 400, "bad_request"),
    "body over 1 MiB": (
        _request("POST", b"/v1/tasks", b"Content-Type: application/json", body=b" " * (1024 * 1024 + 1)),
        413,
        "payload_too_large",
    ),
    "chunked body over 1 MiB": (
        b"POST /v1/tasks HTTP/1.1\r\nHost: gateway.test\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n" + (b"10000\r\n" + b" " * 0x10000 + b"\r\n") * 17 + b"0\r\n\r\n",
        413,
        "payload_too_large",
    ),
    "unknown transfer coding": (_request("POST", b"/v1/tasks", b"Transfer-Encoding: gzip"), 501, "not_implemented"),
    "HTTP/2.0 request line": (b"GET /v1/tasks/health HTTP/2.0\r\nHost: a\r\n\r\n", 505, "http_version_not_supported"),
    "TRACE": (_request("TRACE", b"/v1/tasks/health"), 405, "method_not_allowed"),
    # Passed by nginx, but gunicorn would answer with HTML of its own:
    "method gunicorn refuses": (_request("AB", b"/v1/tasks/health"), 405, "method_not_allowed"),
    "long method": (_request("A" * 30, b"/v1/tasks/health"), 405, "method_not_allowed"),
    "non-ASCII request target": (_request("GET", b"/v1/tasks/\xc3\xa9t\xc3\xa9/status"), 400, "bad_request"),
    "control character in Authorization": (
        _request("GET", b"/v1/tasks/health", b"Authorization: Bearer a\x01b"),
        400,
        "bad_request",
    ),
    "control character in Content-Type": (
        _request("POST", b"/v1/tasks", b"Content-Type: application/json\x7f", body=b"{}"),
        400,
        "bad_request",
    ),
    "the error location itself": (_request("GET", b"/_gateway_error"), 404, "not_found"),
}


@pytest.mark.parametrize("case", list(NGINX_ERRORS))
def test_nginx_answers_its_own_errors_in_the_api_error_shape(deployment, case):
    raw, status, code = NGINX_ERRORS[case]
    _assert_json_error(*_exchange(deployment.port, raw), status, code)


@pytest.mark.parametrize("length", [4000, 4094, 4095, 8190, 8191, 12000])
def test_request_and_header_lines_of_any_length_get_a_json_answer(deployment, length):
    """nginx's request-line and header-line limit (4094 bytes) is below gunicorn's (8190):
    a line nginx passes on reaches the app, a longer one nginx refuses; both in JSON, never
    gunicorn's HTML."""
    padding = length - len(b"GET /v1/tasks/ HTTP/1.1")
    line = _request("GET", b"/v1/tasks/" + b"a" * padding)
    assert len(line.split(b"\r\n")[0]) == length
    expected = (405, "method_not_allowed") if length <= 4094 else (414, "uri_too_long")
    _assert_json_error(*_exchange(deployment.port, line), *expected)
    header = b"Authorization: Bearer " + b"a" * (length - len(b"Authorization: Bearer "))
    expected = (404, "task_not_found") if length <= 4094 else (431, "headers_too_large")
    _assert_json_error(*_exchange(deployment.port, _request("GET", b"/v1/tasks/x/status", header)), *expected)


def test_gateway_answers_pass_through_nginx(deployment):
    body = {"task_name": "testing.empty", "task_id": "through-nginx", "input_data": {"text": "é" * 1000}}
    response = requests.post(deployment.base + "/v1/tasks", json=body, timeout=10)
    assert response.status_code == 202, response.text
    assert requests.get(deployment.base + "/v1/tasks/through-nginx/status", timeout=10).status_code == 200
    # nginx's body limit is the app's: 1 MiB exactly passes (1 MiB + 1 is nginx's 413 above).
    largest = _padded_body(1024 * 1024)
    response = requests.post(deployment.base + "/v1/tasks", data=largest, headers=JSON_TYPE, timeout=10)
    assert response.status_code == 202, response.text
    # The app's own errors, unchanged: a doubled slash, a method with its Allow header.
    _assert_json_error(*_exchange(deployment.port, _request("GET", b"/v1//tasks/health")), 404, "not_found")
    status, headers, raw = _exchange(deployment.port, _request("PUT", b"/v1/tasks"))
    _assert_json_error(status, headers, raw, 405, "method_not_allowed")
    assert "POST" in headers["allow"]


def test_a_console_form_reaches_the_app_through_nginx_with_its_session_cookie(deployment):
    """The console's CSRF token is checked against its session cookie: nginx must pass
    the cookie on, or every form would be refused as expired (400)."""
    browser = requests.Session()
    page = browser.get(deployment.base + "/console/tasks/no-such-task/delete", timeout=10)
    assert page.status_code == 200
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    response = browser.post(page.url, data={"csrf_token": token}, allow_redirects=False, timeout=10)
    assert response.status_code == 404  # the form was accepted, and the task is unknown
    assert "No such page, or no such task" in response.text


def test_nginx_answers_502_in_the_api_error_shape_when_gunicorn_is_down():
    nginx = Nginx(upstream_port=free_port())  # nothing listens there
    try:
        for path in (b"/v1/tasks/health", b"/v1/tasks/t-1/status.html"):
            _assert_json_error(*_exchange(nginx.port, _request("GET", path)), 502, "gateway_unavailable")
    finally:
        nginx.stop()


class SlowClients:
    """Connections that trickle a request one byte a second and never finish it in the
    test's time: half of them in the headers, half in a body (headers complete,
    Content-Length 100000)."""

    SLOW_HEADERS = b"GET /v1/tasks/health HTTP/1.1\r\nHost: gateway.test\r\nX-Slow: " + b"a" * 1000
    BODY_HEADERS = (
        b"POST /v1/tasks HTTP/1.1\r\nHost: gateway.test\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100000\r\n\r\n"
    )

    def __init__(self, port: int, count: int):
        # Each connection with the bytes it has still to send, one a second.
        self.pending: list[tuple[socket.socket, bytes]] = []
        for number in range(count):
            connection = socket.create_connection(("127.0.0.1", port), timeout=5)
            if number % 2:
                connection.sendall(self.BODY_HEADERS)
                self.pending.append((connection, b"{" + b" " * 1000))
            else:
                self.pending.append((connection, self.SLOW_HEADERS))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._trickle, daemon=True)
        self._thread.start()

    def _trickle(self) -> None:
        position = 0
        while True:
            for connection, data in self.pending:
                try:
                    connection.send(data[position : position + 1])
                except OSError:
                    pass  # dropped: still_waiting() counts it out
            position += 1
            if self._stop.wait(1.0):
                return

    def still_waiting(self) -> int:
        """How many have had no answer and are not closed."""
        waiting = 0
        for connection, _ in self.pending:
            connection.setblocking(False)
            try:
                connection.recv(1)  # data or b"" (closed): not waiting
            except BlockingIOError:
                waiting += 1
            except OSError:
                pass
            finally:
                connection.setblocking(True)
        return waiting

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for connection, _ in self.pending:
            connection.close()


def _latencies_while_slow_clients_hang(port: int, slow: int = 100, seconds: float = 6.0) -> tuple[list, int]:
    """Open ``slow`` slow connections, then for ``seconds`` time a health check and a
    task creation every half second; the timings (or errors) and how many slow
    connections were still hanging at the end."""
    clients = SlowClients(port, slow)
    base = f"http://127.0.0.1:{port}/v1/tasks"
    timings: list = []
    try:
        time.sleep(1.5)  # every slow connection has sent its first bytes
        deadline = time.monotonic() + seconds
        number = 0
        while time.monotonic() < deadline:
            number += 1
            for method, url, body in (
                ("GET", base + "/health", None),
                ("POST", base, {"task_name": "testing.empty", "task_id": f"beside-slow-{number}", "input_data": {}}),
            ):
                started = time.monotonic()
                try:
                    status = requests.request(method, url, json=body, timeout=5).status_code
                except requests.RequestException as error:
                    status = type(error).__name__
                timings.append((method, status, round(time.monotonic() - started, 3)))
            time.sleep(0.5)
        return timings, clients.still_waiting()
    finally:
        clients.close()


def test_slow_clients_do_not_delay_a_request_through_nginx(deployment):
    """Fifty connections trickling headers and fifty trickling bodies: straight to
    gunicorn, ten of them took all its 4 x 2 threads and health checks timed out; through
    nginx, which reads whole requests before it passes them on, every other request is
    answered within 1 s while they hang."""
    timings, still_waiting = _latencies_while_slow_clients_hang(deployment.port, slow=100)
    assert still_waiting == 100, "the slow connections must still hang while the requests are timed"
    assert len(timings) >= 10
    assert all(status in (200, 202) for _, status, _ in timings), timings
    assert max(seconds for _, _, seconds in timings) < 1.0, timings


def test_nginx_drops_a_client_whose_headers_take_10_s_or_whose_body_pauses_10_s(deployment):
    """client_header_timeout bounds the whole header; client_body_timeout a pause in a body."""
    trickling = socket.create_connection(("127.0.0.1", deployment.port), timeout=5)
    pausing = socket.create_connection(("127.0.0.1", deployment.port), timeout=5)
    pausing.sendall(SlowClients.BODY_HEADERS + b"{")
    started = time.monotonic()

    def ended(connection) -> bool:
        # Closed, reset, or answered (and then closed): no longer waiting.
        connection.setblocking(False)
        try:
            return connection.recv(65536) is not None
        except BlockingIOError:
            return False
        except OSError:
            return True
        finally:
            connection.setblocking(True)

    try:
        trickled_until_dropped = True
        for byte in SlowClients.SLOW_HEADERS[:20]:  # a byte a second; dropped at 10 s
            if ended(trickling):
                break
            try:
                trickling.send(bytes([byte]))
            except OSError:
                break
            time.sleep(1.0)
        else:
            trickled_until_dropped = False
        assert trickled_until_dropped
        wait_until(lambda: ended(pausing), timeout=10)
        assert time.monotonic() - started < 25  # a bound for a 10 s timeout, not a benchmark
    finally:
        trickling.close()
        pausing.close()


# --- the client's address and request id, through nginx to the logs (issue 12 items 2, 4) --

OBSERVED_DB = 14  # apart from the other stacks' databases: their workers must not take our jobs
CLIENT_ADDRESS = "127.0.0.2"  # the test's side of each connection: not nginx's 127.0.0.1
API_TOKEN = "deploy-token-4f9a0c2e7b1d"
INPUT_MARKER = "INPUT-MARKER-d41d8c"
QUERY_SECRET = "QUERY-SECRET-8e2f"


def _from_client_address(port: int, method: str, path: str, body: dict | None = None, headers=None):
    """One request from 127.0.0.2 to 127.0.0.1:``port``: (status, headers, parsed body)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=40, source_address=(CLIENT_ADDRESS, 0))
    try:
        raw = json.dumps(body).encode() if body is not None else None
        sent = {"Authorization": f"Bearer {API_TOKEN}", **(JSON_TYPE if raw else {}), **(headers or {})}
        connection.request(method, path, body=raw, headers=sent)
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, json.loads(response.read() or b"null")
    finally:
        connection.close()


def _log_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


@pytest.fixture(scope="module")
def observed(redis_server, tmp_path_factory):
    """nginx (the shipped file) in front of gunicorn trusting one proxy, with a worker,
    tokens and signed callbacks: every process's log kept."""
    redis.Redis(port=redis_server.port, db=OBSERVED_DB).flushdb()
    folder = tmp_path_factory.mktemp("observed")
    env = {
        "GATEWAY_TRUSTED_PROXIES": "1",
        "GATEWAY_API_TOKENS": json.dumps({API_TOKEN: "acme"}),
        "GATEWAY_TENANT_SIGNING_SECRETS": json.dumps({"acme": SECRET}),
    }
    stack = Stack(redis_server, folder, workers=1, db=OBSERVED_DB, env=env)
    try:
        nginx = Nginx(stack.port)
    except BaseException:
        stack.stop()
        raise
    receiver = Receiver()
    yield stack, nginx, receiver
    receiver.stop()
    nginx.stop()
    stack.stop()


def test_create_hit_status_and_signed_callback_through_nginx_are_logged_with_the_clients_address(observed):
    stack, nginx, receiver = observed
    callback = receiver.url("/hook") + f"?sig={QUERY_SECRET}"
    body = {"task_name": "demo.echo", "task_id": "observed-1", "input_data": {"text": INPUT_MARKER}}
    status, headers, created = _from_client_address(
        nginx.port, "POST", "/v1/tasks", {**body, "callback": callback}, {"X-Request-ID": "client-req-1"}
    )
    assert status == 202, created
    assert headers["x-request-id"] == "client-req-1"
    [delivery] = receiver.wait_for(1, timeout=20)
    assert Webhook(SECRET).verify(delivery["raw"], delivery["headers"])["status"] == "completed"
    status, headers, hit = _from_client_address(nginx.port, "POST", "/v1/tasks", body)
    assert (status, hit["reuse_info"]["reuse_hit"], hit["reuse_info"]["state"]) == (200, True, "completed")
    made_by_nginx = headers["x-request-id"]
    assert len(made_by_nginx) == 32 and int(made_by_nginx, 16) >= 0  # nginx's $request_id
    status, _, document = _from_client_address(nginx.port, "GET", "/v1/tasks/observed-1/status")
    assert (status, document["stages"]["demo.echo"]["status"]) == (200, "SUCCESS")

    def requests_logged() -> list[dict]:  # request lines are written in batches (GATEWAY_LOG_FLUSH_SECONDS)
        lines = _log_lines(stack.web.log_path)
        return [
            line for line in lines if line.get("logger") == "gateway.request" and line["path"] != "/v1/tasks/health"
        ]

    logged = wait_until(lambda: len(requests_logged()) >= 3 and requests_logged(), timeout=10)
    # Each gunicorn process writes its own batches: the lines are in the order of their
    # processes' batches, so they are matched to the requests by what they say.
    requests_seen = sorted(logged, key=lambda line: (line["method"] != "POST", line["status"] != 202))
    assert [(line["method"], line["status"], line["verdict"]) for line in requests_seen] == [
        ("POST", 202, "miss"),
        ("POST", 200, "completed"),
        ("GET", 200, None),
    ]
    for line in requests_seen:
        # nginx connects from 127.0.0.1; the client's own address comes from X-Forwarded-For.
        assert line["client"] == CLIENT_ADDRESS, line
        assert (line["task_id"], line["tenant"]) == ("observed-1", "acme")
    assert [line["request_id"] for line in requests_seen[:2]] == ["client-req-1", made_by_nginx]

    # The worker's lines carry the id of the request that queued the run and the delivery.
    [worker] = stack.workers
    jobs = wait_until(
        lambda: (
            [line for line in _log_lines(worker.log_path) if line.get("logger") == "gateway.jobs"]
            if any(line.get("message") == "delivery sent" for line in _log_lines(worker.log_path))
            else None
        ),
        timeout=10,
    )
    assert {line["message"]: line["request_id"] for line in jobs} == {
        "run started": "client-req-1",
        "run ended": "client-req-1",
        "delivery sent": "client-req-1",
    }
    access = (nginx.prefix / "access.log").read_text()
    assert '"client":"127.0.0.2"' in access and '"request_id":"client-req-1"' in access

    # Nothing secret or user-given in any log of the run: gunicorn, worker, nginx.
    logs = "".join(path.read_text(errors="replace") for path in stack.log_dir.glob("*.log"))
    logs += access + (nginx.prefix / "error.log").read_text()
    assert INPUT_MARKER in delivery["raw"].decode()  # it was there to leak
    for secret in (API_TOKEN, SECRET, SECRET.removeprefix("whsec_"), INPUT_MARKER, QUERY_SECRET):
        assert secret not in logs, secret


def test_a_wait_is_answered_through_nginx_when_its_run_ends(observed):
    stack, nginx, _ = observed
    body = {"task_name": "demo.sleep", "task_id": "observed-wait", "input_data": {"seconds": 2}}
    status, _, answer = _from_client_address(nginx.port, "POST", "/v1/tasks?wait=25", body)
    assert status == 200, answer
    assert answer["result"]["status"] == "SUCCESS"


def test_x_forwarded_for_is_believed_only_from_trusted_proxies(redis_server, tmp_path, observed):
    stack, _, _ = observed
    spoofed = {"X-Forwarded-For": "203.0.113.9", "X-Request-ID": "spoof-trusted"}
    # The stack trusts one proxy: a direct request is believed (so gunicorn must be
    # reachable only from nginx, docs/OPERATIONS.md).
    assert _from_client_address(stack.port, "GET", "/v1/tasks/supported-tasks", headers=spoofed)[0] == 200
    log = tmp_path / "gunicorn.log"
    process, port = _gunicorn_and_port(redis_server, tmp_path, log=log)  # GATEWAY_TRUSTED_PROXIES unset: 0
    try:
        headers = {"X-Forwarded-For": "203.0.113.9", "X-Request-ID": "spoof-untrusted"}
        status, _, _ = _from_client_address(port, "GET", "/v1/tasks/supported-tasks", headers=headers)
        assert status == 200
        [line] = wait_until(
            lambda: [line for line in _log_lines(log) if line.get("request_id") == "spoof-untrusted"], timeout=10
        )
        assert line["client"] == CLIENT_ADDRESS
    finally:
        _stop(process)
    [trusted] = wait_until(  # written with its process's next batch
        lambda: [line for line in _log_lines(stack.web.log_path) if line.get("request_id") == "spoof-trusted"],
        timeout=10,
    )
    assert trusted["client"] == "203.0.113.9"
