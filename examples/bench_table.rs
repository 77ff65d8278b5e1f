//! Client IP table memory and lookup rate, measured in a real Envoy (`make bench-table`).
//!
//! Runs the module built with `--features bench`, whose driver fills a default-sized client IP
//! table (2097152 entries) through the real table code on Envoy's real shared data, and times
//! lookups (one bucket copy + scan each). Bytes per entry = Envoy's RSS growth / entries.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/common/mod.rs"]
mod common;

use common::{get, Envoy, EnvoyConfig};
use serde_json::json;

fn main() {
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
                        {"match": {"prefix": "/"}, "direct_response": {"status": 404}}]}]},
                    "http_filters": [
                        {"name": "bench", "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                            "config": {"name": "bench", "root_id": "persistence_bench",
                                "vm_config": {"vm_id": "persistence", "runtime": "envoy.wasm.runtime.v8",
                                              "code": {"local": {"filename": "set by the harness"}}}}}},
                        {"name": "envoy.filters.http.router", "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}}]}]}],
            "clusters": []}
    }));
    let envoy = Envoy::try_start(&config, 1).unwrap_or_else(|log| panic!("Envoy did not start:\n{log}"));
    std::thread::sleep(std::time::Duration::from_secs(1));
    let call = |path: &str| {
        let response = get(envoy.addr(), path, &[]);
        assert_eq!(response.status, 200, "{path}: {response:?}");
        response.body_text().trim().to_string()
    };
    let base = envoy.rss_bytes();
    println!("Envoy RSS with the module loaded: {:.1} MiB", base as f64 / 1048576.0);
    let mut filled = 0;
    let mut rows = Vec::new();
    for target in [100_000u32, 1_000_000] {
        let start = std::time::Instant::now();
        while filled < target {
            let next = (filled + 100_000).min(target);
            call(&format!("/fill?from={filled}&to={next}"));
            filled = next;
        }
        let fill_time = start.elapsed();
        let rss = envoy.rss_bytes();
        let per_entry = (rss - base) as f64 / f64::from(target);
        let lookups = call(&format!("/lookup?n=500000&of={target}"));
        println!("{target:>9} entries: RSS +{:.1} MiB = {per_entry:.1} bytes/entry (filled in {fill_time:.1?}); {lookups}", (rss - base) as f64 / 1048576.0);
        rows.push((target, per_entry, lookups));
    }
    let (_, at_million, _) = rows.last().unwrap();
    println!("target: at most 150 bytes per entry at 1M entries: {}", if *at_million <= 150.0 { "met" } else { "MISSED" });
}
