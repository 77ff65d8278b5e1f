//! Glue of `tls` profiles: the key is the TLS session id (from `set_filter_state`) or the client
//! certificate's digest; without one, optionally the client's address.

use super::table::{client_key, keyed_request, Pending};
use super::{decided, profile_name, HostResult};
use crate::host::ffi;
use crate::host::root::Plugin;
use crate::metrics::ProfileCounter;
use crate::profile::client_ip;
use crate::profile::tls::{self, Fallback, KeySource, Settings};

/// Where `set_filter_state` (`object_key: tls.sid`) leaves the session id.
const SESSION_ID: [&str; 2] = ["filter_state", "tls.sid"];
const PEER_CERTIFICATE: [&str; 2] = ["connection", "sha256_peer_certificate_digest"];

pub fn request(plugin: &Plugin, profile: usize, settings: &Settings, headers: &ffi::Headers) -> HostResult<Option<Pending>> {
    if settings.timeout == 0 {
        return Ok(None);
    }
    let key = match settings.key {
        KeySource::SessionId => ffi::property(&SESSION_ID).ok().flatten().and_then(|v| tls::session_key(&v)),
        KeySource::PeerCertificate => ffi::property(&PEER_CERTIFICATE).ok().flatten().and_then(|v| tls::certificate_key(&v)),
    };
    if let Some(key) = key {
        return keyed_request(plugin, profile, key, settings.timeout, false);
    }
    match settings.fallback {
        Fallback::None => {
            plugin.metrics.count_profile(profile, ProfileCounter::NoKey);
            decided(plugin, profile, None, Some(("reason", "no_key")), false);
            log::debug!("profile {}: no {} on this connection: load balancing", profile_name(plugin, profile), settings.key.name());
            Ok(None)
        }
        Fallback::ClientIp => {
            plugin.metrics.count_profile(profile, ProfileCounter::FallbackClientIp);
            let Some(key) = client_key(plugin, profile, client_ip::Settings::default().granularity(), headers) else { return Ok(None) };
            keyed_request(plugin, profile, key, settings.timeout, true)
        }
    }
}
