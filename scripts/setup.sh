#!/usr/bin/env bash
# Installs what building (and, with --with-test-tools, testing) wharf needs on a fresh Debian
# machine with rustup and Node: pinned versions, nothing downloaded outside crates.io, npm and
# apt. Idempotent: what is already installed at the right version is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

WASM_BINDGEN_VERSION=0.2.130

rustup target list --installed | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown
rustup component list --installed | grep -q '^clippy' || rustup component add clippy rustfmt

if ! wasm-bindgen --version 2>/dev/null | grep -q "$WASM_BINDGEN_VERSION"; then
  # Not --locked: its lock file pins a webpki-roots release crates.io no longer serves.
  cargo install wasm-bindgen-cli --version "$WASM_BINDGEN_VERSION"
fi
if [ ! -x node_modules/.bin/wrangler ] || [ package.json -nt node_modules/.package-lock.json ]; then
  if [ -f package-lock.json ]; then npm ci --no-audit --no-fund; else npm install --no-audit --no-fund; fi
fi

if [ "${1:-}" = --with-bench-tools ]; then
  # hey: the load generator; docker-registry: Distribution 2.8, the reference every scenario is
  # measured against; curl: the upload client.
  missing=()
  command -v hey >/dev/null || missing+=(hey)
  command -v docker-registry >/dev/null || missing+=(docker-registry)
  command -v curl >/dev/null || missing+=(curl)
  if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
  fi
fi

if [ "${1:-}" = --with-test-tools ]; then
  # skopeo and podman: real clients for the end-to-end tests; openssl: their throw-away TLS
  # front; libssl-dev and pkg-config: native-tls of the oci-client test crate; chromium: the
  # browser the web UI is tested in (driven by playwright-core from npm).
  missing=()
  command -v skopeo >/dev/null || missing+=(skopeo)
  command -v podman >/dev/null || missing+=(podman)
  command -v openssl >/dev/null || missing+=(openssl)
  dpkg -s libssl-dev >/dev/null 2>&1 || missing+=(libssl-dev)
  command -v pkg-config >/dev/null || missing+=(pkg-config)
  [ -x /usr/bin/chromium ] || missing+=(chromium)
  if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
  fi
  # oras-py: a real chunked-upload client for the end-to-end tests.
  python3 -c 'import oras.provider' 2>/dev/null || python3 -m pip install --quiet --disable-pip-version-check 'oras==0.2.43'
fi
