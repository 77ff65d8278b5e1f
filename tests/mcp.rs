//! MCP sessions through a real Envoy 1.40 (envoy/mcp.yaml): three replicas of the MCP Python SDK's
//! streamable-HTTP server behind Envoy, and the SDK's client running concurrent sessions. A server
//! answers 404 to a session id it did not issue, so without persistence sessions fail.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use common::python::{run_client, PythonServer};
use common::{Envoy, EnvoyConfig};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::time::Duration;

const SESSIONS: usize = 20;
const CALLS: usize = 10;

fn mcp_envoy(servers: &[PythonServer], edit: impl Fn(&mut Value)) -> Envoy {
    let addresses: Vec<_> = servers.iter().map(|s| s.addr).collect();
    Envoy::start(&EnvoyConfig::load("mcp.yaml").backend_addresses("app", &addresses).fast_health_checks().plugin(edit))
}

/// 20 concurrent sessions of 10 tool calls each; the client's summary.
fn run_sessions(envoy: &Envoy) -> Value {
    let url = format!("http://{}/mcp", envoy.addr());
    run_client("mcp_client.py", &[url, SESSIONS.to_string(), CALLS.to_string()], Duration::from_secs(120))
}

/// Every session succeeded on one server, and sessions were spread over the servers.
fn assert_all_sessions_stuck(result: &Value) {
    assert_eq!(result["succeeded"], SESSIONS, "{result}");
    let servers: HashSet<String> = result["servers_per_session"].as_array().unwrap().iter().map(|s| s[0].as_str().unwrap().to_string()).collect();
    assert!(servers.len() > 1, "sessions are load balanced over the replicas: {result}");
}

#[test]
fn mcp_sessions_stay_on_their_server_in_table_mode_and_are_forgotten_when_they_end() {
    let servers = PythonServer::start_many("mcp_server.py", 3);
    let envoy = mcp_envoy(&servers, |_| {});
    let result = run_sessions(&envoy);
    assert_all_sessions_stuck(&result);
    // Learned once per session (the server repeats the id on every response: no further writes),
    // and each session's closing DELETE forgot it.
    assert_eq!(envoy.counter("persistence.mcp.learned"), SESSIONS as u64);
    envoy.wait_until("every ended session to be forgotten", || envoy.counter("persistence.mcp.entries") == 0);
    assert!(envoy.counter("persistence.mcp.pinned") >= (SESSIONS * CALLS) as u64, "{}", envoy.counter("persistence.mcp.pinned"));
    println!(
        "table mode: {} of {SESSIONS} sessions succeeded, {} requests pinned, {} new, learned {}, entries after the DELETEs 0",
        result["succeeded"],
        envoy.counter("persistence.mcp.pinned"),
        envoy.counter("persistence.mcp.new"),
        envoy.counter("persistence.mcp.learned")
    );
}

#[test]
fn mcp_sessions_stay_on_their_server_in_prefix_mode() {
    let servers = PythonServer::start_many("mcp_server.py", 3);
    let envoy = mcp_envoy(&servers, |p| {
        p["keys"] = json!([{"id": 1, "secret": common::test_secret(7)}]);
        p["profiles"][0]["app_header"] = json!({"name": "mcp-session-id", "mode": "prefix"});
    });
    let result = run_sessions(&envoy);
    assert_all_sessions_stuck(&result);
    assert_eq!(envoy.counter("persistence.mcp.learned"), SESSIONS as u64, "sealed once per session, then echoed");
    assert_eq!(envoy.counter("persistence.mcp.rejected.forged"), 0);
    println!(
        "prefix mode: {} of {SESSIONS} sessions succeeded, {} requests pinned, {} new, sealed {}",
        result["succeeded"],
        envoy.counter("persistence.mcp.pinned"),
        envoy.counter("persistence.mcp.new"),
        envoy.counter("persistence.mcp.learned")
    );
}

#[test]
fn without_persistence_mcp_sessions_fail() {
    // The control: the same run with no profile on the route. Round robin sends a session's
    // requests to servers that never issued its id.
    let servers = PythonServer::start_many("mcp_server.py", 3);
    let envoy = mcp_envoy(&servers, |p| {
        p.as_object_mut().unwrap().remove("default_profile");
    });
    let result = run_sessions(&envoy);
    assert!(result["failed"].as_u64().unwrap() > 0, "sessions must fail without persistence: {result}");
    println!("without persistence: {} of {SESSIONS} sessions failed ({})", result["failed"], result["errors"]);
}

/// A server-sent event stream through Envoy and the filter: each event reaches the client as the
/// backend sends it (the filter never holds a body), with persistence applied to the stream.
#[test]
fn server_sent_events_pass_through_unbuffered() {
    use std::io::{Read, Write};
    let backends = common::Backend::start_many(3);
    let envoy = Envoy::start(&EnvoyConfig::load("mcp.yaml").backends("app", &backends).fast_health_checks());
    let mut stream = std::net::TcpStream::connect(envoy.addr()).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let started = std::time::Instant::now();
    stream.write_all(b"GET /mcp/events?count=4&gap_ms=700 HTTP/1.1\r\nhost: app.test\r\nmcp-session-id: S1\r\n\r\n").unwrap();
    let mut seen = String::new();
    let mut arrivals = Vec::new();
    let mut buffer = [0u8; 4096];
    while arrivals.len() < 4 {
        let n = stream.read(&mut buffer).unwrap();
        assert!(n > 0, "the stream ended early: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buffer[..n]));
        while arrivals.len() < seen.matches("data: event").count() {
            arrivals.push(started.elapsed());
        }
    }
    println!("events arrived after {arrivals:?}");
    assert!(arrivals[0] < Duration::from_millis(1500), "the first event came at once, not with the last: {arrivals:?}");
    assert!(arrivals[3] - arrivals[0] >= Duration::from_millis(1800), "events arrive as they are sent: {arrivals:?}");
    assert!(seen.contains("content-type: text/event-stream"), "{seen}");
}
