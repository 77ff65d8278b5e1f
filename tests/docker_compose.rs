//! envoy/docker-compose.yaml, run for real: images built from this machine's Envoy 1.40 and Python
//! (scripts/docker-images.sh, no registry), `docker compose up`, a curl session that sticks to one
//! backend through the filter, and `down`. It uses the ports the shipped files name (10000, 9901,
//! 8081-8083), so it lives in its own test binary.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use common::envoy::{repo_root, test_keys};
use common::EnvoyConfig;
use serde_json::Value;
use std::collections::HashSet;
use std::net::TcpListener;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn yaml(path: &str) -> Value {
    let text = std::fs::read_to_string(repo_root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn the_compose_file_matches_the_shipped_configs_and_backends() {
    let compose = yaml("envoy/docker-compose.yaml");
    let envoy = &compose["services"]["envoy"];
    assert_eq!(envoy["image"], "${ENVOY_IMAGE:-envoyproxy/envoy:v1.40-latest}", "users get the official image by default");
    assert_eq!(envoy["working_dir"], "/repo");
    assert!(envoy["volumes"].as_array().unwrap().iter().any(|v| v == "..:/repo:ro"), "the repository is mounted where the configs expect it");
    assert!(envoy["environment"].as_array().unwrap().iter().any(|v| v == "PERSISTENCE_KEYS"), "the keys reach Envoy");
    let command: Vec<&str> = envoy["command"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    let config = command.iter().find_map(|a| a.strip_prefix("/repo/envoy/${CONFIG:-")).and_then(|a| a.strip_suffix('}')).expect("config path");
    assert!(repo_root().join("envoy").join(config).exists(), "{config}");
    // The backends listen where the shipped configs' clusters point.
    let shipped = EnvoyConfig::load(config).value;
    let mut ports: Vec<u64> = shipped["static_resources"]["clusters"][0]["load_assignment"]["endpoints"][0]["lb_endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["endpoint"]["address"]["socket_address"]["port_value"].as_u64().unwrap())
        .collect();
    ports.sort_unstable();
    let mut backend_ports: Vec<u64> = compose["services"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(name, _)| name.starts_with("backend"))
        .map(|(_, s)| s["command"][2].as_str().unwrap().parse().unwrap())
        .collect();
    backend_ports.sort_unstable();
    assert_eq!(backend_ports, ports);
    assert!(repo_root().join("envoy/demo_backend.py").exists());
}

/// `docker compose`, or the older `docker-compose` where the plugin is missing.
fn compose_command() -> Vec<String> {
    let plugin = Command::new("docker").args(["compose", "version"]).output().is_ok_and(|o| o.status.success());
    if plugin {
        vec!["docker".into(), "compose".into()]
    } else {
        vec!["docker-compose".into()]
    }
}

/// A compose project, taken down (by its project name) when dropped.
struct Project {
    compose: Vec<String>,
    name: String,
}

impl Project {
    fn run(&self, args: &[&str]) -> Output {
        let file = repo_root().join("envoy/docker-compose.yaml");
        Command::new(&self.compose[0])
            .args(&self.compose[1..])
            .args(["-f", file.to_str().unwrap(), "-p", &self.name])
            .args(args)
            .env("ENVOY_IMAGE", "envoy-persistence/envoy:1.40")
            .env("BACKEND_IMAGE", "envoy-persistence/python:local")
            .env("PERSISTENCE_KEYS", test_keys())
            .env_remove("CONFIG")
            .output()
            .expect("docker compose")
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        let down = self.run(&["down", "--timeout", "5"]);
        if !down.status.success() {
            eprintln!("compose down: {}", String::from_utf8_lossy(&down.stderr));
        }
    }
}

/// One `curl` of the demo's session (cookie jar in `jar`): the backend that answered.
fn curl(jar: &std::path::Path) -> Option<String> {
    let output = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-D", "-", "--max-time", "5", "-b"])
        .arg(jar)
        .arg("-c")
        .arg(jar)
        .arg("http://127.0.0.1:10000/")
        .output()
        .expect("curl");
    let headers = String::from_utf8_lossy(&output.stdout).to_ascii_lowercase();
    headers.starts_with("http/1.1 200").then(|| headers.lines().find_map(|l| l.strip_prefix("x-backend: ")).map(|b| b.trim().to_string())).flatten()
}

/// Hosts of cluster `app` that Envoy's admin (127.0.0.1:9901) reports healthy.
fn healthy_hosts() -> usize {
    let output = Command::new("curl").args(["-s", "--max-time", "2", "http://127.0.0.1:9901/clusters"]).output().expect("curl");
    String::from_utf8_lossy(&output.stdout).lines().filter(|l| l.starts_with("app::") && l.ends_with("::health_flags::healthy")).count()
}

#[test]
fn docker_compose_up_serves_sticky_sessions_through_the_filter() {
    for port in [10000, 9901, 8081, 8082, 8083] {
        assert!(TcpListener::bind(("127.0.0.1", port)).is_ok(), "port {port} is taken: the compose file's services need it");
    }
    let images = Command::new(repo_root().join("scripts/docker-images.sh")).output().expect("scripts/docker-images.sh");
    assert!(images.status.success(), "building the images: {}", String::from_utf8_lossy(&images.stderr));
    println!("{}", String::from_utf8_lossy(&images.stdout).trim());

    let project = Project { compose: compose_command(), name: format!("envoy-persistence-test-{}", std::process::id()) };
    let up = project.run(&["up", "-d"]);
    assert!(up.status.success(), "compose up: {}", String::from_utf8_lossy(&up.stderr));

    // Envoy starts and health-checks the backends (which may start after it): the session starts
    // once all three are healthy, so that no server_down move happens during the test.
    let deadline = Instant::now() + Duration::from_secs(60);
    while healthy_hosts() < 3 {
        if Instant::now() > deadline {
            let logs = project.run(&["logs", "--tail", "40"]);
            panic!("the backends did not become healthy within 60 s:\n{}", String::from_utf8_lossy(&logs.stdout));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let dir = tempfile::tempdir().unwrap();
    let first_jar = dir.path().join("first");
    let server = curl(&first_jar).expect("a 200 from 127.0.0.1:10000");
    let cookies = std::fs::read_to_string(&first_jar).unwrap();
    assert!(cookies.contains("AVI_COOKIE"), "the filter issued its cookie:\n{cookies}");
    for _ in 0..10 {
        assert_eq!(curl(&first_jar).as_deref(), Some(server.as_str()), "the session sticks");
    }
    // New clients are still load balanced over the three backends.
    let seen: HashSet<String> = (0..12).filter_map(|i| curl(&dir.path().join(format!("client-{i}")))).collect();
    assert!(seen.len() >= 2, "{seen:?}");
    println!("session on {server} for 11 requests; 12 new clients saw {} backends", seen.len());
    // Envoy flushes its access log every few seconds.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let logs = String::from_utf8_lossy(&project.run(&["logs", "envoy"]).stdout).into_owned();
        if logs.matches("outcome=pinned").count() >= 10 {
            break;
        }
        assert!(Instant::now() < deadline, "Envoy's access log shows the 10 pins:\n{logs}");
        std::thread::sleep(Duration::from_millis(500));
    }
    drop(project);
}
