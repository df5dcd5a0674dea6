#!/usr/bin/env bash
# The FastAPI demo app under gunicorn with 4 uvicorn workers, each running
# its own wshub hub on ONE shared port (SO_REUSEPORT), all joined by a Redis
# backplane so every page gets every publication. See README.md here.
#
#   redis-server --port 6379 --save '' --appendonly no &   # or any Redis
#   examples/scaleout/run.sh                                # app :8000, hub :8765
#
# Environment (defaults in brackets): WSHUB_BACKPLANE [redis://127.0.0.1:6379/0],
# WSHUB_WS_PORT [8765], BIND [127.0.0.1:8000], WORKERS [4],
# WSHUB_SIMULATE [0: publish with POST /publish], VENV [<repo>/.venv].
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="${VENV:-$root/.venv}"

export WSHUB_BACKPLANE="${WSHUB_BACKPLANE:-redis://127.0.0.1:6379/0}"
export WSHUB_REUSE_PORT=1
export WSHUB_WS_PORT="${WSHUB_WS_PORT:-8765}"
# Each worker would run its own simulated scraper; off unless asked for.
export WSHUB_SIMULATE="${WSHUB_SIMULATE:-0}"

cd "$root/examples/fastapi_app"
exec "$venv/bin/gunicorn" -k uvicorn.workers.UvicornWorker \
    -w "${WORKERS:-4}" -b "${BIND:-127.0.0.1:8000}" app:app
