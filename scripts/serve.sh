#!/usr/bin/env bash
# Quickstart: install, then run Redis (embedded unless GATEWAY_REDIS_URL is set: port
# 6390 or a free one), one RQ worker (restarted if it dies) and gunicorn on 127.0.0.1:8788.
# Ctrl-C stops everything. See docs/OPERATIONS.md, "Processes".
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh requirements.txt
exec .venv/bin/python -m gateway.serve "$@"
