"""A callback receiver on loopback: a real HTTP server that records every request and
answers from a script.

Each request is recorded as a dict: ``path``, ``headers`` (lower-case names), ``raw``
(the body), ``json`` (the parsed body, None if it is not JSON), ``webhook_id``,
``received`` (``time.monotonic()`` once the whole body is read) and ``answered`` (the
status sent, None until it is sent or for a stalled request).

Answers: ``plan(path, [...])`` answers the next requests on that path in order;
otherwise ``responses`` answers the next requests on any path in order; then 200. An
answer is a status (``503``), a status with headers (``(503, {"Retry-After": "2"})``) or
``STALL``: the request is held without an answer until ``release()`` or ``stop()`` (a
receiver that hangs while a worker waits on it). ``stop()`` and ``start()`` take the
receiver down and bring it back on the same port.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from gateway.testing.waiting import WaitTimeout

STALL = "stall"
Answer = int | tuple[int, dict[str, str]] | str


def _status_and_headers(answer: Answer) -> tuple[int, dict[str, str]]:
    if isinstance(answer, int):
        return answer, {}
    status, headers = answer
    return status, dict(headers)


def _json_or_none(body: bytes):
    try:
        return json.loads(body)
    except ValueError:
        return None


class Receiver:
    """Started on construction, on ``port`` or a free one; ``stop()`` when done."""

    def __init__(self, port: int = 0) -> None:
        self.port = port
        self.requests: list[dict] = []
        self.responses: list[Answer] = []  # for the next requests on any path, in order
        self.condition = threading.Condition()
        self._plans: dict[str, list[Answer]] = {}
        self._release = threading.Event()
        self.server: ThreadingHTTPServer | None = None
        self.start()

    def __enter__(self) -> Receiver:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def plan(self, path: str, answers: list[Answer]) -> None:
        with self.condition:
            self._plans[path] = list(answers)

    def release(self) -> None:
        """Let every stalled request go (closed without an answer)."""
        self._release.set()

    def hold_again(self) -> None:
        """After a ``release()``: STALL answers hold their requests again, until the next."""
        self._release.clear()

    def _next_answer(self, path: str) -> Answer:
        plan = self._plans.get(path)
        if plan:
            return plan.pop(0)
        return self.responses.pop(0) if self.responses else 200

    def start(self) -> Receiver:
        if self.server is not None:
            return self
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received = time.monotonic()  # the whole request is in
                record = {
                    "path": self.path,
                    "headers": {name.lower(): value for name, value in self.headers.items()},
                    "raw": body,
                    "json": _json_or_none(body),
                    "webhook_id": self.headers.get("webhook-id"),
                    "received": received,
                    "answered": None,
                }
                with receiver.condition:
                    answer = receiver._next_answer(self.path)
                    receiver.requests.append(record)
                    receiver.condition.notify_all()
                if answer == STALL:
                    receiver._release.wait(120)
                    return  # closed without an answer: the sender saw nothing come back
                status, headers = _status_and_headers(answer)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()
                record["answered"] = status

            def log_message(self, *args):
                pass

        self._release.clear()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_port
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._release.set()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def requests_for(self, path: str | None = None) -> list[dict]:
        """The requests received so far, on ``path`` or on any."""
        with self.condition:
            return [r for r in self.requests if path is None or r["path"] == path]

    def wait_for(self, count: int, timeout: float = 10.0, path: str | None = None) -> list[dict]:
        """The requests (on ``path`` or any) once there are ``count``; ``WaitTimeout`` after ``timeout``."""
        with self.condition:
            matching = lambda: [r for r in self.requests if path is None or r["path"] == path]  # noqa: E731
            if not self.condition.wait_for(lambda: len(matching()) >= count, timeout):
                raise WaitTimeout(f"expected {count} callbacks, got {len(matching())}")
            return matching()

    def delivered(self, path: str | None = None) -> dict[str, dict]:
        """webhook-id → the first of its requests that was answered 2xx."""
        found: dict[str, dict] = {}
        for record in self.requests_for(path):
            if record["answered"] is not None and 200 <= record["answered"] < 300:
                found.setdefault(record["webhook_id"], record)
        return found
