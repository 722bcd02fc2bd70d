"""What the console's overview shows: queue depths per node, the workers RQ knows and
what each runs, the last hour's runs and deliveries per minute, and the recent failures.

Queues and workers are read from the queue Redis as RQ keeps them (a few commands per
queue and per worker: the overview is for a person, not a poller). The activity and the
failure lists are the bounded lists that ``gateway.recent`` writes beside the existing
writes; this module only reads them, for the viewer's tenant.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from rq import Worker
from rq.exceptions import NoSuchJobError
from rq.registry import FailedJobRegistry, ScheduledJobRegistry, StartedJobRegistry

from gateway import tasks
from gateway.console.charts import Chart, bar_chart
from gateway.jobguard import SERIALIZER, GatewayJob
from gateway.queues import CALLBACK_QUEUE, get_queues
from gateway.recent import get_recent
from gateway.tenancy import public, tenant_of

if TYPE_CHECKING:
    from gateway.console.session import Viewer

log = logging.getLogger(__name__)

#: The activity series, in the order the charts are drawn: (key, title).
ACTIVITY_SERIES = (
    ("runs_started", "runs started"),
    ("runs_completed", "runs completed"),
    ("runs_failed", "runs failed"),
    ("deliveries_sent", "deliveries sent"),
    ("deliveries_failed", "deliveries failed"),
)
RECENT_LIMIT = 50


@dataclass(frozen=True)
class QueueDepth:
    name: str
    queued: int
    scheduled: int
    started: int
    failed: int


@dataclass(frozen=True)
class Running:
    """What a worker runs: a stage's run or a delivery try."""

    kind: str  # run | delivery
    task_id: str | None  # public id; None when hidden from this viewer
    tenant: str | None
    task_name: str | None


@dataclass(frozen=True)
class WorkerRow:
    name: str
    state: str
    queues: list[str]
    last_heartbeat: str | None
    successful: int
    failed: int
    running: Running | None


@dataclass
class Overview:
    queues: list[QueueDepth]
    workers: list[WorkerRow]
    charts: list[Chart] = field(default_factory=list)
    failed_stages: list[dict[str, Any]] = field(default_factory=list)
    failed_deliveries: list[dict[str, Any]] = field(default_factory=list)


def queue_depths() -> list[QueueDepth]:
    """Every node's queue (from the registered tasks) on its own queue Redis, and the
    callbacks queue of each queue Redis (a stage's deliveries go to its node's server)."""
    queues = get_queues()
    servers = queues.servers.all()
    wanted = [(name, None) for name in sorted(tasks.by_node())]
    wanted += [(CALLBACK_QUEUE, server) for server in servers]
    depths = []
    for name, server in wanted:
        queue = queues.get(name, server)
        shown = name if server is None or len(servers) == 1 else f"{name} ({server.label})"
        depths.append(
            QueueDepth(
                name=shown,
                queued=queue.count,
                scheduled=ScheduledJobRegistry(queue=queue).count,
                started=StartedJobRegistry(queue=queue).count,
                failed=FailedJobRegistry(queue=queue).count,
            )
        )
    return depths


def _running(connection, job_id: str | None, viewer: Viewer) -> Running | None:
    if not job_id:
        return None
    try:
        job = GatewayJob.fetch(job_id, connection, SERIALIZER)
    except NoSuchJobError:
        return None
    if job.refusal() is not None:
        return Running("foreign job", None, None, None)
    kind = "run" if job.func_name == "gateway.jobs.run_stage" else "delivery"
    store_id, task_name = job.args[0], job.args[1]
    tenant = tenant_of(store_id)
    if not viewer.operator and tenant != viewer.tenant:
        return Running(kind, None, None, None)  # another tenant's: only that it is busy
    return Running(kind, public(store_id), tenant, task_name)


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def workers(viewer: Viewer) -> list[WorkerRow]:
    """The workers registered on every queue Redis (each serves one)."""
    rows = []
    for connection in get_queues().all_connections():
        for worker in Worker.all(connection=connection, job_class=GatewayJob, serializer=SERIALIZER):
            rows.append(
                WorkerRow(
                    name=worker.name,
                    state=str(worker.get_state()),
                    queues=worker.queue_names(),
                    last_heartbeat=_iso(getattr(worker, "last_heartbeat", None)),
                    successful=getattr(worker, "successful_job_count", 0) or 0,
                    failed=getattr(worker, "failed_job_count", 0) or 0,
                    running=_running(connection, worker.get_current_job_id(), viewer),
                )
            )
    return sorted(rows, key=lambda row: row.name)


def build(viewer: Viewer) -> Overview:
    overview = Overview(queues=queue_depths(), workers=workers(viewer))
    recent = get_recent()
    tenant = None if viewer.operator else viewer.tenant  # None: every tenant's
    activity = recent.activity(tenant)
    overview.charts = [bar_chart(title, activity.get(key) or []) for key, title in ACTIVITY_SERIES]
    overview.failed_stages = recent.failed_stages(tenant, limit=RECENT_LIMIT)
    overview.failed_deliveries = recent.failed_deliveries(tenant, limit=RECENT_LIMIT)
    return overview
