"""The Lua scripts with their ``--- @include`` snippets expanded (``gateway/luasource.py``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from gateway import create_app, scripts
from gateway.luasource import LUA_DIR, LuaIncludeError, flatten, flattened_sources
from tests.conftest import ROOT, base_config
from tests.test_operations import create_least_privilege_user

#: Its own database: the queue and documents of this file's task start empty.
DB = 9


def write_lua(lua_dir: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = lua_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return lua_dir


def test_every_script_flattens_and_redis_compiles_it(redis_server):
    sources = scripts.read_sources()
    assert sorted(sources) == sorted(path.stem for path in LUA_DIR.glob("*.lua"))
    admin = redis.Redis(port=redis_server.port)
    for name, source in sources.items():
        assert "@include" not in source, name
        assert admin.script_load(source) == admin.register_script(source).sha


def test_snippets_are_not_scripts_of_their_own():
    snippets = {path.stem for path in (LUA_DIR / "include").glob("*.lua")}
    assert snippets, "lua/include/ holds the shared snippets"
    assert not snippets & set(scripts.read_sources())


def test_flattened_sources_are_the_same_bytes_in_another_process(tmp_path):
    """An operator's ``scripts load`` and every gateway process must agree on each SHA,
    whatever their locale, hash seed or working directory."""
    program = (
        "import json; from gateway.scripts import read_sources; import hashlib; "
        "print(json.dumps({n: hashlib.sha1(s.encode('utf-8')).hexdigest() for n, s in read_sources().items()}))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LC_ALL": "C", "LANG": "C", "PYTHONHASHSEED": "12345"}
    env.pop("PYTHONUTF8", None)
    other = subprocess.run(
        [sys.executable, "-c", program], cwd=tmp_path, env=env, capture_output=True, text=True, check=True
    )
    here = {name: redis.Redis().register_script(source).sha for name, source in scripts.read_sources().items()}
    assert json.loads(other.stdout) == here


def test_a_snippet_included_twice_is_expanded_once(tmp_path, redis_server):
    lua_dir = write_lua(
        tmp_path,
        {
            "main.lua": '--- @include "double"\n--- @include "one"\nreturn double(one())\n',
            "include/double.lua": '--- @include "one"\nlocal function double(x) return 2 * x end\n',
            "include/one.lua": "local function one() return 1 end\n",
        },
    )
    source = flattened_sources(lua_dir)["main"]
    assert source.count("local function one()") == 1
    assert (
        source == "local function one() return 1 end\nlocal function double(x) return 2 * x end\nreturn double(one())\n"
    )
    assert redis.Redis(port=redis_server.port).eval(source, 0) == 2


def test_line_ends_and_a_missing_last_newline_do_not_change_the_text(tmp_path):
    unix = write_lua(
        tmp_path / "unix",
        {"s.lua": '--- @include "x"\nreturn x()\n', "include/x.lua": "local function x() return 1 end\n"},
    )
    dos = write_lua(
        tmp_path / "dos",
        {"s.lua": '--- @include "x"\r\nreturn x()', "include/x.lua": "local function x() return 1 end"},
    )
    assert flattened_sources(unix) == flattened_sources(dos)


def test_a_missing_include_names_the_file_and_the_snippet(tmp_path):
    lua_dir = write_lua(tmp_path, {"main.lua": '-- header\n--- @include "nowhere"\nreturn 1\n'})
    with pytest.raises(LuaIncludeError) as error:
        flattened_sources(lua_dir)
    message = str(error.value)
    assert f"{lua_dir / 'main.lua'}:2" in message
    assert '"nowhere" not found' in message
    assert str(lua_dir / "include" / "nowhere.lua") in message


def test_an_include_cycle_is_refused_with_its_path(tmp_path):
    lua_dir = write_lua(
        tmp_path,
        {
            "main.lua": '--- @include "a"\nreturn 1\n',
            "include/a.lua": '--- @include "b"\nlocal function a() end\n',
            "include/b.lua": '--- @include "a"\nlocal function b() end\n',
        },
    )
    with pytest.raises(LuaIncludeError, match="include cycle: a -> b -> a") as error:
        flatten(lua_dir / "main.lua", lua_dir / "include")
    assert str(lua_dir / "include" / "b.lua") in str(error.value)


@pytest.mark.parametrize("line", ["--- @include", '--- @include "a b"', '  --- @include "x"'])
def test_a_malformed_include_line_is_refused(tmp_path, line):
    lua_dir = write_lua(tmp_path, {"main.lua": f"{line}\nreturn 1\n", "include/x.lua": "local x = 1\n"})
    with pytest.raises(LuaIncludeError, match="main.lua:1: not an include line"):
        flattened_sources(lua_dir)


def test_evalsha_only_user_works_after_scripts_load_in_another_process(redis_server, task_id, receiver):
    """The operator loads the flattened scripts from their own process; a gateway whose
    Redis user may only EVALSHA then finds every script under the SHA it computes."""
    from gateway.worker import build_worker

    admin = redis.Redis(port=redis_server.port, db=DB)
    admin.flushdb()
    admin.script_flush()
    create_least_privilege_user(admin, "gateway-sha", "sha-pass")
    restricted_url = f"redis://gateway-sha:sha-pass@127.0.0.1:{redis_server.port}/{DB}"
    app = create_app({**base_config(redis_server, DB), "REDIS_URL": restricted_url})
    client = app.test_client()
    body = {"task_name": "demo.echo", "task_id": task_id, "input_data": {"n": 1}, "callback": receiver.url()}
    try:
        assert client.post("/v1/tasks", json=body).json["error"]["code"] == "scripts_not_loaded"

        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "GATEWAY_REDIS_URL": f"redis://127.0.0.1:{redis_server.port}/{DB}",  # the operator's user
            "GATEWAY_CALLBACK_ALLOW_PRIVATE_NETWORKS": "true",
        }
        loaded = subprocess.run(
            [sys.executable, "-m", "flask", "--app", "wsgi", "scripts", "load"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert loaded.returncode == 0, loaded.stderr
        printed = dict(line.split() for line in loaded.stdout.splitlines())
        local = {name: admin.register_script(source).sha for name, source in scripts.read_sources().items()}
        assert {name: printed[name] for name in local} == local
        assert app.test_cli_runner().invoke(args=["scripts", "check"]).exit_code == 0

        assert client.post("/v1/tasks", json=body).status_code == 202
        with app.app_context():
            build_worker().work(burst=True, with_scheduler=True, logging_level="WARNING")
        [delivered] = receiver.wait_for(1)
        assert delivered["json"]["result"]["output"] == {"n": 1}
        assert client.post("/v1/tasks", json=body).json["reuse_info"]["state"] == "completed"
    finally:
        admin.acl_deluser("gateway-sha")
