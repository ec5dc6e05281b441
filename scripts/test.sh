#!/usr/bin/env bash
# Every test of wharf, in order of cost: formatting, lints (native and wasm32), the module graph,
# native unit and integration tests, the release Worker build, then the end-to-end tests against
# that build on workerd (skopeo, oci-client, HTTP). Run through `npm test`, which installs the
# tools first.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

step() { printf '\n==> %s\n' "$*"; }

step "format"
cargo fmt --check
cargo fmt --check --manifest-path tests/oci-client/Cargo.toml

step "clippy (native and wasm32, warnings denied)"
cargo clippy --all-targets --all-features --locked -- -D warnings
cargo clippy --target wasm32-unknown-unknown --locked -- -D warnings
cargo clippy --target wasm32-unknown-unknown --features selftest --locked -- -D warnings

step "module graph (no cycles, by folder and by module)"
python3 scripts/module-graph.py | tail -n 1
python3 scripts/module-graph.py --modules | tail -n 1

step "native tests"
cargo test --locked
# What the `selftest` feature adds (the end-to-end tests run its endpoints on workerd).
cargo test --locked --features selftest --lib --test api

step "release Worker build"
# The release bundle, and the self-test variant (build/selftest/) a few tests need.
bash scripts/build.sh --selftest

step "oci-client test binary"
cargo build --release --locked --manifest-path tests/oci-client/Cargo.toml

step "end-to-end tests on workerd"
node --test --test-concurrency=1 tests/e2e/
