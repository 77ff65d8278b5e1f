//! Client IP persistence (Avi "Client IP Address"): the client's address (or its subnet) is
//! recorded in the shared table with the server it went to. The entry lives while the client has
//! a connection open and for `timeout` after its last one closed (connections are counted by the
//! same module running as a network filter, `crate::connections`); without connection events, for
//! `timeout` after the last request. Which address identifies the client: `crate::client_address`.

use super::table_backed::{self, TableTimeout};
use crate::client_address::{self, Granularity, Verdict};
use crate::config_reader::{Errors, Field};
use crate::connections::Tracking;
use crate::context::Context;
use crate::server::Server;
use crate::header_pairs::Headers;
use crate::host::{Attribute, HostError, HttpStream};
use crate::metrics::{FilterCounter, ProfileCounter};
use crate::outcome::ServerDown;
use crate::persistence::{Describe, Persistence, Requested, Responded, TableSpec};
use crate::state::State;
use std::cell::Cell;

/// Room for about a million clients with next to no early evictions: buckets hold 32 entries, and a
/// million clients fill them to about 16 on average.
pub const DEFAULT_MAX_ENTRIES: u32 = 1 << 21;
const MAX_MAX_ENTRIES: u64 = 1 << 24;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Seconds; 0 disables persistence (Avi: "load balanced to a new server immediately").
    pub timeout: u32,
    pub ipv4_prefix: u8,
    pub ipv6_prefix: u8,
    pub max_entries: u32,
}

impl Default for Settings {
    /// Avi's System-Persistence-Client-IP: 5 minutes, one entry per address.
    fn default() -> Settings {
        Settings { timeout: 5 * 60, ipv4_prefix: 32, ipv6_prefix: 128, max_entries: DEFAULT_MAX_ENTRIES }
    }
}

impl Settings {
    pub fn parse(section: Option<Field>, errors: &mut Errors) -> Settings {
        let mut settings = Settings::default();
        let Some(mut object) = section.and_then(|field| field.object(errors)) else { return settings };
        settings.timeout = table_backed::parse_timeout(&mut object, errors, TableTimeout { default_minutes: 5, min_minutes: 0, max_minutes: 720 });
        if let Some(prefix) = object.field("ipv4_prefix").and_then(|f| f.integer(1, 32, errors)) {
            settings.ipv4_prefix = prefix as u8;
        }
        if let Some(prefix) = object.field("ipv6_prefix").and_then(|f| f.integer(1, 128, errors)) {
            settings.ipv6_prefix = prefix as u8;
        }
        if let Some(max) = object.field("max_entries").and_then(|f| f.integer(1, MAX_MAX_ENTRIES, errors)) {
            settings.max_entries = max as u32;
        }
        object.finish(errors, |_| None);
        settings
    }

    /// The (IPv4, IPv6) prefix lengths this profile groups clients by.
    pub fn granularity(&self) -> Granularity {
        Granularity { ipv4: self.ipv4_prefix, ipv6: self.ipv6_prefix }
    }
}

impl Describe for Settings {
    fn summary(&self) -> String {
        format!("timeout {}s, /{} /{}, {} entries", self.timeout, self.ipv4_prefix, self.ipv6_prefix, self.max_entries)
    }

    fn counters(&self) -> Vec<ProfileCounter> {
        [&ProfileCounter::OUTCOMES[..], &ProfileCounter::TABLE].concat()
    }

    fn table(&self) -> Option<TableSpec> {
        Some(TableSpec { max_entries: self.max_entries, timeout: self.timeout, connection_aware: true })
    }

    fn tracking(&self) -> Option<Tracking> {
        Some(Tracking { granularities: vec![self.granularity()], max_timeout: self.timeout })
    }
}

impl Persistence for Settings {
    const TYPE: &'static str = "client_ip";
    type Pending = table_backed::Pending;
    type Writes = table_backed::Writes;

    fn parse_section(section: Option<Field>, errors: &mut Errors, _path: &str) -> Option<Settings> {
        Some(Settings::parse(section, errors))
    }

    fn on_request<H: HttpStream>(&self, cx: &mut Context<'_, H>, headers: &Headers) -> Result<Requested<Self::Pending>, HostError> {
        if self.timeout == 0 {
            return Ok(Requested::Skip { reason: "disabled" }); // Avi: a timeout of 0 disables persistence.
        }
        match client_key(cx, headers, self.granularity()) {
            Ok(key) => table_backed::request(cx, key, self.timeout, true),
            Err(reason) => Ok(Requested::Skip { reason }),
        }
    }

    fn on_response(&self, pending: Self::Pending, upstream: Option<Server>, server_down: ServerDown, _: &State) -> Responded<Self::Writes> {
        table_backed::respond(pending, upstream, server_down)
    }

    fn write<H: HttpStream>(&self, cx: &mut Context<'_, H>, writes: Self::Writes) -> Result<(), HostError> {
        table_backed::write(cx, writes)
    }
}

/// The table key of the request's client address, or why there is none: not an IP connection,
/// or an address the client could have written (counted, and logged once per VM with the fix).
pub fn client_key<H: HttpStream>(cx: &mut Context<'_, H>, headers: &Headers, granularity: Granularity) -> Result<u64, &'static str> {
    let source = cx.host.attribute(Attribute::SourceAddress).ok().flatten();
    let Some(source) = source.and_then(|bytes| std::str::from_utf8(&bytes).ok()?.parse().ok()) else {
        log::debug!("profile {}: no client address (not an IP connection): load balancing", cx.name);
        return Err("no_client_address");
    };
    let ip = match client_address::judge(cx.client_address, source, headers.values("x-forwarded-for")) {
        Verdict::Use(ip) => ip,
        Verdict::Untrusted => {
            refuse(cx, FilterCounter::UntrustedClientAddress, &cx.state.warned.untrusted_client_address, UNTRUSTED_FIX);
            return Err("untrusted_client_address");
        }
        Verdict::NeedPeer => {
            let peer = cx.host.attribute(Attribute::FilterState(client_address::PEER_FILTER_STATE)).ok().flatten();
            match peer.and_then(|value| client_address::peer(&value)) {
                Some(peer) => peer,
                None => {
                    refuse(cx, FilterCounter::NoPeerAddress, &cx.state.warned.no_peer_address, NO_PEER_FIX);
                    return Err("no_peer_address");
                }
            }
        }
    };
    Ok(client_address::client_key(ip, granularity))
}

const UNTRUSTED_FIX: &str = "Envoy took the client address from the last X-Forwarded-For entry, which the client writes \
    (use_remote_address: false, no xff_num_trusted_hops): load balanced without client IP persistence. \
    Fix: set use_remote_address: true (and xff_num_trusted_hops: N behind N trusted proxies), or \"client_address\": \"peer\"";
const NO_PEER_FIX: &str = "\"client_address\" is \"peer\", Envoy took the client address from X-Forwarded-For, and no \
    set_filter_state filter provides the connection's peer (object_key persistence.peer, %DOWNSTREAM_DIRECT_REMOTE_ADDRESS%): \
    load balanced without client IP persistence";

fn refuse<H: HttpStream>(cx: &Context<'_, H>, counter: FilterCounter, warned: &Cell<bool>, fix: &str) {
    cx.count_filter(counter);
    if !warned.replace(true) {
        log::warn!("profile {}: {fix} (logged once per worker; counted in {})", cx.name, counter.name());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config_reader::parse_section;
    use serde_json::json;

    fn parse(section: serde_json::Value) -> Result<Settings, Vec<String>> {
        parse_section("client_ip", &section, |field, errors| Some(Settings::parse(field, errors)))
    }

    #[test]
    fn reads_settings_with_avi_defaults() {
        assert_eq!(parse(json!({})).unwrap(), Settings::default());
        let settings = parse(json!({"timeout_minutes": 0, "ipv4_prefix": 24, "ipv6_prefix": 64, "max_entries": 1000})).unwrap();
        assert_eq!(settings, Settings { timeout: 0, ipv4_prefix: 24, ipv6_prefix: 64, max_entries: 1000 });
        assert_eq!(parse(json!({"timeout_seconds": 2})).unwrap().timeout, 2);
    }

    #[test]
    fn rejects_bad_settings() {
        let cases = [
            (json!({"timeout_minutes": 721}), "client_ip.timeout_minutes: must be an integer between 0 and 720, got number 721"),
            (json!({"timeout_minutes": 1, "timeout_seconds": 1}), "client_ip.timeout_seconds: give timeout_minutes or timeout_seconds, not both"),
            (json!({"ipv4_prefix": 0}), "client_ip.ipv4_prefix: must be an integer between 1 and 32, got number 0"),
            (json!({"ipv6_prefix": 129}), "client_ip.ipv6_prefix: must be an integer between 1 and 128, got number 129"),
            (json!({"max_entries": 0}), "client_ip.max_entries: must be an integer between 1 and 16777216, got number 0"),
        ];
        for (section, expected) in cases {
            assert_eq!(parse(section.clone()), Err(vec![expected.to_string()]), "{section}");
        }
    }
}
