"""The Lua scripts of ``lua/`` as Redis runs them: each with its ``--- @include`` lines expanded.

A script names a shared snippet of ``lua/include/`` on a line of its own,
``--- @include "name"`` (BullMQ's form), at the top level of the chunk and before the
snippet is used. Flattening puts the snippet's text in place of the first line that names
it; a later line naming it again (in the script or in another snippet) is dropped, since
its ``local function``s are already in scope. Snippets may include snippets.

The flattened text is what Redis hashes, so it must be the same bytes in every process:
an operator loads the scripts once (``flask --app wsgi scripts load``) and a Redis user
that may only ``EVALSHA`` then depends on every process computing the same SHA. Hence
files are read as UTF-8 whatever the locale, line ends are ``\\n``, scripts are taken in
sorted order and nothing about the run (time, path, host) enters the text. Files in
``lua/include/`` are not scripts of their own: they are never loaded and have no SHA.

Where the files are: the top-level ``lua/`` of a checkout, or, in an installed wheel,
``gateway/lua/`` (package data: pyproject.toml maps ``lua/`` there), so the same bytes
and the same SHAs either way (tests/test_install.py).
"""

from __future__ import annotations

import functools
import re
from importlib import resources
from pathlib import Path


def _lua_dir() -> Path:
    """``gateway/lua/`` when the package carries it (an installed wheel), else ``lua/``
    beside the package (a checkout, where ``gateway/lua/`` never exists)."""
    packaged = resources.files("gateway") / "lua"
    if isinstance(packaged, Path) and packaged.is_dir():  # pip installs wheels unzipped
        return packaged
    return Path(__file__).resolve().parent.parent / "lua"


LUA_DIR = _lua_dir()
INCLUDE_DIR = "include"

# ``--- @include "name"`` or ``--- @include name``; a name is a file stem in lua/include/.
_INCLUDE_LINE = re.compile(r'^--- @include\s+"?([A-Za-z0-9_]+)"?\s*$')


class LuaIncludeError(Exception):
    """A script's includes cannot be resolved: a missing snippet, a cycle, a bad line."""


@functools.cache
def flattened_sources(lua_dir: Path = LUA_DIR) -> dict[str, str]:
    """Script name (file stem) → flattened source, for every ``*.lua`` of ``lua_dir``
    (not of its ``include/``), in sorted order; read and expanded once per directory."""
    return {path.stem: flatten(path, lua_dir / INCLUDE_DIR) for path in sorted(lua_dir.glob("*.lua"))}


def flatten(script: Path, include_dir: Path) -> str:
    """The text of ``script`` with every ``--- @include`` resolved from ``include_dir``."""
    lines: list[str] = []
    _expand(script, include_dir, lines, included=set(), chain=[])
    return "".join(lines)


def _read(path: Path) -> str:
    text = path.read_bytes().decode("utf-8").replace("\r\n", "\n")
    return text if text.endswith("\n") else text + "\n"


def _expand(path: Path, include_dir: Path, out: list[str], included: set[str], chain: list[str]) -> None:
    for number, line in enumerate(_read(path).splitlines(keepends=True), start=1):
        if not (line.lstrip().startswith("---") and "@include" in line):
            out.append(line)
            continue
        # Not at the start of a line means inside a block: its functions would be local to it.
        match = _INCLUDE_LINE.match(line.rstrip("\n"))
        if match is None:
            raise LuaIncludeError(
                f'{path}:{number}: not an include line (write `--- @include "name"` at the start of a '
                f"line, outside any block): {line.strip()}"
            )
        name = match.group(1)
        if name in chain:
            cycle = " -> ".join([*chain, name])
            raise LuaIncludeError(f"{path}:{number}: include cycle: {cycle}")
        if name in included:
            continue  # its functions are already in scope above
        snippet = include_dir / f"{name}.lua"
        if not snippet.is_file():
            raise LuaIncludeError(f'{path}:{number}: include "{name}" not found: no file {snippet}')
        included.add(name)
        _expand(snippet, include_dir, out, included, [*chain, name])
