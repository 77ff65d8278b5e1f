#!/usr/bin/env bash
# clippy with unwrap/expect/panic denied outside tests (Cargo.toml [lints], clippy.toml), for the
# module as shipped, the benchmark build, and the native code, tests and examples.
set -euo pipefail
cd "$(dirname "$0")/.."
if rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip1; then
  cargo clippy --lib --target wasm32-wasip1 -- -D warnings
  cargo clippy --lib --target wasm32-wasip1 --features bench -- -D warnings
else
  echo "warning: no rustup wasm32-wasip1 target (Debian fallback build): the Envoy glue (src/host) is not linted" >&2
fi
cargo clippy --lib --tests --examples -- -D warnings
