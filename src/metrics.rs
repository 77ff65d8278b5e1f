//! Stat names. Envoy's /stats shows them with its `wasmcustom.` prefix, e.g.
//! `wasmcustom.persistence.web.pinned`; /stats/prometheus as `persistence_web_pinned`.
//! The names are part of the public interface: README has the table.

use crate::profile::http_cookie::Rejection;
use crate::profile::{Kind, Outcome};

pub const PREFIX: &str = "persistence";

/// Counters kept for each profile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProfileCounter {
    Pinned,
    New,
    Repicked,
    Kept,
    NoUpstream,
    RejectedMalformed,
    RejectedUnknownKey,
    RejectedForged,
    RejectedExpired,
    RejectedIdle,
    Rotated,
    Refreshed,
    Expired,
    Evicted,
    TableConflicts,
    Learned,
    HeaderMissing,
    HeaderUnmatched,
    NoKey,
    FallbackClientIp,
}

impl ProfileCounter {
    pub const ALL: [ProfileCounter; 20] = [
        ProfileCounter::Pinned,
        ProfileCounter::New,
        ProfileCounter::Repicked,
        ProfileCounter::Kept,
        ProfileCounter::NoUpstream,
        ProfileCounter::RejectedMalformed,
        ProfileCounter::RejectedUnknownKey,
        ProfileCounter::RejectedForged,
        ProfileCounter::RejectedExpired,
        ProfileCounter::RejectedIdle,
        ProfileCounter::Rotated,
        ProfileCounter::Refreshed,
        ProfileCounter::Expired,
        ProfileCounter::Evicted,
        ProfileCounter::TableConflicts,
        ProfileCounter::Learned,
        ProfileCounter::HeaderMissing,
        ProfileCounter::HeaderUnmatched,
        ProfileCounter::NoKey,
        ProfileCounter::FallbackClientIp,
    ];

    pub fn suffix(self) -> &'static str {
        match self {
            ProfileCounter::Pinned => "pinned",
            ProfileCounter::New => "new",
            ProfileCounter::Repicked => "repicked",
            ProfileCounter::Kept => "kept",
            ProfileCounter::NoUpstream => "no_upstream",
            ProfileCounter::RejectedMalformed => "rejected.malformed",
            ProfileCounter::RejectedUnknownKey => "rejected.unknown_key",
            ProfileCounter::RejectedForged => "rejected.forged",
            ProfileCounter::RejectedExpired => "rejected.expired",
            ProfileCounter::RejectedIdle => "rejected.idle",
            ProfileCounter::Rotated => "rotated",
            ProfileCounter::Refreshed => "refreshed",
            ProfileCounter::Expired => "expired",
            ProfileCounter::Evicted => "evicted",
            ProfileCounter::TableConflicts => "table_conflicts",
            ProfileCounter::Learned => "learned",
            ProfileCounter::HeaderMissing => "header_missing",
            ProfileCounter::HeaderUnmatched => "header_unmatched",
            ProfileCounter::NoKey => "no_key",
            ProfileCounter::FallbackClientIp => "fallback_client_ip",
        }
    }

    /// Counters are only defined for the profile types they can happen to.
    pub fn applies_to(self, kind: &Kind) -> bool {
        use ProfileCounter::*;
        let header = matches!(kind, Kind::HttpHeader(_));
        match self {
            Pinned | Repicked | Kept | NoUpstream => true,
            New => !header,
            RejectedMalformed | RejectedUnknownKey | RejectedForged => kind.uses_tokens(),
            RejectedExpired | RejectedIdle | Rotated | Refreshed => matches!(kind, Kind::HttpCookie(_)),
            Expired | Evicted | TableConflicts => kind.uses_table(),
            Learned => matches!(kind, Kind::AppCookie(_)),
            HeaderMissing | HeaderUnmatched => header,
            NoKey | FallbackClientIp => matches!(kind, Kind::Tls(_)),
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

impl From<Outcome> for ProfileCounter {
    fn from(outcome: Outcome) -> ProfileCounter {
        match outcome {
            Outcome::Pinned => ProfileCounter::Pinned,
            Outcome::New => ProfileCounter::New,
            Outcome::Repicked => ProfileCounter::Repicked,
            Outcome::Kept => ProfileCounter::Kept,
            Outcome::NoUpstream => ProfileCounter::NoUpstream,
        }
    }
}

impl From<crate::token::OpenError> for ProfileCounter {
    fn from(error: crate::token::OpenError) -> ProfileCounter {
        Rejection::from(error).into()
    }
}

impl From<Rejection> for ProfileCounter {
    fn from(rejection: Rejection) -> ProfileCounter {
        match rejection {
            Rejection::Malformed => ProfileCounter::RejectedMalformed,
            Rejection::UnknownKey => ProfileCounter::RejectedUnknownKey,
            Rejection::Forged => ProfileCounter::RejectedForged,
            Rejection::Expired => ProfileCounter::RejectedExpired,
            Rejection::Idle => ProfileCounter::RejectedIdle,
        }
    }
}

pub fn profile_stat(profile: &str, counter: ProfileCounter) -> String {
    format!("{PREFIX}.{profile}.{}", counter.suffix())
}

/// Gauge of a table-backed profile: entries in its table (all workers together).
pub fn entries_stat(profile: &str) -> String {
    format!("{PREFIX}.{profile}.entries")
}

/// Connection tracking (the network filter): clients with a record in the connection table.
pub const TRACKED_CLIENTS: &str = "persistence.connections.clients";
/// Connection open/close records given up after repeated write conflicts.
pub const CONNECTION_CONFLICTS: &str = "persistence.connections.table_conflicts";

/// Counters for the whole filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FilterCounter {
    /// Configurations Envoy had to reject.
    ConfigErrors,
    /// Requests that arrived carrying the override header (removed before routing).
    SpoofedOverrideHeader,
    /// Route metadata named a profile this configuration does not define.
    UnknownProfile,
    /// A host call failed; the request continued without persistence.
    HostErrors,
    /// Client IP keys refused: Envoy took the client address from X-Forwarded-For's last entry,
    /// which the client writes (`use_remote_address: false` with no trusted hops).
    UntrustedClientAddress,
    /// Client IP keys refused: `client_address: peer`, the address came from a header, and
    /// set_filter_state did not provide the connection's peer.
    NoPeerAddress,
}

impl FilterCounter {
    pub const ALL: [FilterCounter; 6] = [
        FilterCounter::ConfigErrors,
        FilterCounter::SpoofedOverrideHeader,
        FilterCounter::UnknownProfile,
        FilterCounter::HostErrors,
        FilterCounter::UntrustedClientAddress,
        FilterCounter::NoPeerAddress,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FilterCounter::ConfigErrors => "persistence.config_errors",
            FilterCounter::SpoofedOverrideHeader => "persistence.override_header_removed",
            FilterCounter::UnknownProfile => "persistence.unknown_profile",
            FilterCounter::HostErrors => "persistence.host_errors",
            FilterCounter::UntrustedClientAddress => "persistence.untrusted_client_address",
            FilterCounter::NoPeerAddress => "persistence.no_peer_address",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_match_positions_and_names_are_unique() {
        for (i, counter) in ProfileCounter::ALL.iter().enumerate() {
            assert_eq!(counter.index(), i);
        }
        for (i, counter) in FilterCounter::ALL.iter().enumerate() {
            assert_eq!(counter.index(), i);
        }
        let mut names: Vec<String> = ProfileCounter::ALL.iter().map(|c| profile_stat("p", *c)).collect();
        names.extend(FilterCounter::ALL.iter().map(|c| c.name().to_string()));
        let count = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), count);
    }
}
