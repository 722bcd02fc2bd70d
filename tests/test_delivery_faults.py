"""Deliveries that go wrong: hosts that cannot be sent to, tries that raise, receivers
that answer slowly, and what RQ keeps of a failed delivery job (issue 9, items 2 and 3)."""

from __future__ import annotations

import socket
import threading
import time

import pytest
import redis
from rq.registry import FailedJobRegistry

from gateway import queues, urlpolicy
from gateway.store import Store
from tests.test_reuse import create, stage
from tests.test_ssrf import FakeDNS

ECHO = "demo.echo"


@pytest.fixture
def dns(monkeypatch):
    fake = FakeDNS({})
    monkeypatch.setattr(urlpolicy, "getaddrinfo", fake)
    return fake


def rq_connection(app) -> redis.Redis:
    with app.app_context():
        return queues.get_queues().connection


def delivery_jobs(app) -> list[bytes]:
    return sorted(rq_connection(app).keys("rq:job:dlv-*"))


# -- create time ---------------------------------------------------------------------

UNUSABLE = [
    "http://a..b/hook",  # empty label
    f"http://{'a' * 64}.example/hook",  # label over 63 bytes
    f"http://{'.'.join(['a' * 63] * 4)}.example/hook",  # name over 253 bytes
    "http://a b/hook",  # space
    "http://a%2eb/hook",  # a character outside host names
    "http://☃.example/hook",  # IDNA 2008 cannot encode it
    "http://\u0301a.example/hook",  # a label that starts with a combining mark: IDNA refuses it
]


@pytest.mark.parametrize("url", UNUSABLE)
def test_hosts_that_cannot_be_sent_to_are_refused_at_create(make_app, task_id, url):
    app = make_app()
    response = create(app.test_client(), task_id, callback=url)
    assert response.status_code == 400
    assert response.json["error"]["code"] == "validation_error"
    assert "callback" in response.json["error"]["details"]
    assert delivery_jobs(app) == []


def test_international_name_is_sent_in_its_ascii_form(make_app, work, task_id, receiver, dns):
    """``例え.jp`` used to pass the create and then raise in every delivery try (a
    ``Host`` header that is not Latin-1): now DNS, ``Host`` and TLS get ``xn--r8jz45g.jp``."""
    dns.answers["xn--r8jz45g.jp"] = ["127.0.0.1"]
    app = make_app()
    client = app.test_client()
    port = receiver.server.server_port
    url = f"http://例え.jp:{port}/hook"
    assert create(client, task_id, callback=url).status_code == 202
    work(app)
    [delivered] = receiver.wait_for(1)
    assert delivered["headers"]["host"] == f"xn--r8jz45g.jp:{port}"
    assert dns.lookups == ["xn--r8jz45g.jp"]
    [record] = stage(client, task_id)["callbacks"]
    assert (record["url"], record["status"], record["attempts"]) == (url, "sent", 1)


# -- a try that raises -----------------------------------------------------------------


def test_a_try_that_raises_is_a_recorded_failed_try_retried_on_schedule(make_app, work, task_id, receiver, dns):
    """A host the policy lets through but whose resolution breaks in an unexpected way
    (here: an answer that is not an address, so ``ipaddress`` raises ValueError)."""
    dns.answers["broken.example"] = ["not-an-address"]
    app = make_app(CALLBACK_RETRY_INTERVALS=[0, 0])
    client = app.test_client()
    create(client, task_id, input_data={"secret": "payload-marker"}, callback="http://broken.example/hook")
    work(app)
    [record] = stage(client, task_id)["callbacks"]
    assert record["status"] == "failed"
    assert record["attempts"] == 3  # one try and the two retries of the schedule
    assert [t["error"].split(":")[0] for t in record["tries"]] == ["internal error"] * 3
    assert "ValueError" in record["last_error"]
    connection = rq_connection(app)
    assert FailedJobRegistry(queues.CALLBACK_QUEUE, connection=connection).get_job_ids() == []
    assert delivery_jobs(app) == []  # no job left holding a copy of the result


def test_a_try_that_raises_once_is_retried_and_delivered(make_app, work, task_id, receiver, monkeypatch):
    answers = iter([ValueError("resolver broke"), [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", 0))]])

    def resolver(host, port, type=0, **_):  # noqa: A002 (socket's parameter name)
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(urlpolicy, "getaddrinfo", resolver)
    app = make_app()
    client = app.test_client()
    create(client, task_id, callback=receiver.url())
    work(app)
    receiver.wait_for(1)
    [record] = stage(client, task_id)["callbacks"]
    assert (record["status"], record["attempts"]) == ("sent", 2)
    assert record["tries"][0]["error"] == "internal error: ValueError: resolver broke"


def test_failed_delivery_job_keeps_its_copy_of_the_result_300_s_at_most(make_app, work, task_id, receiver, monkeypatch):
    """A job fails only when recording its try fails (Redis trouble) or its worker dies;
    RQ then keeps the job (its arguments hold the result), its failed-registry entry
    and its failure result for ``DELIVERY_FAILURE_TTL`` seconds, not a day."""

    def redis_down(*args, **kwargs):
        raise redis.exceptions.ConnectionError("Redis went away while recording")

    app = make_app()
    client = app.test_client()
    create(client, task_id, callback=receiver.url())
    monkeypatch.setattr(Store, "record_delivery", redis_down)
    work(app)
    receiver.wait_for(1)
    connection = rq_connection(app)
    registry = FailedJobRegistry(queues.CALLBACK_QUEUE, connection=connection)
    [job_id] = registry.get_job_ids()
    now = time.time()
    assert 0 < connection.ttl(f"rq:job:{job_id}") <= 300
    assert connection.zscore(registry.key, job_id) <= now + 300
    for key in connection.keys(f"rq:results:{job_id}*"):
        assert 0 < connection.ttl(key) <= 300


# -- a slow receiver -------------------------------------------------------------------


class TricklingReceiver:
    """Reads a request, then answers one byte per second (a 200 in the end)."""

    ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-Padding: " + b"x" * 40 + b"\r\n\r\n"

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.bytes_sent = 0
        self.closed_early = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        with conn:
            request = b""
            while b"\r\n\r\n" not in request:
                request += conn.recv(65536)
            head, _, body = request.partition(b"\r\n\r\n")
            headers = dict(line.split(b":", 1) for line in head.split(b"\r\n")[1:])
            length = int({name.strip().lower(): value for name, value in headers.items()}[b"content-length"])
            while len(body) < length:
                body += conn.recv(65536)
            for byte in self.ANSWER:
                try:
                    conn.sendall(bytes([byte]))
                except OSError:
                    self.closed_early.set()
                    return
                self.bytes_sent += 1
                time.sleep(1)

    def close(self) -> None:
        self.sock.close()


def test_slow_receiver_try_ends_at_its_deadline_and_is_recorded_as_a_timeout(make_app, work, task_id):
    """GATEWAY_CALLBACK_TIMEOUT_SECONDS bounds the whole try: the answer trickles at one
    byte a second (~80 s in all), each read well within the timeout."""
    trickle = TricklingReceiver()
    app = make_app(CALLBACK_TIMEOUT_SECONDS=2, CALLBACK_RETRY_INTERVALS=[])
    client = app.test_client()
    create(client, task_id, callback=f"http://127.0.0.1:{trickle.port}/hook")
    started = time.monotonic()
    work(app)
    elapsed = time.monotonic() - started
    trickle.close()
    [record] = stage(client, task_id)["callbacks"]
    assert record["status"] == "failed"
    assert record["attempts"] == 1
    assert record["last_status_code"] is None
    assert record["last_error"] == "Timeout: no complete answer within 2 s"
    # Generous against the failure mode (the whole ~80 s answer), tight enough to see it.
    assert elapsed < 15
    assert trickle.bytes_sent < len(TricklingReceiver.ANSWER) / 2
