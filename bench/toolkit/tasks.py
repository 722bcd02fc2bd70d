"""Tasks for the benchmarks: created through the API, their stages read straight from Redis
(cheaper than the API while thousands are polled)."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import redis
import requests

HIT_ID = "bench-hit"
HIT_BODY = {"task_name": "demo.echo", "task_id": HIT_ID, "input_data": {"text": "hi"}}
STAGE_FIELD = "s:demo.echo"  # the stage's hash field (gateway/documents.py STAGE_FIELD + task_name)


def doc_key(task_id: str) -> str:
    return f"gw:task:{{{task_id}}}"  # gateway/keys.py task_document()


def stage_states(client: redis.Redis, task_ids: list[str]) -> list[dict | None]:
    """Each task's demo.echo stage state (None for a task not stored), in one pipeline."""
    pipe = client.pipeline(transaction=False)
    for task_id in task_ids:
        pipe.hget(doc_key(task_id), STAGE_FIELD)
    return [json.loads(value) if value else None for value in pipe.execute()]


def post_many(create_url: str, bodies: list[dict], threads: int = 8) -> None:
    """POST every body with a few client threads (one keep-alive session each); each must be 202."""
    local, sessions = threading.local(), []

    def post(body: dict) -> None:
        if not hasattr(local, "session"):
            local.session = requests.Session()
            sessions.append(local.session)
        answer = local.session.post(create_url, json=body, timeout=10)
        if answer.status_code != 202:
            raise RuntimeError(f"POST {body['task_id']}: {answer.status_code} {answer.text[:200]}")

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(post, bodies))
    for session in sessions:  # idle keep-alive connections would sit in a gunicorn worker
        session.close()
