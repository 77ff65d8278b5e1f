//! The client IP table benchmark's driver, for both hosts (built only with the `bench` feature):
//! fills a default-sized client IP table through the real table code on the host's real store,
//! and times lookups, when asked by HTTP (`/fill?from=A&to=B`, `/lookup?n=N&of=M`), so that a
//! harness can read Envoy's memory between the steps.

use crate::client_address::{client_key, Granularity};
use crate::profile::client_ip::DEFAULT_MAX_ENTRIES;
use crate::server::Server;
use crate::table::{Change, Entry, Store, Table};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

fn table() -> Table {
    Table::new("persistence.bench", DEFAULT_MAX_ENTRIES)
}

/// The `i`th synthetic client (10.0.0.0/8 and up) and its key.
fn key(i: u32) -> u64 {
    client_key(IpAddr::V4(Ipv4Addr::from(0x0a00_0000u32.wrapping_add(i))), Granularity::EXACT)
}

fn nanos() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

fn param(query: &str, name: &str) -> u32 {
    query.split('&').filter_map(|kv| kv.split_once('=')).find(|(k, _)| *k == name).and_then(|(_, v)| v.parse().ok()).unwrap_or(0)
}

/// The answer to one request for `path`; `now` is unix seconds.
pub fn answer<S: Store>(path: &str, store: &S, now: u32) -> String {
    let (route, query) = path.split_once('?').unwrap_or((path, ""));
    let table = table();
    let server = |i: u32| Server::host(SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 9, 9, (i % 3) as u8)), 8080));
    match route {
        "/fill" => {
            let (from, to) = (param(query, "from"), param(query, "to"));
            let start = nanos();
            let mut written = 0u32;
            for i in from..to {
                let entry = Entry { touched: now, record: server(i) };
                if let Ok(applied) = table.update(store, key(i), None, |_| Change::Put(entry), |_: &Entry<Server>| false) {
                    written += u32::from(applied.inserted);
                }
            }
            format!("inserted {written} in {} ms", (nanos() - start) / 1_000_000)
        }
        "/lookup" => {
            let (n, of) = (param(query, "n"), param(query, "of").max(1));
            let mut found = 0u32;
            let mut i: u32 = 12_345;
            let start = nanos();
            for _ in 0..n {
                i = i.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                let k = key(i % of);
                if let Ok(snapshot) = table.read(store, k) {
                    found += u32::from(table.find::<Server>(&snapshot, k).is_some());
                }
            }
            let elapsed = (nanos() - start).max(1);
            format!("lookups {n} found {found} in {elapsed} ns: {} per second", u64::from(n) * 1_000_000_000 / elapsed)
        }
        _ => "use /fill?from=A&to=B or /lookup?n=N&of=M".to_string(),
    }
}
