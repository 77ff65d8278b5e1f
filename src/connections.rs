//! Connection-aware timeouts for client IP persistence. Avi starts a client's timeout "when all
//! connections from that IP are closed": the same module, running as a network filter, counts each
//! client's open connections in a table of its own (`ConnectionCounter`), and a client IP entry
//! stays alive while its client has a connection open, or closed its last one less than the
//! timeout ago (`keep_alive`). The HTTP plugins publish which client groupings to count
//! (`Tracking`), so the network filter needs no configuration.

use crate::client_address::{self, Granularity};
use crate::host::{Host, MetricId, MetricKind};
use crate::metrics::{CONNECTION_CONFLICTS, TRACKED_CLIENTS};
use crate::table::{self, Change, Entry, Record, Store, StoreError, Table, TableError};
use std::net::IpAddr;

/// The connection table has a fixed size (so every filter instance agrees on its layout without
/// configuration): clients beyond it fall back to "timeout since the last request".
pub const CONNECTION_TABLE_ENTRIES: u32 = 1 << 21;
/// Where HTTP plugins publish what the connection counter must track.
pub const TRACKING_KEY: &str = "persistence.connections.layout";
/// Client IP's default timeout, what the counter keeps closed records for until told otherwise.
const DEFAULT_TIMEOUT: u32 = 5 * 60;

/// The connection table, the same for every plugin of the process (fixed size and name).
pub fn connection_table() -> Table {
    Table::new("persistence.connections", CONNECTION_TABLE_ENTRIES)
}

/// Open connections of one client, as counted by the network filter; `Entry::touched` is the
/// time of the last open or close.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Connections {
    pub open: u16,
}

impl Record for Connections {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.open.to_le_bytes());
    }
    fn decode(bytes: &[u8]) -> Option<(Self, &[u8])> {
        let (open, rest) = bytes.split_first_chunk::<2>()?;
        Some((Connections { open: u16::from_le_bytes(*open) }, rest))
    }
}

/// A client's connections keep its persistence alive while one is open, and for `timeout` after
/// the last one closed.
pub fn keep_alive(connections: Option<&Entry<Connections>>, timeout: u32, now: u32) -> bool {
    connections.is_some_and(|c| c.record.open > 0 || now < c.touched.saturating_add(timeout))
}

/// A connection record can go once it keeps nothing alive: no connection open, and the last close
/// older than every client IP timeout.
pub fn record_expired(connections: &Entry<Connections>, max_timeout: u32, now: u32) -> bool {
    !keep_alive(Some(connections), max_timeout, now)
}

pub fn connection_opened(current: Option<&Entry<Connections>>, now: u32) -> Entry<Connections> {
    let open = current.map_or(0, |c| c.record.open).saturating_add(1);
    Entry { touched: now, record: Connections { open } }
}

pub fn connection_closed(current: Option<&Entry<Connections>>, now: u32) -> Entry<Connections> {
    let open = current.map_or(0, |c| c.record.open).saturating_sub(1);
    Entry { touched: now, record: Connections { open } }
}

/// The connection table as read by the HTTP side (liveness of client IP entries).
pub struct ConnectionTable<'a> {
    pub table: &'a Table,
    pub store: &'a dyn Store,
}

impl ConnectionTable<'_> {
    /// The connection record of client `key`; None when absent or unreadable.
    pub fn record(&self, key: u64) -> Option<Entry<Connections>> {
        self.table.read(self.store, key).ok().and_then(|snapshot| self.table.find(&snapshot, key))
    }
}

/// What the connection-counting network filter must track, published in shared data by every
/// HTTP plugin with client IP profiles and merged (union of groupings, longest timeout).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tracking {
    pub granularities: Vec<Granularity>,
    /// How long closed-connection records are kept (the longest client IP timeout).
    pub max_timeout: u32,
}

const TRACKING_FORMAT: u8 = 1;

impl Tracking {
    pub fn merge(&mut self, other: &Tracking) {
        for granularity in &other.granularities {
            if !self.granularities.contains(granularity) {
                self.granularities.push(*granularity);
            }
        }
        self.max_timeout = self.max_timeout.max(other.max_timeout);
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![TRACKING_FORMAT];
        out.extend_from_slice(&self.max_timeout.to_le_bytes());
        for g in &self.granularities {
            out.extend_from_slice(&[g.ipv4, g.ipv6]);
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<Tracking> {
        let (&TRACKING_FORMAT, rest) = bytes.split_first()? else { return None };
        let (timeout, rest) = rest.split_first_chunk::<4>()?;
        let granularities = rest.chunks_exact(2).filter_map(|g| match g {
            [ipv4, ipv6] => Some(Granularity { ipv4: (*ipv4).clamp(1, 32), ipv6: (*ipv6).clamp(1, 128) }),
            _ => None,
        });
        let granularities = granularities.collect();
        Some(Tracking { granularities, max_timeout: u32::from_le_bytes(*timeout) })
    }

    /// Until an HTTP plugin has said otherwise: exact addresses, the default timeout.
    pub fn fallback() -> Tracking {
        Tracking { granularities: vec![Granularity::EXACT], max_timeout: DEFAULT_TIMEOUT }
    }

    /// What the plugins of this process published (the fallback until one did).
    pub fn published(store: &dyn Store) -> Tracking {
        match store.get(TRACKING_KEY) {
            Ok(Some((bytes, _))) => Tracking::decode(&bytes).unwrap_or_else(Tracking::fallback),
            _ => Tracking::fallback(),
        }
    }

    /// Adds these groupings to what the counter tracks (a CAS-merged union); false if it could not.
    pub fn publish(&self, store: &dyn Store) -> bool {
        if self.granularities.is_empty() {
            return true;
        }
        for _ in 0..16 {
            let (mut merged, cas) = match store.get(TRACKING_KEY) {
                Ok(Some((bytes, cas))) => (Tracking::decode(&bytes).unwrap_or_default(), cas),
                Ok(None) => (Tracking::default(), table::CREATE),
                Err(_) => break,
            };
            let before = merged.clone();
            merged.merge(self);
            if merged == before {
                return true;
            }
            match store.set(TRACKING_KEY, &merged.encode(), cas) {
                Ok(()) => return true,
                Err(StoreError::CasMismatch) => continue,
                Err(_) => break,
            }
        }
        log::warn!("could not publish the connection tracking layout: client IP timeouts count from the last request");
        false
    }
}

/// The network-filter role: counts every client's open connections in the connection table.
pub struct ConnectionCounter {
    table: Table,
    /// Gauge: clients with a record in the table.
    clients: Option<MetricId>,
    conflicts: Option<MetricId>,
}

/// The keys a connection was counted under, and the timeout its records are kept for.
pub struct Counted {
    keys: Vec<u64>,
    max_timeout: u32,
}

impl ConnectionCounter {
    pub fn new(host: &impl Host) -> ConnectionCounter {
        let define = |kind, name| host.define_metric(kind, name).ok();
        ConnectionCounter {
            table: connection_table(),
            clients: define(MetricKind::Gauge, TRACKED_CLIENTS),
            conflicts: define(MetricKind::Counter, CONNECTION_CONFLICTS),
        }
    }

    /// A connection from `ip` opened: counted under every published grouping.
    pub fn opened(&self, host: &impl Host, ip: IpAddr) -> Counted {
        let tracking = Tracking::published(host.store());
        let keys: Vec<u64> = tracking.granularities.iter().map(|g| client_address::client_key(ip, *g)).collect();
        self.record(host, &keys, connection_opened, tracking.max_timeout);
        Counted { keys, max_timeout: tracking.max_timeout }
    }

    pub fn closed(&self, host: &impl Host, counted: Counted) {
        self.record(host, &counted.keys, connection_closed, counted.max_timeout);
    }

    fn record(&self, host: &impl Host, keys: &[u64], change: fn(Option<&Entry<Connections>>, u32) -> Entry<Connections>, max_timeout: u32) {
        let now = host.now() as u32;
        for &key in keys {
            let expired = |e: &Entry<Connections>| record_expired(e, max_timeout, now);
            match self.table.update(host.store(), key, None, |current| Change::Put(change(current, now)), expired) {
                Ok(applied) => add(host, self.clients, applied.entries_delta()),
                Err(TableError::Conflict) => add(host, self.conflicts, 1),
                Err(TableError::Store(status)) => log::warn!("connection tracking: shared data error (status {status})"),
            }
        }
    }

    /// Drops records that keep nothing alive, a slice of `buckets` per call (see `Table::claim_sweep`).
    pub fn sweep(&self, host: &impl Host, buckets: u32) {
        let max_timeout = Tracking::published(host.store()).max_timeout;
        let now = host.now() as u32;
        let interval = table::sweep_interval(max_timeout);
        let Ok(Some(range)) = self.table.claim_sweep(host.store(), buckets, now, interval) else { return };
        for bucket in range {
            if let Ok(removed) = self.table.sweep(host.store(), bucket, |_, e: &Entry<Connections>| record_expired(e, max_timeout, now)) {
                add(host, self.clients, -i64::from(removed));
            }
        }
    }
}

fn add(host: &impl Host, id: Option<MetricId>, delta: i64) {
    if let (Some(id), true) = (id, delta != 0) {
        host.increment_metric(id, delta);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::MemoryStore;

    #[test]
    fn tracking_layouts_merge_and_round_trip() {
        let mut a = Tracking { granularities: vec![Granularity::EXACT], max_timeout: 300 };
        let b = Tracking { granularities: vec![Granularity { ipv4: 24, ipv6: 64 }, Granularity::EXACT], max_timeout: 60 };
        a.merge(&b);
        assert_eq!(a.granularities, [Granularity::EXACT, Granularity { ipv4: 24, ipv6: 64 }]);
        assert_eq!(a.max_timeout, 300);
        assert_eq!(Tracking::decode(&a.encode()), Some(a));
        assert_eq!(Tracking::decode(&[]), None);
        assert_eq!(Tracking::decode(&[9, 0, 0, 0, 0]), None);
    }

    #[test]
    fn published_layouts_are_merged_by_every_plugin() {
        let store = MemoryStore::default();
        assert_eq!(Tracking::published(&store), Tracking::fallback());
        assert!(Tracking { granularities: vec![Granularity::EXACT], max_timeout: 60 }.publish(&store));
        assert!(Tracking { granularities: vec![Granularity { ipv4: 24, ipv6: 64 }], max_timeout: 600 }.publish(&store));
        let published = Tracking::published(&store);
        assert_eq!(published.granularities.len(), 2);
        assert_eq!(published.max_timeout, 600);
    }

    #[test]
    fn connections_keep_the_entry_alive_until_timeout_after_the_last_close() {
        let opened = connection_opened(None, 100);
        let twice = connection_opened(Some(&opened), 110);
        assert_eq!(twice.record.open, 2);
        assert!(keep_alive(Some(&twice), 60, 10_000), "open connections never time out");
        let one_closed = connection_closed(Some(&twice), 200);
        assert!(keep_alive(Some(&one_closed), 60, 10_000));
        let all_closed = connection_closed(Some(&one_closed), 300);
        assert_eq!(all_closed.record.open, 0);
        assert!(keep_alive(Some(&all_closed), 60, 359));
        assert!(!keep_alive(Some(&all_closed), 60, 360));
        assert!(record_expired(&all_closed, 60, 360) && !record_expired(&all_closed, 60, 359));
        assert_eq!(connection_closed(None, 5).record.open, 0, "a close without a counted open does not underflow");
        assert!(!keep_alive(None, 60, 0));
    }
}
