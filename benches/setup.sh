#!/usr/bin/env bash
# Installs the benchmark peers and builds the loadgen and the Rust publisher.
# Idempotent.
#   benches/.venv      Python 3.11 venv: fastapi, uvicorn, websockets, wsproto, socketify, matplotlib
#   benches/.venv312   Python 3.12 venv: wse-server (wheels only for >= 3.12); skipped
#                      when no 3.12 interpreter is found (pyenv's, or PYTHON312=/path)
#   benches/node_modules   npm `ws`
#   libuv1 (Debian) for socketify
# wshub itself is expected in the repo's .venv (maturin develop); set WSHUB_PYTHON otherwise.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
cd "$HERE"
PY="${PYTHON:-python3}"

log() { echo "[setup] $*" >&2; }

# The loadgen (its own workspace and target dir) compiles while the peers
# download; the Rust publisher waits for the repository's target dir.
log "building loadgen, refserver and ringhub (ring-ref) (in the background)"
(cd loadgen && cargo build --release -q) &
loadgen_build=$!

if [ ! -x .venv/bin/python ]; then
  log "creating benches/.venv with $($PY --version)"
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
.venv/bin/python -m pip install -q "fastapi" "uvicorn" "websockets" "wsproto" "matplotlib"
if ! .venv/bin/python -m pip install -q "socketify"; then
  log "socketify install failed (continuing without it)"
fi

# socketify's native part links libuv
if ! ldconfig -p 2>/dev/null | grep -q 'libuv\.so\.1'; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    log "installing libuv1"
    (apt-get install -y -q libuv1 >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q libuv1 >/dev/null; }) \
      || log "libuv1 install failed: socketify will not run"
  else
    log "libuv1 missing and cannot apt-get: socketify will not run"
  fi
fi

# wse-server needs CPython >= 3.12
PY312="${PYTHON312:-}"
if [ -z "$PY312" ]; then
  for c in "$HOME/.pyenv/versions/"3.12*/bin/python3 "$HOME/.pyenv/versions/"3.13*/bin/python3 python3.12 python3.13 python3; do
    if "$c" -c 'import sys; sys.exit(sys.version_info < (3, 12))' >/dev/null 2>&1; then PY312="$c"; break; fi
  done
fi
if [ -n "$PY312" ]; then
  if [ ! -x .venv312/bin/python ]; then
    log "creating benches/.venv312 with $($PY312 --version)"
    "$PY312" -m venv .venv312
  fi
  .venv312/bin/python -m pip install -q "wse-server" || log "wse-server install failed"
else
  log "no Python >= 3.12 found: wse-server skipped (set PYTHON312=/path/to/python3.12)"
fi

if command -v npm >/dev/null; then
  [ -f package.json ] || echo '{"name":"wshub-benches","private":true}' > package.json
  npm install --silent --no-audit --no-fund ws@8 >/dev/null || log "npm install ws failed"
else
  log "npm not found: node_ws_server skipped"
fi


# The ceiling line (run.py --servers wshub-rust): the core with a Rust
# publisher thread, from the repository's own crate.
log "building the Rust publisher (wshub-rust)"
# WSHUB_BENCH_PROFILE: the Cargo profile (make bench: fast, make bench-full: release).
(cd .. && cargo build --profile "${WSHUB_BENCH_PROFILE:-release}" -q --example rust_publisher)
wait "$loadgen_build" || { log "loadgen build failed"; exit 1; }
log "done"
