//! What the types that keep their pins in the shared table (client IP, app cookie, TLS) share:
//! timeouts, the lookup on the request (with connection-aware liveness), and the decision and the
//! writes on the response once Envoy has chosen a host.

use crate::config_reader::{Errors, Object};
use crate::connections::{self, ConnectionTable};
use crate::context::Context;
use crate::host::{HostError, HttpStream};
use crate::metrics::ProfileCounter;
use crate::outcome::{Outcome, ServerDown};
use crate::persistence::{Requested, Responded};
use crate::server::Server;
use crate::table::{Change, Entry, Snapshot, TableError};

/// An entry is alive for `timeout` seconds after it was last touched.
pub fn alive(entry: &Entry<Server>, timeout: u32, now: u32) -> bool {
    now < entry.touched.saturating_add(timeout)
}

/// Whether the entry of `key` still persists: its own timeout, or (client IP keys, with
/// `connections`) its client still has a connection open or closed its last one within `timeout`.
/// The request's lookup and housekeeping both judge by this.
pub fn entry_alive(entry: &Entry<Server>, key: u64, timeout: u32, now: u32, connections: Option<&ConnectionTable>) -> bool {
    alive(entry, timeout, now) || connections.is_some_and(|c| connections::keep_alive(c.record(key).as_ref(), timeout, now))
}

/// Limits of a table-backed profile's `timeout_minutes`.
pub struct TableTimeout {
    pub default_minutes: u64,
    pub min_minutes: u64,
    pub max_minutes: u64,
}

/// Reads `timeout_minutes` or `timeout_seconds` (the latter for tests and demos that cannot wait
/// minutes); returns seconds.
pub fn parse_timeout(object: &mut Object, errors: &mut Errors, limits: TableTimeout) -> u32 {
    let minutes = object.field("timeout_minutes").and_then(|f| f.integer(limits.min_minutes, limits.max_minutes, errors));
    let seconds_field = object.field("timeout_seconds");
    let seconds = match (&seconds_field, minutes) {
        (Some(field), Some(_)) => {
            errors.add(&field.path, "give timeout_minutes or timeout_seconds, not both");
            None
        }
        (Some(field), None) => field.integer(limits.min_minutes.min(1), limits.max_minutes * 60, errors),
        (None, minutes) => Some(minutes.unwrap_or(limits.default_minutes) * 60),
    };
    seconds.unwrap_or(limits.default_minutes * 60) as u32
}

/// What a table lookup found: the bucket as read (its CAS saves a read when the response writes
/// it back unchanged) and the live entry, if any.
pub struct Found {
    pub snapshot: Snapshot,
    pub live: Option<Entry<Server>>,
}

/// Looks `key` up in the profile's table (one bucket read; the connection table only when the
/// entry itself has expired). None when the profile has no table.
pub fn lookup<H: HttpStream>(cx: &mut Context<'_, H>, key: u64, timeout: u32, connection_aware: bool, now: u32) -> Result<Option<Found>, HostError> {
    let Some(table) = cx.table() else { return Ok(None) };
    let store = cx.host.store();
    let snapshot = table.read(store, key)?;
    let connections = ConnectionTable { table: &cx.state.connections, store };
    let live = table.find(&snapshot, key).filter(|e| entry_alive(e, key, timeout, now, connection_aware.then_some(&connections)));
    Ok(Some(Found { snapshot, live }))
}

/// The request of a client IP or TLS profile, keyed by `key`.
pub struct Pending {
    key: u64,
    snapshot: Snapshot,
    pin: Option<Entry<Server>>,
    timeout: u32,
    /// The clock at the request (the response uses it too: one clock read per request).
    now: u32,
}

pub struct Writes {
    key: u64,
    snapshot: Snapshot,
    write: Option<Write>,
    timeout: u32,
    now: u32,
}

/// The request phase of a type keyed by `key` alone (client IP, TLS).
pub fn request<H: HttpStream>(cx: &mut Context<'_, H>, key: u64, timeout: u32, connection_aware: bool) -> Result<Requested<Pending>, HostError> {
    let now = cx.host.now() as u32;
    let Some(Found { snapshot, live }) = lookup(cx, key, timeout, connection_aware, now)? else { return Ok(Requested::Skip { reason: "no_table" }) };
    Ok(Requested::pin_or_balance(live.map(|e| e.record), None, Pending { key, snapshot, pin: live, timeout, now }))
}

pub fn respond(pending: Pending, upstream: Option<Server>, server_down: ServerDown) -> Responded<Writes> {
    let Pending { key, snapshot, pin, timeout, now } = pending;
    let (outcome, write) = decide(pin, upstream, server_down, timeout, now);
    Responded { outcome, rejected: None, writes: Writes { key, snapshot, write, timeout, now } }
}

pub fn write<H: HttpStream>(cx: &mut Context<'_, H>, writes: Writes) -> Result<(), HostError> {
    let Writes { key, snapshot, write, timeout, now } = writes;
    match write {
        Some(write) => apply(cx, Some(snapshot), &[(key, write)], timeout, now),
        None => Ok(()),
    }
}

/// Makes the writes decided after a response, counting what they did. `snapshot` (read for the
/// request) saves a read when its bucket has not changed since.
pub fn apply<H: HttpStream>(cx: &mut Context<'_, H>, snapshot: Option<Snapshot>, writes: &[(u64, Write)], timeout: u32, now: u32) -> Result<(), HostError> {
    let Some(table) = cx.table() else { return Ok(()) };
    let mut snapshot = snapshot;
    for (key, write) in writes {
        let expired = |e: &Entry<Server>| !alive(e, timeout, now);
        match table.update(cx.host.store(), *key, snapshot.take(), |current| write.apply(current, timeout, now), expired) {
            Ok(applied) => {
                cx.entries_changed(applied.entries_delta());
                cx.add(ProfileCounter::Expired, applied.expired);
                cx.add(ProfileCounter::Evicted, applied.evicted);
            }
            Err(TableError::Conflict) => {
                cx.count(ProfileCounter::TableConflicts);
                log::warn!("profile {}: gave up a table write after repeated conflicts", cx.name);
            }
            Err(TableError::Store(status)) => return Err(HostError { call: "set_shared_data", status }),
        }
    }
    Ok(())
}

/// The table write after a request: `pin` is the entry the request was pinned by (None: it was
/// load balanced), `upstream` the host Envoy used. Returns the outcome and the write to make on
/// the request's key (None: no write). Writes are conditional on what the request saw, so a
/// concurrent writer is never overwritten: the first writer of a new client wins.
pub fn decide(pin: Option<Entry<Server>>, upstream: Option<Server>, server_down: ServerDown, timeout: u32, now: u32) -> (Outcome, Option<Write>) {
    let outcome = crate::outcome::outcome(pin.map(|p| p.record), upstream, server_down);
    let fresh = upstream.map(|endpoint| Entry { touched: now, record: endpoint });
    let write = match (outcome, pin, fresh) {
        // The same host through another cluster (see `crate::server`): record the cluster now used.
        (Outcome::Pinned, Some(pin), Some(fresh)) if pin.record.cluster != fresh.record.cluster => Some(Write::Move { from: pin.record, to: fresh }),
        // Refresh an entry once half its timeout has passed, not on every request.
        (Outcome::Pinned, Some(pin), _) if now.saturating_sub(pin.touched) >= timeout / 2 => Some(Write::Refresh(Entry { touched: now, record: pin.record })),
        (Outcome::New, _, Some(fresh)) => Some(Write::InsertIfAbsent(fresh)),
        (Outcome::Repicked, Some(pin), Some(fresh)) => Some(Write::Move { from: pin.record, to: fresh }),
        _ => None,
    };
    (outcome, write)
}

/// A conditional write to one key of a table, judged against the entry found when it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Write {
    /// Renew the entry's time if it still names the same server.
    Refresh(Entry<Server>),
    /// Record a new client unless a live entry appeared meanwhile.
    InsertIfAbsent(Entry<Server>),
    /// Move the client off `from` unless someone already moved it elsewhere.
    Move { from: Server, to: Entry<Server> },
    /// Record what the backend said (an issued session id): it always stands.
    Learn(Entry<Server>),
    /// Drop the entry (a replaced or deleted session id).
    Forget,
}

impl Write {
    pub fn apply(self, current: Option<&Entry<Server>>, timeout: u32, now: u32) -> Change<Server> {
        let live = current.filter(|c| alive(c, timeout, now));
        match self {
            Write::Refresh(entry) => match current {
                Some(c) if c.record == entry.record => Change::Put(entry),
                _ => Change::Keep,
            },
            // Another request of the same client recorded a server first: it stands.
            Write::InsertIfAbsent(entry) => match live {
                Some(_) => Change::Keep,
                None => Change::Put(entry),
            },
            // Someone else already moved the client: their choice stands.
            Write::Move { from, to } => match live {
                Some(c) if c.record != from => Change::Keep,
                _ => Change::Put(to),
            },
            Write::Learn(entry) => Change::Put(entry),
            Write::Forget => Change::Remove,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoint;

    fn server(n: u8) -> Server {
        Server::host(endpoint::parse(&format!("10.0.0.{n}:80")).unwrap())
    }

    fn at(n: u8, touched: u32) -> Entry<Server> {
        Entry { touched, record: server(n) }
    }

    fn run(pin: Option<Entry<Server>>, upstream: Option<u8>, mode: ServerDown, current: Option<Entry<Server>>) -> (Outcome, Option<Change<Server>>) {
        let (outcome, write) = decide(pin, upstream.map(server), mode, 100, 1000);
        (outcome, write.map(|w| w.apply(current.as_ref(), 100, 1000)))
    }

    fn put(change: Option<Change<Server>>) -> Option<Entry<Server>> {
        match change {
            Some(Change::Put(entry)) => Some(entry),
            _ => None,
        }
    }

    #[test]
    fn new_clients_are_recorded_unless_someone_was_first() {
        let (outcome, change) = run(None, Some(1), ServerDown::Immediate, None);
        assert_eq!((outcome, put(change)), (Outcome::New, Some(at(1, 1000))));
        let (_, change) = run(None, Some(1), ServerDown::Immediate, Some(at(2, 999)));
        assert!(matches!(change, Some(Change::Keep)), "first writer wins");
        let (_, change) = run(None, Some(1), ServerDown::Immediate, Some(at(2, 800)));
        assert_eq!(put(change), Some(at(1, 1000)), "an expired entry is replaced");
    }

    #[test]
    fn pinned_entries_are_refreshed_after_half_the_timeout() {
        let (outcome, change) = run(Some(at(1, 990)), Some(1), ServerDown::Immediate, Some(at(1, 990)));
        assert_eq!(outcome, Outcome::Pinned);
        assert!(change.is_none(), "no write while fresh");
        let (_, change) = run(Some(at(1, 950)), Some(1), ServerDown::Immediate, Some(at(1, 950)));
        assert_eq!(put(change), Some(at(1, 1000)));
        let (_, change) = run(Some(at(1, 950)), Some(1), ServerDown::Immediate, Some(at(3, 999)));
        assert!(matches!(change, Some(Change::Keep)), "never refresh over another server");
    }

    #[test]
    fn immediate_moves_the_entry_never_keeps_it() {
        let (outcome, change) = run(Some(at(1, 990)), Some(2), ServerDown::Immediate, Some(at(1, 990)));
        assert_eq!((outcome, put(change)), (Outcome::Repicked, Some(at(2, 1000))));
        let (_, change) = run(Some(at(1, 990)), Some(2), ServerDown::Immediate, Some(at(3, 999)));
        assert!(matches!(change, Some(Change::Keep)), "already moved by another request");
        let (outcome, change) = run(Some(at(1, 990)), Some(2), ServerDown::Never, Some(at(1, 990)));
        assert_eq!(outcome, Outcome::Kept);
        assert!(change.is_none());
        let (outcome, change) = run(Some(at(1, 990)), None, ServerDown::Immediate, Some(at(1, 990)));
        assert_eq!(outcome, Outcome::NoUpstream);
        assert!(change.is_none());
    }
}
