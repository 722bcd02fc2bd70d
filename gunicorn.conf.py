"""gunicorn defaults for the gateway: ``gunicorn wsgi:app``. Every value can be
overridden on the command line or with GUNICORN_CMD_ARGS."""

import multiprocessing
import os

# gunicorn puts its folder (--chdir, the checkout) on sys.path before it reads this file.
from gateway import metricsdir
from gateway.logs import gunicorn_logconfig

# Prometheus counters of every web process in one folder (prometheus_client's
# multiprocess mode): a process that dies keeps its counts there and /metrics, in any
# process, adds them all up. Set here, in the master, before it loads the app (the
# library picks its mode at import); the folder is PROMETHEUS_MULTIPROC_DIR when given
# (shared with workers on this host), else a private one. The files of processes that
# are gone are removed now, once per master start, never at a worker's start.
_metrics_folder = metricsdir.for_gunicorn_master()  # (underscored: no gunicorn setting)

bind = os.environ.get("GATEWAY_BIND", "127.0.0.1:8788")
# Requests are short and CPU-bound in Python: processes, not threads, use the cores
# (bench/run.py: 4 processes x 2 threads served about twice what 2 x 4 did on 2 cores,
# since a keep-alive connection stays with the process that accepted it).
workers = int(os.environ.get("GATEWAY_WEB_WORKERS", 2 * multiprocessing.cpu_count()))
worker_class = "gthread"
# A request with ?wait= holds its thread until its run ends (at most
# GATEWAY_MAX_WAIT_SECONDS), asleep on an Event: it costs a thread's memory and no CPU.
# gthread keeps accepting connections whatever its threads do, and a connection stays in
# the process that accepted it, often most of them in one process (bench/run.py shows the
# split), so each process gets threads for all the waiters we plan for (200) and the
# ordinary traffic beside them; the pool starts its threads only when requests need them.
# gevent was not chosen: it is not installed, and it patches what redis-py and RQ do
# (docs/DESIGN.md, "Waiting for an end"). bench/wait.py measures the cost.
threads = int(os.environ.get("GATEWAY_WEB_THREADS", 256))
# gthread's heartbeat comes from its main loop, not from requests: a request that waits
# does not count against this timeout.
timeout = 30
# Let in-flight requests finish on SIGTERM.
graceful_timeout = 30
# Behind nginx: keep upstream connections a little longer than nginx's keepalive_timeout.
keepalive = 75
# Create the app once in the master; workers fork with it loaded. So SIGHUP (new workers
# forked from the same master) keeps the old code: new code takes a new master, USR2 then
# TERM to the old one (docs/OPERATIONS.md, "Upgrading").
preload_app = True
# The master's pid, for that upgrade (USR2 writes the new master's to "<pidfile>.2" until
# the old master has gone). gunicorn's own --pid overrides it.
pidfile = os.environ.get("GATEWAY_PIDFILE") or None
# Off by default: the app writes one line per request with more in it (request id,
# verdict, task, tenant: gateway/api/requestlog.py), and gunicorn's line cost 10-20% of a
# reuse hit (bench/run.py). GATEWAY_ACCESS_LOG=- turns it on (through the handler below).
accesslog = os.environ.get("GATEWAY_ACCESS_LOG") or None
errorlog = "-"
# gunicorn's own lines go through the gateway's log handler: JSON like the app's
# (GATEWAY_LOG_FORMAT=text: readable), one line each, on standard error.
logconfig_dict = gunicorn_logconfig("text" if os.environ.get("GATEWAY_LOG_FORMAT", "").strip() == "text" else "json")
# With a logconfig_dict gunicorn builds every request's access-log fields (a time stamp,
# ~25 fields and every header) even when no access log is asked for; this logger builds
# them only with GATEWAY_ACCESS_LOG (docs/PERFORMANCE.md, "Third round").
logger_class = "gateway.logs.GunicornLogger"
# Above nginx's (docs/deploy/nginx.conf: 4094-byte request and header lines, eight headers
# passed on), so that behind it gunicorn's own HTML 414/431/400 are never reached.
limit_request_line = 8190
limit_request_field_size = 8190
limit_request_fields = 100
# gunicorn's own trust of X-Forwarded-Proto (wsgi.url_scheme): none unless the app trusts
# proxies too (GATEWAY_TRUSTED_PROXIES, werkzeug's ProxyFix in gateway/proxies.py), so a
# client that reaches gunicorn directly can claim nothing.
_trusts_proxies = os.environ.get("GATEWAY_TRUSTED_PROXIES", "").strip() not in ("", "0")
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1") if _trusts_proxies else ""
# gunicorn 25+ opens a control socket for ``gunicornc`` at one path per user
# ($XDG_RUNTIME_DIR/gunicorn.ctl or ~/.gunicorn/gunicorn.ctl): a second gateway (or a test
# beside a benchmark) on the machine would take it over from the first. Off unless
# GATEWAY_CONTROL_SOCKET names a path of this instance's own.
_control_socket = os.environ.get("GATEWAY_CONTROL_SOCKET")
if _control_socket:
    control_socket = _control_socket
control_socket_disable = not _control_socket


def on_starting(server):
    """In the master, once per start: warn when the API is open (no API tokens). Here and
    not in the app factory, which every web worker, RQ worker and command runs."""
    from gateway import config, tenancy
    from gateway.exceptions import ConfigError

    try:
        tokens = config.validate(config.from_environment(os.environ)).get("API_TOKENS")
    except ConfigError:
        return  # the app names the bad variable and stops
    if not tokens:
        server.log.warning(tenancy.OPEN_API_WARNING)


def child_exit(server, worker):
    """In the master, for each web process that ended (or was killed): the library's
    bookkeeping; its counters stay in the folder."""
    metricsdir.process_dead(worker.pid)


def on_exit(server):
    """The master's exit: its workers' files go; a private folder goes with its last master."""
    metricsdir.master_exit()


def pre_fork(server, worker):
    """In the master, before each web process is forked from it: what the loaded app made
    so far is left out of the cyclic garbage collector's scans (``gc.freeze``), so that a
    web process neither rescans it in its full collections (~30 ms each, about one per
    20,000 reuse hits) nor copies the pages the scans would touch."""
    import gc

    gc.freeze()


def worker_exit(server, worker):
    """In a web process that stops gracefully: its last second of request counts
    (``metrics.RequestTally``) and its request lines still waiting to be written
    (``GATEWAY_LOG_FLUSH_SECONDS``), which their threads would not get to write."""
    from gateway import logs, metrics

    metrics.TALLY.flush()
    logs.root_handler().flush()
