"""The Lua scripts of ``lua/``: registered once per client, called by SHA, loaded by operators
(``cli``: ``scripts load``/``scripts check``)."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from redis.exceptions import NoPermissionError, NoScriptError

from gateway.exceptions import ScriptsNotLoaded
from gateway.luasource import LUA_DIR, flattened_sources

if TYPE_CHECKING:
    from redis import Redis
    from redis.commands.core import Script

LOAD_COMMAND = "flask --app wsgi scripts load"


@functools.cache
def read_sources() -> dict[str, str]:
    """Script name (file stem) → Lua source as Redis runs it (includes expanded), for
    every script in ``lua/`` (read once; see ``gateway.luasource``)."""
    return flattened_sources(LUA_DIR)


class Scripts:
    """One client's registered scripts, called by SHA.

    redis-py's ``Script`` sends ``EVALSHA`` and, on ``NOSCRIPT``, loads the script and
    tries again. A Redis user that may only ``EVALSHA`` gets a permission error on that
    load instead; both cases become ``ScriptsNotLoaded``, naming the operator command.
    """

    def __init__(self, client: Redis, sources: dict[str, str] | None = None) -> None:
        """``sources``: name → Lua source, the gateway's own (``read_sources``) unless given
        (another release's, in tests/test_upgrade.py)."""
        self._client = client
        self._scripts: dict[str, Script] = {
            name: client.register_script(source) for name, source in (sources or read_sources()).items()
        }

    def missing(self) -> list[str]:
        """Names of the scripts Redis does not hold (``SCRIPT EXISTS``)."""
        present = self._client.script_exists(*(script.sha for script in self._scripts.values()))
        return [name for name, ok in zip(self._scripts, present, strict=True) if not ok]

    def __call__(self, name: str, keys: list[str], args: list[object]) -> object:
        script = self._scripts[name]
        try:
            try:
                # EVALSHA straight away: ``Script.__call__`` adds three layers of calls on
                # every request, a few percent of a reuse hit.
                return self._client.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
            except NoScriptError:
                return script(keys=keys, args=args)  # loads it (SCRIPT LOAD) and tries again
        except NoScriptError as error:
            raise _not_loaded(name) from error
        except NoPermissionError as error:
            # Denied SCRIPT LOAD after NOSCRIPT; any other denial is not ours to rename.
            if "script" not in str(error).lower():
                raise
            raise _not_loaded(name) from error


def _not_loaded(name: str) -> ScriptsNotLoaded:
    return ScriptsNotLoaded(
        f"Lua script {name!r} is not loaded in Redis and this client may not load it; "
        f"an operator must run `{LOAD_COMMAND}`.",
        {"script": name},
    )


def load_all(client: Redis, sources: dict[str, str] | None = None) -> dict[str, str]:
    """``SCRIPT LOAD`` every script (the gateway's unless ``sources`` is given); name → SHA."""
    return {name: client.script_load(source) for name, source in (sources or read_sources()).items()}


def rq_sources() -> dict[str, str]:
    """The Lua scripts RQ runs on the queue Redis (unique enqueues, scheduler locks), so
    that a queue user restricted to ``EVALSHA`` works once an operator loaded them."""
    from rq import scripts as rq_scripts

    names = ("UNIQUE_ENQUEUE_SCRIPT", "UNIQUE_SCHEDULE_SCRIPT", "ACQUIRE_OR_REFRESH_LOCK_SCRIPT", "RELEASE_LOCK_SCRIPT")
    return {f"rq:{name.removesuffix('_SCRIPT').lower()}": getattr(rq_scripts, name) for name in names}


def check_loaded(client: Redis, sources: dict[str, str]) -> list[tuple[str, str, bool]]:
    """(name, SHA, whether Redis holds it) for each of ``sources`` (``SCRIPT EXISTS``)."""
    shas = {name: client.register_script(source).sha for name, source in sources.items()}
    present = client.script_exists(*shas.values())
    return [(name, sha, bool(ok)) for (name, sha), ok in zip(shas.items(), present, strict=True)]
