//! Custom HTTP header persistence in a real Envoy 1.40 (envoy/http-header.yaml): values of
//! `x-tenant` statically assigned to servers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use common::{get, Backend, Envoy, EnvoyConfig};
use serde_json::{json, Value};
use std::collections::HashSet;

/// The shipped configuration with the assigned addresses pointed at the test backends
/// (backend-1: acme, globex; backend-2: initech; backend-3: umbrella, hooli).
fn config(backends: &[Backend]) -> EnvoyConfig {
    EnvoyConfig::load("http-header.yaml").backends("app", backends).fast_health_checks().header_servers(backends)
}

fn tenant(envoy: &Envoy, value: &[u8]) -> String {
    let response = get(envoy.addr(), "/", &[("x-tenant", value)]);
    assert_eq!(response.status, 200, "{response:?}");
    response.header("x-backend").unwrap().to_string()
}

#[test]
fn each_listed_value_goes_to_its_server() {
    let backends = Backend::start_many(3);
    let envoy = Envoy::start(&config(&backends));
    for (value, server) in [("acme", "backend-1"), ("globex", "backend-1"), ("initech", "backend-2"), ("umbrella", "backend-3"), ("hooli", "backend-3")] {
        for _ in 0..4 {
            assert_eq!(tenant(&envoy, value.as_bytes()), server, "{value}");
        }
    }
    assert_eq!(envoy.counter("persistence.tenants.pinned"), 20);
}

#[test]
fn missing_or_unlisted_values_are_load_balanced_and_counted() {
    let backends = Backend::start_many(3);
    let envoy = Envoy::start(&config(&backends));
    let missing: HashSet<String> = (0..6).map(|_| get(envoy.addr(), "/", &[]).header("x-backend").unwrap().to_string()).collect();
    assert_eq!(missing.len(), 3);
    // (Surrounding whitespace is not part of a header value: Envoy trims it, so "acme " is acme.)
    for value in [&b"wayne"[..], b"ACME", b"acme2", b"", b"\xff\xfe"] {
        let landed: HashSet<String> = (0..6).map(|_| tenant(&envoy, value)).collect();
        assert_eq!(landed.len(), 3, "{:?} is not a listed value: load balanced", String::from_utf8_lossy(value));
    }
    assert_eq!(envoy.counter("persistence.tenants.header_missing"), 6);
    assert_eq!(envoy.counter("persistence.tenants.header_unmatched"), 30);
    assert_eq!(envoy.counter("persistence.tenants.pinned"), 0);
}

#[test]
fn server_down_immediate_load_balances_never_keeps() {
    let backends = Backend::start_many(3);
    let envoy = Envoy::start(&config(&backends));
    envoy.set_health(&backends[0], false);
    let landed: HashSet<String> = (0..6).map(|_| tenant(&envoy, b"acme")).collect();
    assert!(!landed.contains("backend-1"), "{landed:?}");
    assert_eq!(envoy.counter("persistence.tenants.repicked"), 6);
    drop(envoy);

    let never = config(&backends).server_down_never("app");
    backends[0].set_healthy(true);
    let envoy = Envoy::start(&never);
    envoy.set_health(&backends[0], false);
    for _ in 0..6 {
        assert_eq!(tenant(&envoy, b"acme"), "backend-1");
    }
}

#[test]
fn envoy_refuses_bad_server_assignments_naming_the_fields() {
    let backends = Backend::start_many(3);
    type Edit = fn(&mut Value);
    let cases: [(Edit, &str); 2] = [
        (|s| s["servers"][1]["values"] = json!(["initech", "acme"]), "profiles[0].http_header.servers[1].values[1]: \"acme\" is already assigned to"),
        (
            |s| s["servers"][0]["address"] = json!("backend-1:8080"),
            "profiles[0].http_header.servers[0].address: must be ip:port (IPv6 in brackets, e.g. [2001:db8::1]:8080), got \"backend-1:8080\"",
        ),
    ];
    for (edit, message) in cases {
        let log = Envoy::try_start(&config(&backends).profile_settings(edit), 1).err().expect("Envoy refused the configuration");
        assert!(log.contains(message), "{message}\n{log}");
    }
}
