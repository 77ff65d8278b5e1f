//! Client IP table memory and lookup rate, measured in a real Envoy, for each build.
//!
//! Runs the module built with `--features bench`, whose driver (`crate::table_bench`) fills a
//! default-sized client IP table through the real table code on the build's real store (Envoy's
//! shared data for Wasm, the process-wide map natively), and times lookups (one bucket copy +
//! scan each) on one worker. Bytes per entry = Envoy's RSS growth / entries.

use crate::common::{get, Envoy, EnvoyConfig, Launch};
use serde_json::json;
use std::path::PathBuf;

/// Which build's table: the Wasm bench module, or the native bench build's directory.
#[derive(Clone)]
pub enum Build {
    Wasm(PathBuf),
    Native(PathBuf),
}

impl Build {
    pub fn name(&self) -> &'static str {
        match self {
            Build::Wasm(_) => "Wasm",
            Build::Native(_) => "native",
        }
    }
}

pub struct TableResult {
    pub build: &'static str,
    pub entries: u32,
    pub bytes_per_entry: f64,
    pub lookups_per_second: u64,
    pub found: u32,
    pub looked_up: u32,
}

/// Fills the table to each of `sizes` in turn, measuring after each.
pub fn measure(build: Build, sizes: &[u32]) -> Vec<TableResult> {
    // The Wasm driver answers itself; the native one runs on the request and answers in a
    // header of the route's direct response.
    let (driver, status) = match &build {
        Build::Wasm(_) => (
            json!({"name": "bench", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                "config": {"name": "bench", "root_id": "persistence_bench",
                    "vm_config": {"vm_id": "persistence", "runtime": "envoy.wasm.runtime.v8",
                                  "code": {"local": {"filename": "set by the harness"}}}}}}),
            404,
        ),
        Build::Native(_) => (crate::bench_native_filter("persistence_bench"), 200),
    };
    let config = EnvoyConfig::from_value(json!({
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "static_resources": {"listeners": [{
            "name": "main",
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
            "filter_chains": [{"filters": [{
                "name": "envoy.filters.network.http_connection_manager",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                    "stat_prefix": "bench",
                    "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
                        {"match": {"prefix": "/"}, "direct_response": {"status": status}}]}]},
                    "http_filters": [
                        driver,
                        {"name": "envoy.filters.http.router", "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}}]}]}],
            "clusters": []}
    }));
    let config = match &build {
        Build::Wasm(module) => config.module(module.clone()),
        Build::Native(dir) => config.native_build(dir.clone()),
    };
    let envoy = Envoy::launch(&config, &Launch { quiet: true, ..Launch::workers(1) }).unwrap_or_else(|log| panic!("Envoy did not start:\n{log}"));
    std::thread::sleep(std::time::Duration::from_secs(1));
    let call = |path: &str| {
        let response = get(envoy.addr(), path, &[]);
        assert_eq!(response.status, 200, "{path}: {response:?}");
        match &build {
            Build::Wasm(_) => response.body_text().trim().to_string(),
            Build::Native(_) => response.header("x-bench-answer").unwrap_or_default().to_string(),
        }
    };
    let base = envoy.rss_bytes();
    let mut filled = 0;
    let mut rows = Vec::new();
    for &target in sizes {
        let start = std::time::Instant::now();
        while filled < target {
            let next = (filled + 100_000).min(target);
            call(&format!("/fill?from={filled}&to={next}"));
            filled = next;
        }
        let fill_time = start.elapsed();
        let rss = envoy.rss_bytes();
        let bytes_per_entry = rss.saturating_sub(base) as f64 / f64::from(target);
        let looked_up = (target / 2).clamp(1_000, 500_000);
        let lookups = call(&format!("/lookup?n={looked_up}&of={target}"));
        // "lookups N found F in T ns: R per second"
        let words: Vec<&str> = lookups.split_whitespace().collect();
        let found = words.get(3).and_then(|w| w.parse().ok()).unwrap_or(0);
        let lookups_per_second = words.get(7).and_then(|w| w.parse().ok()).unwrap_or(0);
        eprintln!("table ({}): {target} entries filled in {fill_time:.1?}: {bytes_per_entry:.1} bytes/entry, {lookups_per_second} lookups/s", build.name());
        rows.push(TableResult { build: build.name(), entries: target, bytes_per_entry, lookups_per_second, found, looked_up });
    }
    rows
}
