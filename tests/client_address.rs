//! Which address a client IP key is built from, in a real Envoy 1.40: Envoy's client address when
//! it cannot have been written by the client, the connection's peer when asked (`client_address:
//! peer`), and the forwarded client behind a trusted proxy (`xff_num_trusted_hops`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use common::{backend_of, loopback, Backend, Connection, Envoy, EnvoyConfig};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};

const ATTACKER: &str = "127.0.112.78";

/// envoy/client-ip.yaml with the connection manager edited.
fn client_ip(backends: &[Backend], hcm: impl Fn(&mut Value), plugin: impl Fn(&mut Value)) -> EnvoyConfig {
    let mut config = EnvoyConfig::load("client-ip.yaml").backends("app", backends).fast_health_checks().plugin(plugin);
    hcm(config.connection_manager_mut("main"));
    config
}

/// Envoy's default, which takes the client address from the last X-Forwarded-For entry.
fn trust_forwarded_for(hcm: &mut Value) {
    hcm["use_remote_address"] = json!(false);
}

fn get_from(listener: SocketAddr, source: IpAddr, forwarded_for: Option<&str>) -> String {
    let headers: Vec<(&str, &[u8])> = forwarded_for.iter().map(|v| ("x-forwarded-for", v.as_bytes())).collect();
    backend_of(&Connection::open_from(listener, source).get("/", &headers))
}

/// Nine victims pinned over the three servers (asserted), by address.
fn pin_victims(envoy: &Envoy) -> Vec<(IpAddr, String)> {
    let victims: Vec<(IpAddr, String)> = (0..9).map(loopback).map(|v| (v, get_from(envoy.addr(), v, None))).collect();
    assert_eq!(victims.iter().map(|(_, s)| s).collect::<HashSet<_>>().len(), 3, "{victims:?}");
    victims
}

/// The attacker names each victim in X-Forwarded-For; the servers it reached.
fn attack(envoy: &Envoy, victims: &[(IpAddr, String)]) -> Vec<String> {
    let attacker: IpAddr = ATTACKER.parse().unwrap();
    victims.iter().map(|(victim, _)| get_from(envoy.addr(), attacker, Some(&victim.to_string()))).collect()
}

fn filter_log_lines(envoy: &Envoy, text: &str) -> usize {
    envoy.filter_log().iter().filter(|l| l.contains(text)).count()
}

#[test]
fn with_use_remote_address_false_forwarded_addresses_are_refused_counted_and_logged_once_per_worker() {
    let backends = Backend::start_many(3);
    let mut envoy = Envoy::start(&client_ip(&backends, trust_forwarded_for, |_| {}));
    let victims = pin_victims(&envoy);
    let landed = attack(&envoy, &victims);
    assert!(landed.iter().collect::<HashSet<_>>().len() > 1, "refused keys are load balanced (round robin): {landed:?}");
    assert_eq!(envoy.counter("persistence.untrusted_client_address"), 9);
    assert_eq!(envoy.counter("persistence.clients.pinned"), 0, "no request of the attacker was pinned");
    assert_eq!(envoy.counter("persistence.clients.entries"), 9, "and none was recorded");
    for (victim, server) in &victims {
        assert_eq!(&get_from(envoy.addr(), *victim, None), server, "clients without the header keep their servers");
    }
    let warnings = filter_log_lines(&envoy, "Envoy took the client address from the last X-Forwarded-For entry");
    assert!((1..=2).contains(&warnings), "one warning per worker (2 workers), got {warnings}");
    assert!(envoy.log().contains("Fix: set use_remote_address: true"));
    envoy.assert_vm_healthy();
    envoy.stop_for_logs();
    let records = envoy.access_log().matches("decision=balance reason=untrusted_client_address").count();
    assert_eq!(records, 9, "every refused request has its record:\n{}", envoy.access_log());
}

#[test]
fn client_address_peer_keys_on_the_connection_even_when_envoy_trusts_x_forwarded_for() {
    let backends = Backend::start_many(3);
    let peer = |p: &mut Value| p["client_address"] = json!("peer");
    let mut config = client_ip(&backends, trust_forwarded_for, peer);
    config.http_filters_mut("main").insert(
        0,
        json!({"name": "envoy.filters.http.set_filter_state", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.set_filter_state.v3.Config",
            "on_request_headers": [{"object_key": "persistence.peer", "factory_key": "envoy.string",
                "format_string": {"text_format_source": {"inline_string": "%DOWNSTREAM_DIRECT_REMOTE_ADDRESS%"}}}]}}),
    );
    let envoy = Envoy::start(&config);
    let victims = pin_victims(&envoy);
    let landed: HashSet<String> = attack(&envoy, &victims).into_iter().collect();
    assert_eq!(landed.len(), 1, "keyed on its own connection, the attacker stays on one server: {landed:?}");
    assert_eq!(envoy.counter("persistence.clients.pinned"), 8);
    assert_eq!(envoy.counter("persistence.clients.entries"), 10);
    assert_eq!(envoy.counter("persistence.untrusted_client_address") + envoy.counter("persistence.no_peer_address"), 0);
    envoy.assert_vm_healthy();
    drop(envoy);

    // Without set_filter_state the peer is unknown once Envoy replaced the address: refused.
    let envoy = Envoy::start(&client_ip(&backends, trust_forwarded_for, peer));
    let victims = pin_victims(&envoy);
    attack(&envoy, &victims);
    assert_eq!(envoy.counter("persistence.no_peer_address"), 9);
    assert_eq!(envoy.counter("persistence.clients.entries"), 9);
    let warnings = filter_log_lines(&envoy, "no set_filter_state filter provides the connection's peer");
    assert!((1..=2).contains(&warnings), "one warning per worker, got {warnings}");
    envoy.assert_vm_healthy();
}

/// A plain Envoy in front (use_remote_address: true, so it appends the real client to
/// X-Forwarded-For) forwarding everything to `back`, as a trusted load balancer would.
fn trusted_proxy(back: SocketAddr) -> EnvoyConfig {
    EnvoyConfig::from_value(json!({
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "static_resources": {
            "listeners": [{"name": "main", "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
                "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                    "stat_prefix": "front", "use_remote_address": true,
                    "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "back"}}]}]},
                    "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}}]}]}],
            "clusters": [{"name": "back", "type": "STATIC", "connect_timeout": "1s",
                "load_assignment": {"cluster_name": "back", "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": back.ip().to_string(), "port_value": back.port()}}}}]}]}}]
        }
    }))
}

#[test]
fn behind_a_trusted_proxy_with_xff_num_trusted_hops_the_forwarded_client_is_the_key() {
    let backends = Backend::start_many(3);
    let envoy = Envoy::start(&client_ip(&backends, |hcm| hcm["xff_num_trusted_hops"] = json!(1), |_| {}));
    let front = Envoy::start(&trusted_proxy(envoy.addr()));
    let via_proxy = |client: IpAddr, forwarded_for: Option<&str>| get_from(front.addr(), client, forwarded_for);
    // Every connection to the persistence Envoy comes from the proxy; clients are still told apart.
    let first: Vec<String> = (0..9).map(|n| via_proxy(loopback(n), None)).collect();
    assert_eq!(first.iter().collect::<HashSet<_>>().len(), 3, "clients behind one proxy are balanced: {first:?}");
    for (n, server) in first.iter().enumerate() {
        assert_eq!(&via_proxy(loopback(n), None), server, "client {} sticks", loopback(n));
    }
    assert_eq!(envoy.counter("persistence.clients.entries"), 9, "one entry per forwarded client, none for the proxy");
    assert_eq!(envoy.counter("persistence.clients.pinned"), 9);
    // A client naming another client in its own X-Forwarded-For: the proxy appends the real
    // address, and one trusted hop means exactly that entry is used.
    let attacker: IpAddr = ATTACKER.parse().unwrap();
    let landed: HashSet<String> = (0..9).map(|n| via_proxy(attacker, Some(&loopback(n).to_string()))).collect();
    assert_eq!(landed.len(), 1, "the attacker is keyed on its own address: {landed:?}");
    assert_eq!(envoy.counter("persistence.clients.entries"), 10);
    assert_eq!(envoy.counter("persistence.untrusted_client_address"), 0);
    envoy.assert_vm_healthy();
}
