"""A task on a node of its own, ``other``, for tests/test_queue_redis_stack.py: its gunicorn
and worker processes load this module (GATEWAY_TASK_MODULES); the test process does not,
so that the registry other tests see stays as it was."""

from __future__ import annotations

from gateway.tasks import task
from tests.plugin_tasks import count

task("other.count")(count)
