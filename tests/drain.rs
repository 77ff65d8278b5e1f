//! Graceful drain in a real Envoy 1.40 with file-based EDS (Envoy watches the directory; the test
//! replaces the file atomically, as a control plane would push): a host set to DRAINING keeps
//! every pinned client and gets no new one; once removed, its clients move, each exactly once.
//! The cluster is envoy/http-cookie.yaml's, whose override_host_status lets DRAINING hosts keep
//! their sessions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use common::{backend_of, Backend, Envoy, EnvoyConfig, Jar};
use serde_json::json;
use std::path::Path;

/// Writes the cluster's endpoints: `(backend, health_status)`, atomically (write, then rename).
fn write_eds(dir: &Path, hosts: &[(&Backend, Option<&str>)]) {
    let endpoints: Vec<_> = hosts
        .iter()
        .map(|(backend, status)| {
            let mut endpoint =
                json!({"endpoint": {"address": {"socket_address": {"address": backend.addr.ip().to_string(), "port_value": backend.addr.port()}}}});
            if let Some(status) = status {
                endpoint["health_status"] = json!(status);
            }
            endpoint
        })
        .collect();
    let version = format!("{:?}", hosts.iter().map(|(b, s)| (b.addr.port(), *s)).collect::<Vec<_>>());
    let resources = json!({
        "version_info": version,
        "resources": [{"@type": "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment", "cluster_name": "app", "endpoints": [{"lb_endpoints": endpoints}]}]
    });
    let staged = dir.join("app.json.new");
    std::fs::write(&staged, resources.to_string()).unwrap();
    std::fs::rename(&staged, dir.join("app.json")).unwrap();
}

/// The `/clusters` lines of `backend` in cluster app (empty once Envoy removed the host).
fn host_lines(envoy: &Envoy, backend: &Backend) -> Vec<String> {
    let (_, text) = envoy.admin_get("/clusters").unwrap();
    let prefix = format!("app::{}::", backend.addr);
    text.lines().filter(|l| l.starts_with(&prefix)).map(str::to_string).collect()
}

#[test]
fn a_draining_host_keeps_its_sessions_gets_no_new_clients_and_its_clients_move_once_when_removed() {
    let backends = Backend::start_many(3);
    let eds = tempfile::tempdir().unwrap();
    write_eds(eds.path(), &[(&backends[0], None), (&backends[1], None), (&backends[2], None)]);
    let mut config = EnvoyConfig::load("http-cookie.yaml").fast_health_checks().plugin(|p| p["host_stats"] = json!(true));
    let cluster = config.cluster_mut("app");
    cluster.as_object_mut().unwrap().remove("load_assignment");
    cluster["type"] = json!("EDS");
    cluster["eds_cluster_config"] = json!({"eds_config": {"resource_api_version": "V3",
        "path_config_source": {"path": eds.path().join("app.json"), "watched_directory": {"path": eds.path()}}}});
    // With active health checks, Envoy keeps a host removed from EDS until it fails its checks,
    // unless told otherwise: the drain ends when the control plane says so.
    cluster["ignore_health_on_host_removal"] = json!(true);
    let envoy = Envoy::start_dynamic(&config);

    let mut clients: Vec<(Jar, String)> = (0..30)
        .map(|_| {
            let mut jar = Jar::default();
            let backend = backend_of(&jar.get_from(envoy.addr(), "/"));
            (jar, backend)
        })
        .collect();
    let draining = &backends[0];
    let of_draining = clients.iter().filter(|(_, b)| *b == draining.name).count();
    assert!(of_draining >= 5, "{of_draining} clients on {}", draining.name);

    // backend-1 drains.
    write_eds(eds.path(), &[(draining, Some("DRAINING")), (&backends[1], None), (&backends[2], None)]);
    envoy.wait_until("Envoy to see the host draining", || host_lines(&envoy, draining).iter().any(|l| l.contains("/eds_status_draining")));
    for (jar, backend) in &mut clients {
        for _ in 0..3 {
            let response = jar.get_from(envoy.addr(), "/");
            assert_eq!(&backend_of(&response), backend, "a pinned client left its host");
        }
    }
    let fresh: Vec<String> = (0..200).map(|_| backend_of(&Jar::default().get_from(envoy.addr(), "/"))).collect();
    let new_on_draining = fresh.iter().filter(|b| **b == draining.name).count();
    println!("draining {}: {of_draining} clients x 3 requests kept, {new_on_draining} of 200 new clients sent there", draining.name);
    assert_eq!(new_on_draining, 0, "a draining host gets no new clients");
    // Natively one counter with the host as a label (Prometheus: {host="127_0_0_1_<port>"}).
    let stat = match common::envoy::native() {
        false => format!("persistence.host.127_0_0_1_{}.pinned", draining.addr.port()),
        true => format!("persistence.host.pinned.host.127_0_0_1_{}", draining.addr.port()),
    };
    assert_eq!(envoy.counter(&stat), 3 * of_draining as u64, "{stat}: the draining host's pinned requests");

    // backend-1 is removed: its clients move, each once, and stay where they moved.
    write_eds(eds.path(), &[(&backends[1], None), (&backends[2], None)]);
    envoy.wait_until("Envoy to remove the host", || host_lines(&envoy, draining).is_empty());
    let repicked_before = envoy.counter("persistence.web.repicked");
    for (jar, backend) in &mut clients {
        let response = jar.get_from(envoy.addr(), "/");
        let now = backend_of(&response);
        if *backend == draining.name {
            assert_ne!(now, draining.name);
            assert!(response.header("set-cookie").is_some(), "the cookie moves with the client");
            *backend = now;
        } else {
            assert_eq!(&now, backend);
        }
        for _ in 0..3 {
            let response = jar.get_from(envoy.addr(), "/");
            assert_eq!(&backend_of(&response), backend, "moved more than once");
            assert!(response.header("set-cookie").is_none());
        }
    }
    assert_eq!(envoy.counter("persistence.web.repicked") - repicked_before, of_draining as u64, "each client of the removed host moved exactly once");
    assert_eq!(envoy.counter(&stat), 3 * of_draining as u64, "no request reached the removed host");
}
