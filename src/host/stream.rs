//! The network-filter role: counts every client's open connections in the shared connection table,
//! so a client IP entry never expires while its client is connected, and starts counting down its
//! timeout when the client's last connection closes (Avi's semantics).

use super::ffi;
use super::metrics::add;
use super::root::TRACKING_KEY;
use super::store::SharedData;
use crate::profile::client_ip::{self, Connections, Tracking};
use crate::table::{Change, Entry, Store, Table, TableError};
use proxy_wasm::traits::{Context, StreamContext};
use proxy_wasm::types::{Action, PeerType};
use std::rc::Rc;

pub struct ConnectionCounter {
    pub table: Table,
    /// Gauge: clients with a record in the table.
    pub clients: Option<u32>,
    pub conflicts: Option<u32>,
}

impl ConnectionCounter {
    fn tracking() -> Tracking {
        match SharedData.get(TRACKING_KEY) {
            Ok(Some((bytes, _))) => Tracking::decode(&bytes).unwrap_or_else(Tracking::fallback),
            _ => Tracking::fallback(),
        }
    }

    fn record(&self, keys: &[u64], change: fn(Option<&Entry<Connections>>, u32) -> Entry<Connections>, max_timeout: u32) {
        let now = ffi::now_seconds() as u32;
        for &key in keys {
            let expired = |e: &Entry<Connections>| e.record.open == 0 && now >= e.touched.saturating_add(max_timeout);
            match self.table.update(&SharedData, key, None, |current| Change::Put(change(current, now)), expired) {
                Ok(applied) => add(self.clients, applied.entries_delta()),
                Err(TableError::Conflict) => add(self.conflicts, 1),
                Err(TableError::Store(status)) => log::warn!("connection tracking: shared data error (status {status})"),
            }
        }
    }

    /// Drops records of clients with no open connection whose last close is older than every timeout.
    pub fn sweep(&self, buckets: u32) {
        let max_timeout = ConnectionCounter::tracking().max_timeout;
        let now = ffi::now_seconds() as u32;
        let interval = crate::profile::table_backed::sweep_interval(max_timeout);
        let Ok(Some(range)) = self.table.claim_sweep(&SharedData, buckets, now, interval) else { return };
        for bucket in range {
            let expired = |_: u64, e: &Entry<Connections>| e.record.open == 0 && now >= e.touched.saturating_add(max_timeout);
            if let Ok(removed) = self.table.sweep(&SharedData, bucket, expired) {
                add(self.clients, -i64::from(removed));
            }
        }
    }
}

/// One downstream connection.
pub struct Connection {
    counter: Rc<ConnectionCounter>,
    /// The client's keys (one per grouping), set once the open was counted.
    counted: Option<(Vec<u64>, u32)>,
}

impl Connection {
    pub fn new(counter: Rc<ConnectionCounter>) -> Connection {
        Connection { counter, counted: None }
    }
}

impl Context for Connection {}

impl StreamContext for Connection {
    fn on_new_connection(&mut self) -> Action {
        let source = ffi::property(&["source", "address"]).ok().flatten();
        let Some(ip) = source.and_then(|bytes| std::str::from_utf8(&bytes).ok()?.parse::<std::net::SocketAddr>().ok()).map(|a| a.ip()) else {
            // Unix sockets and the like: nothing to count.
            return Action::Continue;
        };
        let tracking = ConnectionCounter::tracking();
        let keys: Vec<u64> = tracking.granularities.iter().map(|g| client_ip::client_key(ip, *g)).collect();
        self.counter.record(&keys, client_ip::connection_opened, tracking.max_timeout);
        self.counted = Some((keys, tracking.max_timeout));
        Action::Continue
    }

    fn on_downstream_close(&mut self, _peer: PeerType) {
        if let Some((keys, max_timeout)) = self.counted.take() {
            self.counter.record(&keys, client_ip::connection_closed, max_timeout);
        }
    }
}
