//! TLS persistence (Avi "TLS"). Avi hides the server in the TLS session ticket; a filter inside
//! Envoy cannot touch tickets, so this persists on what Envoy exposes of the TLS session:
//! - `session_id`: the TLS session id, handed to the filter by `set_filter_state`
//!   (`%DOWNSTREAM_TLS_SESSION_ID%`). Stable across resumption only with TLS 1.2 and session-id
//!   resumption (no tickets); TLS 1.3 has no session id.
//! - `peer_certificate`: the client certificate's SHA-256 digest (mTLS, the service-mesh case).
//!
//! Entries live in the profile's shared table, `timeout` after the last request of the session.

use super::{parse_table_timeout, TableTimeout};
use crate::config::reader::{Errors, Field};
use crate::table::hash_key;

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
        Settings { timeout: 5 * 60, key: KeySource::SessionId, fallback: Fallback::None, max_entries: super::client_ip::DEFAULT_MAX_ENTRIES }
    }
}

impl Settings {
    pub fn parse(section: Option<Field>, errors: &mut Errors) -> Settings {
        let mut settings = Settings::default();
        let Some(mut object) = section.and_then(|field| field.object(errors)) else { return settings };
        settings.timeout = parse_table_timeout(&mut object, errors, TableTimeout { default_minutes: 5, min_minutes: 0, max_minutes: 720 });
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::reader::parse_section;
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
