"""The quickstart: Redis (embedded unless GATEWAY_REDIS_URL is set), an RQ worker (one per
queue Redis with GATEWAY_QUEUE_REDIS_URLS) and gunicorn, run together until Ctrl-C or
SIGTERM. ``python -m gateway.serve``.

Once the gateway answers it prints where it listens, where Redis keeps its data, how
callbacks are signed and the command that submits a first task. Callbacks are signed with
a secret kept in ``var/callback-signing-secret`` (made on the first start) unless
GATEWAY_CALLBACK_SIGNING_SECRET is set, so that a receiver can verify them from the start.

Each child runs in a process group of its own and is stopped as a group (SIGTERM, then
SIGKILL after a grace period), so that what it forked (RQ's scheduler, gunicorn's
workers) goes with it. A worker that dies is started again; gunicorn or the embedded
Redis dying ends the quickstart with a non-zero status.
"""

from __future__ import annotations

import base64
import http.client
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from gunicorn.util import parse_address

from gateway import config, metricsdir
from gateway.backoff import Backoff
from gateway.embedded import DataDirInUse, EmbeddedRedis, EmbeddedRedisError, free_port, port_is_free
from gateway.exceptions import ConfigError

ROOT = Path(__file__).resolve().parent.parent
#: Preferred; another free port is taken when it is busy, unless GATEWAY_EMBEDDED_REDIS_PORT forces one.
EMBEDDED_PORT = 6390
BIND = "127.0.0.1:8788"
HEALTH_PATH = "/v1/tasks/health"
#: The quickstart's callback signing secret, made on the first start and kept, so that a
#: receiver set up once goes on verifying after a restart.
SECRET_FILE = ROOT / "var" / "callback-signing-secret"
#: What the start-up message offers to run first (the README's first command too).
FIRST_TASK_BODY = '{"task_name": "demo.echo", "task_id": "task-demo-001", "input_data": {"text": "hi"}}'
#: gunicorn's graceful_timeout (30 s) and a little: in-flight requests and runs may finish.
STOP_GRACE_SECONDS = 35.0
#: How long what a child forked may outlive it after SIGTERM before SIGKILL.
LEFTOVER_GRACE_SECONDS = 2.0
#: A worker that dies is started again after 1 s, doubled per quick death up to 30 s
#: (``gateway.backoff``); one that ran this long had not been crashing: its next restart
#: waits the minimum again.
WORKER_STABLE_SECONDS = 60.0
POLL_SECONDS = 0.2


class QuickstartError(Exception):
    """The quickstart cannot start as asked; the message says what to change."""


def say(message: str) -> None:
    print(f"serve: {message}", flush=True)


# -- children in process groups of their own ------------------------------------------


class Child:
    """A command started in a new session (so a process group of its own: Ctrl-C reaches
    only us, and a stop reaches everything the command forked)."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], output=None) -> None:
        self.name = name
        self.command = command
        self.env = env
        #: A file for the command's stdout and stderr; None: ours.
        self.output = output
        self.process: subprocess.Popen | None = None
        self.started_at = 0.0

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> Child:
        self.process = subprocess.Popen(
            self.command,
            cwd=ROOT,
            env=self.env,
            start_new_session=True,
            stdout=self.output,
            stderr=None if self.output is None else subprocess.STDOUT,
        )
        self.started_at = time.monotonic()
        return self

    def exit_code(self) -> int | None:
        """The exit status once the command's own process ended, else None.

        The process is not reaped here: while it is a zombie its pid, and so its group's
        id, cannot be given to another process, and ``end()`` can still signal the group.
        """
        if self.process is None or self.process.returncode is not None:
            return None if self.process is None else self.process.returncode
        if not hasattr(os, "waitid"):  # macOS before Python 3.13
            return self.process.poll()
        try:
            info = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return self.process.poll()
        if info is None:
            return None
        return -info.si_status if info.si_code in (os.CLD_KILLED, os.CLD_DUMPED) else info.si_status

    def running(self) -> bool:
        return self.process is not None and self.exit_code() is None

    def signal_group(self, signum: int) -> None:
        try:
            os.killpg(self.pid, signum)
        except ProcessLookupError:
            pass

    def group_alive(self) -> bool:
        try:
            os.killpg(self.pid, 0)
        except ProcessLookupError:
            return False
        return True

    def end(self, grace: float = STOP_GRACE_SECONDS) -> None:
        """Stop the whole group: SIGTERM, then SIGKILL to whatever is left."""
        end_all([self], grace)


def end_all(children: list[Child], grace: float = STOP_GRACE_SECONDS) -> None:
    """Stop the groups of ``children`` at once: SIGTERM to each, wait for the commands up
    to ``grace`` (and for what they forked a little longer), then SIGKILL each group."""
    started = [child for child in children if child.process is not None and child.process.returncode is None]
    for child in started:
        child.signal_group(signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(child.running() for child in started):
        time.sleep(0.05)
    # An orphan (RQ's scheduler when its worker died) still has the group's id.
    deadline = min(deadline, time.monotonic() + LEFTOVER_GRACE_SECONDS)
    while time.monotonic() < deadline and any(child.group_alive() for child in started):
        time.sleep(0.05)
    for child in started:
        child.signal_group(signal.SIGKILL)
        child.process.wait()


# -- the embedded Redis ------------------------------------------------------------------


def _forced_port(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        port = 0
    if not 0 < port < 65536:
        raise QuickstartError(f"GATEWAY_EMBEDDED_REDIS_PORT must be a port number (1-65535), not {value!r}")
    return port


def start_embedded_redis(env: dict[str, str]) -> EmbeddedRedis:
    """Our own Redis server, verified to be the process that answers on its port."""
    data_dir = Path(env.get("GATEWAY_EMBEDDED_REDIS_DIR") or ROOT / "var" / "redis")
    forced = env.get("GATEWAY_EMBEDDED_REDIS_PORT")
    if forced:
        port = _forced_port(forced)
        if not port_is_free(port):
            raise QuickstartError(
                f"GATEWAY_EMBEDDED_REDIS_PORT={port}: the port is in use (another Redis?); "
                "name a free port or unset the variable"
            )
        try:
            return EmbeddedRedis(data_dir, port).start()
        except EmbeddedRedisError as error:
            raise QuickstartError(f"GATEWAY_EMBEDDED_REDIS_PORT={port}: {error}") from None
    port = EMBEDDED_PORT
    if not port_is_free(port):
        port = free_port()
        say(f"port {EMBEDDED_PORT} is in use: the embedded Redis takes port {port} instead")
    for attempt in range(3):
        try:
            return EmbeddedRedis(data_dir, port).start()
        except DataDirInUse as error:
            raise QuickstartError(f"{error} (GATEWAY_EMBEDDED_REDIS_DIR)") from None
        except EmbeddedRedisError as error:
            if attempt == 2:
                raise QuickstartError(str(error)) from None
            port = free_port()  # taken between our check and Redis's bind
            say(f"the embedded Redis could not take its port; trying port {port}")
    raise AssertionError("unreachable")


# -- gunicorn's address -------------------------------------------------------------------


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


def _reachable_host(host: str) -> str:
    # A wildcard bind is reached on loopback.
    return {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)


def bind_address(bind: str) -> tuple[str, int] | str:
    """GATEWAY_BIND as gunicorn reads it: (host, port), or a unix socket's path."""
    address = parse_address(bind)
    if isinstance(address, int):
        raise QuickstartError(f"GATEWAY_BIND={bind}: the quickstart binds a TCP address or unix:PATH")
    return address


def check_bind_free(bind: str, address: tuple[str, int] | str) -> None:
    """Refuse a taken address: the health check would otherwise be answered by its owner."""
    if isinstance(address, str):
        taken = _answers(address)
    else:
        taken = not port_is_free(address[1], address[0] or "0.0.0.0")
    if taken:
        raise QuickstartError(f"GATEWAY_BIND={bind} is in use (another gateway?); set GATEWAY_BIND to a free address")


def _answers(path: str) -> bool:
    with socket.socket(socket.AF_UNIX) as sock:
        try:
            sock.connect(path)
        except OSError:
            return False
    return True


def health_status(address: tuple[str, int] | str) -> int | None:
    """The HTTP status of the health endpoint, or None while nothing answers."""
    if isinstance(address, str):
        connection: http.client.HTTPConnection = _UnixHTTPConnection(address, timeout=1)
    else:
        connection = http.client.HTTPConnection(_reachable_host(address[0]), address[1], timeout=1)
    try:
        connection.request("GET", HEALTH_PATH)
        return connection.getresponse().status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        connection.close()


# -- the callback signing secret -----------------------------------------------------------


def quickstart_secret(path: Path = SECRET_FILE) -> str:
    """The secret kept in ``path``, made (``whsec_`` + 32 random bytes) when there is none.

    Written under a temporary name and linked into place, so that two quickstarts starting
    at once agree on one secret and none reads a half-written file.
    """
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        secret = "whsec_" + base64.b64encode(os.urandom(32)).decode("ascii")
        descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mode 0600
        try:
            with os.fdopen(descriptor, "w") as file:
                file.write(secret + "\n")
            os.link(temporary, path)
        except FileExistsError:
            pass  # another quickstart made it first: use theirs
        finally:
            os.unlink(temporary)
    secret = path.read_text().strip()
    try:
        config.check_environment({"GATEWAY_CALLBACK_SIGNING_SECRET": secret})
    except ConfigError:
        raise QuickstartError(f"{path} holds no valid signing secret; delete it and a new one is made") from None
    return secret


# -- what the quickstart says once the gateway answers -------------------------------------


def redacted(url: str) -> str:
    """``url`` without its password (a Redis URL may carry one)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def shown_path(path: Path) -> str:
    """``path`` relative to the current folder when it lies under it (what to type)."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def first_task_command(address: tuple[str, int] | str) -> str:
    """The curl command that submits a first task to the gateway at ``address``."""
    if isinstance(address, str):
        target = f"--unix-socket {address} http://localhost/v1/tasks"
    else:
        host = _reachable_host(address[0])
        # -g: curl would read an IPv6 address's brackets as a URL pattern.
        target = f"-g http://[{host}]:{address[1]}/v1/tasks" if ":" in host else f"http://{host}:{address[1]}/v1/tasks"
    return f"curl -s {target} -H 'Content-Type: application/json' -d '{FIRST_TASK_BODY}'"


def _setting(env: dict[str, str], name: str) -> object:
    """The checked value of the setting ``name`` in ``env`` (``main`` checked them all)."""
    return config.validate({**config.DEFAULTS, **config.from_environment(env)})[name]


def start_up_message(
    env: dict[str, str], address: tuple[str, int] | str, redis_server: EmbeddedRedis | None, secret_file: Path | None
) -> str:
    """Where the gateway listens, where Redis keeps its data, how callbacks are signed
    (``secret_file``: the quickstart's secret, None: the operator's) and whom they may
    reach, and the command to submit a first task."""
    if redis_server is not None:
        store = f"embedded, {redis_server.url}; data and AOF in {shown_path(redis_server.data_dir)}"
    else:
        store = f"yours, {redacted(env['GATEWAY_REDIS_URL'])} (GATEWAY_REDIS_URL); data where that server keeps it"
    if secret_file is not None:
        signing = f"signed with the secret in {shown_path(secret_file)}"
    else:
        signing = "signed with GATEWAY_CALLBACK_SIGNING_SECRET"
    if _setting(env, "CALLBACK_ALLOW_PRIVATE_NETWORKS"):
        reach = "receivers on this machine allowed"
    else:
        reach = (
            "public addresses only (and GATEWAY_CALLBACK_ALLOWED_HOSTS); "
            "GATEWAY_CALLBACK_ALLOW_PRIVATE_NETWORKS=true allows a receiver on this machine"
        )
    return "\n".join(
        [
            f"gateway on http://{env['GATEWAY_BIND']}  (Ctrl-C stops)",
            f"  Redis:      {store}",
            f"  callbacks:  {signing}; {reach}",
            f"  first task: {first_task_command(address)}",
        ]
    )


# -- the quickstart -------------------------------------------------------------------------


def worker_args(env: dict[str, str]) -> list[list[str]]:
    """The arguments of each ``flask --app wsgi worker`` to start: one worker for all the
    queues, or with GATEWAY_QUEUE_REDIS_URLS naming several Redis servers, one per server
    (``--group``, named by one of its nodes, ``*`` for the default's)."""
    urls = config.queue_redis_urls(config.validate({**config.DEFAULTS, **config.from_environment(env)}))
    groups: dict[str, list[str]] = {}
    for node, url in urls.items():
        groups.setdefault(url, []).append(node)
    if len(groups) == 1:
        return [[]]
    return [["--group", "*" if "*" in nodes else min(nodes)] for nodes in groups.values()]


class Quickstart:
    def __init__(self) -> None:
        self.env = dict(os.environ)
        self.redis_server: EmbeddedRedis | None = None
        #: Where the callback signing secret was read, when the quickstart provides it.
        self.secret_file: Path | None = None
        self.children: list[Child] = []
        self.stopping = False
        self.worker_backoff = Backoff()

    def stop(self, *_: object) -> None:
        self.stopping = True

    def spawn(self, name: str, *args: str, output=None) -> Child:
        child = Child(name, [sys.executable, "-m", *args], self.env, output).start()
        self.children.append(child)
        return child

    def run(self) -> int:
        env = self.env
        env.setdefault("GATEWAY_BIND", BIND)
        # Readable lines for a person at a terminal; each request is one of them.
        env.setdefault("GATEWAY_LOG_FORMAT", "text")
        env.setdefault("GATEWAY_DEMO_TASKS", "true")  # demo.echo and demo.sleep, off in production
        address = bind_address(env["GATEWAY_BIND"])
        check_bind_free(env["GATEWAY_BIND"], address)
        if not env.get("GATEWAY_REDIS_URL"):
            self.redis_server = start_embedded_redis(env)
            env["GATEWAY_REDIS_URL"] = self.redis_server.url
            # The quickstart delivers to receivers on this machine; production refuses them.
            env.setdefault("GATEWAY_CALLBACK_ALLOW_PRIVATE_NETWORKS", "true")
            say(
                f"embedded Redis on {self.redis_server.url} (pid {self.redis_server.process.pid}), "
                f"data and AOF in {self.redis_server.data_dir}"
            )
        if not env.get("GATEWAY_CALLBACK_SIGNING_SECRET", "").strip():
            env["GATEWAY_CALLBACK_SIGNING_SECRET"] = quickstart_secret(SECRET_FILE)
            self.secret_file = SECRET_FILE
        # One folder for gunicorn's and the worker's counters: the quickstart's /metrics
        # shows runs and deliveries too (docs/OPERATIONS.md, "Metrics").
        metricsdir.prepare(self.env.get(metricsdir.VARIABLE) or ROOT / "var" / "metrics", self.env)
        if not self.load_scripts():
            return 0
        gunicorn = self.spawn("gunicorn", "gunicorn", "wsgi:app")
        workers = [self.spawn("worker", "flask", "--app", "wsgi", "worker", *args) for args in worker_args(env)]
        return self.supervise(gunicorn, workers, address)

    def load_scripts(self) -> bool:
        """Load the Lua scripts into Redis; False when asked to stop meanwhile. Its list of
        names and SHAs is shown only when loading fails (a newcomer needs none of it)."""
        with tempfile.TemporaryFile("w+") as output:
            loader = self.spawn("scripts", "flask", "--app", "wsgi", "scripts", "load", output=output)
            while loader.running() and not self.stopping:
                time.sleep(0.05)
            if self.stopping:
                return False
            if loader.exit_code() != 0:
                output.seek(0)
                sys.stderr.write(output.read())
                raise QuickstartError(f"loading the Lua scripts failed (exit code {loader.exit_code()})")
        loader.process.wait()
        self.children.remove(loader)
        return True

    def supervise(self, gunicorn: Child, workers: list[Child], address: tuple[str, int] | str) -> int:
        announced = False
        restart_at: dict[Child, float] = {}
        while not self.stopping:
            if not gunicorn.running():
                say(f"gunicorn exited (code {gunicorn.exit_code()}); stopping")
                return 1
            if self.redis_server and self.redis_server.process.poll() is not None:
                say(f"the embedded Redis exited; see {self.redis_server.log_path}; stopping")
                return 1
            if not announced:
                status = health_status(address)
                if status is not None and gunicorn.running():
                    message = start_up_message(self.env, address, self.redis_server, self.secret_file)
                    if status != 200:
                        message += f"\n  (health answers {status}: is Redis reachable?)"
                    print(message, flush=True)
                    announced = True
            for worker in workers:
                if worker not in restart_at and not worker.running():
                    restart_at[worker] = time.monotonic() + self.worker_died(worker)
                if worker in restart_at and time.monotonic() >= restart_at[worker]:
                    worker.start()
                    say(f"worker started again (pid {worker.pid})")
                    del restart_at[worker]
            time.sleep(POLL_SECONDS)
        return 0

    def worker_died(self, worker: Child) -> float:
        """End what the dead worker left (RQ's scheduler holds its lock while it lives)
        and return how long to wait before the next one."""
        code, ran = worker.exit_code(), time.monotonic() - worker.started_at
        worker.end(grace=LEFTOVER_GRACE_SECONDS)
        if ran >= WORKER_STABLE_SECONDS:
            self.worker_backoff.reset()
        delay = self.worker_backoff.next()
        say(f"worker (pid {worker.pid}) exited with code {code} after {ran:.0f} s; starting a new one in {delay:g} s")
        return delay

    def close(self) -> None:
        end_all(self.children)
        if self.redis_server:
            self.redis_server.stop()


def main() -> int:
    try:
        # One line for a bad variable, before any process starts (each would print it).
        config.check_environment(os.environ)
    except ConfigError as error:
        print(f"gateway: configuration error: {error}", file=sys.stderr, flush=True)
        return 2
    quickstart = Quickstart()
    # SIGHUP too: a closed terminal must not leave the children (in sessions of their own) running.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, quickstart.stop)
    try:
        return quickstart.run()
    except QuickstartError as error:
        print(f"serve: {error}", file=sys.stderr, flush=True)
        return 2
    finally:
        quickstart.close()


if __name__ == "__main__":
    sys.exit(main())
