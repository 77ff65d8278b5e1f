//! What a configuration keeps besides its settings, built once at configure time and shared by
//! every request of the VM: keys and the token cache, stats, the shared tables, nonces, and what
//! was already logged. Profile types see it through `Context`; it knows nothing of profiles.

use crate::host::Host;
use crate::metrics::{FilterCounter, HostStats, Metrics};
use crate::table::Table;
use crate::token::{NonceSequence, Tokens, NONCE_LEN};
use std::cell::{Cell, RefCell};

pub struct State {
    pub tokens: Tokens,
    pub metrics: Metrics,
    /// Per profile (same order as `Config::profiles`): the shared table of table-backed profiles.
    pub tables: Vec<Option<Table>>,
    /// Open connections per client, written by the connection counter (`crate::connections`).
    pub connections: Table,
    /// Per profile: used by this VM (referenced by the configuration or seen in route metadata).
    /// Only used profiles have their tables swept and their client grouping tracked.
    pub used: Vec<Cell<bool>>,
    /// Nonces for the tokens this VM seals (a new random sequence when used up).
    pub nonces: RefCell<Option<NonceSequence>>,
    pub warned: Warned,
    /// Pinned requests per host (`host_stats`).
    pub host_stats: HostStats,
}

/// Warnings given once per VM (a worker), not once per request.
#[derive(Default)]
pub struct Warned {
    /// Route-metadata profile names reported as unknown.
    pub profiles: RefCell<Vec<String>>,
    pub untrusted_client_address: Cell<bool>,
    pub no_peer_address: Cell<bool>,
    pub cluster_unrecorded: Cell<bool>,
}

impl State {
    /// The next token nonce of this VM; None (logged, counted) if the host has no randomness to
    /// start a sequence with.
    pub fn nonce(&self, host: &impl Host) -> Option<[u8; NONCE_LEN]> {
        let mut sequence = self.nonces.borrow_mut();
        if let Some(nonce) = sequence.as_mut().and_then(NonceSequence::next_nonce) {
            return Some(nonce);
        }
        let mut prefix = [0u8; 8];
        if host.fill_random(&mut prefix).is_err() {
            log::error!("no randomness for token nonces: nothing sealed");
            self.metrics.count(host, FilterCounter::HostErrors);
            return None;
        }
        let mut fresh = NonceSequence::new(prefix);
        let nonce = fresh.next_nonce();
        *sequence = Some(fresh);
        nonce
    }
}
