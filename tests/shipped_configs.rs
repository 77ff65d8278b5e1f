//! The files we ship for users (envoy/*.yaml, envoy/istio/, envoy/docker-compose.yaml) are the
//! ones the tests run, and they agree with each other: Envoy 1.40 accepts every configuration with
//! the built module, and the Istio and compose files match the configurations. How each
//! configuration wires the filter is checked by `envoy-persistence check` (tests/check.rs).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use common::envoy::repo_root;
use common::tls::Pki;
use common::{Envoy, EnvoyConfig, Jar};
use envoy_persistence::config::{Config, DEFAULT_OVERRIDE_HEADER};
use serde_json::Value;
use std::process::{Child, Command};

fn envoy_configs() -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(repo_root().join("envoy"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| name.ends_with(".yaml") && name != "docker-compose.yaml")
        .collect();
    files.sort();
    assert!(files.len() >= 8, "{files:?}");
    files
}

fn yaml(path: &str) -> Value {
    let text = std::fs::read_to_string(repo_root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn envoy_accepts_every_shipped_config_with_the_built_module() {
    let pki = Pki::new();
    for file in envoy_configs() {
        let config = EnvoyConfig::load(&file).certificates(&pki);
        if let Err(output) = config.validate() {
            panic!("envoy --mode validate rejected envoy/{file}:\n{output}");
        }
    }
}

/// Problems between the Istio example files.
fn istio_problems(plugin: &Value, service: &Value, rule: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let config = Config::parse(plugin["spec"]["pluginConfig"].to_string().as_bytes());
    let header = match &config {
        Ok(config) => config.override_header.clone(),
        Err(errors) => {
            problems.push(format!("pluginConfig invalid: {errors:?}"));
            DEFAULT_OVERRIDE_HEADER.to_string()
        }
    };
    let label = service["metadata"]["labels"]["istio.io/persistent-session-header"].as_str();
    if label != Some(header.as_str()) {
        problems.push(format!("Service label istio.io/persistent-session-header is {label:?}, the filter writes {header:?}"));
    }
    // Istio places its stateful_session filter after all Wasm plugin phases, on client-side
    // listeners only (gateways, sidecar outbound).
    let phase = plugin["spec"]["phase"].as_str().unwrap_or("UNSPECIFIED_PHASE");
    if !["AUTHN", "AUTHZ", "STATS", "UNSPECIFIED_PHASE"].contains(&phase) {
        problems.push(format!("unknown phase {phase}"));
    }
    let gateway = plugin["spec"]["selector"]["matchLabels"]["istio"].as_str().is_some_and(|v| v.contains("gateway"));
    let client = plugin["spec"]["match"].as_array().into_iter().flatten().any(|m| m["mode"] == "CLIENT");
    if !gateway && !client {
        problems.push("the plugin must run on client-side proxies (a gateway, or match mode CLIENT)".into());
    }
    if plugin["spec"]["type"].as_str().is_some_and(|t| t != "HTTP") {
        problems.push("the persistence plugin is an HTTP filter".into());
    }
    let host = format!("{}.{}.svc.cluster.local", service["metadata"]["name"].as_str().unwrap_or(""), service["metadata"]["namespace"].as_str().unwrap_or(""));
    if rule["spec"]["host"].as_str() != Some(host.as_str()) {
        problems.push(format!("DestinationRule host {} is not the Service {host}", rule["spec"]["host"]));
    }
    problems
}

#[test]
fn the_istio_files_agree_on_header_name_and_filter_placement() {
    let plugin = yaml("envoy/istio/wasmplugin.yaml");
    let service = yaml("envoy/istio/service.yaml");
    let rule = yaml("envoy/istio/destinationrule.yaml");
    assert_eq!(istio_problems(&plugin, &service, &rule), Vec::<String>::new());
    let istiod = yaml("envoy/istio/istiod-values.yaml");
    assert_eq!(istiod["spec"]["values"]["pilot"]["env"]["PILOT_ENABLE_PERSISTENT_SESSION_FILTER"], "true");
    // A wrong header name in one file fails.
    let mut wrong = service.clone();
    wrong["metadata"]["labels"]["istio.io/persistent-session-header"] = Value::from("x-session");
    assert!(istio_problems(&plugin, &wrong, &rule).iter().any(|p| p.contains("istio.io/persistent-session-header")));
    let mut renamed = plugin.clone();
    renamed["spec"]["pluginConfig"]["override_header"] = Value::from("x-other");
    assert!(!istio_problems(&renamed, &service, &rule).is_empty());
}

struct Python(Child);

impl Drop for Python {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_python_demo_backend_works_behind_the_filter() {
    // Ports for the three Python backends, then a stand-in Backend list with their addresses.
    let ports: Vec<u16> = (0..3).map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()).collect();
    let _pythons: Vec<Python> = ports
        .iter()
        .enumerate()
        .map(|(i, port)| {
            Python(
                Command::new("python3").arg(repo_root().join("envoy/demo_backend.py")).arg(port.to_string()).arg(format!("py-{i}")).spawn().expect("python3"),
            )
        })
        .collect();
    for port in &ports {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", *port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "python backend on {port} did not start");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
    let mut config = EnvoyConfig::load("http-cookie.yaml").fast_health_checks();
    let endpoints: Vec<Value> =
        ports.iter().map(|p| serde_json::json!({"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": p}}}})).collect();
    config.cluster_mut("app")["load_assignment"]["endpoints"] = serde_json::json!([{"lb_endpoints": endpoints}]);
    let envoy = Envoy::start(&config);
    let mut jar = Jar::default();
    let server = jar.get_from(envoy.addr(), "/").header("x-backend").unwrap().to_string();
    for _ in 0..5 {
        assert_eq!(jar.get_from(envoy.addr(), "/").header("x-backend").unwrap(), server);
    }
    let page = common::get(envoy.addr(), "/", &[("cookie", jar.header().unwrap().as_bytes()), ("accept", b"text/html")]);
    assert!(page.body_text().contains("decision=pin server=127.0.0.1:"), "{}", page.body_text());
}
