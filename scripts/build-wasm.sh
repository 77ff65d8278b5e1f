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
target_dir=target
for ((i = 1; i <= $#; i++)); do
  [ "${!i}" = "--target-dir" ] && { j=$((i + 1)); target_dir=${!j}; }
done
module="$target_dir/$target/release/envoy_persistence.wasm"

apt_install() {
  local sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -q && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@"
}

# Binaryen's optimizer takes about a fifth off the module (what Envoy loads into every worker).
# The stripped module has no target-features section: name the features rustc uses.
optimize() {
  command -v wasm-opt >/dev/null 2>&1 || apt_install binaryen >&2 || true
  if ! command -v wasm-opt >/dev/null 2>&1; then
    echo "warning: wasm-opt (Debian package binaryen) unavailable: $module is not size-optimized" >&2
    return 0
  fi
  wasm-opt -Oz --strip-debug --strip-producers \
    --enable-bulk-memory --enable-sign-ext --enable-nontrapping-float-to-int \
    --enable-mutable-globals --enable-multivalue --enable-reference-types \
    "$module" -o "$module.opt"
  mv "$module.opt" "$module"
}

if command -v rustup >/dev/null 2>&1 &&
   { rustup target list --installed | grep -qx "$target" || rustup target add "$target"; }; then
  cargo build --release --lib --target "$target" "$@"
  optimize
  exit 0
fi

echo "rustup cannot provide $target: building with Debian's Rust and -Zbuild-std" >&2
packages=(rustc-web cargo-web rust-web-src wasi-libc)
lld=$(apt-cache search --names-only '^lld-[0-9]+$' 2>/dev/null | awk '{print $1}' | sort -V | tail -n1)
[ -n "$lld" ] && packages+=("$lld")
missing=()
for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
[ ${#missing[@]} -gt 0 ] && apt_install "${missing[@]}"
RUSTFLAGS="-L native=/usr/lib/wasm32-wasi" RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 \
  /usr/bin/cargo build --release --lib --target "$target" -Zbuild-std=std,panic_abort "$@"
optimize
