//! Session header persistence in a real Envoy 1.40 (envoy/session-header.yaml): HTTP clients that
//! keep no cookies, and gRPC (grpcio clients and servers over HTTP/2), where the token travels as
//! metadata. The existing http_header profile routes gRPC metadata values too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use common::python::{run_client, PythonServer};
use common::{backend_of, get, named, Backend, Envoy, EnvoyConfig};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::time::Duration;

/// The shipped configuration: HTTP backends, and gRPC servers for the gRPC cluster.
fn config(backends: &[Backend], grpc: &[PythonServer]) -> EnvoyConfig {
    let grpc: Vec<_> = grpc.iter().map(|s| s.addr).collect();
    EnvoyConfig::load("session-header.yaml").backends("app", backends).backend_addresses("grpc", &grpc).fast_health_checks()
}

#[test]
fn an_api_client_keeps_its_server_with_the_token_and_the_backend_never_sees_it() {
    let backends = Backend::start_many(3);
    let envoy = Envoy::start(&config(&backends, &[]).plugin(|p| p["keys"] = json!([{"id": 1, "secret": common::test_secret(9)}])));
    let mut servers = HashSet::new();
    for _ in 0..6 {
        let first = get(envoy.addr(), "/v1/orders", &[]);
        let server = backend_of(&first);
        let token = first.header("x-session-token").expect("a token on the first response").to_string();
        servers.insert(server.clone());
        for _ in 0..5 {
            let response = get(envoy.addr(), "/v1/orders", &[("x-session-token", token.as_bytes())]);
            assert_eq!(backend_of(&response), server);
            assert!(response.header("x-session-token").is_none(), "nothing to send while the session holds");
        }
        let received = named(&backends, &server).last_received().unwrap();
        assert!(received.header("x-session-token").is_none(), "the backend never sees the token");
    }
    assert!(servers.len() > 1, "clients are balanced: {servers:?}");
    assert_eq!(envoy.counter("persistence.api.new"), 6);
    assert_eq!(envoy.counter("persistence.api.pinned"), 30);
    // A token sealed under the same key id with another key is rejected, counted, and replaced.
    let response = get(envoy.addr(), "/v1/orders", &[("x-session-token", b"AQEHBwcHBwcHBwcHBwd44l2s3rig-yNU7DC2EVy88VAOP_7K2HAWLStZ3jR-_l6iY06AzLA")]);
    assert!(response.header("x-session-token").is_some());
    assert_eq!(envoy.counter("persistence.api.rejected.forged"), 1);
}

/// gRPC calls through Envoy: `args` for tests/python/grpc_client.py.
fn grpc(envoy: &Envoy, args: &[&str]) -> Value {
    let mut all = vec![envoy.addr().to_string()];
    all.extend(args.iter().map(|a| a.to_string()));
    run_client("grpc_client.py", &all, Duration::from_secs(120))
}

#[test]
fn every_call_of_a_grpc_session_reaches_one_server() {
    let grpc_servers = PythonServer::start_many("grpc_server.py", 3);
    let backends = Backend::start_many(1);
    let envoy = Envoy::start(&config(&backends, &grpc_servers));
    let result = grpc(&envoy, &["session", "12", "10"]);
    assert_eq!(result["errors"], json!([]), "{result}");
    assert_eq!(result["tokens"], 12, "each client got a token in the response metadata: {result}");
    let per_client = result["servers_per_client"].as_array().unwrap();
    assert!(per_client.iter().all(|servers| servers.as_array().unwrap().len() == 1), "one server per session: {result}");
    let servers: HashSet<&str> = per_client.iter().map(|s| s[0].as_str().unwrap()).collect();
    assert!(servers.len() > 1, "sessions are balanced over the servers: {result}");
    assert_eq!(envoy.counter("persistence.api.pinned"), 120);
    println!("gRPC sessions: {result}");
    assert!(envoy.stats().get("cluster.grpc.upstream_cx_http2_total").copied().unwrap_or(0) > 0, "HTTP/2 to the gRPC servers");
}

#[test]
fn a_grpc_metadata_value_routes_to_its_assigned_server_with_http_header() {
    let grpc_servers = PythonServer::start_many("grpc_server.py", 3);
    let backends = Backend::start_many(1);
    let assigned = grpc_servers[1].addr.to_string();
    let config = config(&backends, &grpc_servers).plugin(move |p| {
        p["routes"] = json!({"grpc": "tenants"});
        p["profiles"].as_array_mut().unwrap().push(json!({"name": "tenants", "type": "http_header",
            "http_header": {"name": "x-tenant", "servers": [{"address": assigned, "values": ["acme"]}]}}));
    });
    let envoy = Envoy::start(&config);
    let result = grpc(&envoy, &["header", "acme", "10"]);
    assert_eq!(result, json!({"servers": ["server-2"], "calls": 10, "errors": []}));
    assert_eq!(envoy.counter("persistence.tenants.pinned"), 10);
}
