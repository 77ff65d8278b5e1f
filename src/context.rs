//! What a persistence type sees while it handles one request or its response: the stream's host,
//! the configuration's state, and which profile it acts for (its counters and its table).

use crate::client_address;
use crate::host::{Attribute, HostError, HttpStream};
use crate::metrics::{FilterCounter, ProfileCounter};
use crate::state::State;
use crate::table::Table;
use crate::token::NONCE_LEN;

pub struct Context<'a, H> {
    pub host: &'a mut H,
    pub state: &'a State,
    /// The profile's index in `Config::profiles` (its counters, its table).
    pub profile: usize,
    /// The profile's name, for log lines.
    pub name: &'a str,
    /// The top-level `client_address` setting.
    pub client_address: client_address::Source,
}

impl<H: HttpStream> Context<'_, H> {
    pub fn count(&self, counter: ProfileCounter) {
        self.state.metrics.count_profile(&*self.host, self.profile, counter);
    }

    pub fn add(&self, counter: ProfileCounter, n: u32) {
        self.state.metrics.add_profile(&*self.host, self.profile, counter, n);
    }

    pub fn count_filter(&self, counter: FilterCounter) {
        self.state.metrics.count(&*self.host, counter);
    }

    pub fn entries_changed(&self, delta: i64) {
        self.state.metrics.entries_changed(&*self.host, self.profile, delta);
    }

    /// The profile's shared table (table-backed types have one).
    pub fn table(&self) -> Option<&Table> {
        self.state.tables.get(self.profile).and_then(Option::as_ref)
    }

    pub fn nonce(&self) -> Option<[u8; NONCE_LEN]> {
        self.state.nonce(&*self.host)
    }

    /// Whether the client's connection to Envoy is TLS.
    pub fn is_tls(&mut self) -> bool {
        matches!(self.host.attribute(Attribute::TlsVersion), Ok(Some(version)) if !version.is_empty())
    }

    /// Replaces all Cookie headers by the rewritten ones (None: unchanged); several become one
    /// (RFC 9110 allows joining them with "; "), an emptied one disappears.
    pub fn rewrite_cookie_headers(&mut self, original: &[&[u8]], rewritten: &[Option<Vec<u8>>]) -> Result<(), HostError> {
        if rewritten.iter().all(Option::is_none) {
            return Ok(());
        }
        let kept: Vec<&[u8]> = rewritten.iter().zip(original).map(|(new, old)| new.as_deref().unwrap_or(old)).filter(|header| !header.is_empty()).collect();
        if kept.is_empty() {
            self.host.remove_request_header("cookie")
        } else {
            self.host.set_request_header("cookie", &kept.join(&b"; "[..]))
        }
    }
}
