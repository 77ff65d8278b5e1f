//! Reclaims expired entries of the shared tables, a slice of buckets per tick. Ticks run on the main
//! thread and on every worker; `Table::claim_sweep` hands each bucket to one of them.

use crate::connections::ConnectionTable;
use crate::host::Host;
use crate::metrics::{FilterCounter, ProfileCounter};
use crate::plugin::Plugin;
use crate::profile::table_backed;
use crate::server::Server;
use crate::table::{self, Entry, TableError};
use std::cell::Cell;
use std::time::Duration;

/// How often the host calls `sweep` (and the connection counter's sweep).
pub const PERIOD: Duration = Duration::from_secs(1);
/// Buckets each tick sweeps (workers and the main thread share the work). Most buckets of a large
/// table were never written and cost one failed lookup: a pass over 65536 buckets takes a few
/// seconds, then the table rests for its `sweep_interval`.
pub const BUCKETS_PER_TICK: u32 = 4096;

/// Whether this configuration has tables to sweep (else the host need not tick).
pub fn has_tables(plugin: &Plugin) -> bool {
    plugin.state.tables.iter().any(Option::is_some)
}

/// Sweeps the tables of table-backed profiles in use.
pub fn sweep(plugin: &Plugin, host: &impl Host) {
    let store = host.store();
    let now = host.now() as u32;
    let state = &plugin.state;
    let connections = ConnectionTable { table: &state.connections, store };
    for (index, (profile, table)) in plugin.config.profiles.iter().zip(&state.tables).enumerate() {
        // An unused profile's table is empty (the built-in ones usually are): sweeping it would
        // cost thousands of host calls per tick for nothing.
        let Some(table) = table.as_ref().filter(|_| state.used.get(index).is_some_and(Cell::get)) else { continue };
        let Some(spec) = profile.kind.table() else { continue };
        let Ok(Some(range)) = table.claim_sweep(store, BUCKETS_PER_TICK, now, table::sweep_interval(spec.timeout)) else { continue };
        let aware = spec.connection_aware.then_some(&connections);
        let expired = |key: u64, entry: &Entry<Server>| !table_backed::entry_alive(entry, key, spec.timeout, now, aware);
        let mut removed = 0;
        for bucket in range {
            match table.sweep(store, bucket, expired) {
                Ok(n) => removed += n,
                Err(TableError::Conflict) => state.metrics.count_profile(host, index, ProfileCounter::TableConflicts),
                Err(TableError::Store(_)) => state.metrics.count(host, FilterCounter::HostErrors),
            }
        }
        state.metrics.add_profile(host, index, ProfileCounter::Expired, removed);
        state.metrics.entries_changed(host, index, -i64::from(removed));
    }
}
