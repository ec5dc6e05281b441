#!/usr/bin/env bash
# Every test of wharf, in order of cost: formatting, lints (native and wasm32), native unit and
# integration tests, the release Worker build, then the end-to-end tests against that build on
# workerd (skopeo, oci-client, HTTP). Run through `npm test`, which installs the tools first.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

step() { printf '\n==> %s\n' "$*"; }

step "format"
cargo fmt --check
cargo fmt --check --manifest-path tests/oci-client/Cargo.toml

step "clippy (native and wasm32, warnings denied)"
cargo clippy --all-targets --locked -- -D warnings
cargo clippy --target wasm32-unknown-unknown --locked -- -D warnings

step "native tests"
cargo test --locked

step "release Worker build"
bash .ci/build.sh

step "oci-client test binary"
cargo build --release --locked --manifest-path tests/oci-client/Cargo.toml

step "end-to-end tests on workerd"
node --test --test-concurrency=1 tests/e2e/
