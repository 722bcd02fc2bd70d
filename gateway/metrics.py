"""The gateway's Prometheus metrics: what is counted, the cheap ways to count it, and the
text a scrape returns (docs/OPERATIONS.md, "Metrics", lists every name).

With ``PROMETHEUS_MULTIPROC_DIR`` set (gunicorn's config, the quickstart, a worker with
``GATEWAY_METRICS_PORT``: ``metricsdir``) every process counts in files of its own in
that folder and a scrape adds them up; without it (``flask run``, the tests' in-process
apps) a process counts in memory and shows its own counts.

Counting is on the request path, the reuse hit's included: a request adds to plain
numbers (``RequestTally``), moved into the metrics once a second (measured in
bench/bookkeeping_cost.py and docs/OPERATIONS.md). Queue depths are not counted but read at scrape time
(``QueueDepths``), one pipelined round trip per queue Redis.
"""

from __future__ import annotations

import bisect
import contextlib
import glob
import hmac
import logging
import os
import threading
import time
from typing import TYPE_CHECKING

from redis.exceptions import RedisError

from gateway import metricsdir

# Before prometheus_client is imported: it picks its multiprocess mode then.
metricsdir.for_worker_port()

from prometheus_client import (  # noqa: E402 (the mode is chosen at import: see above)
    CONTENT_TYPE_PLAIN_0_0_4,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily  # noqa: E402
from prometheus_client.multiprocess import MultiProcessCollector  # noqa: E402

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from prometheus_client.metrics_core import Metric

log = logging.getLogger(__name__)

#: The route label of a request that matched no route (404, or 405 for a wrong method).
UNMATCHED = "unmatched"

REQUESTS = Counter(
    "gateway_http_requests_total", "HTTP requests answered, by route (the URL rule) and status", ["route", "status"]
)
REQUEST_SECONDS = Histogram(
    "gateway_http_request_duration_seconds",
    "Time from the request reaching the app to its answer, by route",
    ["route"],
    # A reuse hit takes ~1 ms; a request that ?wait=s up to GATEWAY_MAX_WAIT_SECONDS (30).
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
VERDICTS = Counter("gateway_reuse_verdicts_total", "Create requests by reuse verdict (reuse_info.state)", ["state"])
RUNS_STARTED = Counter("gateway_runs_started_total", "Handler runs started, by task name", ["task_name"])
RUNS_ENDED = Counter(
    "gateway_runs_ended_total",
    "Handler runs ended, by task name and outcome (success, failed, discarded: the run's claim was gone, "
    "e.g. cancelled)",
    ["task_name", "outcome"],
)
RUN_SECONDS = Histogram(
    "gateway_run_duration_seconds",
    "How long handlers ran, by task name",
    ["task_name"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
)
DELIVERY_TRIES = Counter(
    "gateway_delivery_tries_total",
    "Callback delivery tries, by outcome (sent; retry: failed, another try scheduled; failed: given up; "
    "gone: its task or record no longer exists)",
    ["outcome"],
)
DELIVERY_SECONDS = Histogram(
    "gateway_delivery_duration_seconds",
    "Time of one delivery try's HTTP request (address check, connect, answer)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
SWEEPER_ACTIONS = Counter(
    "gateway_sweeper_actions_total",
    "What the sweeper did: rerun (a lost run started again), failed_lost (a stage ended FAILED after "
    "GATEWAY_MAX_ATTEMPTS lost runs), requeued_run (a claimed run whose job was lost), resent_delivery "
    "(a lost delivery try sent again)",
    ["action"],
)
REDIS_ERRORS = Counter(
    "gateway_redis_errors_total",
    "Redis errors that reached the gateway's code, by where (request, worker, sweeper, scrape) and the error's class",
    ["where", "error"],
)


# -- counting ------------------------------------------------------------------------------


class _Children(dict):
    """A labelled metric's children by one label value, made on first use and kept."""

    def __init__(self, make: Callable[[str], object]) -> None:
        super().__init__()
        self._make = make

    def __missing__(self, key: str) -> object:
        child = self[key] = self._make(key)
        return child


_delivery_tries = _Children(lambda outcome: DELIVERY_TRIES.labels(outcome))
_sweeper_actions = _Children(lambda action: SWEEPER_ACTIONS.labels(action))

#: How often a process moves what its requests counted into the shared folder.
FLUSH_SECONDS = 1.0


class _RouteTally:
    __slots__ = ("statuses", "buckets", "seconds")

    def __init__(self, buckets: int) -> None:
        self.statuses: dict[int, int] = {}
        self.buckets = [0] * buckets
        self.seconds = 0.0


class RequestTally:
    """The per-request counts (requests, latency, verdicts) of one process, kept as plain
    numbers under one lock and moved into the Prometheus metrics every ``FLUSH_SECONDS``
    by a thread, and before each scrape this process answers.

    Why not ``Counter.inc`` per request: in multiprocess mode each increment takes the
    library's lock, asks the pid and writes its mmap'd file; a request's counter and
    histogram (sum and bucket) made the request hook ~7 µs of a ~300 µs reuse hit on the
    shared test machine; with the tally it is ~0.5 µs (bench/bookkeeping_cost.py). The cost:
    the other processes' counts reach a scrape up to a second late, and a process killed
    outright (SIGKILL) takes up to a second of its counts with it; a graceful exit flushes
    (gunicorn's ``worker_exit``).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # The histogram's bounds, +Inf last, as the library keeps them.
        self._bounds = list(REQUEST_SECONDS._upper_bounds)
        self._routes: dict[str, _RouteTally] = {}
        self._verdicts: dict[str, int] = {}
        self._flusher: threading.Thread | None = None

    def answered(self, rule: str, status: int, seconds: float, verdict: str | None = None) -> None:
        """One answered request: its route (URL rule), status, seconds taken and, for a
        create, its reuse verdict."""
        bucket = bisect.bisect_left(self._bounds, seconds)
        with self._lock:
            route = self._routes.get(rule)
            if route is None:
                route = self._routes[rule] = _RouteTally(len(self._bounds))
            route.statuses[status] = route.statuses.get(status, 0) + 1
            route.buckets[bucket] += 1
            route.seconds += seconds
            if verdict is not None:
                self._verdicts[verdict] = self._verdicts.get(verdict, 0) + 1
        if self._flusher is None:
            self._start_flusher()

    def _start_flusher(self) -> None:
        # Started by the first request of a process (never in gunicorn's master, which
        # serves none: a thread would not survive its fork anyway).
        with self._lock:
            if self._flusher is not None:
                return
            self._flusher = threading.Thread(target=self._flush_forever, name="gateway-metrics-flush", daemon=True)
            self._flusher.start()

    def _flush_forever(self) -> None:
        while True:
            time.sleep(FLUSH_SECONDS)
            try:
                self.flush()
            except Exception:  # the folder's disk full, say: counting must not stop for good
                log.warning("could not write the request metrics", exc_info=True)

    def flush(self) -> None:
        """Move what was counted since the last flush into the metrics."""
        with self._lock:
            routes, self._routes = self._routes, {}
            verdicts, self._verdicts = self._verdicts, {}
        for rule, route in routes.items():
            for status, count in route.statuses.items():
                REQUESTS.labels(rule, str(status)).inc(count)
            if route.seconds or any(route.buckets):
                histogram = REQUEST_SECONDS.labels(rule)
                # The library's own parts of the child (prometheus-client is pinned):
                # observe() takes one observation at a time.
                histogram._sum.inc(route.seconds)
                for bucket, count in zip(histogram._buckets, route.buckets, strict=True):
                    if count:
                        bucket.inc(count)
        for state, count in verdicts.items():
            VERDICTS.labels(str(state)).inc(count)


#: This process's tally of its requests.
TALLY = RequestTally()


def run_started(task_name: str) -> None:
    RUNS_STARTED.labels(task_name).inc()


def run_ended(task_name: str, outcome: str, seconds: float | None) -> None:
    RUNS_ENDED.labels(task_name, outcome).inc()
    if seconds is not None:
        RUN_SECONDS.labels(task_name).observe(seconds)


def delivery_tried(outcome: str, seconds: float | None = None) -> None:
    _delivery_tries[outcome].inc()
    if seconds is not None:
        DELIVERY_SECONDS.observe(seconds)


def sweeper_acted(action: str, count: int = 1) -> None:
    if count:
        _sweeper_actions[action].inc(count)


def redis_error(where: str, error: BaseException) -> None:
    REDIS_ERRORS.labels(where, type(error).__name__).inc()


# -- scraping -------------------------------------------------------------------------------


class QueueDepths:
    """A collector read at scrape time: jobs per RQ queue and state, and registered workers
    per queue. O(1) per queue: ``LLEN`` of the queue and ``ZCARD`` of RQ's registries
    (their keys from RQ's own classes), ``SCARD`` of RQ's workers set, pipelined."""

    def __init__(self, queues: Callable[[], list]) -> None:
        #: The RQ ``Queue`` objects to read, asked for at each scrape.
        self._queues = queues

    def describe(self) -> list:
        return []  # nothing known before a scrape: no names to check at registration

    def collect(self) -> Iterator[Metric]:
        from rq.worker_registration import WORKERS_BY_QUEUE_KEY

        jobs = GaugeMetricFamily(
            "gateway_queue_jobs",
            "RQ jobs per queue and state, read at scrape time (queued: waiting; scheduled: a callback retry's "
            "later try; started: being run; failed: RQ's failed registry)",
            labels=["queue", "state"],
        )
        workers = GaugeMetricFamily(
            "gateway_queue_workers", "RQ workers registered for each queue, read at scrape time", labels=["queue"]
        )
        unreachable: set[int] = set()
        for queue in self._queues():
            # A Redis that is down leaves its queues out (and is counted): the counters
            # must still be scraped during an outage, when they matter most.
            if id(queue.connection) in unreachable:
                continue
            try:
                with queue.connection.pipeline(transaction=False) as pipe:
                    pipe.llen(queue.key)
                    pipe.zcard(queue.scheduled_job_registry.key)
                    pipe.zcard(queue.started_job_registry.key)
                    pipe.zcard(queue.failed_job_registry.key)
                    pipe.scard(WORKERS_BY_QUEUE_KEY % queue.name)
                    queued, scheduled, started, failed, registered = pipe.execute()
            except RedisError as error:
                unreachable.add(id(queue.connection))
                redis_error("scrape", error)
                continue
            counts = {"queued": queued, "scheduled": scheduled, "started": started, "failed": failed}
            for state, count in counts.items():
                jobs.add_metric([queue.name, state], count)
            workers.add_metric([queue.name], registered)
        yield jobs
        yield workers


class _FolderCollector(MultiProcessCollector):
    """The library's collector, minus the files that are still empty: a process creates
    its file and only then sizes it, and a scrape that reads it in between failed with
    ``struct.error`` (a 500, seen once in the test suite). An empty file holds no count."""

    def collect(self):
        files = []
        for path in glob.glob(os.path.join(self._path, "*.db")):
            with contextlib.suppress(FileNotFoundError):  # a dead process's, removed meanwhile
                if os.path.getsize(path) > 0:
                    files.append(path)
        return self.merge(files, accumulate=True)


def counted_registry() -> CollectorRegistry:
    """What the processes counted: every file of the multiprocess folder, or this process's
    own registry without one."""
    folder = metricsdir.multiprocess_folder()
    if folder is None:
        return REGISTRY
    registry = CollectorRegistry()
    _FolderCollector(registry, path=folder)
    return registry


def exposition(extra: CollectorRegistry | None = None) -> bytes:
    """The Prometheus text of the counted metrics, then of ``extra`` (read at scrape time)."""
    TALLY.flush()  # this process's own counts, up to date
    text = generate_latest(counted_registry())
    return text + generate_latest(extra) if extra is not None else text


def token_accepted(expected: str | None, authorization: str | None) -> bool:
    """Whether a scrape may read: no token configured, or ``Bearer <it>`` presented."""
    if not expected:
        return True
    scheme, _, presented = (authorization or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(presented.strip().encode(), expected.encode())


#: The classic text format (0.0.4): every name here is a plain one, which any Prometheus reads.
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4


def serve(host: str, port: int, token: str | None) -> Callable[[], None]:
    """Serve ``GET /metrics`` (what this folder's processes counted) on a thread of this
    process: a ``flask worker``'s own port. Returns the function that stops it."""
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    from prometheus_client.exposition import ThreadingWSGIServer

    class QuietHandler(WSGIRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the base's name)
            pass  # one line per scrape would drown the worker's log

    def app(environ: dict, start_response: Callable) -> list[bytes]:
        if environ.get("PATH_INFO") != "/metrics":
            status, headers, body = "404 Not Found", [("Content-Type", "text/plain")], b"not found\n"
        elif not token_accepted(token, environ.get("HTTP_AUTHORIZATION")):
            status, headers = "401 Unauthorized", [("Content-Type", "text/plain"), ("WWW-Authenticate", "Bearer")]
            body = b"GATEWAY_METRICS_TOKEN is set: Authorization: Bearer <it>\n"
        else:
            status, headers, body = "200 OK", [("Content-Type", CONTENT_TYPE)], exposition()
        start_response(status, [*headers, ("Content-Length", str(len(body)))])
        return [body]

    server = make_server(host, port, app, ThreadingWSGIServer, handler_class=QuietHandler)
    threading.Thread(target=server.serve_forever, name="gateway-metrics", daemon=True).start()

    def stop() -> None:
        server.shutdown()
        server.server_close()

    return stop
