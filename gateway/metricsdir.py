"""The folder where the processes of one host keep their Prometheus counters
(``prometheus_client``'s multiprocess mode, ``PROMETHEUS_MULTIPROC_DIR``).

Each process writes its own files (``counter_<pid>.db``, ...); ``/metrics`` adds up every
file of the folder, so a web process that dies and is started again keeps the counts it
made (its files stay) and the new process counts on in a file of its own. The library
picks its mode when it is imported: the folder must be in the environment before
``gateway.metrics`` is imported, which is why the gunicorn config (in the master, before
it loads the app), the quickstart and ``for_worker_port`` set it, and why nothing here
imports ``prometheus_client`` at module level.

"Emptied at the master's start" is done as: remove the files of every process that is
gone. A plain wipe would also take the files of processes still running: an RQ worker
that shares the folder, or the old master's web processes during a ``USR2`` upgrade.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import shutil
import tempfile
from pathlib import Path

VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
#: ``counter_1234.db``, ``histogram_1234.db``, ``gauge_livesum_1234.db``: the pid is last.
_FILE = re.compile(r"_(\d+)\.db$")
#: A gunicorn master's mark in a folder it made itself, so that the last one to exit removes it.
_MASTER_MARK = "master-{pid}.pid"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def remove_dead_files(path: str | Path) -> list[str]:
    """Remove the files of processes that are gone; the names removed."""
    removed = []
    for entry in Path(path).iterdir():
        match = _FILE.search(entry.name)
        if match and not _alive(int(match.group(1))):
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
                removed.append(entry.name)
    return removed


def prepare(path: str | Path, environ: dict[str, str] | os._Environ = os.environ) -> str:
    """Make ``path`` the folder of this process and of those it starts: created if missing,
    the files of dead processes removed."""
    Path(path).mkdir(parents=True, exist_ok=True)
    remove_dead_files(path)
    environ[VARIABLE] = str(path)
    return str(path)


def for_gunicorn_master() -> str:
    """In gunicorn's master, before it loads the app: the folder given in the environment,
    or a new private one (removed by the last master using it, ``master_exit``)."""
    given = os.environ.get(VARIABLE, "").strip()
    if given:
        if any(Path(given).glob(_MASTER_MARK.format(pid="*"))):
            # A private folder handed down by a USR2 upgrade (the environment is
            # inherited) or a reload of this master: ours too, so the old master's exit
            # leaves it.
            _mark_master(given)
        return prepare(given)
    path = tempfile.mkdtemp(prefix="gateway-metrics-")
    _mark_master(path)
    return prepare(path)


def _mark_master(path: str) -> None:
    (Path(path) / _MASTER_MARK.format(pid=os.getpid())).touch()


def master_exit() -> None:
    """At the master's exit: drop the files of its dead workers; a private folder goes
    once no master uses it."""
    path = os.environ.get(VARIABLE)
    if not path or not Path(path).is_dir():
        return
    remove_dead_files(path)
    mark = Path(path) / _MASTER_MARK.format(pid=os.getpid())
    if not mark.exists():
        return  # the operator's folder: kept
    mark.unlink()
    others = [m for m in Path(path).glob(_MASTER_MARK.format(pid="*")) if _alive(int(m.stem.split("-")[1]))]
    if not others:
        shutil.rmtree(path, ignore_errors=True)


def process_dead(pid: int) -> None:
    """gunicorn's ``child_exit``: the library's bookkeeping for a dead process (its live
    gauges go; its counters and histograms stay, so the totals never go down)."""
    path = os.environ.get(VARIABLE)
    if not path:
        return
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, path)


def for_worker_port(environ: dict[str, str] | os._Environ = os.environ) -> str | None:
    """Before ``prometheus_client`` is imported: a ``flask worker`` that serves its own
    ``/metrics`` (``GATEWAY_METRICS_PORT``) but shares no folder gets a private one, so
    that its delivery process (a fork) counts where the port's server reads."""
    if environ.get(VARIABLE, "").strip() or not environ.get("GATEWAY_METRICS_PORT", "").strip():
        return None
    global _private_worker_folder
    path = _private_worker_folder = tempfile.mkdtemp(prefix="gateway-worker-metrics-")
    environ[VARIABLE] = path
    # Any command that imports the metrics with the variable set makes one: gone at its
    # exit (forked children leave through os._exit and skip this).
    atexit.register(remove_private_worker_folder)
    return path


_private_worker_folder: str | None = None


def remove_private_worker_folder() -> None:
    """At the worker command's end: the folder ``for_worker_port`` made, if it did."""
    if _private_worker_folder is not None:
        shutil.rmtree(_private_worker_folder, ignore_errors=True)


def multiprocess_folder() -> str | None:
    return os.environ.get(VARIABLE) or None
