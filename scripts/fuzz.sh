#!/usr/bin/env bash
# Fuzzes the pure modules with cargo-fuzz (libFuzzer + AddressSanitizer/LeakSanitizer).
#   scripts/fuzz.sh smoke          every target briefly (part of make test: they keep building)
#   scripts/fuzz.sh long [TARGET]  10 million executions or 20 minutes per target
# Seeds come from the tests' inputs (fuzz/seeds/); the grown corpus stays in fuzz/corpus/ (ignored).
# A crash leaves its input in fuzz/artifacts/<target>/: make it a regression test.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
mode=${1:-smoke}
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --version 0.13.2 --locked
# cargo-fuzz's sanitizer flags are nightly-only; this lets the machine's stable compiler take them.
export RUSTC_BOOTSTRAP=1
case "$mode" in
  smoke) limits=(-runs=30000 -max_total_time=15) ;;
  long) limits=(-runs=10000000 -max_total_time=1200) ;;
  *) echo "usage: $0 smoke|long [target]" >&2; exit 2 ;;
esac
targets=${2:-$(cargo fuzz list)}
cargo fuzz build  # fails the script if a target no longer builds
for target in $targets; do
  mkdir -p "corpus/$target"
  echo "== $target ($mode)"
  log=$(mktemp)
  status=0
  cargo fuzz run "$target" "corpus/$target" "seeds/$target" -- "${limits[@]}" -timeout=10 -rss_limit_mb=2048 >"$log" 2>&1 || status=$?
  grep -E 'Done [0-9]+ runs|ERROR|panicked|SUMMARY|Test unit written' "$log" || true
  if [ "$status" -ne 0 ] || ! grep -q 'Done [0-9]* runs' "$log"; then
    tail -n 40 "$log" >&2
    echo "fuzz target $target failed (exit $status); failing inputs in fuzz/artifacts/$target/" >&2
    rm -f "$log"
    exit 1
  fi
  rm -f "$log"
done
