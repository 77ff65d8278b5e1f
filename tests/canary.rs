//! Persistence across weighted clusters (envoy/canary.yaml) in a real Envoy 1.40: new clients
//! follow the route's weights, established clients keep their cluster and host through weight
//! changes pushed over LDS, a cluster taken out of the route re-balances its clients once and
//! without errors, and no client can choose a cluster.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use common::{backend_of, get, loopback, Backend, Connection, Envoy, EnvoyConfig, Jar};
use serde_json::json;
use std::collections::HashMap;

/// v1 = backend-1, backend-2; v2 (the canary) = backend-3, backend-4.
fn setup() -> (Vec<Backend>, EnvoyConfig) {
    let backends = Backend::start_many(4);
    let config = EnvoyConfig::load("canary.yaml").backends("app-v1", &backends[..2]).backends("app-v2", &backends[2..]).fast_health_checks();
    (backends, config)
}

fn cluster_of(backend: &str) -> &'static str {
    match backend {
        "backend-1" | "backend-2" => "app-v1",
        "backend-3" | "backend-4" => "app-v2",
        other => panic!("unknown backend {other}"),
    }
}

/// `config` with the weighted route's weights (v1, v2); a weight of None takes that cluster out of
/// the route, with its sticky route.
fn weights(config: &EnvoyConfig, v1: Option<u32>, v2: Option<u32>) -> EnvoyConfig {
    let mut config = config.clone();
    let clusters: Vec<_> = [("app-v1", v1), ("app-v2", v2)].iter().filter_map(|(name, w)| w.map(|w| json!({"name": name, "weight": w}))).collect();
    config.route_mut("main", "weighted")["route"]["weighted_clusters"]["clusters"] = json!(clusters);
    if v2.is_none() {
        let routes = config.connection_manager_mut("main")["route_config"]["virtual_hosts"][0]["routes"].as_array_mut().unwrap();
        routes.retain(|r| r["name"] != "sticky-v2");
    }
    config
}

/// A client with its cookie jar and the backend it was first sent to.
struct Client {
    jar: Jar,
    backend: String,
}

fn new_client(envoy: &Envoy) -> Client {
    let mut jar = Jar::default();
    let response = jar.get_from(envoy.addr(), "/");
    let backend = backend_of(&response);
    assert!(jar.get("AVI_COOKIE").is_some(), "a cookie on the first response");
    Client { jar, backend }
}

#[test]
fn new_clients_follow_the_weights_and_established_clients_keep_cluster_and_host_through_weight_changes() {
    let (_backends, config) = setup();
    let mut envoy = Envoy::start_dynamic(&config);

    // 1,000 new clients at 90/10.
    let clients: Vec<Client> = (0..1000).map(|_| new_client(&envoy)).collect();
    let canary = clients.iter().filter(|c| cluster_of(&c.backend) == "app-v2").count();
    println!("1,000 new clients at 90/10: {canary} on app-v2 ({:.1}%)", canary as f64 / 10.0);
    assert!((70..=130).contains(&canary), "{canary} of 1,000 new clients on the 10% cluster (within 3 points of 100)");
    assert_eq!(envoy.counter("persistence.web.new"), 1000);

    // 30 established clients of each cluster; they keep cluster and host whatever the weights.
    let (on_v1, on_v2): (Vec<Client>, Vec<Client>) = clients.into_iter().partition(|c| cluster_of(&c.backend) == "app-v1");
    let mut established: Vec<Client> = on_v1.into_iter().take(30).chain(on_v2.into_iter().take(30)).collect();
    assert_eq!(established.len(), 60);
    let mut requests = 0;
    for (v1, v2) in [(50, 50), (100, 0), (0, 100)] {
        envoy.update_listeners(&weights(&config, Some(v1), Some(v2)));
        // New clients follow the new weights (exactly, at 100/0 and 0/100).
        let fresh: Vec<String> = (0..40).map(|_| new_client(&envoy).backend).collect();
        let on_canary = fresh.iter().filter(|b| cluster_of(b) == "app-v2").count();
        println!("weights {v1}/{v2}: 40 new clients, {on_canary} on app-v2");
        match (v1, v2) {
            (100, 0) => assert_eq!(on_canary, 0),
            (0, 100) => assert_eq!(on_canary, 40),
            _ => assert!((8..=32).contains(&on_canary), "{on_canary} of 40 at 50/50"),
        }
        for client in &mut established {
            for _ in 0..3 {
                let response = client.jar.get_from(envoy.addr(), "/");
                assert_eq!(backend_of(&response), client.backend, "weights {v1}/{v2}: an established client moved");
                assert!(response.header("set-cookie").is_none(), "no new cookie while the session holds");
                requests += 1;
            }
        }
    }
    assert_eq!(envoy.counter("persistence.web.pinned"), requests);
    assert_eq!(envoy.counter("persistence.web.repicked"), 0);
    assert_eq!(envoy.counter("persistence.web.cluster_moved"), 0);
}

#[test]
fn a_cluster_taken_out_of_the_route_rebalances_its_clients_once_and_without_errors() {
    let (_backends, config) = setup();
    let mut envoy = Envoy::start_dynamic(&weights(&config, Some(50), Some(50)));
    let mut on_v1 = Vec::new();
    let mut on_v2 = Vec::new();
    while on_v1.len() < 15 || on_v2.len() < 15 {
        let client = new_client(&envoy);
        match cluster_of(&client.backend) {
            "app-v1" if on_v1.len() < 15 => on_v1.push(client),
            "app-v2" if on_v2.len() < 15 => on_v2.push(client),
            _ => {}
        }
    }

    // app-v2 leaves the route (its weight and its sticky route); the cluster itself still exists.
    envoy.update_listeners(&weights(&config, Some(100), None));
    for client in &mut on_v2 {
        let response = client.jar.get_from(envoy.addr(), "/");
        let now = backend_of(&response);
        assert_eq!(cluster_of(&now), "app-v1", "a client of a cluster the route no longer reaches is load balanced again");
        assert!(response.header("set-cookie").is_some(), "its cookie moves to the new cluster and host");
        client.backend = now;
    }
    assert_eq!(envoy.counter("persistence.web.cluster_moved"), 15);
    assert_eq!(envoy.counter("persistence.web.repicked"), 15);
    // Moved exactly once: from now on they stick to their new host, like the v1 clients that never moved.
    for client in on_v1.iter_mut().chain(on_v2.iter_mut()) {
        for _ in 0..3 {
            let response = client.jar.get_from(envoy.addr(), "/");
            assert_eq!(backend_of(&response), client.backend);
            assert!(response.header("set-cookie").is_none());
        }
    }
    assert_eq!(envoy.counter("persistence.web.cluster_moved"), 15);

    // A restart with the same keys (and the new route): every client keeps its host.
    let envoy = envoy.restart();
    for client in on_v1.iter_mut().chain(on_v2.iter_mut()) {
        assert_eq!(backend_of(&client.jar.get_from(envoy.addr(), "/")), client.backend);
    }
    assert_eq!(envoy.counter("persistence.web.repicked"), 0);
    let errors = envoy.stats().iter().filter(|(k, _)| k.starts_with("cluster.app-v") && k.ends_with("upstream_rq_5xx")).map(|(_, v)| *v).sum::<u64>();
    assert_eq!(errors, 0, "no 5xx");
}

#[test]
fn a_client_can_never_choose_a_cluster() {
    let (backends, config) = setup();
    let envoy = Envoy::start_dynamic(&weights(&config, Some(100), Some(0)));
    // A new client naming the canary: the header is removed before the route is matched again.
    for _ in 0..20 {
        let response = get(envoy.addr(), "/", &[("x-persistence-cluster", b"app-v2")]);
        assert_eq!(cluster_of(&backend_of(&response)), "app-v1");
    }
    // An established client naming the other cluster stays where its cookie says.
    let mut client = new_client(&envoy);
    let cookie = client.jar.header().unwrap();
    for _ in 0..10 {
        let response = get(envoy.addr(), "/", &[("cookie", cookie.as_bytes()), ("x-persistence-cluster", b"app-v2")]);
        assert_eq!(backend_of(&response), client.backend);
    }
    assert_eq!(envoy.counter("persistence.cluster_header_removed"), 30);
    // Backends never see the header, neither the client's nor the filter's (the route removes it).
    let _ = client.jar.get_from(envoy.addr(), "/");
    let received: Vec<_> = backends.iter().flat_map(|b| b.received()).collect();
    assert!(received.len() >= 31);
    assert!(received.iter().all(|r| r.header("x-persistence-cluster").is_none()));
}

#[test]
fn client_ip_entries_keep_their_cluster_through_weight_changes() {
    let (_backends, config) = setup();
    let config = config.plugin(|p| {
        p["default_profile"] = json!("ip");
        p["profiles"] = json!([{"name": "ip", "type": "client_ip", "client_ip": {"timeout_minutes": 5}}]);
    });
    let mut envoy = Envoy::start_dynamic(&weights(&config, Some(50), Some(50)));
    let request = |envoy: &Envoy, n: usize| backend_of(&Connection::open_from(envoy.addr(), loopback(n)).get("/", &[]));
    let first: HashMap<usize, String> = (0..24).map(|n| (n, request(&envoy, n))).collect();
    let canary = first.values().filter(|b| cluster_of(b) == "app-v2").count();
    assert!((3..=21).contains(&canary), "{canary} of 24 clients on app-v2 at 50/50");
    for (v1, v2) in [(100, 0), (0, 100), (50, 50)] {
        envoy.update_listeners(&weights(&config, Some(v1), Some(v2)));
        for (n, backend) in &first {
            assert_eq!(&request(&envoy, *n), backend, "weights {v1}/{v2}: client {n} moved");
        }
    }
    assert_eq!(envoy.counter("persistence.ip.new"), 24);
    assert_eq!(envoy.counter("persistence.ip.pinned"), 72);
}
