"""gunicorn defaults for the gateway: ``gunicorn wsgi:app``. Every value can be
overridden on the command line or with GUNICORN_CMD_ARGS."""

import multiprocessing
import os

bind = os.environ.get("GATEWAY_BIND", "127.0.0.1:8788")
# Requests are short and mostly wait on Redis: a few threads per process use the cores
# without the memory of many processes.
workers = int(os.environ.get("GATEWAY_WEB_WORKERS", multiprocessing.cpu_count()))
worker_class = "gthread"
threads = int(os.environ.get("GATEWAY_WEB_THREADS", 4))
# A request never waits on a task or a callback, so 30 s is already generous.
timeout = 30
# Let in-flight requests finish on SIGTERM.
graceful_timeout = 30
# Behind nginx: keep upstream connections a little longer than nginx's keepalive_timeout.
keepalive = 75
# Create the app once in the master; workers fork with it loaded.
preload_app = True
accesslog = os.environ.get("GATEWAY_ACCESS_LOG", "-")
errorlog = "-"
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
