#!/usr/bin/env bash
# Quickstart: install, then run Redis (embedded unless GATEWAY_REDIS_URL is set),
# one RQ worker and gunicorn on 127.0.0.1:8788. Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh requirements.txt
exec .venv/bin/python -m gateway.serve "$@"
