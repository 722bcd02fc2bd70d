"""RQ's own SimpleWorker, set up as ``flask --app wsgi worker`` ran it before
``gateway.worker.GatewayWorker``: the same Redis client settings, maintenance interval,
scheduler and log level. ``bench/runs.py`` measures RQ's ceiling with it.

``python bench/rq_worker.py REDIS_URL QUEUE...``
"""

from __future__ import annotations

import sys

from rq import Queue, SimpleWorker

from gateway.config import DEFAULTS
from gateway.connections import connect
from gateway.worker import MAINTENANCE_INTERVAL_SECONDS

if __name__ == "__main__":
    connection = connect(sys.argv[1], DEFAULTS, decode_responses=False)
    queues = [Queue(name, connection=connection) for name in sys.argv[2:]]
    worker = SimpleWorker(queues, connection=connection, maintenance_interval=MAINTENANCE_INTERVAL_SECONDS)
    worker.work(with_scheduler=True, logging_level="WARNING")
