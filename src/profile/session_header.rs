//! Session header persistence: the HTTP cookie profile's sealed token carried in a header, for
//! clients that keep no cookies (API clients, mobile apps, gRPC). The filter sends the token in a
//! response header on the first response and whenever it changes; the client sends it back in the
//! same request header. The backend never sees it. Same keys, rotation, timeouts, rejections and
//! `server_down` as `http_cookie` (`super::sealed`); tokens are bound to this use and header name, so
//! a cookie's token is not accepted here.

use super::sealed::{self, Lifetime};
use crate::config_reader::{Errors, Field};
use crate::context::Context;
use crate::server::Server;
use crate::header_pairs::Headers;
use crate::host::{HostError, HttpStream};
use crate::metrics::ProfileCounter;
use crate::outcome::ServerDown;
use crate::persistence::{TokenSpec, Describe, Persistence, Requested, Responded};
use crate::state::State;
use crate::token::Purpose;

pub const DEFAULT_NAME: &str = "x-session-token";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Lowercase header name, for the request and the response.
    pub name: String,
    pub lifetime: Lifetime,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings { name: DEFAULT_NAME.to_string(), lifetime: Lifetime::default() }
    }
}

impl Settings {
    pub fn parse(section: Option<Field>, errors: &mut Errors) -> Settings {
        let mut settings = Settings::default();
        let Some(mut object) = section.and_then(|field| field.object(errors)) else { return settings };
        if let Some(name) = object.field("name").and_then(|f| f.string_where(is_header_name, HEADER_RULE, errors)) {
            settings.name = name.to_string();
        }
        settings.lifetime = Lifetime::parse(&mut object, errors, "token");
        object.finish(errors, |_| None);
        settings
    }
}

/// A lowercase HTTP header name that is not one Envoy or HTTP reserves for itself.
pub fn is_header_name(name: &str) -> bool {
    crate::cookie::is_token(name) && !name.bytes().any(|b| b.is_ascii_uppercase()) && !RESERVED.contains(&name)
}

pub const HEADER_RULE: &str = "must be a lowercase HTTP header name that is not cookie, set-cookie, host or a hop-by-hop header";
const RESERVED: [&str; 9] = ["cookie", "set-cookie", "host", "connection", "keep-alive", "te", "trailer", "transfer-encoding", "upgrade"];

impl Describe for Settings {
    fn summary(&self) -> String {
        format!("header {}", self.name)
    }

    fn counters(&self) -> Vec<ProfileCounter> {
        sealed::counters()
    }

    fn tokens(&self) -> Option<TokenSpec> {
        Some(TokenSpec { purpose: Purpose::SessionHeader, name: self.name.clone(), timeout: self.lifetime.timeout, idle_timeout: self.lifetime.idle_timeout })
    }
}

impl Persistence for Settings {
    const TYPE: &'static str = "session_header";
    type Pending = sealed::Pending;
    type Writes = sealed::Writes;

    fn parse_section(section: Option<Field>, errors: &mut Errors, _path: &str) -> Option<Settings> {
        Some(Settings::parse(section, errors))
    }

    /// Reads the token and removes the header from what the backend gets.
    fn on_request<H: HttpStream>(&self, cx: &mut Context<'_, H>, headers: &Headers) -> Result<Requested<sealed::Pending>, HostError> {
        let pending = sealed::request(cx, &self.lifetime, Purpose::SessionHeader, &self.name, headers.values(&self.name));
        if headers.first(&self.name).is_some() {
            cx.host.remove_request_header(&self.name)?;
        }
        let why = pending.presented.rejection().map(|r| ("rejected", r));
        Ok(Requested::pin_or_balance(pending.presented.pin(), why, pending))
    }

    fn on_response(&self, pending: sealed::Pending, upstream: Option<Server>, server_down: ServerDown, state: &State) -> Responded<sealed::Writes> {
        sealed::respond(&self.lifetime, pending, upstream, server_down, state)
    }

    /// Sends a new, re-sealed or echoed token (replacing any value the backend gave the header).
    fn write<H: HttpStream>(&self, cx: &mut Context<'_, H>, writes: sealed::Writes) -> Result<(), HostError> {
        let Some((token, _)) = sealed::reply(cx, Purpose::SessionHeader, &self.name, &writes.decision) else { return Ok(()) };
        cx.host.set_response_header(&self.name, token.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config_reader::parse_section;
    use serde_json::json;

    fn parse(section: serde_json::Value) -> Result<Settings, Vec<String>> {
        parse_section("session_header", &section, |field, errors| Some(Settings::parse(field, errors)))
    }

    #[test]
    fn reads_settings_with_defaults() {
        assert_eq!(parse(json!({})).unwrap(), Settings::default());
        let settings = parse(json!({"name": "x-affinity", "timeout_minutes": 60, "idle_timeout_minutes": 15, "always_send": true})).unwrap();
        assert_eq!(settings.name, "x-affinity");
        assert_eq!(settings.lifetime, Lifetime { timeout: Some(3600), idle_timeout: Some(900), always_send: true });
    }

    #[test]
    fn rejects_bad_settings() {
        let cases = [
            (json!({"name": "X-Token"}), format!("session_header.name: {HEADER_RULE}, got \"X-Token\"")),
            (json!({"name": "cookie"}), format!("session_header.name: {HEADER_RULE}, got \"cookie\"")),
            (json!({"timeout_minutes": 10, "idle_timeout_minutes": 20}), "session_header.idle_timeout_minutes: must not be longer than timeout_minutes (the token would expire first)".into()),
            (json!({"path": "/"}), "session_header.path: unknown field (known fields here: always_send, idle_timeout_minutes, name, timeout_minutes)".into()),
        ];
        for (section, expected) in cases {
            assert_eq!(parse(section.clone()), Err(vec![expected]), "{section}");
        }
    }
}
