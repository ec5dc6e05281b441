#!/usr/bin/env bash
# Builds the Worker into build/: the wasm (index_bg.wasm) and its JavaScript bindings
# (index.js), which src/entry.mjs, the Worker's main module, loads. With --selftest it also
# builds the variant with the self-test endpoints (the `selftest` feature) into build/selftest/,
# with an entry.mjs of its own, for the end-to-end tests and the upload benchmark. Tools are the
# pinned ones scripts/setup.sh installs; nothing is downloaded.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
# wasm SIMD, which workerd's V8 runs: sha2 then hashes uploads 1.6x as fast (sha256 236 -> 380
# MiB/s in V8 here), and a chunked upload is bound by that hashing (docs/performance.md, "Uploads").
# The remaps shorten the source paths that panic locations carry (about 3 KiB of strings).
export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS="-C target-feature=+simd128 --remap-path-prefix=$HOME/.cargo/registry/src= --remap-path-prefix=$PWD=wharf"

# build <out dir> [cargo flags...]
build() {
  local out=$1
  shift
  cargo build --release --target wasm32-unknown-unknown "$@"
  rm -rf "$out"
  # --experimental-reset-state-function: the entry starts a fresh instance after a trap.
  wasm-bindgen --target web --experimental-reset-state-function --out-dir "$out" --out-name index \
    target/wasm32-unknown-unknown/release/wharf.wasm
  # For size (-Oz), without the names section: a Worker's start-up grows with its bundle. The
  # features are those workerd's V8 supports.
  node_modules/.bin/wasm-opt -Oz --strip-debug --strip-producers \
    --enable-mutable-globals --enable-sign-ext --enable-nontrapping-float-to-int --enable-bulk-memory \
    --enable-multivalue --enable-reference-types --enable-simd \
    "$out/index_bg.wasm" -o "$out/index_bg.wasm"
}

build build
if [ "${1:-}" = --selftest ]; then
  build build/selftest --features selftest
  sed 's|"\.\./build/|"./|g' src/entry.mjs > build/selftest/entry.mjs
fi
