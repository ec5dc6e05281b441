#!/usr/bin/env bash
# `npm start [-- --port N] [--var NAME:value ...] [--persist-to DIR] [--log-level L]`: builds wharf
# and serves it on 127.0.0.1 (port 8787 unless given) on workerd, with local R2 and KV kept in
# .wrangler/state: `wrangler dev --local` without its proxy (see scripts/serve.mjs).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh
exec node scripts/serve.mjs "$@"
