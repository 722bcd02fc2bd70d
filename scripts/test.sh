#!/usr/bin/env bash
# Install the test requirements, lint, and run the test suite (it starts its own Redis,
# workers, gunicorn and callback receivers on 127.0.0.1).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh requirements-dev.txt
.venv/bin/ruff check .
.venv/bin/ruff format --check .
exec .venv/bin/python -m pytest "$@"
