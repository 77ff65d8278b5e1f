//! Stats: their names, and `Metrics`, the ids a configuration defined them under. Envoy's /stats
//! shows them with its `wasmcustom.` prefix, e.g. `wasmcustom.persistence.web.pinned`;
//! /stats/prometheus as `persistence_web_pinned`. The names are part of the public interface:
//! README has the table.

use crate::endpoint::Endpoint;
use crate::host::{Host, HostError, MetricId, MetricKind};
use crate::outcome::Outcome;
use crate::token::Rejection;
use std::cell::RefCell;

pub const PREFIX: &str = "persistence";

/// Counters kept for each profile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProfileCounter {
    Pinned,
    New,
    Repicked,
    Kept,
    NoUpstream,
    ClusterMoved,
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
    pub const ALL: [ProfileCounter; 21] = [
        ProfileCounter::Pinned,
        ProfileCounter::New,
        ProfileCounter::Repicked,
        ProfileCounter::Kept,
        ProfileCounter::NoUpstream,
        ProfileCounter::ClusterMoved,
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
            ProfileCounter::ClusterMoved => "cluster_moved",
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

    /// What every profile type counts: how its requests ended, and clients whose recorded
    /// cluster the route no longer reaches (`cluster_header`).
    pub const OUTCOMES: [ProfileCounter; 6] =
        [ProfileCounter::Pinned, ProfileCounter::New, ProfileCounter::Repicked, ProfileCounter::Kept, ProfileCounter::NoUpstream, ProfileCounter::ClusterMoved];
    /// What table-backed types count about their table.
    pub const TABLE: [ProfileCounter; 3] = [ProfileCounter::Expired, ProfileCounter::Evicted, ProfileCounter::TableConflicts];
    /// What types reading sealed tokens count about the tokens they could not open.
    pub const TOKENS: [ProfileCounter; 3] = [ProfileCounter::RejectedMalformed, ProfileCounter::RejectedUnknownKey, ProfileCounter::RejectedForged];

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
    /// Requests that arrived carrying the cluster header (removed before routing).
    SpoofedClusterHeader,
    /// Responses whose routed cluster could not be recorded (unreadable, over 255 bytes, or not
    /// printable ASCII): the client's record keeps the cluster it had.
    ClusterUnrecorded,
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
    pub const ALL: [FilterCounter; 8] = [
        FilterCounter::ConfigErrors,
        FilterCounter::SpoofedOverrideHeader,
        FilterCounter::UnknownProfile,
        FilterCounter::SpoofedClusterHeader,
        FilterCounter::ClusterUnrecorded,
        FilterCounter::HostErrors,
        FilterCounter::UntrustedClientAddress,
        FilterCounter::NoPeerAddress,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FilterCounter::ConfigErrors => "persistence.config_errors",
            FilterCounter::SpoofedOverrideHeader => "persistence.override_header_removed",
            FilterCounter::UnknownProfile => "persistence.unknown_profile",
            FilterCounter::SpoofedClusterHeader => "persistence.cluster_header_removed",
            FilterCounter::ClusterUnrecorded => "persistence.cluster_unrecorded",
            FilterCounter::HostErrors => "persistence.host_errors",
            FilterCounter::UntrustedClientAddress => "persistence.untrusted_client_address",
            FilterCounter::NoPeerAddress => "persistence.no_peer_address",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// Hosts given their own counter at most (a VM's defined stats are never freed).
pub const MAX_HOST_STATS: usize = 1024;

/// `host_stats` as one counter with the host as a label, for hosts that count it so.
pub const HOST_PINNED: &str = "persistence.host.pinned";

/// `<ip>_<port>`: the address with every `.`, `:`, `[`, `]` as `_`, so it stays one stat name
/// segment; `host_stats` counts `persistence.host.<label>.pinned` (Prometheus:
/// `persistence_host_10_0_0_7_8080_pinned`).
pub fn host_label(endpoint: &Endpoint) -> String {
    let mut address = String::with_capacity(48);
    crate::text::push_endpoint(&mut address, endpoint);
    address.chars().filter(|c| *c != '[' && *c != ']').map(|c| if c == '.' || c == ':' { '_' } else { c }).collect()
}

/// Pinned requests per upstream host (`host_stats`), each host's counter defined when first
/// seen. For a DRAINING host every request is a pinned one: when its counter stops moving, no
/// session uses it any more.
#[derive(Default)]
pub struct HostStats {
    defined: RefCell<Vec<(Endpoint, Option<MetricId>)>>,
}

impl HostStats {
    pub fn count_pinned(&self, host: &impl Host, endpoint: &Endpoint) {
        let mut defined = self.defined.borrow_mut();
        let id = match defined.iter().find(|(e, _)| e == endpoint) {
            Some((_, id)) => *id,
            None if defined.len() >= MAX_HOST_STATS => {
                if defined.len() == MAX_HOST_STATS {
                    log::warn!("host_stats: more than {MAX_HOST_STATS} upstream hosts seen; further hosts are not counted");
                    defined.push((*endpoint, None));
                }
                None
            }
            None => {
                let label = host_label(endpoint);
                let name = format!("{PREFIX}.host.{label}.pinned");
                let id = id_or_logged(&name, host.define_labelled_counter(&name, HOST_PINNED, &label));
                defined.push((*endpoint, id));
                id
            }
        };
        add(host, id, 1);
    }
}

/// One profile's stats as the metrics need them: its name, the counters its type defines, and
/// whether it has a table (the entries gauge).
pub struct ProfileStats<'a> {
    pub name: &'a str,
    pub counters: Vec<ProfileCounter>,
    pub table: bool,
}

/// The stats of one configuration, defined once at configure time (an id the host refused is
/// logged and then never counted).
pub struct Metrics {
    filter: Vec<Option<MetricId>>,
    /// Per profile (same order as `Config::profiles`), per `ProfileCounter` (None: not defined).
    profiles: Vec<Vec<Option<MetricId>>>,
    /// Per profile: the entries gauge of table-backed profiles.
    entries: Vec<Option<MetricId>>,
}

fn define(host: &impl Host, kind: MetricKind, name: &str) -> Option<MetricId> {
    id_or_logged(name, host.define_metric(kind, name))
}

/// The id the host gave stat `name`; a refusal is logged, and the stat is then never counted.
fn id_or_logged(name: &str, result: Result<MetricId, HostError>) -> Option<MetricId> {
    match result {
        Ok(id) => Some(id),
        Err(error) => {
            log::warn!("could not define stat {name} (status {}); it will not be counted", error.status);
            None
        }
    }
}

impl Metrics {
    /// The filter-wide counters only (a configuration that was rejected has no profiles).
    pub fn filter_only(host: &impl Host) -> Metrics {
        Metrics { filter: FilterCounter::ALL.iter().map(|c| define(host, MetricKind::Counter, c.name())).collect(), profiles: Vec::new(), entries: Vec::new() }
    }

    pub fn define<'a>(host: &impl Host, profiles: impl Iterator<Item = ProfileStats<'a>>) -> Metrics {
        let mut metrics = Metrics::filter_only(host);
        for profile in profiles {
            let ids = ProfileCounter::ALL
                .iter()
                .map(|c| profile.counters.contains(c).then(|| define(host, MetricKind::Counter, &profile_stat(profile.name, *c))).flatten())
                .collect();
            metrics.profiles.push(ids);
            metrics.entries.push(profile.table.then(|| define(host, MetricKind::Gauge, &entries_stat(profile.name))).flatten());
        }
        metrics
    }

    pub fn count(&self, host: &impl Host, counter: FilterCounter) {
        add(host, self.filter.get(counter.index()).copied().flatten(), 1);
    }

    pub fn count_profile(&self, host: &impl Host, profile: usize, counter: ProfileCounter) {
        self.add_profile(host, profile, counter, 1);
    }

    pub fn add_profile(&self, host: &impl Host, profile: usize, counter: ProfileCounter, n: u32) {
        if n > 0 {
            add(host, self.profiles.get(profile).and_then(|ids| ids.get(counter.index())).copied().flatten(), i64::from(n));
        }
    }

    /// Moves the entries gauge of `profile` (all workers add to the same gauge).
    pub fn entries_changed(&self, host: &impl Host, profile: usize, delta: i64) {
        if delta != 0 {
            add(host, self.entries.get(profile).copied().flatten(), delta);
        }
    }
}

fn add(host: &impl Host, id: Option<MetricId>, delta: i64) {
    if let Some(id) = id {
        host.increment_metric(id, delta);
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
