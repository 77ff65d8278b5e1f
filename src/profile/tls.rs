//! TLS persistence (Avi "TLS"). Avi hides the server in the TLS session ticket; a filter inside
//! Envoy cannot touch tickets, so this persists on what Envoy exposes of the TLS session:
//! - `session_id`: the TLS session id, handed to the filter by `set_filter_state`
//!   (`%DOWNSTREAM_TLS_SESSION_ID%`). Stable across resumption only with TLS 1.2 and session-id
//!   resumption (no tickets); TLS 1.3 has no session id.
//! - `peer_certificate`: the client certificate's SHA-256 digest (mTLS, the service-mesh case).
//!
//! Entries live in the profile's shared table, `timeout` after the last request of the session.

use super::client_ip;
use super::table_backed::{self, TableTimeout};
use crate::client_address::Granularity;
use crate::config_reader::{Errors, Field};
use crate::connections::Tracking;
use crate::context::Context;
use crate::server::Server;
use crate::header_pairs::Headers;
use crate::host::{Attribute, HostError, HttpStream};
use crate::metrics::ProfileCounter;
use crate::outcome::ServerDown;
use crate::persistence::{Describe, Persistence, Requested, Responded, TableSpec};
use crate::state::State;
use crate::table::hash_key;

/// Where `set_filter_state` (`object_key: tls.sid`) leaves the session id.
const SESSION_ID: &str = "tls.sid";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeySource {
    SessionId,
    PeerCertificate,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fallback {
    /// No key: load balance (counted).
    None,
    /// No key: persist on the client's address instead (as `client_ip`, in this profile's table).
    ClientIp,
}

impl KeySource {
    pub fn name(self) -> &'static str {
        match self {
            KeySource::SessionId => "session_id",
            KeySource::PeerCertificate => "peer_certificate",
        }
    }
}

impl Fallback {
    pub fn name(self) -> &'static str {
        match self {
            Fallback::None => "none",
            Fallback::ClientIp => "client_ip",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Seconds; 0 disables persistence.
    pub timeout: u32,
    pub key: KeySource,
    pub fallback: Fallback,
    pub max_entries: u32,
}

impl Default for Settings {
    /// Avi's System-Persistence-TLS: 5 minutes.
    fn default() -> Settings {
        Settings { timeout: 5 * 60, key: KeySource::SessionId, fallback: Fallback::None, max_entries: client_ip::DEFAULT_MAX_ENTRIES }
    }
}

impl Settings {
    pub fn parse(section: Option<Field>, errors: &mut Errors) -> Settings {
        let mut settings = Settings::default();
        let Some(mut object) = section.and_then(|field| field.object(errors)) else { return settings };
        settings.timeout = table_backed::parse_timeout(&mut object, errors, TableTimeout { default_minutes: 5, min_minutes: 0, max_minutes: 720 });
        let keys = [("session_id", KeySource::SessionId), ("peer_certificate", KeySource::PeerCertificate)];
        if let Some(key) = object.field("key").and_then(|f| f.choice(&keys, errors)) {
            settings.key = key;
        }
        if let Some(fallback) = object.field("fallback").and_then(|f| f.choice(&[("none", Fallback::None), ("client_ip", Fallback::ClientIp)], errors)) {
            settings.fallback = fallback;
        }
        if let Some(max) = object.field("max_entries").and_then(|f| f.integer(1, 1 << 24, errors)) {
            settings.max_entries = max as u32;
        }
        object.finish(errors, |_| None);
        settings
    }
}

/// The table key of a TLS session id as `set_filter_state` hands it over; None when the
/// connection has none (Envoy formats a missing value as "-").
pub fn session_key(value: &[u8]) -> Option<u64> {
    let value = value.trim_ascii();
    (!value.is_empty() && value != b"-").then(|| hash_key(&[b"tls-session", value]))
}

/// The table key of a client certificate (its SHA-256 digest, as Envoy reports it).
pub fn certificate_key(digest: &[u8]) -> Option<u64> {
    let digest = digest.trim_ascii();
    (!digest.is_empty()).then(|| hash_key(&[b"tls-certificate", digest]))
}

impl Describe for Settings {
    fn summary(&self) -> String {
        format!("key {}, fallback {}, timeout {}s, {} entries", self.key.name(), self.fallback.name(), self.timeout, self.max_entries)
    }

    fn counters(&self) -> Vec<ProfileCounter> {
        [&ProfileCounter::OUTCOMES[..], &ProfileCounter::TABLE, &[ProfileCounter::NoKey, ProfileCounter::FallbackClientIp]].concat()
    }

    fn table(&self) -> Option<TableSpec> {
        Some(TableSpec { max_entries: self.max_entries, timeout: self.timeout, connection_aware: self.fallback == Fallback::ClientIp })
    }

    /// Clients that fall back to their address are tracked like a default client IP profile.
    fn tracking(&self) -> Option<Tracking> {
        (self.fallback == Fallback::ClientIp).then(|| Tracking { granularities: vec![Granularity::EXACT], max_timeout: self.timeout })
    }
}

impl Persistence for Settings {
    const TYPE: &'static str = "tls";
    type Pending = table_backed::Pending;
    type Writes = table_backed::Writes;

    fn parse_section(section: Option<Field>, errors: &mut Errors, _path: &str) -> Option<Settings> {
        Some(Settings::parse(section, errors))
    }

    fn on_request<H: HttpStream>(&self, cx: &mut Context<'_, H>, headers: &Headers) -> Result<Requested<Self::Pending>, HostError> {
        if self.timeout == 0 {
            return Ok(Requested::Skip { reason: "disabled" });
        }
        let key = match self.key {
            KeySource::SessionId => cx.host.attribute(Attribute::FilterState(SESSION_ID)).ok().flatten().and_then(|v| session_key(&v)),
            KeySource::PeerCertificate => cx.host.attribute(Attribute::PeerCertificateDigest).ok().flatten().and_then(|v| certificate_key(&v)),
        };
        if let Some(key) = key {
            return table_backed::request(cx, key, self.timeout, false);
        }
        match self.fallback {
            Fallback::None => {
                cx.count(ProfileCounter::NoKey);
                log::debug!("profile {}: no {} on this connection: load balancing", cx.name, self.key.name());
                Ok(Requested::Skip { reason: "no_key" })
            }
            Fallback::ClientIp => {
                cx.count(ProfileCounter::FallbackClientIp);
                match client_ip::client_key(cx, headers, Granularity::EXACT) {
                    Ok(key) => table_backed::request(cx, key, self.timeout, true),
                    Err(reason) => Ok(Requested::Skip { reason }),
                }
            }
        }
    }

    fn on_response(&self, pending: Self::Pending, upstream: Option<Server>, server_down: ServerDown, _: &State) -> Responded<Self::Writes> {
        table_backed::respond(pending, upstream, server_down)
    }

    fn write<H: HttpStream>(&self, cx: &mut Context<'_, H>, writes: Self::Writes) -> Result<(), HostError> {
        table_backed::write(cx, writes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config_reader::parse_section;
    use serde_json::json;

    fn parse(section: serde_json::Value) -> Result<Settings, Vec<String>> {
        parse_section("tls", &section, |field, errors| Some(Settings::parse(field, errors)))
    }

    #[test]
    fn reads_settings_with_avi_defaults() {
        assert_eq!(parse(json!({})).unwrap(), Settings::default());
        let mtls = parse(json!({"key": "peer_certificate", "fallback": "client_ip", "timeout_minutes": 30})).unwrap();
        assert_eq!((mtls.key, mtls.fallback, mtls.timeout), (KeySource::PeerCertificate, Fallback::ClientIp, 1800));
        assert_eq!(
            parse(json!({"key": "ticket"})),
            Err(vec!["tls.key: must be one of \"session_id\", \"peer_certificate\", got string \"ticket\"".to_string()])
        );
    }

    #[test]
    fn keys_ignore_missing_values_and_separate_kinds() {
        assert_eq!(session_key(b"-"), None);
        assert_eq!(session_key(b""), None);
        assert!(session_key(b"A1B2").is_some());
        assert_ne!(session_key(b"A1B2"), certificate_key(b"A1B2"));
        assert_eq!(certificate_key(b" "), None);
    }
}
