"""Failpoints: a real SIGKILL at an exact place in a worker or web process, for crashes
that a kill sent from outside would hit only by luck (the windows last microseconds).

Loaded like a task plugin (``GATEWAY_TASK_MODULES=tests.plugin_tasks,tests.faults.failpoints``),
so web and worker processes both have it. Nothing else changes: each point fires once,
and only for task ids with its prefix.

* ``crash-after-finish-…``: the worker dies after the run's end is written
  (``finish_run.lua``) and before its callbacks are queued; it takes its process group
  (RQ's scheduler) with it, as the harness's SIGKILL does.
* ``crash-after-claim-…``: the web process dies after the create's claim
  (``claim_stage.lua``) and before its run is queued; gunicorn starts another.
"""

from __future__ import annotations

import os
import signal
import tempfile
from pathlib import Path

from gateway import queues

AFTER_FINISH = "crash-after-finish-"
AFTER_CLAIM = "crash-after-claim-"


def _first_time(task_id: str) -> bool:
    """True once per task id across processes (a marker file), so a rerun goes through."""
    folder = os.environ.get("FAULTS_FAILPOINT_DIR") or tempfile.gettempdir()  # the harness's scratch folder
    marker = Path(folder) / f"failpoint-{task_id}"
    try:
        marker.touch(exist_ok=False)
        return True
    except FileExistsError:
        return False


_enqueue_deliveries = queues.Queues.enqueue_deliveries
_enqueue_run = queues.Queues.enqueue_run


def _enqueue_deliveries_or_die(self, task_id, task_name, delivery_ids, result):
    if task_id.startswith(AFTER_FINISH) and _first_time(task_id):
        os.killpg(os.getpgid(0), signal.SIGKILL)
    _enqueue_deliveries(self, task_id, task_name, delivery_ids, result)


def _enqueue_run_or_die(self, task_id, task_name, token, **options):
    if task_id.startswith(AFTER_CLAIM) and _first_time(task_id):
        os.kill(os.getpid(), signal.SIGKILL)
    _enqueue_run(self, task_id, task_name, token, **options)


# Every caller of enqueue_deliveries and enqueue_run goes through the class.
queues.Queues.enqueue_deliveries = _enqueue_deliveries_or_die
queues.Queues.enqueue_run = _enqueue_run_or_die
