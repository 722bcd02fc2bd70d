"""The floor: about the least a Flask app under the gateway's gunicorn flags can do
for a create request. It parses the JSON body, makes one Redis GET and answers JSON.

The gateway's hit path does this plus schema validation, one EVALSHA that writes,
and a bigger response; gateway/floor requests/s says what that extra work costs.
Run as ``gunicorn -c gunicorn.conf.py bench.floor_app:app`` from the repository root.
"""

from __future__ import annotations

import os

import redis
from flask import Flask, jsonify, request

KEY = "bench:floor"

app = Flask(__name__)
# Same client options that matter as the gateway's store (decoded strings, pooled).
client = redis.Redis.from_url(os.environ["GATEWAY_REDIS_URL"], decode_responses=True)


@app.post("/v1/tasks")  # the gateway's path, so both take the same wrk script
def create():
    body = request.get_json()
    return jsonify({"task_id": body.get("task_id"), "status": "completed", "value": client.get(KEY)})


@app.get("/health")
def health():
    return jsonify({"status": "ok"})
