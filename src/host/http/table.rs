//! Glue shared by table-backed profiles (lookup before the request, writes after the response),
//! and the client IP profile's own part (its key).

use super::{decided, log_outcome, pin, profile_name, property_address, HostResult};
use crate::client_address::{self, Verdict};
use crate::endpoint::Endpoint;
use crate::host::ffi;
use crate::host::root::Plugin;
use crate::host::store::SharedData;
use crate::metrics::{FilterCounter, ProfileCounter};
use crate::profile::table_backed::{self, Write};
use crate::profile::{client_ip, Profile};
use crate::table::{Entry, Snapshot, Table, TableError};
use std::cell::Cell;

const SOURCE_ADDRESS: [&str; 2] = ["source", "address"];

pub struct Pending {
    profile: usize,
    key: u64,
    snapshot: Snapshot,
    pin: Option<Entry<Endpoint>>,
    timeout: u32,
    /// The clock at the request (the response uses it too: one clock read per request).
    now: u32,
}

impl Pending {
    pub fn pin(&self) -> Option<Endpoint> {
        self.pin.map(|entry| entry.record)
    }
}

pub fn client_ip_request(plugin: &Plugin, profile: usize, settings: &client_ip::Settings, headers: &ffi::Headers) -> HostResult<Option<Pending>> {
    if settings.timeout == 0 {
        return Ok(None); // Avi: a timeout of 0 disables persistence.
    }
    let Some(key) = client_key(plugin, profile, settings.granularity(), headers) else { return Ok(None) };
    keyed_request(plugin, profile, key, settings.timeout, true)
}

/// The key of the request's client address; None when the connection has no IP address or the
/// address cannot be trusted (recorded, counted and logged once per VM).
pub fn client_key(plugin: &Plugin, profile: usize, granularity: client_ip::Granularity, headers: &ffi::Headers) -> Option<u64> {
    let Some(source) = property_address(&SOURCE_ADDRESS) else {
        log::debug!("profile {}: no client address (not an IP connection): load balancing", profile_name(plugin, profile));
        return None;
    };
    let ip = match client_address::judge(plugin.config.client_address, source, headers.values("x-forwarded-for")) {
        Verdict::Use(ip) => ip,
        Verdict::Untrusted => {
            refuse(plugin, profile, FilterCounter::UntrustedClientAddress, "untrusted_client_address", &plugin.warned_untrusted_address, UNTRUSTED_FIX);
            return None;
        }
        Verdict::NeedPeer => match ffi::property(&PEER_ADDRESS).ok().flatten().and_then(|value| client_address::peer(&value)) {
            Some(peer) => peer,
            None => {
                refuse(plugin, profile, FilterCounter::NoPeerAddress, "no_peer_address", &plugin.warned_no_peer, NO_PEER_FIX);
                return None;
            }
        },
    };
    Some(client_ip::client_key(ip, granularity))
}

const PEER_ADDRESS: [&str; 2] = ["filter_state", client_address::PEER_FILTER_STATE];

const UNTRUSTED_FIX: &str = "Envoy took the client address from the last X-Forwarded-For entry, which the client writes \
    (use_remote_address: false, no xff_num_trusted_hops): load balanced without client IP persistence. \
    Fix: set use_remote_address: true (and xff_num_trusted_hops: N behind N trusted proxies), or \"client_address\": \"peer\"";
const NO_PEER_FIX: &str = "\"client_address\" is \"peer\", Envoy took the client address from X-Forwarded-For, and no \
    set_filter_state filter provides the connection's peer (object_key persistence.peer, %DOWNSTREAM_DIRECT_REMOTE_ADDRESS%): \
    load balanced without client IP persistence";

/// A client address the key must not be built from: no persistence for this request.
fn refuse(plugin: &Plugin, profile: usize, counter: FilterCounter, reason: &str, warned: &Cell<bool>, fix: &str) {
    plugin.metrics.count(counter);
    if !warned.replace(true) {
        log::warn!("profile {}: {fix} (logged once per worker; counted in {})", profile_name(plugin, profile), counter.name());
    }
    decided(plugin, profile, None, Some(("reason", reason)), false);
}

/// Looks `key` up and remembers what the response needs.
pub fn keyed_request(plugin: &Plugin, profile: usize, key: u64, timeout: u32, connection_aware: bool) -> HostResult<Option<Pending>> {
    let now = ffi::now_seconds() as u32;
    let Some((snapshot, live)) = lookup(plugin, profile, key, timeout, connection_aware, now)? else { return Ok(None) };
    decided(plugin, profile, live.map(|e| e.record), None, true);
    Ok(Some(Pending { profile, key, snapshot, pin: live, timeout, now }))
}

pub fn response(plugin: &Plugin, pending: Pending, upstream: Option<Endpoint>) -> HostResult<()> {
    let Pending { profile, key, snapshot, pin, timeout, now } = pending;
    let Some(Profile { server_down, .. }) = plugin.config.profiles.get(profile) else { return Ok(()) };
    let (outcome, write) = table_backed::decide(pin, upstream, *server_down, timeout, now);
    log_outcome(plugin, profile, outcome, upstream, None);
    if let Some(write) = write {
        apply(plugin, profile, Some(snapshot), &[(key, write)], timeout, now)?;
    }
    Ok(())
}

/// The profile's table, if it has one.
pub fn table_of(plugin: &Plugin, profile: usize) -> Option<&Table> {
    plugin.tables.get(profile).and_then(Option::as_ref)
}

/// Looks `key` up (one bucket read) and pins the request if a live entry names a server. Returns
/// the snapshot (reused by the response's write) and the live entry.
pub fn lookup(
    plugin: &Plugin,
    profile: usize,
    key: u64,
    timeout: u32,
    connection_aware: bool,
    now: u32,
) -> HostResult<Option<(Snapshot, Option<Entry<Endpoint>>)>> {
    let Some(table) = table_of(plugin, profile) else { return Ok(None) };
    let store = SharedData;
    let snapshot = table.read(&store, key).map_err(|e| ("reading the shared table", store_status(e)))?;
    let entry: Option<Entry<Endpoint>> = table.find(&snapshot, key);
    let live = entry.filter(|e| table_backed::alive(e, timeout, now) || (connection_aware && connections_keep_alive(&plugin.connections, key, timeout, now)));
    if let Some(entry) = &live {
        pin(plugin, &entry.record)?;
    }
    Ok(Some((snapshot, live)))
}

/// Whether the client behind `key` has a connection open, or closed its last one within `timeout`
/// (only consulted when the entry's own timestamp says it expired).
fn connections_keep_alive(connections: &Table, key: u64, timeout: u32, now: u32) -> bool {
    let record = connections.read(&SharedData, key).ok().and_then(|snapshot| connections.find(&snapshot, key));
    client_ip::connections_keep_alive(record.as_ref(), timeout, now)
}

/// Makes the writes decided after a response, counting what they did. `snapshot` (read for the
/// request) saves a read when its bucket has not changed since.
pub fn apply(plugin: &Plugin, profile: usize, snapshot: Option<Snapshot>, writes: &[(u64, Write)], timeout: u32, now: u32) -> HostResult<()> {
    let Some(table) = table_of(plugin, profile) else { return Ok(()) };
    let mut snapshot = snapshot;
    for (key, write) in writes {
        let expired = |e: &Entry<Endpoint>| !table_backed::alive(e, timeout, now);
        match table.update(&SharedData, *key, snapshot.take(), |current| write.apply(current, timeout, now), expired) {
            Ok(applied) => {
                plugin.metrics.entries_changed(profile, applied.entries_delta());
                plugin.metrics.add_profile(profile, ProfileCounter::Expired, applied.expired);
                plugin.metrics.add_profile(profile, ProfileCounter::Evicted, applied.evicted);
            }
            Err(TableError::Conflict) => {
                plugin.metrics.count_profile(profile, ProfileCounter::TableConflicts);
                log::warn!("profile {}: gave up a table write after repeated conflicts", profile_name(plugin, profile));
            }
            Err(TableError::Store(status)) => return Err(("writing the shared table", ffi::Status(status))),
        }
    }
    Ok(())
}

fn store_status(error: crate::table::StoreError) -> ffi::Status {
    match error {
        crate::table::StoreError::CasMismatch => ffi::Status(ffi::CAS_MISMATCH),
        crate::table::StoreError::Host(status) => ffi::Status(status),
    }
}
