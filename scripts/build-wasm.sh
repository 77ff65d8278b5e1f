#!/usr/bin/env bash
# Builds target/wasm32-wasip1/release/envoy_persistence.wasm on a fresh machine (extra arguments go
# to cargo build, e.g. --features bench --target-dir target/bench).
#
# Preferred: the rustup toolchain with the wasm32-wasip1 target (installed here if missing).
# Fallback, where rustup cannot download the target: Debian's Rust with its own library source,
# building std for the target (see DESIGN.md, "Toolchain and binaries").
set -euo pipefail
cd "$(dirname "$0")/.."

target=wasm32-wasip1
if command -v rustup >/dev/null 2>&1 &&
   { rustup target list --installed | grep -qx "$target" || rustup target add "$target"; }; then
  exec cargo build --release --lib --target "$target" "$@"
fi

echo "rustup cannot provide $target: building with Debian's Rust and -Zbuild-std" >&2
packages=(rustc-web cargo-web rust-web-src wasi-libc)
lld=$(apt-cache search --names-only '^lld-[0-9]+$' 2>/dev/null | awk '{print $1}' | sort -V | tail -n1)
[ -n "$lld" ] && packages+=("$lld")
missing=()
for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -q
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
fi
RUSTFLAGS="-L native=/usr/lib/wasm32-wasi" RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 \
  exec /usr/bin/cargo build --release --lib --target "$target" -Zbuild-std=std,panic_abort "$@"
