#!/usr/bin/env bash
# The house rules the compiler does not enforce: formatting (rustfmt.toml), clippy with
# unwrap/expect/panic denied outside tests (Cargo.toml [lints], clippy.toml) for the module as
# shipped, the benchmark build, the dynamic module and the native code, tests and examples; and the shape of src/
# (only src/wasm/ names proxy_wasm, no import cycles: scripts/check-modules.py). Installs nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --check
(cd fuzz && cargo fmt --check)
python3 scripts/check-modules.py
if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip1; then
  echo "error: no rustup wasm32-wasip1 target, so the proxy-wasm host (src/wasm) cannot be linted: run make build (it installs the target)" >&2
  exit 1
fi
cargo clippy --lib --target wasm32-wasip1 -- -D warnings
cargo clippy --lib --target wasm32-wasip1 --features bench -- -D warnings
cargo clippy --lib --bins --tests --examples -- -D warnings
cargo clippy --lib --profile native --features native -- -D warnings
