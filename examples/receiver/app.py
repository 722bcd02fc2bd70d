"""A sample callback receiver: verifies each delivery's Standard Webhooks signature,
drops a delivery it has already handled (same ``webhook-id``), answers at once, and shows
every field of the payload.

Run it beside the quickstart (docs/CALLBACKS.md)::

    WEBHOOK_SECRET=$(cat var/callback-signing-secret) .venv/bin/python examples/receiver/app.py

and send callbacks to ``http://127.0.0.1:8789/hook``. ``--port`` picks another port.
In production run ``create_app()`` under gunicorn (``gunicorn 'app:create_app()'`` from
this folder) and keep the seen ids where every process sees them (a unique key in your
database): this one remembers them in its own memory.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import sys
import threading
from collections import OrderedDict

from flask import Flask, request
from standardwebhooks import Webhook, WebhookVerificationError

DEFAULT_PORT = 8789
#: How many delivery ids are remembered: a duplicate comes within the gateway's retry
#: schedule (under an hour by default), long before this many newer deliveries.
REMEMBERED_IDS = 100_000


class SeenIds:
    """The most recent delivery ids, safe to share between request threads."""

    def __init__(self, limit: int = REMEMBERED_IDS) -> None:
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._limit = limit
        self._lock = threading.Lock()

    def first_time(self, delivery_id: str) -> bool:
        """Record ``delivery_id``; False when it was already recorded."""
        with self._lock:
            if delivery_id in self._ids:
                return False
            self._ids[delivery_id] = None
            if len(self._ids) > self._limit:
                self._ids.popitem(last=False)
            return True


def show(delivery_id: str, payload: dict) -> None:
    """Print every field of a verified payload: what your handling code would read."""
    result = payload["result"]
    lines = [
        f"callback {delivery_id} verified",
        f"  task_id     {payload['task_id']}",
        f"  task_name   {payload['task_name']}",
        f"  status      {payload['status']}",
        f"  reuse_info  {json.dumps(payload['reuse_info'])}",
        f"  timestamp   {payload['timestamp']}",
        f"  result.status        {result['status']}",
        f"  result.input_params  {json.dumps(result['input_params'], ensure_ascii=False)}",
        f"  result.output        {json.dumps(result['output'], ensure_ascii=False)}",
        f"  result.error         {json.dumps(result['error'], ensure_ascii=False)}",
        f"  result.duration      {result['duration']}",
    ]
    print("\n".join(lines), flush=True)


def handle_in_background(work: queue.Queue) -> None:
    """Handle verified deliveries one by one, after their answer was sent."""
    while True:
        delivery_id, payload = work.get()
        show(delivery_id, payload)  # your own handling goes here: store the result, start the next stage…


def create_app(secret: str | None = None) -> Flask:
    """The receiver; ``secret`` defaults to the ``WEBHOOK_SECRET`` environment variable."""
    app = Flask(__name__)
    webhook = Webhook(secret or os.environ["WEBHOOK_SECRET"])
    seen = SeenIds()
    work: queue.Queue = queue.Queue()
    threading.Thread(target=handle_in_background, args=(work,), daemon=True).start()

    @app.post("/hook")
    def receive():
        try:
            # The raw bytes as sent: a parsed and re-serialised body would not verify.
            payload = webhook.verify(request.get_data(), dict(request.headers))
        except (WebhookVerificationError, ValueError) as error:
            # Not from the gateway (or a wrong secret). Any answer but 2xx or 410 is retried.
            print(f"refused a callback: {error}", flush=True)
            return {"error": "signature not verified"}, 400
        delivery_id = request.headers["webhook-id"]
        if not seen.first_time(delivery_id):
            # Delivered again (the gateway did not see our answer in time): already handled.
            # 2xx, so that the gateway stops sending it.
            print(f"duplicate {delivery_id}: already handled, ignored", flush=True)
            return "", 204
        # Answer at once and work afterwards: the gateway waits 10 s at most, then retries.
        work.put((delivery_id, payload))
        return "", 204

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port on 127.0.0.1 (default {DEFAULT_PORT})")
    arguments = parser.parse_args()
    if not os.environ.get("WEBHOOK_SECRET"):
        sys.exit("set WEBHOOK_SECRET to the whsec_… secret the gateway signs with (docs/CALLBACKS.md)")
    print(f"receiver on http://127.0.0.1:{arguments.port}/hook", flush=True)
    create_app().run(host="127.0.0.1", port=arguments.port)


if __name__ == "__main__":
    main()
