//! The interface every persistence type implements, in the shape of Envoy's stateful_session: from
//! the request, a pin or a reason not to; on the response, the outcome and what to write.
//! Profile selection, pinning, counting outcomes and the access-log record are the flow's
//! (`crate::flow`), written once for every type. A type is one file in `crate::profile` plus one
//! line in its registry.

use crate::config_reader::{Errors, Field};
use crate::connections::Tracking;
use crate::context::Context;
use crate::header_pairs::Headers;
use crate::host::{HostError, HttpStream};
use crate::metrics::ProfileCounter;
use crate::outcome::{Outcome, ServerDown};
use crate::server::Server;
use crate::state::State;
use crate::token::Purpose;

/// What a type's request phase decided.
pub enum Requested<P> {
    /// Send the request to `server`; the response phase follows.
    Pin { server: Server, pending: P },
    /// Let Envoy's load balancer choose; the response phase follows. `why` (a key and a value)
    /// goes into the decision record, e.g. `("rejected", "forged")`.
    Balance { why: Option<(&'static str, &'static str)>, pending: P },
    /// No persistence for this request and no response phase; `reason` goes into the record
    /// (`decision=balance reason=<reason>`), e.g. `header_missing`.
    Skip { reason: &'static str },
}

impl<P> Requested<P> {
    pub fn map<Q>(self, f: impl FnOnce(P) -> Q) -> Requested<Q> {
        match self {
            Requested::Pin { server, pending } => Requested::Pin { server, pending: f(pending) },
            Requested::Balance { why, pending } => Requested::Balance { why, pending: f(pending) },
            Requested::Skip { reason } => Requested::Skip { reason },
        }
    }

    /// Pins to `pin` when there is one, else balances.
    pub fn pin_or_balance(pin: Option<Server>, why: Option<(&'static str, &'static str)>, pending: P) -> Requested<P> {
        match pin {
            Some(server) => Requested::Pin { server, pending },
            None => Requested::Balance { why, pending },
        }
    }
}

/// What a type's response phase decided, before anything is written.
pub struct Responded<W> {
    pub outcome: Outcome,
    /// A presented token that was not honoured (the record shows `outcome=rejected:<reason>`).
    pub rejected: Option<&'static str>,
    pub writes: W,
}

impl<W> Responded<W> {
    pub fn map<V>(self, f: impl FnOnce(W) -> V) -> Responded<V> {
        Responded { outcome: self.outcome, rejected: self.rejected, writes: f(self.writes) }
    }
}

/// A type that keeps its pins in the process's shared table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableSpec {
    pub max_entries: u32,
    /// Seconds an entry lives after its last use.
    pub timeout: u32,
    /// Entries of clients that still have a connection open stay (client IP keys).
    pub connection_aware: bool,
}

/// What a type tells the rest of the filter about itself (used at configure time).
/// Where and how a type's tokens are sealed: enough to open one outside Envoy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenSpec {
    pub purpose: Purpose,
    /// The cookie or header that carries the token (bound into the seal).
    pub name: String,
    /// Absolute lifetime and idle window, seconds (None: not limited).
    pub timeout: Option<u64>,
    pub idle_timeout: Option<u64>,
}

pub trait Describe {
    /// The settings an operator reads in the startup summary, e.g. `cookie AVI_COOKIE`.
    fn summary(&self) -> String;
    /// Every profile counter this type defines (`ProfileCounter::OUTCOMES` and its own).
    fn counters(&self) -> Vec<ProfileCounter>;
    fn table(&self) -> Option<TableSpec> {
        None
    }
    /// The client grouping the connection counter must track for this type (client IP keys).
    fn tracking(&self) -> Option<Tracking> {
        None
    }
    /// The tokens this type hands clients, sealed with the keyring (so it needs `keys` shared by
    /// every replica and kept across restarts).
    fn tokens(&self) -> Option<TokenSpec> {
        None
    }
}

/// A persistence type: its settings are `Self`.
pub trait Persistence: Describe + Sized {
    /// The `type` value that selects this type in a profile, and the name of its settings section.
    const TYPE: &'static str;
    /// What the request phase learned, for the response phase.
    type Pending;
    /// What the response phase will write.
    type Writes;

    /// Reads the type's settings section (`path` is its place in the configuration).
    fn parse_section(section: Option<Field>, errors: &mut Errors, path: &str) -> Option<Self>;

    /// Reads the key from the request. May rewrite request headers (to hide its cookie from the
    /// backend) and count type-specific counters; never pins itself.
    fn on_request<H: HttpStream>(&self, cx: &mut Context<'_, H>, headers: &Headers) -> Result<Requested<Self::Pending>, HostError>;

    /// The outcome once Envoy used `upstream` (None: no host was used), and what to write. Pure.
    fn on_response(&self, pending: Self::Pending, upstream: Option<Server>, server_down: ServerDown, state: &State) -> Responded<Self::Writes>;

    /// Writes what `on_response` decided: cookies, table entries, their counters.
    fn write<H: HttpStream>(&self, cx: &mut Context<'_, H>, writes: Self::Writes) -> Result<(), HostError>;
}
