"""Upgrades as docs/OPERATIONS.md ("Upgrading") tells an operator to make them: new code
in the web processes without a failed request (releases in folders of their own, a
``current`` symlink that gunicorn runs from, USR2 to the master, TERM to the old one), and
a release whose Lua scripts changed, old and new processes side by side on one Redis."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest
import redis
import requests

from gateway import create_app, scripts
from gateway.embedded import free_port
from gateway.store import get_store
from gateway.version import __version__
from gateway.worker import build_worker
from tests.conftest import ROOT, STACK_DB, base_config, wait_until
from tests.test_deploy import Nginx
from tests.test_operations import create_least_privilege_user

#: What a release folder holds: what gunicorn runs (no tests, no docs).
RELEASE_FILES = ("gateway", "lua", "wsgi.py", "gunicorn.conf.py")
NEW_VERSION = f"{__version__}+next"


def _release(path: Path, version: str) -> Path:
    """A copy of the checkout's code whose version (``/v1/tasks/health`` shows it) is ``version``."""
    path.mkdir(parents=True)
    for name in RELEASE_FILES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, path / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(ROOT / name, path / name)
    (path / "gateway" / "version.py").write_text(f'"""Test release."""\n\n__version__ = "{version}"\n')
    return path


def _point(link: Path, target: Path) -> None:
    """Re-point ``link`` to ``target`` in one step (rename over the old link)."""
    staged = link.with_name(link.name + ".new")
    staged.symlink_to(target)
    os.replace(staged, link)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A master whose parent died is reparented; until reaped it is a zombie.
    status = Path(f"/proc/{pid}/status")
    return not (status.exists() and "\nState:\tZ" in status.read_text())


class Traffic(threading.Thread):
    """Creates tasks and asks for health without pause, each on a new connection, and
    keeps every failure and each version that answered."""

    def __init__(self, base: str, *, keep_alive: bool = False) -> None:
        super().__init__(daemon=True)
        self.base = base
        self.http = requests.Session() if keep_alive else requests
        self.stop = threading.Event()
        self.failures: list[str] = []
        self.versions: list[str] = []
        self.answered = 0

    def run(self) -> None:
        while not self.stop.is_set():
            body = {"task_name": "demo.echo", "task_id": f"up-{uuid.uuid4().hex[:12]}", "input_data": {"n": 1}}
            try:
                created = self.http.post(f"{self.base}/v1/tasks", json=body, timeout=10)
                health = self.http.get(f"{self.base}/v1/tasks/health", timeout=10)
            except requests.RequestException as error:
                self.failures.append(repr(error))
                continue
            if created.status_code != 202 or health.status_code != 200:
                self.failures.append(f"{created.status_code} {health.status_code} {created.text[:200]}")
                continue
            self.answered += 1
            self.versions.append(health.json()["version"])


@pytest.mark.parametrize("through", ["gunicorn", "nginx"])
def test_usr2_then_term_of_the_old_master_swaps_the_code_without_a_failed_request(redis_server, tmp_path, through):
    """Straight to gunicorn, each request on a new connection; through the shipped nginx,
    on one keep-alive connection to nginx, which keeps its own to gunicorn."""
    old = _release(tmp_path / "releases" / "old", __version__)
    new = _release(tmp_path / "releases" / "new", NEW_VERSION)
    current = tmp_path / "current"
    current.symlink_to(old)
    pidfile = tmp_path / "run" / "gateway.pid"
    pidfile.parent.mkdir()
    port = free_port()
    env = {
        **{name: value for name, value in os.environ.items() if name not in ("XDG_RUNTIME_DIR", "PYTHONPATH")},
        "HOME": str(tmp_path),
        # gunicorn starts the new master in $PWD when it names the folder it runs in:
        # the symlink's path, so the new master finds the new release there.
        "PWD": str(current),
        "GATEWAY_PIDFILE": str(pidfile),
        "GATEWAY_BIND": f"127.0.0.1:{port}",
        "GATEWAY_WEB_WORKERS": "2",
        "GATEWAY_REDIS_URL": base_config(redis_server, STACK_DB)["REDIS_URL"],
        "GATEWAY_DEMO_TASKS": "true",
    }
    gunicorn = Path(sys.executable).with_name("gunicorn")  # USR2 execs the master's own argv again
    master = subprocess.Popen(
        [str(gunicorn), "-c", "gunicorn.conf.py", "wsgi:app"],
        cwd=current, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    direct = base = f"http://127.0.0.1:{port}"
    new_master = nginx = traffic = None
    try:
        wait_until(lambda: _version(direct) == __version__, timeout=20)
        if through == "nginx":
            nginx = Nginx(port)
            base = nginx.base
        traffic = Traffic(base, keep_alive=through == "nginx")
        assert int(pidfile.read_text()) == master.pid
        traffic.start()
        wait_until(lambda: traffic.answered >= 20, timeout=20)

        _point(current, new)  # deploy the new release
        os.kill(int(pidfile.read_text()), signal.SIGUSR2)  # a new master, with the new code
        second = pidfile.with_name(pidfile.name + ".2")
        wait_until(second.exists, timeout=20)
        new_master = int(second.read_text())
        # Both masters serve the one socket until the new code answers a new connection
        # (nginx keeps its connections to the old workers until they close them).
        wait_until(lambda: _version(direct) == NEW_VERSION, timeout=30)
        os.kill(master.pid, signal.SIGTERM)  # the old master: its workers finish what they hold
        assert master.wait(40) == 0
        # The new master, promoted, takes the pidfile over.
        wait_until(lambda: pidfile.exists() and int(pidfile.read_text()) == new_master, timeout=20)
        settled = traffic.answered
        wait_until(lambda: traffic.answered >= settled + 20, timeout=20)
    finally:
        if traffic is not None:
            traffic.stop.set()
            traffic.join(20)
        if nginx is not None:
            nginx.stop()
        for pid in (master.pid, new_master):
            if pid is not None and _alive(pid):
                os.kill(pid, signal.SIGTERM)
        master.wait(40)
        if new_master is not None:
            wait_until(lambda: not _alive(new_master), timeout=40)

    assert traffic.failures == []
    # Old code answered, then new code, and after the old master left, only new code.
    assert traffic.versions[0] == __version__
    assert set(traffic.versions[traffic.versions.index(NEW_VERSION) :]) <= {__version__, NEW_VERSION}
    assert set(traffic.versions[-20:]) == {NEW_VERSION}


def _version(base: str) -> str | None:
    try:
        return requests.get(f"{base}/v1/tasks/health", timeout=2).json()["version"]
    except (requests.RequestException, ValueError):
        return None


# -- a release whose Lua scripts changed -------------------------------------------------

SCRIPTS_DB = 11


def _next_release_sources() -> dict[str, str]:
    """The scripts of a next release: each with a line more, so each has a new SHA (the
    document layout is the same, as a release that changes a script must keep it readable)."""
    return {name: source + "-- next release\n" for name, source in scripts.read_sources().items()}


def _release_app(redis_server, url: str, sources: dict[str, str] | None = None):
    """An app (web or worker process) of a release: the checkout's scripts or ``sources``."""
    app = create_app({**base_config(redis_server, SCRIPTS_DB), "REDIS_URL": url, "QUEUE_REDIS_URL": url})
    if sources is not None:
        with app.app_context():
            store = get_store()
            store.scripts = scripts.Scripts(store.client, sources)
    return app


def _create(app, task_id: str) -> requests.Response:
    body = {"task_name": "demo.echo", "task_id": task_id, "input_data": {"id": task_id}}
    return app.test_client().post("/v1/tasks", json=body)


def _work(app) -> None:
    with app.app_context():
        build_worker().work(burst=True, logging_level="WARNING")


def test_old_and_new_script_shas_serve_one_redis_side_by_side(redis_server):
    """A rolling upgrade on EVALSHA-only users: the operator loads the new release's
    scripts first; then old and new processes each call their own SHAs, and each finishes
    what the other started. After a Redis restart (the script cache is empty) both
    releases' scripts must be loaded again while both run."""
    admin = redis.Redis(port=redis_server.port, db=SCRIPTS_DB)
    admin.flushdb()
    create_least_privilege_user(admin, "gateway-up", "up-pass")
    url = f"redis://gateway-up:up-pass@127.0.0.1:{redis_server.port}/{SCRIPTS_DB}"
    old_sources, new_sources = scripts.read_sources(), _next_release_sources()
    try:
        admin.script_flush()
        scripts.load_all(admin, old_sources)
        old = _release_app(redis_server, url)
        assert _create(old, "before").status_code == 202

        # New processes started before their scripts are loaded: refused, the old ones go on.
        new = _release_app(redis_server, url, new_sources)
        refused = _create(new, "too-early")
        assert refused.status_code == 503 and refused.json["error"]["code"] == "scripts_not_loaded"
        assert _create(old, "meanwhile").status_code == 202

        scripts.load_all(admin, new_sources)  # step 1 of the upgrade
        _work(new)  # a new worker runs what the old web claimed
        assert _create(new, "after").status_code == 202
        _work(old)  # an old worker runs what the new web claimed
        for app in (old, new):
            for task_id in ("before", "meanwhile", "after"):
                hit = _create(app, task_id)
                assert hit.status_code == 200 and hit.json["reuse_info"]["state"] == "completed", hit.json
                assert hit.json["result"]["output"] == {"id": task_id}

        # Redis restarted during the upgrade: the new release's load alone leaves the old
        # processes refused; loading the old release's too serves both.
        admin.script_flush()
        scripts.load_all(admin, new_sources)
        assert _create(old, "restart-1").status_code == 503
        assert _create(new, "restart-2").status_code == 202
        scripts.load_all(admin, old_sources)
        assert _create(old, "restart-1").status_code == 202
    finally:
        admin.acl_deluser("gateway-up")
        admin.script_flush()  # the next test's clients load the checkout's scripts again
