//! `make demo`: three real backends, Envoy with the filter (envoy/http-cookie.yaml), and a short
//! curl session that shows the persistence cookie being issued and honoured. Ctrl-C stops it all.
//!
//! Reuses the integration-test harness, so the demo runs exactly what the tests run.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

#[path = "../tests/common/mod.rs"]
mod common;

use common::{Backend, Envoy, EnvoyConfig};
use std::process::Command;
use std::sync::mpsc;

fn main() {
    let port: u16 = std::env::var("DEMO_PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(10000);
    if std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
        eprintln!("port {port} is in use: run with DEMO_PORT=<free port> make demo");
        std::process::exit(1);
    }
    let backends = Backend::start_many(3);
    for backend in &backends {
        println!("backend {} listening on {}", backend.name, backend.addr);
    }
    let config = EnvoyConfig::load("http-cookie.yaml").backends("app", &backends).listener_port("main", port);
    let build = if common::envoy::native() { "the native build (target/native/libenvoy_persistence.so)" } else { "the Wasm filter" };
    println!("starting Envoy with envoy/http-cookie.yaml and {build} ...");
    let envoy = Envoy::start(&config);
    let url = format!("http://127.0.0.1:{port}/");
    println!("Envoy is up: {url} (admin: http://{})\n", envoy.admin);

    println!("# 1. A new client: Envoy load balances, the filter adds the persistence cookie");
    let first = curl(&["-si", &url]);
    let cookie = first
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: AVI_COOKIE="))
        .and_then(|rest| rest.split(';').next())
        .map(|value| format!("AVI_COOKIE={value}"))
        .expect("the first response carries the cookie");
    println!("\n# 2. The same client sends the cookie back: always the same backend, no new cookie");
    for _ in 0..3 {
        curl(&["-s", "-b", &cookie, &url]);
    }
    println!("\n# 3. Clients without the cookie are load balanced as usual");
    for _ in 0..3 {
        curl(&["-s", &url]);
    }
    println!("\n# 4. Counters: wasmcustom.persistence.<profile>.<outcome>");
    let (_, stats) = envoy.admin_get("/stats?filter=wasmcustom.persistence.web").expect("stats");
    for line in stats.lines().filter(|l| !l.ends_with(": 0")) {
        println!("  {line}");
    }

    println!("\nOpen {url} in a browser and reload: it stays on one backend.");
    println!("Envoy's own log is in its temp dir; the access log shows upstream=<backend> per request.");
    println!("Press Ctrl-C to stop Envoy and the backends.");
    let (stop, stopped) = mpsc::channel();
    ctrlc::set_handler(move || {
        let _ = stop.send(());
    })
    .expect("signal handler");
    let _ = stopped.recv();
    println!("\nstopping Envoy (pid {:?}) and the backends", envoy.pid());
    drop(envoy);
    drop(backends);
}

/// Runs curl, echoing the command and its output like a terminal session.
fn curl(args: &[&str]) -> String {
    println!("$ curl {}", args.iter().map(|a| if a.contains(' ') || a.contains(';') { format!("'{a}'") } else { a.to_string() }).collect::<Vec<_>>().join(" "));
    let output = Command::new("curl").args(args).output().expect("curl (apt-get install curl)");
    let text = String::from_utf8_lossy(&output.stdout).replace('\r', "");
    for line in text.lines().filter(|l| !l.is_empty()) {
        println!("  {line}");
    }
    text
}
