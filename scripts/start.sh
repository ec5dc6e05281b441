#!/usr/bin/env bash
# `npm start [-- --port N] [other wrangler dev flags]`: builds wharf and serves it with
# wrangler dev on 127.0.0.1 (port 8787 unless given) with local R2 and KV kept in .wrangler/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh
port=(--port 8787)
for arg in "$@"; do
  case "$arg" in --port|--port=*) port=() ;; esac
done
export CLOUDFLARE_CF_FETCH_ENABLED=false WRANGLER_HIDE_BANNER=true WRANGLER_SEND_METRICS=false
exec node_modules/.bin/wrangler dev --local --ip 127.0.0.1 "${port[@]}" --show-interactive-dev-session=false "$@"
