//! `make bench`: what persistence costs inside Envoy, measured side by side in one run.
//!
//! Every configuration runs at once as its own Envoy with one worker pinned to CPU 0; nginx
//! backends and the load generator (wrk) share CPU 1. Rounds alternate the configurations (rotated
//! order each round); the table reports medians and the spread. Also reports the .wasm size,
//! Envoy's memory with the module, and the client IP table's bytes per entry, and writes
//! BENCHMARKS.md. `--smoke` runs one short round (part of `make test`, so this cannot rot).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

#[path = "../../tests/common/mod.rs"]
mod common;
mod table;

use base64::Engine;
use common::{get, Envoy, EnvoyConfig, Launch};
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const ENVOY_CPU: &str = "0";
const LOAD_CPU: &str = "1";
const CONNECTIONS: u32 = 16;

struct Options {
    rounds: usize,
    seconds: u64,
    smoke: bool,
    /// `--only 3,5a`: run just these rows (for profiling; no report file).
    only: Option<Vec<String>>,
}

fn options() -> Options {
    let args: Vec<String> = std::env::args().collect();
    let value = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let smoke = args.iter().any(|a| a == "--smoke");
    Options {
        rounds: value("--rounds").and_then(|v| v.parse().ok()).unwrap_or(if smoke { 1 } else { 5 }),
        seconds: value("--seconds").and_then(|v| v.parse().ok()).unwrap_or(if smoke { 1 } else { 4 }).max(1),
        smoke,
        only: value("--only").map(|v| v.split(',').map(str::to_string).collect()),
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
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
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

fn wrk(addr: SocketAddr, pid: u32, headers: &[(String, String)], seconds: u64) -> Wrk {
    let cpu_before = cpu_ns(pid);
    let mut command = Command::new("taskset");
    command.args(["-c", LOAD_CPU, "wrk", "-t1", &format!("-c{CONNECTIONS}"), &format!("-d{seconds}s"), "--latency"]);
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
    fn spread(&self) -> (f64, f64) {
        let values: Vec<f64> = self.runs.iter().map(|w| w.requests_per_second).collect();
        (values.iter().copied().fold(f64::INFINITY, f64::min), values.iter().copied().fold(0.0, f64::max))
    }
}

/// A shipped configuration prepared for the benchmark: nginx backends, no access log, no demo
/// decision header (measure the filter, not logging or demo aids).
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

fn main() {
    let options = options();
    let module = common::envoy::wasm_path();
    let bench_module = PathBuf::from(std::env::var("BENCH_WASM").expect("BENCH_WASM: the module built with --features bench (make bench sets it)"));
    let dir = tempfile::Builder::new().prefix("envoy-persistence-bench").tempdir().unwrap();
    let (_nginx, backends) = start_nginx(dir.path());
    let (_haproxy, haproxy, haproxy_pid) = start_haproxy(dir.path(), &backends);
    let first = backends[0];
    eprintln!("starting the Envoys (one worker each, CPU {ENVOY_CPU}); nginx and wrk on CPU {LOAD_CPU}");

    let base = shipped("http-cookie.yaml", &backends);
    let bare = start(&with_http_filters(base.clone(), json!([router()])));
    let noop = start(&with_http_filters(base.clone(), json!([bench_wasm_filter("bench_noop"), router()])).module(bench_module.clone()));
    let floor = start(&with_http_filters(base.clone(), json!([bench_wasm_filter("bench_copy"), header_session(), router()])).module(bench_module.clone()));
    let native = start(&with_http_filters(base.clone(), json!([cookie_session(), router()])));
    let cookie = start(&base.clone().module(module.clone()));
    let client_ip = start(&shipped("client-ip.yaml", &backends).module(module.clone()));
    let app = start(&shipped("app-cookie.yaml", &backends).module(module.clone()));
    let addresses: Vec<String> = backends.iter().map(ToString::to_string).collect();
    let header_config = shipped("http-header.yaml", &backends).plugin(move |p| {
        for (i, server) in p["profiles"][0]["http_header"]["servers"].as_array_mut().unwrap().iter_mut().enumerate() {
            server["address"] = json!(addresses[i]);
        }
    });
    let tenants = start(&header_config.module(module.clone()));
    let idle = start(&base.clone().module(module.clone()).plugin(|p| {
        let p = p.as_object_mut().unwrap();
        p.remove("default_profile");
        p.remove("routes");
    }));

    // Returning clients present what the first visit gave them.
    let native_cookie = cookie_from(native.addr(), "/", &[], "envoy-session");
    let our_cookie = cookie_from(cookie.addr(), "/", &[], "AVI_COOKIE");
    let haproxy_cookie = cookie_from(haproxy, "/", &[], "SERVERID");
    let session = cookie_from(app.addr(), "/login", &[], "JSESSIONID");
    get(client_ip.addr(), "/", &[]);
    let upstream = base64::engine::general_purpose::STANDARD.encode(first.to_string());
    let mut rows = vec![
        Row { name: "1. bare Envoy (router only)", addr: bare.addr(), pid: pid(&bare), headers: vec![], runs: vec![] },
        Row { name: "2. no-op Wasm filter", addr: noop.addr(), pid: pid(&noop), headers: vec![], runs: vec![] },
        Row { name: "3. floor: copy header + stateful_session", addr: floor.addr(), pid: pid(&floor), headers: vec![header("x-bench-upstream", upstream)], runs: vec![] },
        Row { name: "4. Envoy stateful_session cookie", addr: native.addr(), pid: pid(&native), headers: vec![header("cookie", format!("envoy-session={native_cookie}"))], runs: vec![] },
        Row { name: "5a. http_cookie, returning client", addr: cookie.addr(), pid: pid(&cookie), headers: vec![header("cookie", format!("AVI_COOKIE={our_cookie}"))], runs: vec![] },
        Row { name: "5b. http_cookie, first visit", addr: cookie.addr(), pid: pid(&cookie), headers: vec![], runs: vec![] },
        Row { name: "5c. client_ip, hit", addr: client_ip.addr(), pid: pid(&client_ip), headers: vec![], runs: vec![] },
        Row { name: "5d. app_cookie, hit", addr: app.addr(), pid: pid(&app), headers: vec![header("cookie", format!("JSESSIONID={session}"))], runs: vec![] },
        Row { name: "5e. http_header, match", addr: tenants.addr(), pid: pid(&tenants), headers: vec![header("x-tenant", "acme")], runs: vec![] },
        Row { name: "5f. filter on a route without a profile", addr: idle.addr(), pid: pid(&idle), headers: vec![], runs: vec![] },
        Row { name: "6. HAProxy cookie insert, returning", addr: haproxy, pid: haproxy_pid, headers: vec![header("cookie", format!("SERVERID={haproxy_cookie}"))], runs: vec![] },
    ];
    if let Some(only) = &options.only {
        rows.retain(|r| only.iter().any(|o| r.name.starts_with(&format!("{o}."))));
        for round in 0..options.rounds {
            for row in rows.iter_mut() {
                row.runs.push(wrk(row.addr, row.pid, &row.headers, options.seconds));
            }
            eprintln!("round {}: {}", round + 1, rows.iter().map(|r| format!("{} {:.0} {:.1}us", r.name, r.runs.last().map_or(0.0, |w| w.requests_per_second), r.runs.last().map_or(0.0, |w| w.cpu_us_per_request))).collect::<Vec<_>>().join(" | "));
        }
        for row in &rows {
            println!("{:<45} {:>8.0} req/s  {:>6.1} cpu-us/req  p50 {:>5.0} us  p99 {:>5.0} us", row.name, row.rps(), row.cpu(), row.stat(|w| w.p50_us), row.stat(|w| w.p99_us));
        }
        // Spans, when the module is a bench build (profiling).
        for (name, envoy) in [("http_cookie", &cookie), ("client_ip", &client_ip), ("app_cookie", &app), ("http_header", &tenants)] {
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
                println!("{name}: {}", spans.iter().map(|(s, us, n)| format!("{s} {us:.2}us (x{n})")).collect::<Vec<_>>().join(", "));
            }
        }
        return;
    }
    let count = rows.len();
    for round in 0..options.rounds {
        eprintln!("round {} of {}", round + 1, options.rounds);
        for i in 0..count {
            let row = &mut rows[(i + round * 3) % count];
            let result = wrk(row.addr, row.pid, &row.headers, options.seconds);
            assert!(result.requests_per_second > 0.0, "{}: no requests completed", row.name);
            row.runs.push(result);
        }
    }
    // Sanity: the persistence rows were really pinned (not just fast), per the filter's counters.
    for (envoy, stat) in [(&cookie, "persistence.web.pinned"), (&client_ip, "persistence.clients.pinned"), (&app, "persistence.java.pinned"), (&tenants, "persistence.tenants.pinned")] {
        assert!(envoy.counter(stat) > 1000 || options.smoke && envoy.counter(stat) > 0, "{stat} = {}", envoy.counter(stat));
    }
    let bare_rss = bare.rss_bytes();
    let cookie_rss = cookie.rss_bytes();
    let wasm_size = std::fs::metadata(&module).map(|m| m.len()).unwrap_or(0);
    let table = table::measure(bench_module, if options.smoke { &[10_000] } else { &[100_000, 1_000_000] });
    let report = report(&rows, &options, wasm_size, bare_rss, cookie_rss, &table);
    println!("{report}");
    let out = if options.smoke { common::envoy::repo_root().join("target/bench-smoke.md") } else { common::envoy::repo_root().join("BENCHMARKS.md") };
    std::fs::write(&out, &report).unwrap();
    eprintln!("written to {}", out.display());
}

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo.lines().find_map(|l| l.strip_prefix("model name")).map(|m| m.trim_start_matches([' ', '\t', ':']).to_string()).unwrap_or_default();
    let cores = cpuinfo.lines().filter(|l| l.starts_with("processor")).count();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let envoy = Command::new(common::envoy::envoy_bin()).arg("--version").output().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_default();
    let envoy = envoy.split_whitespace().last().unwrap_or_default().to_string();
    format!("{cores} x {model}, Linux {}, Envoy {envoy}", kernel.trim())
}

fn report(rows: &[Row], options: &Options, wasm_size: u64, bare_rss: u64, cookie_rss: u64, table: &[table::TableResult]) -> String {
    let bare = rows[0].rps();
    let floor = rows[2].rps();
    let floor_cpu = rows[2].cpu();
    let floor_p99 = rows[2].stat(|w| w.p99_us);
    let mut out = String::new();
    let _ = writeln!(out, "# Benchmarks\n");
    let _ = writeln!(out, "Command: `make bench` ({} rounds of {} s per row, rows rotated each round; {CONNECTIONS} connections, wrk `-t1`).", options.rounds, options.seconds);
    let _ = writeln!(out, "Machine: {}.", machine());
    let _ = writeln!(out, "Each configuration is its own Envoy with one worker pinned to CPU {ENVOY_CPU} (`--concurrency 1`; HAProxy `nbthread 1` likewise); nginx backends and wrk share CPU {LOAD_CPU}; loopback only; no access logs.");
    let _ = writeln!(out, "Medians over the rounds; the spread is the lowest and highest round. Ratios compare medians of the same run.\n");
    let _ = writeln!(out, "Two measures of cost: **req/s** (wall clock) and **CPU us/req**, the proxy process's on-CPU time per request");
    let _ = writeln!(out, "(from /proc/<pid>/task/*/schedstat). The proxy is CPU-bound, so throughput is the inverse of CPU per request on an");
    let _ = writeln!(out, "idle machine; on a shared machine CPU per request is the steadier measure (time other tenants take is not counted).");
    let _ = writeln!(out, "\"cpu vs floor\" is floor CPU / row CPU: the throughput ratio a dedicated core would show.\n");
    let _ = writeln!(out, "| Row | req/s | spread | vs bare | vs floor (3) | CPU us/req | cpu vs floor | p50 | p99 |");
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for row in rows {
        let (low, high) = row.spread();
        let _ = writeln!(
            out,
            "| {} | {:.0} | {:.0}-{:.0} | {:.3} | {:.3} | {:.1} | {:.3} | {:.0} us | {:.0} us |",
            row.name,
            row.rps(),
            low,
            high,
            row.rps() / bare,
            row.rps() / floor,
            row.cpu(),
            floor_cpu / row.cpu(),
            row.stat(|w| w.p50_us),
            row.stat(|w| w.p99_us)
        );
    }
    let ratio = |i: usize| rows[i].rps() / floor;
    let cpu_ratio = |i: usize| floor_cpu / rows[i].cpu();
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    let _ = writeln!(out, "\n## Targets\n");
    let _ = writeln!(out, "| Target | req/s ratio | | CPU ratio | |\n|---|---:|---|---:|---|");
    for (name, row, target) in [
        ("HTTP cookie returning client >= 0.97 x floor", 4, 0.97),
        ("HTTP cookie first visit >= 0.93 x floor", 5, 0.93),
        ("Client IP hit >= 0.95 x floor", 6, 0.95),
        ("App cookie hit >= 0.95 x floor", 7, 0.95),
    ] {
        let _ = writeln!(out, "| {name} | {:.3} | {} | {:.3} | {} |", ratio(row), verdict(ratio(row) >= target), cpu_ratio(row), verdict(cpu_ratio(row) >= target));
    }
    let worst_p99 = rows[4..10].iter().map(|r| r.stat(|w| w.p99_us) / floor_p99).fold(0.0, f64::max);
    let _ = writeln!(out, "| p99 of every persistence row <= 1.2 x floor's | {worst_p99:.2} (worst) | {} | | |", verdict(worst_p99 <= 1.2));
    let _ = writeln!(out, "| .wasm <= 250 KiB | {:.1} KiB | {} | | |", wasm_size as f64 / 1024.0, verdict(wasm_size <= 250 * 1024));
    let _ = writeln!(out, "\n## Memory\n");
    let _ = writeln!(out, "- Envoy RSS, one worker, after warm-up: bare {:.1} MiB, with this module (http-cookie.yaml) {:.1} MiB (+{:.1} MiB).", bare_rss as f64 / 1048576.0, cookie_rss as f64 / 1048576.0, cookie_rss.saturating_sub(bare_rss) as f64 / 1048576.0);
    for t in table {
        let _ = writeln!(
            out,
            "- Client IP table (default size, 65536 buckets) with {} entries: {:.1} bytes per entry (Envoy RSS growth / entries), {} lookups/s in the VM (one bucket copy and scan each; {} of {} found).",
            t.entries, t.bytes_per_entry, t.lookups_per_second, t.found, t.looked_up
        );
    }
    if let Some(million) = table.iter().find(|t| t.entries == 1_000_000) {
        let _ = writeln!(out, "- Target at most 150 bytes per entry at 1M entries: {}.", verdict(million.bytes_per_entry <= 150.0));
    }
    out
}
