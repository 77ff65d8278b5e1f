//! What the profiles that keep their pins in the shared table (client IP, app cookie, TLS) decide
//! on the response, once Envoy has chosen a host: which write, if any, to make.

use super::{Outcome, ServerDown};
use crate::endpoint::Endpoint;
use crate::table::{Change, Entry};

/// An entry is alive for `timeout` seconds after it was last touched.
pub fn alive(entry: &Entry<Endpoint>, timeout: u32, now: u32) -> bool {
    now < entry.touched.saturating_add(timeout)
}

/// Seconds between two sweeps of a table whose entries live `timeout` seconds: no entry can
/// expire faster than that, and reclaiming an expired entry a minute late costs only its bytes
/// (lookups check liveness themselves).
pub fn sweep_interval(timeout: u32) -> u32 {
    timeout.clamp(1, 60)
}

/// The table write after a request: `pin` is the entry the request was pinned by (None: it was
/// load balanced), `upstream` the host Envoy used. Returns the outcome and the write to make on
/// the request's key (None: no write). Writes are conditional on what the request saw, so a
/// concurrent writer is never overwritten: the first writer of a new client wins.
pub fn decide(pin: Option<Entry<Endpoint>>, upstream: Option<Endpoint>, server_down: ServerDown, timeout: u32, now: u32) -> (Outcome, Option<Write>) {
    let outcome = super::outcome(pin.map(|p| p.record), upstream, server_down);
    let fresh = upstream.map(|endpoint| Entry { touched: now, record: endpoint });
    let write = match (outcome, pin, fresh) {
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
    Refresh(Entry<Endpoint>),
    /// Record a new client unless a live entry appeared meanwhile.
    InsertIfAbsent(Entry<Endpoint>),
    /// Move the client off `from` unless someone already moved it elsewhere.
    Move { from: Endpoint, to: Entry<Endpoint> },
    /// Record what the backend said (an issued session id): it always stands.
    Learn(Entry<Endpoint>),
    /// Drop the entry (a replaced or deleted session id).
    Forget,
}

impl Write {
    pub fn apply(self, current: Option<&Entry<Endpoint>>, timeout: u32, now: u32) -> Change<Endpoint> {
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

    fn server(n: u8) -> Endpoint {
        endpoint::parse(&format!("10.0.0.{n}:80")).unwrap()
    }

    fn at(n: u8, touched: u32) -> Entry<Endpoint> {
        Entry { touched, record: server(n) }
    }

    fn run(pin: Option<Entry<Endpoint>>, upstream: Option<u8>, mode: ServerDown, current: Option<Entry<Endpoint>>) -> (Outcome, Option<Change<Endpoint>>) {
        let (outcome, write) = decide(pin, upstream.map(server), mode, 100, 1000);
        (outcome, write.map(|w| w.apply(current.as_ref(), 100, 1000)))
    }

    fn put(change: Option<Change<Endpoint>>) -> Option<Entry<Endpoint>> {
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
