//! `make bench`: what persistence costs inside Envoy, measured side by side in one run.
//!
//! Every configuration runs at once as its own Envoy with one worker pinned to CPU 0; nginx
//! backends and the load generator (wrk) share CPU 1. Rounds alternate the configurations (rotated
//! order each round); the table reports medians and the spread. Also reports the .wasm size,
//! Envoy's memory with the module, and the client IP table's bytes per entry, and writes
//! BENCHMARKS.md. `--smoke` runs one short round (part of `make test`, so this cannot rot).
//! `--only 3,5a` runs some rows and prints them (profiling; `--only table` the table measures);
//! `--no-callgrind` skips the instruction counts; `--rounds N`, `--seconds S` size the time measures.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

#[path = "../../tests/common/mod.rs"]
mod common;
mod instructions;
mod table;

use base64::Engine;
use common::{get, Envoy, EnvoyConfig, Launch};
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const ENVOY_CPU: &str = "0";
const LOAD_CPU: &str = "1";
const CONNECTIONS: u32 = 16;
const LATENCY_ROUNDS_PER_ROUND: usize = 3;

struct Options {
    rounds: usize,
    seconds: u64,
    smoke: bool,
    /// `--only 3,5a`: run just these rows (for profiling; no report file).
    only: Option<Vec<String>>,
    /// `--no-callgrind` (with `--only`): time measures only, without the minutes under valgrind.
    callgrind: bool,
}

impl Options {
    fn latency_rounds(&self) -> usize {
        if self.smoke {
            1
        } else {
            self.rounds * LATENCY_ROUNDS_PER_ROUND
        }
    }
}

fn options() -> Options {
    let args: Vec<String> = std::env::args().collect();
    let value = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let smoke = args.iter().any(|a| a == "--smoke");
    Options {
        rounds: value("--rounds").and_then(|v| v.parse().ok()).unwrap_or(if smoke { 1 } else { 3 }),
        seconds: value("--seconds").and_then(|v| v.parse().ok()).unwrap_or(if smoke { 1 } else { 4 }).max(1),
        smoke,
        only: value("--only").map(|v| v.split(',').map(str::to_string).collect()),
        callgrind: !args.iter().any(|a| a == "--no-callgrind"),
    }
}

/// A child process stopped by pid when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

fn wait_listening(addr: SocketAddr) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(std::time::Instant::now() < deadline, "nothing listens on {addr}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Three nginx servers (one process without a master, so stopping its pid stops it all; on the
/// load CPU) returning a tiny body; `/login` also sets a session cookie (for the app cookie row).
fn start_nginx(dir: &std::path::Path) -> (Process, Vec<SocketAddr>) {
    let addresses: Vec<SocketAddr> = (0..3).map(|_| SocketAddr::from(([127, 0, 0, 1], free_port()))).collect();
    let mut servers = String::new();
    for (i, addr) in addresses.iter().enumerate() {
        let _ = write!(
            servers,
            "server {{ listen {addr}; location = /healthz {{ return 200 \"ok\\n\"; }}
             location = /login {{ add_header Set-Cookie \"JSESSIONID=BENCHSESSION{i}; Path=/\"; add_header x-backend b{i}; return 200 \"b{i}\\n\"; }}
             location / {{ add_header x-backend b{i}; return 200 \"b{i}\\n\"; }} }}\n"
        );
    }
    let d = dir.display();
    let config = format!(
        "master_process off; daemon off; pid {d}/nginx.pid; error_log {d}/nginx-error.log warn;
         events {{ worker_connections 4096; }}
         http {{ access_log off; keepalive_requests 1000000; client_body_temp_path {d}/b; proxy_temp_path {d}/p;
                fastcgi_temp_path {d}/f; uwsgi_temp_path {d}/u; scgi_temp_path {d}/s;
                {servers} }}"
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, config).unwrap();
    let child = Command::new("taskset")
        .args(["-c", LOAD_CPU, "nginx", "-e", "stderr", "-p"])
        .arg(dir)
        .arg("-c")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nginx (apt-get install nginx-light)");
    for addr in &addresses {
        wait_listening(*addr);
    }
    (Process(child), addresses)
}

/// HAProxy (one thread, on the Envoy CPU) inserting its own persistence cookie.
fn start_haproxy(dir: &std::path::Path, backends: &[SocketAddr]) -> (Process, SocketAddr, u32) {
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut servers = String::new();
    for (i, backend) in backends.iter().enumerate() {
        let _ = writeln!(servers, "  server s{i} {backend} cookie s{i}");
    }
    let config = format!(
        "global\n  nbthread 1\n  maxconn 8192\ndefaults\n  mode http\n  timeout connect 1s\n  timeout client 30s\n  timeout server 30s\n  option http-keep-alive\n\
         frontend fe\n  bind {addr}\n  default_backend be\nbackend be\n  balance roundrobin\n  cookie SERVERID insert indirect nocache\n{servers}"
    );
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, config).unwrap();
    let child = Command::new("taskset")
        .args(["-c", ENVOY_CPU, "haproxy", "-db", "-f"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("haproxy (apt-get install haproxy)");
    wait_listening(addr);
    let pid = child.id();
    (Process(child), addr, pid)
}

struct Wrk {
    requests_per_second: f64,
    p50_us: f64,
    p99_us: f64,
    /// CPU time the proxy process spent per request (all its threads), microseconds.
    cpu_us_per_request: f64,
}

/// Nanoseconds process `pid` has run on a CPU, all threads (exact, unlike utime in ticks; time the
/// machine's other tenants took is not counted).
fn cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return 0 };
    tasks.filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok()).filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok()).sum()
}

fn microseconds(text: &str) -> Option<f64> {
    let (number, factor) = if let Some(n) = text.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1000.0)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1_000_000.0)
    } else {
        return None;
    };
    number.parse::<f64>().ok().map(|n| n * factor)
}

fn wrk(addr: SocketAddr, pid: u32, headers: &[(String, String)], seconds: u64, connections: u32) -> Wrk {
    let cpu_before = cpu_ns(pid);
    let mut command = Command::new("taskset");
    command.args(["-c", LOAD_CPU, "wrk", "-t1", &format!("-c{connections}"), &format!("-d{seconds}s"), "--latency"]);
    for (name, value) in headers {
        command.arg("-H").arg(format!("{name}: {value}"));
    }
    let output = command.arg(format!("http://{addr}/")).output().expect("wrk (apt-get install wrk)");
    let cpu = cpu_ns(pid).saturating_sub(cpu_before);
    let text = String::from_utf8_lossy(&output.stdout);
    // "  123456 requests in 3.00s, 12.34MB read"
    let requests: f64 = text.lines().find_map(|l| l.trim().split_once(" requests in ").and_then(|(n, _)| n.trim().parse().ok())).unwrap_or(0.0);
    let field = |prefix: &str| text.lines().find_map(|l| l.trim().strip_prefix(prefix).map(str::trim).map(str::to_string));
    let requests_per_second = field("Requests/sec:").and_then(|v| v.parse().ok()).unwrap_or(0.0);
    let p50_us = field("50%").and_then(|v| microseconds(&v)).unwrap_or(0.0);
    let p99_us = field("99%").and_then(|v| microseconds(&v)).unwrap_or(0.0);
    assert!(!text.contains("Non-2xx"), "wrk saw errors against {addr}:\n{text}");
    let cpu_us_per_request = if requests > 0.0 { cpu as f64 / 1000.0 / requests } else { 0.0 };
    Wrk { requests_per_second, p50_us, p99_us, cpu_us_per_request }
}

struct Row {
    name: &'static str,
    addr: SocketAddr,
    /// The proxy process (Envoy or HAProxy) whose CPU time is measured.
    pid: u32,
    headers: Vec<(String, String)>,
    runs: Vec<Wrk>,
    /// One connection, one request at a time: what the proxy adds to a request, without queueing.
    unloaded: Vec<Wrk>,
    /// Instructions per request under callgrind (Envoy rows).
    instructions: Option<instructions::Count>,
}

/// The headers a row's client sends, learned from the proxy it talks to (cookies it was given).
type Prepare = Box<dyn Fn(SocketAddr) -> Vec<(String, String)> + Send + Sync>;

/// An Envoy row: its configuration, how its client is prepared, and the filter counter that
/// proves its requests were really pinned.
struct Spec {
    name: &'static str,
    config: EnvoyConfig,
    prepare: Prepare,
    pinned_stat: Option<&'static str>,
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => 0.0,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

impl Row {
    fn stat(&self, pick: impl Fn(&Wrk) -> f64) -> f64 {
        median(&mut self.runs.iter().map(pick).collect::<Vec<_>>())
    }
    fn rps(&self) -> f64 {
        self.stat(|w| w.requests_per_second)
    }
    fn cpu(&self) -> f64 {
        self.stat(|w| w.cpu_us_per_request)
    }
    fn unloaded(&self, pick: impl Fn(&Wrk) -> f64) -> f64 {
        median(&mut self.unloaded.iter().map(pick).collect::<Vec<_>>())
    }
    fn spread(&self) -> (f64, f64) {
        let values: Vec<f64> = self.runs.iter().map(|w| w.requests_per_second).collect();
        (values.iter().copied().fold(f64::INFINITY, f64::min), values.iter().copied().fold(0.0, f64::max))
    }
}

/// A shipped configuration prepared for the benchmark: nginx backends, no access log, no demo
/// decision header (measure the filter, not logging or demo aids).
/// The configuration without the module's network filter (the native build has none yet).
fn without_network_filters(mut config: EnvoyConfig) -> EnvoyConfig {
    for listener in config.value["static_resources"]["listeners"].as_array_mut().into_iter().flatten() {
        for chain in listener["filter_chains"].as_array_mut().into_iter().flatten() {
            if let Some(filters) = chain["filters"].as_array_mut() {
                filters.retain(|f| f["name"] != "persistence_connections");
            }
        }
    }
    config
}

fn shipped(file: &str, backends: &[SocketAddr]) -> EnvoyConfig {
    let mut config = EnvoyConfig::load(file).backend_addresses("app", backends);
    strip_extras(&mut config.value);
    config.plugin(|p| {
        p.as_object_mut().unwrap().remove("decision_header");
    })
}

fn strip_extras(value: &mut Value) {
    for listener in value["static_resources"]["listeners"].as_array_mut().into_iter().flatten() {
        for filter in listener["filter_chains"][0]["filters"].as_array_mut().into_iter().flatten() {
            if let Some(hcm) = filter["typed_config"].as_object_mut() {
                hcm.remove("access_log");
            }
        }
    }
}

/// Replaces the HTTP filter chain of the (single) listener.
fn with_http_filters(mut config: EnvoyConfig, filters: Value) -> EnvoyConfig {
    config.value["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"] = filters;
    config
}

fn bench_wasm_filter(root_id: &str) -> Value {
    json!({"name": "persistence", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
        "config": {"name": root_id, "root_id": root_id, "failure_policy": "FAIL_RELOAD",
            "vm_config": {"vm_id": "bench", "runtime": "envoy.wasm.runtime.v8", "code": {"local": {"filename": "set by the harness"}}}}}})
}

fn router() -> Value {
    json!({"name": "envoy.filters.http.router", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}})
}

fn header_session() -> Value {
    json!({"name": "envoy.filters.http.stateful_session", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.stateful_session.v3.StatefulSession",
        "session_state": {"name": "envoy.http.stateful_session.header", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.http.stateful_session.header.v3.HeaderBasedSessionState",
            "name": "x-persistence-upstream"}}}})
}

fn cookie_session() -> Value {
    json!({"name": "envoy.filters.http.stateful_session", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.stateful_session.v3.StatefulSession",
        "session_state": {"name": "envoy.http.stateful_session.cookie", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.http.stateful_session.cookie.v3.CookieBasedSessionState",
            "cookie": {"name": "envoy-session", "path": "/"}}}}})
}

fn start(config: &EnvoyConfig) -> Envoy {
    let launch = Launch { cpus: Some(ENVOY_CPU.into()), quiet: true, ..Launch::workers(1) };
    let envoy = Envoy::launch(config, &launch).unwrap_or_else(|log| panic!("Envoy did not start:\n{log}"));
    envoy.wait_all_healthy();
    envoy
}

/// The value of cookie `name` set by the response to a GET of `path`.
fn cookie_from(addr: SocketAddr, path: &str, headers: &[(&str, &[u8])], name: &str) -> String {
    let response = get(addr, path, headers);
    response
        .all("set-cookie")
        .iter()
        .find_map(|c| c.split(';').next()?.strip_prefix(&format!("{name}=")).map(str::to_string))
        .unwrap_or_else(|| panic!("no {name} cookie from {addr}{path}: {response:?}"))
}

fn pid(envoy: &Envoy) -> u32 {
    envoy.pid().expect("running")
}

fn header(name: &str, value: impl Into<String>) -> (String, String) {
    (name.to_string(), value.into())
}

/// Envoys started under callgrind at the same time.
const CALLGRIND_BATCH: usize = 4;

/// A dynamic-module HTTP filter of the benchmark build (`bench_noop`, `persistence_bench`).
pub(crate) fn bench_native_filter(filter_name: &str) -> Value {
    json!({"name": "persistence", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter",
        "dynamic_module_config": {"name": "envoy_persistence"}, "filter_name": filter_name,
        "filter_config": {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": ""}}})
}

/// The native build's directories: the shipped module, and the benchmark build's (no-op filter).
struct NativeDirs {
    module: PathBuf,
    bench: PathBuf,
}

fn specs(backends: &[SocketAddr], module: &Path, bench_module: &Path, native: &NativeDirs) -> Vec<Spec> {
    let base = shipped("http-cookie.yaml", backends);
    let ours = |config: EnvoyConfig| config.module(module.to_path_buf());
    let bench = |filters: Value| with_http_filters(base.clone(), filters).module(bench_module.to_path_buf());
    let none: fn() -> Prepare = || Box::new(|_| Vec::new());
    let upstream = base64::engine::general_purpose::STANDARD.encode(backends[0].to_string());
    let copy_prepare = move || -> Prepare {
        let upstream = upstream.clone();
        Box::new(move |_| vec![header("x-bench-upstream", upstream.clone())])
    };
    let addresses: Vec<String> = backends.iter().map(ToString::to_string).collect();
    let header_config = shipped("http-header.yaml", backends).plugin(move |p| {
        for (i, server) in p["profiles"][0]["http_header"]["servers"].as_array_mut().unwrap().iter_mut().enumerate() {
            server["address"] = json!(addresses[i]);
        }
    });
    vec![
        Spec { name: "1. bare Envoy (router only)", config: with_http_filters(base.clone(), json!([router()])), prepare: none(), pinned_stat: None },
        Spec { name: "2. no-op Wasm filter", config: bench(json!([bench_wasm_filter("bench_noop"), router()])), prepare: none(), pinned_stat: None },
        Spec {
            name: "3. floor: copy header + stateful_session",
            config: bench(json!([bench_wasm_filter("bench_copy"), header_session(), router()])),
            prepare: copy_prepare(),
            pinned_stat: None,
        },
        Spec {
            name: "3b. ceiling: 3 + learns the host used",
            config: bench(json!([bench_wasm_filter("bench_learn"), header_session(), router()])),
            prepare: copy_prepare(),
            pinned_stat: None,
        },
        Spec {
            name: "3c. ceiling: 3b + sets a cookie",
            config: bench(json!([bench_wasm_filter("bench_learn_cookie"), header_session(), router()])),
            prepare: copy_prepare(),
            pinned_stat: None,
        },
        Spec {
            name: "4. Envoy stateful_session cookie",
            config: with_http_filters(base.clone(), json!([cookie_session(), router()])),
            prepare: Box::new(|addr| vec![header("cookie", format!("envoy-session={}", cookie_from(addr, "/", &[], "envoy-session")))]),
            pinned_stat: None,
        },
        Spec {
            name: "5a. http_cookie, returning client",
            config: ours(base.clone()),
            prepare: Box::new(|addr| vec![header("cookie", format!("AVI_COOKIE={}", cookie_from(addr, "/", &[], "AVI_COOKIE")))]),
            pinned_stat: Some("persistence.web.pinned"),
        },
        Spec { name: "5b. http_cookie, first visit", config: ours(base.clone()), prepare: none(), pinned_stat: None },
        Spec {
            name: "5c. client_ip, hit",
            config: ours(shipped("client-ip.yaml", backends)),
            prepare: Box::new(|addr| {
                get(addr, "/", &[]);
                Vec::new()
            }),
            pinned_stat: Some("persistence.clients.pinned"),
        },
        Spec {
            name: "5d. app_cookie, hit",
            config: ours(shipped("app-cookie.yaml", backends)),
            prepare: Box::new(|addr| vec![header("cookie", format!("JSESSIONID={}", cookie_from(addr, "/login", &[], "JSESSIONID")))]),
            pinned_stat: Some("persistence.java.pinned"),
        },
        Spec {
            name: "5e. http_header, match",
            config: ours(header_config.clone()),
            prepare: Box::new(|_| vec![header("x-tenant", "acme")]),
            pinned_stat: Some("persistence.tenants.pinned"),
        },
        Spec {
            name: "5f. filter on a route without a profile",
            config: ours(base.clone()).plugin(|p| {
                let p = p.as_object_mut().unwrap();
                p.remove("default_profile");
                p.remove("routes");
            }),
            prepare: none(),
            pinned_stat: None,
        },
        Spec {
            name: "7. dynamic module no-op",
            config: with_http_filters(base.clone(), json!([bench_native_filter("bench_noop"), router()])).native_build(native.bench.clone()),
            prepare: none(),
            pinned_stat: None,
        },
        Spec {
            name: "8a. native http_cookie, returning client",
            config: base.clone().native_build(native.module.clone()),
            prepare: Box::new(|addr| vec![header("cookie", format!("AVI_COOKIE={}", cookie_from(addr, "/", &[], "AVI_COOKIE")))]),
            pinned_stat: Some("persistence.web.pinned"),
        },
        Spec { name: "8b. native http_cookie, first visit", config: base.clone().native_build(native.module.clone()), prepare: none(), pinned_stat: None },
        Spec {
            name: "8c. native client_ip, hit",
            config: without_network_filters(shipped("client-ip.yaml", backends)).native_build(native.module.clone()),
            prepare: Box::new(|addr| {
                get(addr, "/", &[]);
                Vec::new()
            }),
            pinned_stat: Some("persistence.clients.pinned"),
        },
        Spec {
            name: "8d. native app_cookie, hit",
            config: shipped("app-cookie.yaml", backends).native_build(native.module.clone()),
            prepare: Box::new(|addr| vec![header("cookie", format!("JSESSIONID={}", cookie_from(addr, "/login", &[], "JSESSIONID")))]),
            pinned_stat: Some("persistence.java.pinned"),
        },
        Spec {
            name: "8e. native http_header, match",
            config: header_config.clone().native_build(native.module.clone()),
            prepare: Box::new(|_| vec![header("x-tenant", "acme")]),
            pinned_stat: Some("persistence.tenants.pinned"),
        },
        Spec {
            name: "5g. http_cookie, returning client, cluster_header",
            config: ours(base.clone()).plugin(|p| p["cluster_header"] = json!("x-persistence-cluster")),
            prepare: Box::new(|addr| vec![header("cookie", format!("AVI_COOKIE={}", cookie_from(addr, "/", &[], "AVI_COOKIE")))]),
            pinned_stat: Some("persistence.web.pinned"),
        },
    ]
}

fn main() {
    let options = options();
    let module = common::envoy::wasm_path();
    let bench_module = PathBuf::from(std::env::var("BENCH_WASM").expect("BENCH_WASM: the module built with --features bench (make bench sets it)"));
    let dir = tempfile::Builder::new().prefix("envoy-persistence-bench").tempdir().unwrap();
    let (_nginx, backends) = start_nginx(dir.path());
    let (_haproxy, haproxy, haproxy_pid) = start_haproxy(dir.path(), &backends);
    let native_dir = |variable: &str, default: &str| std::env::var(variable).map(PathBuf::from).unwrap_or_else(|_| common::envoy::repo_root().join(default));
    let native = NativeDirs { module: native_dir("NATIVE_DIR", "target/native"), bench: native_dir("BENCH_NATIVE_DIR", "target/bench-native/native") };
    let mut specs = specs(&backends, &module, &bench_module, &native);
    // `--only table`: the client IP table measures alone (quick, no rows).
    if options.only.as_ref().is_some_and(|only| only.iter().any(|o| o == "table")) {
        for build in [table::Build::Wasm(bench_module.clone()), table::Build::Native(native.bench.clone())] {
            table::measure(build, &[100_000, 1_000_000]);
        }
        return;
    }
    if let Some(only) = &options.only {
        specs.retain(|s| only.iter().any(|o| s.name.starts_with(&format!("{o}."))));
    }
    eprintln!("starting the Envoys (one worker each, CPU {ENVOY_CPU}); nginx and wrk on CPU {LOAD_CPU}");
    let envoys: Vec<Envoy> = specs.iter().map(|spec| start(&spec.config)).collect();
    let mut rows: Vec<Row> = specs
        .iter()
        .zip(&envoys)
        .map(|(spec, envoy)| Row {
            name: spec.name,
            addr: envoy.addr(),
            pid: pid(envoy),
            headers: (spec.prepare)(envoy.addr()),
            runs: vec![],
            unloaded: vec![],
            instructions: None,
        })
        .collect();
    let with_haproxy = options.only.as_ref().is_none_or(|only| only.iter().any(|o| o == "6"));
    if with_haproxy {
        let cookie = cookie_from(haproxy, "/", &[], "SERVERID");
        rows.push(Row {
            name: "6. HAProxy cookie insert, returning",
            addr: haproxy,
            pid: haproxy_pid,
            headers: vec![header("cookie", format!("SERVERID={cookie}"))],
            runs: vec![],
            unloaded: vec![],
            instructions: None,
        });
    }
    let count = rows.len();
    for round in 0..options.rounds {
        for i in 0..count {
            let row = &mut rows[(i + round * 3) % count];
            let result = wrk(row.addr, row.pid, &row.headers, options.seconds, CONNECTIONS);
            assert!(result.requests_per_second > 0.0, "{}: no requests completed", row.name);
            row.runs.push(result);
        }
        eprintln!(
            "round {} of {}: {}",
            round + 1,
            options.rounds,
            rows.iter()
                .map(|r| format!("{} {:.1}us", &r.name[..r.name.find('.').unwrap_or(0)], r.runs.last().map_or(0.0, |w| w.cpu_us_per_request)))
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    // One connection: many short rounds, so that the median p99 leaves out the seconds in which
    // the host stalled this virtual machine (a tail measure is what such a stall spoils).
    let latency_rounds = options.latency_rounds();
    for round in 0..latency_rounds {
        for i in 0..count {
            let row = &mut rows[(i + round * 3) % count];
            let result = wrk(row.addr, row.pid, &row.headers, 1, 1);
            assert!(result.requests_per_second > 0.0, "{}: no requests completed", row.name);
            row.unloaded.push(result);
        }
    }
    eprintln!("latency with one connection: {latency_rounds} rounds of 1 s");
    // Sanity: the persistence rows were really pinned (not just fast), per the filter's counters.
    for (spec, envoy) in specs.iter().zip(&envoys) {
        if let Some(stat) = spec.pinned_stat {
            assert!(envoy.counter(stat) > 1000 || options.smoke && envoy.counter(stat) > 0, "{stat} = {}", envoy.counter(stat));
        }
    }
    let rss = |name: &str| specs.iter().zip(&envoys).find(|(s, _)| s.name.starts_with(name)).map(|(_, e)| e.rss_bytes());
    let (bare_rss, cookie_rss) = (rss("1.").unwrap_or(0), rss("5a.").unwrap_or(0));
    if options.only.is_some() {
        print_spans(&specs, &envoys);
    }
    drop(envoys);

    // Instruction counts: every Envoy row under callgrind, several at once (valgrind runs one
    // thread at a time, and an Envoy takes about a minute to start under it; the counts do not
    // depend on what else runs, but more than a batch at once do not start in time on 2 cores).
    // The smoke run counts two rows.
    let (warmup, requests, batches) = if options.smoke { (30, 20, 2) } else { (400, 200, 2) };
    let counted: Vec<&Spec> = specs.iter().filter(|s| options.callgrind && (!options.smoke || s.name.starts_with("3.") || s.name.starts_with("5a."))).collect();
    eprintln!("counting instructions under callgrind: {} Envoys, {CALLGRIND_BATCH} at once, about a minute each to start", counted.len());
    let mut counts: Vec<(&str, instructions::Count)> = Vec::new();
    for batch in counted.chunks(CALLGRIND_BATCH) {
        counts.extend(std::thread::scope(|scope| {
            let handles: Vec<_> = batch
                .iter()
                .map(|spec| scope.spawn(move || (spec.name, instructions::count(&spec.config, &spec.prepare, warmup, requests, batches))))
                .collect();
            handles.into_iter().map(|h| h.join().expect("instruction count")).collect::<Vec<_>>()
        }));
    }
    for (name, count) in counts {
        if let Some(row) = rows.iter_mut().find(|r| r.name == name) {
            row.instructions = Some(count);
        }
    }
    if options.only.is_some() {
        for row in &rows {
            let instructions = row
                .instructions
                .as_ref()
                .map_or(String::new(), |c| format!("  {:.0} instr/req (spread {:.2}%, Wasm code {:.0})", c.per_request(), c.spread() * 100.0, c.wasm_code));
            println!(
                "{:<45} {:>8.0} req/s  {:>6.1} cpu-us/req  p50 {:>5.0} us  p99 {:>5.0} us  one connection: p50 {:>4.0} us  p99 {:>4.0} us{instructions}",
                row.name,
                row.rps(),
                row.cpu(),
                row.stat(|w| w.p50_us),
                row.stat(|w| w.p99_us),
                row.unloaded(|w| w.p50_us),
                row.unloaded(|w| w.p99_us)
            );
        }
        return;
    }
    let wasm_size = std::fs::metadata(&module).map(|m| m.len()).unwrap_or(0);
    let sizes: &[u32] = if options.smoke { &[10_000] } else { &[100_000, 1_000_000] };
    let mut table = table::measure(table::Build::Wasm(bench_module), sizes);
    table.extend(table::measure(table::Build::Native(native.bench.clone()), sizes));
    let report = report(&rows, &options, wasm_size, bare_rss, cookie_rss, &table);
    println!("{report}");
    let out = if options.smoke { common::envoy::repo_root().join("target/bench-smoke.md") } else { common::envoy::repo_root().join("BENCHMARKS.md") };
    // The hand-written analysis at the end of BENCHMARKS.md survives a new run.
    let kept = std::fs::read_to_string(&out).ok().and_then(|old| old.find(KEPT_FROM).map(|at| old[at..].to_string()));
    let text = match kept {
        Some(kept) => format!("{}\n\n{kept}", report.trim_end()),
        None => report.clone(),
    };
    std::fs::write(&out, text).unwrap();
    eprintln!("written to {}", out.display());
}

/// The line of BENCHMARKS.md from which the text is written by hand and kept by `make bench`.
const KEPT_FROM: &str = "<!-- Written by hand: make bench keeps everything from this line on. -->";

/// Where the time inside the filter goes, when the rows ran the bench build (profiling).
fn print_spans(specs: &[Spec], envoys: &[Envoy]) {
    for (spec, envoy) in specs.iter().zip(envoys) {
        let stats = envoy.stats();
        let mut spans: Vec<(String, f64, u64)> = stats
            .iter()
            .filter_map(|(k, ns)| {
                let span = k.strip_prefix("wasmcustom.bench.span.")?.strip_suffix(".ns")?;
                let count = *stats.get(&format!("wasmcustom.bench.span.{span}.count"))?;
                (count > 0).then(|| (span.to_string(), *ns as f64 / count as f64 / 1000.0, count))
            })
            .collect();
        spans.sort_by(|a, b| b.1.total_cmp(&a.1));
        if !spans.is_empty() {
            println!("{}: {}", spec.name, spans.iter().map(|(s, us, n)| format!("{s} {us:.2}us (x{n})")).collect::<Vec<_>>().join(", "));
        }
    }
}

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo.lines().find_map(|l| l.strip_prefix("model name")).map(|m| m.trim_start_matches([' ', '\t', ':']).to_string()).unwrap_or_default();
    let cores = cpuinfo.lines().filter(|l| l.starts_with("processor")).count();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let envoy =
        Command::new(common::envoy::envoy_bin()).arg("--version").output().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_default();
    let envoy = envoy.split_whitespace().last().unwrap_or_default().to_string();
    format!("{cores} x {model}, Linux {}, Envoy {envoy}", kernel.trim())
}

fn report(rows: &[Row], options: &Options, wasm_size: u64, bare_rss: u64, cookie_rss: u64, table: &[table::TableResult]) -> String {
    let named = |prefix: &str| rows.iter().find(|r| r.name.starts_with(prefix)).unwrap_or_else(|| panic!("no row {prefix}"));
    let bare = named("1.").rps();
    let floor_row = named("3.");
    let floor = floor_row.rps();
    let floor_cpu = floor_row.cpu();
    let (floor_p99, floor_p99_unloaded) = (floor_row.stat(|w| w.p99_us), floor_row.unloaded(|w| w.p99_us));
    let instructions = |row: &Row| row.instructions.as_ref().map(instructions::Count::per_request);
    let floor_instructions = instructions(floor_row);
    let instruction_ratio = |row: &Row| Some(floor_instructions? / instructions(row)?);
    let mut out = String::new();
    let _ = writeln!(out, "# Benchmarks\n");
    let _ = writeln!(out, "Command: `make bench` ({} rounds of {} s per row, rows rotated each round; {CONNECTIONS} connections; then {} rounds of 1 s with one connection; wrk `-t1`; then each Envoy row once more under callgrind).", options.rounds, options.seconds, options.latency_rounds());
    let _ = writeln!(out, "Machine: {}.", machine());
    let _ = writeln!(out, "Each configuration is its own Envoy with one worker pinned to CPU {ENVOY_CPU} (`--concurrency 1`; HAProxy `nbthread 1` likewise); nginx backends and wrk share CPU {LOAD_CPU}; loopback only; no access logs.");
    let _ = writeln!(out, "Medians over the rounds; the spread is the lowest and highest round. Ratios compare medians of the same run.\n");
    let _ = writeln!(out, "Three measures of cost: **req/s** (wall clock), **CPU us/req**, the proxy process's on-CPU time per request");
    let _ = writeln!(out, "(from /proc/<pid>/task/*/schedstat), and **instr/req**, the instructions Envoy's worker thread executes per request,");
    let _ = writeln!(out, "counted by valgrind's callgrind over batches of identical requests on one keep-alive connection after a warm-up.");
    let _ = writeln!(out, "This machine is a shared virtual machine: its time measures swing by a fifth from second to second (the host");
    let _ = writeln!(out, "deschedules the virtual CPU and the guest still counts that time), while the instruction count repeats to within");
    let _ = writeln!(out, "a fraction of a percent (\"instr spread\": the two batches' difference). The targets are judged on instructions;");
    let _ = writeln!(out, "the time ratios are shown beside them. \"vs floor\" ratios are floor cost / row cost: the throughput ratio a");
    let _ = writeln!(out, "dedicated core would show.\n");
    let _ = writeln!(out, "Latency is measured two ways: under load ({CONNECTIONS} connections, the worker saturated, where latency is the");
    let _ = writeln!(out, "queue: about {CONNECTIONS} x the CPU time per request, the throughput ratio again) and with one connection sending one");
    let _ = writeln!(out, "request at a time (what the proxy adds to a request, wrk and nginx included; the latency target is judged here).\n");
    let _ = writeln!(out, "| Row | req/s | spread | vs bare | vs floor (3) | CPU us/req | cpu vs floor | instr/req | instr spread | instr vs floor | p50 | p99 | 1 conn p50 | 1 conn p99 |");
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for row in rows {
        let (low, high) = row.spread();
        let (count, spread, ratio) = match (&row.instructions, instruction_ratio(row)) {
            (Some(c), Some(r)) => (format!("{:.0}", c.per_request()), format!("{:.2}%", c.spread() * 100.0), format!("{r:.3}")),
            _ => ("-".to_string(), "-".to_string(), "-".to_string()),
        };
        let _ = writeln!(
            out,
            "| {} | {:.0} | {:.0}-{:.0} | {:.3} | {:.3} | {:.1} | {:.3} | {count} | {spread} | {ratio} | {:.0} us | {:.0} us | {:.0} us | {:.0} us |",
            row.name,
            row.rps(),
            low,
            high,
            row.rps() / bare,
            row.rps() / floor,
            row.cpu(),
            floor_cpu / row.cpu(),
            row.stat(|w| w.p50_us),
            row.stat(|w| w.p99_us),
            row.unloaded(|w| w.p50_us),
            row.unloaded(|w| w.p99_us)
        );
    }
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    let _ = writeln!(out, "\n## Targets\n");
    let _ = writeln!(out, "Rows 3b and 3c are ceilings: the cheapest filters of this architecture that do what a profile cannot skip.");
    let _ = writeln!(out, "3b is the floor that also reads `upstream.address` on the response: every profile must learn the host Envoy");
    let _ = writeln!(out, "used, to count the outcome and to re-pin a client whose server was replaced. 3c also adds a Set-Cookie header shaped");
    let _ = writeln!(out, "like a real one, as a first visit must (without sealing the token). A target above its ceiling cannot be met");
    let _ = writeln!(out, "by any filter of this architecture on this Envoy, however little its own code does.\n");
    let _ = writeln!(out, "| Target | instructions ratio | | ceiling | req/s ratio | CPU ratio |\n|---|---:|---|---:|---:|---:|");
    for (name, prefix, ceiling_row, target) in [
        ("HTTP cookie returning client >= 0.97 x floor", "5a.", "3b.", 0.97),
        ("HTTP cookie first visit >= 0.93 x floor", "5b.", "3c.", 0.93),
        ("Client IP hit >= 0.95 x floor", "5c.", "3b.", 0.95),
        ("App cookie hit >= 0.95 x floor", "5d.", "3b.", 0.95),
    ] {
        let (row, ceiling) = (named(prefix), instruction_ratio(named(ceiling_row)));
        let (value, met) = match instruction_ratio(row) {
            Some(r) if r >= target => (format!("{r:.3}"), "met"),
            Some(r) if ceiling.is_some_and(|c| c < target) => (format!("{r:.3}"), "MISSED: above the ceiling"),
            Some(r) => (format!("{r:.3}"), "MISSED"),
            None => ("-".to_string(), "not measured"),
        };
        let ceiling = ceiling.map_or("-".to_string(), |c| format!("{c:.3} ({})", ceiling_row.trim_end_matches('.')));
        let _ = writeln!(out, "| {name} | {value} | {met} | {ceiling} | {:.3} | {:.3} |", row.rps() / floor, floor_cpu / row.cpu());
    }
    // The native build against Envoy's own stateful_session cookie (row 4): instructions of the
    // row / instructions of row 4, at most the target.
    let cookie_row = named("4.");
    for (name, prefix, target) in [
        ("Native returning cookie <= 1.04 x Envoy's cookie (row 4)", "8a.", 1.04),
        ("Native first visit <= 1.08 x row 4", "8b.", 1.08),
        ("Native client IP hit <= 1.05 x row 4", "8c.", 1.05),
        ("Native app cookie hit <= 1.05 x row 4", "8d.", 1.05),
        ("Native header match <= 1.03 x row 4", "8e.", 1.03),
    ] {
        let row = named(prefix);
        let (value, met) = match (instructions(row), instructions(cookie_row)) {
            (Some(row), Some(cookie)) => (format!("{:.3} x", row / cookie), verdict(row / cookie <= target)),
            _ => ("-".to_string(), "not measured"),
        };
        let _ = writeln!(out, "| {name} | {value} | {met} | - | {:.3} | {:.3} |", row.rps() / floor, floor_cpu / row.cpu());
    }
    let persistence = || rows.iter().filter(|r| r.name.starts_with('5'));
    let worst_p99 = persistence().map(|r| r.unloaded(|w| w.p99_us) / floor_p99_unloaded).fold(0.0, f64::max);
    let worst_loaded_p99 = persistence().map(|r| r.stat(|w| w.p99_us) / floor_p99).fold(0.0, f64::max);
    let _ = writeln!(
        out,
        "| p99 of every persistence row <= 1.2 x floor's (one connection; under load: {worst_loaded_p99:.2}) | {worst_p99:.2} (worst) | {} | | | |",
        verdict(worst_p99 <= 1.2)
    );
    let _ = writeln!(out, "| .wasm <= 250 KiB | {:.1} KiB | {} | | | |", wasm_size as f64 / 1024.0, verdict(wasm_size <= 250 * 1024));
    let _ = writeln!(out, "\n## Where the instructions go\n");
    let _ = writeln!(out, "Per request, from the same callgrind counts: instructions in the code V8 compiled from the Wasm module,");
    let _ = writeln!(out, "and in Envoy (its C++ code, V8's built-ins and the libraries; every host call the module makes runs here).");
    let _ = writeln!(out, "\"Over floor\" subtracts row 3 (whose own module code is a header copy).\n");
    let _ = writeln!(out, "| Row | instr/req | Wasm code | Envoy | over floor: Wasm code | over floor: Envoy |\n|---|---:|---:|---:|---:|---:|");
    let floor_split = floor_row.instructions.as_ref().map(|c| (c.wasm_code, c.per_request() - c.wasm_code));
    for row in rows.iter().filter(|r| r.name.starts_with(['2', '3', '5'])) {
        let (Some(c), Some((floor_wasm, floor_envoy))) = (&row.instructions, floor_split) else { continue };
        let envoy = c.per_request() - c.wasm_code;
        let _ = writeln!(
            out,
            "| {} | {:.0} | {:.0} | {envoy:.0} | {:+.0} | {:+.0} |",
            row.name,
            c.per_request(),
            c.wasm_code,
            c.wasm_code - floor_wasm,
            envoy - floor_envoy
        );
    }
    let _ = writeln!(out, "\n## Memory\n");
    let _ = writeln!(
        out,
        "- Envoy RSS, one worker, after warm-up: bare {:.1} MiB, with this module (http-cookie.yaml) {:.1} MiB (+{:.1} MiB).",
        bare_rss as f64 / 1048576.0,
        cookie_rss as f64 / 1048576.0,
        cookie_rss.saturating_sub(bare_rss) as f64 / 1048576.0
    );
    for t in table {
        let _ = writeln!(
            out,
            "- {} client IP table (default size, 65536 buckets) with {} entries: {:.1} bytes per entry (Envoy RSS growth / entries), {} lookups/s on one worker (one bucket copy and scan each; {} of {} found).",
            t.build, t.entries, t.bytes_per_entry, t.lookups_per_second, t.found, t.looked_up
        );
    }
    let million = |build: &str| table.iter().find(|t| t.entries == 1_000_000 && t.build == build);
    if let Some(wasm) = million("Wasm") {
        let _ = writeln!(out, "- Target (Wasm) at most 150 bytes per entry at 1M entries: {}.", verdict(wasm.bytes_per_entry <= 150.0));
    }
    if let Some(native) = million("native") {
        let _ = writeln!(out, "- Target (native) at most 64 bytes per entry at 1M entries: {}.", verdict(native.bytes_per_entry <= 64.0));
        let _ = writeln!(out, "- Target (native) at least 2 million lookups per second from one worker: {}.", verdict(native.lookups_per_second >= 2_000_000));
    }
    out
}
