//! App header persistence: the app cookie profile for a session id the application carries in a
//! header, such as MCP's `Mcp-Session-Id` (the server issues it on its initialize response, and
//! every later request of the session must reach that server).
//!
//! - `table` mode: the filter learns "session id -> server" from the response header and keeps it
//!   in the shared table; requests carrying the id go to its server. An HTTP `DELETE` carrying the
//!   id forgets it once the backend answered 2xx (how MCP ends a session).
//! - `prefix` mode (stateless; Envoy calls this the envelope): the filter seals the server into the
//!   value the client sees (`<token>.<value>`) and removes the seal before the request reaches the
//!   backend, which only ever sees its own value.

use super::app_cookie::{self, Issued, Mode, Prefixed};
use super::client_ip::DEFAULT_MAX_ENTRIES;
use super::session_header::{is_header_name, HEADER_RULE};
use super::table_backed::{self, TableTimeout, Write};
use crate::config_reader::{Errors, Field};
use crate::context::Context;
use crate::server::Server;
use crate::header_pairs::Headers;
use crate::host::{HostError, HttpStream};
use crate::metrics::ProfileCounter;
use crate::outcome::{self, Outcome, ServerDown};
use crate::persistence::{TokenSpec, Describe, Persistence, Requested, Responded, TableSpec};
use crate::state::State;
use crate::table::{Entry, Snapshot};
use crate::token::{Claims, Purpose, Rejection};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Lowercase header name (the request's and the response's).
    pub name: String,
    pub mode: Mode,
    /// Table mode: seconds of inactivity after which a session id is forgotten.
    pub timeout: u32,
    pub max_entries: u32,
    /// Table mode: a 2xx answer to a `DELETE` carrying the id forgets it.
    pub forget_on_delete: bool,
}

impl Settings {
    pub fn parse(section: Option<Field>, errors: &mut Errors, section_path: &str) -> Option<Settings> {
        let Some(mut object) = section.and_then(|field| field.object(errors)) else {
            errors.add(section_path, "is required (at least the application's session header, e.g. {\"name\": \"mcp-session-id\"})");
            return None;
        };
        let name = object
            .required("name", "is required (the application's session header, e.g. mcp-session-id)", errors)
            .and_then(|f| f.string_where(is_header_name, HEADER_RULE, errors))
            .map(str::to_string);
        let mode = object.field("mode").and_then(|f| f.choice(&[("table", Mode::Table), ("prefix", Mode::Prefix)], errors)).unwrap_or(Mode::Table);
        let mut settings = Settings { name: String::new(), mode, timeout: 20 * 60, max_entries: DEFAULT_MAX_ENTRIES, forget_on_delete: true };
        if mode == Mode::Table {
            settings.timeout = table_backed::parse_timeout(&mut object, errors, TableTimeout { default_minutes: 20, min_minutes: 1, max_minutes: 720 });
            if let Some(max) = object.field("max_entries").and_then(|f| f.integer(1, 1 << 24, errors)) {
                settings.max_entries = max as u32;
            }
            if let Some(forget) = object.field("forget_on_delete").and_then(|f| f.bool(errors)) {
                settings.forget_on_delete = forget;
            }
        }
        object.finish(errors, |key| match (mode, key) {
            (Mode::Prefix, "timeout_minutes" | "timeout_seconds" | "max_entries" | "forget_on_delete") => {
                Some("has no effect in prefix mode: the persistence lives in the header's value, as long as the session does".into())
            }
            _ => None,
        });
        settings.name = name?;
        Some(settings)
    }
}

impl Describe for Settings {
    fn summary(&self) -> String {
        match self.mode {
            Mode::Table => format!("header {}, table, idle timeout {}s, {} entries", self.name, self.timeout, self.max_entries),
            Mode::Prefix => format!("header {}, prefix", self.name),
        }
    }

    fn counters(&self) -> Vec<ProfileCounter> {
        self.mode.counters()
    }

    fn table(&self) -> Option<TableSpec> {
        self.mode.table(self.max_entries, self.timeout)
    }

    fn tokens(&self) -> Option<TokenSpec> {
        (self.mode == Mode::Prefix).then(|| TokenSpec { purpose: Purpose::AppHeaderPrefix, name: self.name.clone(), timeout: None, idle_timeout: None })
    }
}

pub enum Pending {
    /// `key`: the request's session id, if it had one; `deleting`: the request is a DELETE.
    Table { key: Option<u64>, snapshot: Option<Snapshot>, pin: Option<Entry<Server>>, now: u32, deleting: bool },
    /// `sealed`: the header's value as the client sent it, when it carried a valid seal.
    Prefix { found: Prefixed, sealed: Option<Vec<u8>> },
}

pub enum Writes {
    Table { key: Option<u64>, snapshot: Option<Snapshot>, write: Option<Write>, upstream: Option<Server>, now: u32, deleting: bool, pinned_there: bool },
    Prefix { found: Prefixed, sealed: Option<Vec<u8>>, outcome: Outcome, upstream: Option<Server> },
}

impl Persistence for Settings {
    const TYPE: &'static str = "app_header";
    type Pending = Pending;
    type Writes = Writes;

    fn parse_section(section: Option<Field>, errors: &mut Errors, path: &str) -> Option<Settings> {
        Settings::parse(section, errors, path)
    }

    fn on_request<H: HttpStream>(&self, cx: &mut Context<'_, H>, headers: &Headers) -> Result<Requested<Pending>, HostError> {
        let value = headers.first(&self.name).filter(|v| !v.is_empty());
        match self.mode {
            Mode::Table => {
                let now = cx.host.now() as u32;
                let deleting = headers.first(":method") == Some(b"DELETE");
                let Some(value) = value else {
                    let pending = Pending::Table { key: None, snapshot: None, pin: None, now, deleting };
                    return Ok(Requested::Balance { why: Some(("reason", "no_session")), pending });
                };
                let key = app_cookie::key(value);
                let Some(table_backed::Found { snapshot, live }) = table_backed::lookup(cx, key, self.timeout, false, now)? else {
                    return Ok(Requested::Skip { reason: "no_table" });
                };
                let pending = Pending::Table { key: Some(key), snapshot: Some(snapshot), pin: live, now, deleting };
                Ok(Requested::pin_or_balance(live.map(|e| e.record), None, pending))
            }
            Mode::Prefix => {
                let Some((token, application)) = value.and_then(app_cookie::split_prefixed) else {
                    return Ok(Requested::Balance { why: None, pending: Pending::Prefix { found: Prefixed::Absent, sealed: None } });
                };
                let found = match cx.state.tokens.open(Purpose::AppHeaderPrefix, &self.name, token) {
                    Ok(opened) => Prefixed::Valid { claims: opened.claims, key_id: opened.key_id, value: application.to_vec() },
                    Err(error) => {
                        cx.count(error.into());
                        Prefixed::Rejected(error)
                    }
                };
                // The backend gets its own value, whatever the seal said.
                cx.host.set_request_header(&self.name, application)?;
                let sealed = matches!(found, Prefixed::Valid { .. }).then(|| value.unwrap_or_default().to_vec());
                let why = rejected(&found).map(|r| ("rejected", r));
                Ok(Requested::pin_or_balance(pinned(&found), why, Pending::Prefix { found, sealed }))
            }
        }
    }

    fn on_response(&self, pending: Pending, upstream: Option<Server>, server_down: ServerDown, _: &State) -> Responded<Writes> {
        match pending {
            Pending::Table { key, snapshot, pin, now, deleting } => {
                let (outcome, write) = table_backed::decide(pin, upstream, server_down, self.timeout, now);
                let pinned_there = upstream.is_some() && pin.map(|p| p.record.endpoint) == upstream.map(|u| u.endpoint);
                Responded { outcome, rejected: None, writes: Writes::Table { key, snapshot, write, upstream, now, deleting, pinned_there } }
            }
            Pending::Prefix { found, sealed } => {
                let outcome = outcome::outcome(pinned(&found), upstream, server_down);
                Responded { outcome, rejected: rejected(&found), writes: Writes::Prefix { found, sealed, outcome, upstream } }
            }
        }
    }

    /// Learns from the response header (table), forgets on DELETE, or seals the header (prefix).
    fn write<H: HttpStream>(&self, cx: &mut Context<'_, H>, writes: Writes) -> Result<(), HostError> {
        match writes {
            Writes::Table { key, snapshot, write, upstream, now, deleting, pinned_there } => {
                let response = cx.host.response_headers()?;
                let ended = deleting && self.forget_on_delete && response.first(":status").is_some_and(|s| s.first() == Some(&b'2'));
                let writes = match key {
                    Some(key) if ended => vec![(key, Write::Forget)],
                    _ => {
                        let issued = response.first(&self.name).filter(|v| !v.is_empty()).map(|v| Issued::Value(v.to_vec()));
                        app_cookie::table_writes(key, write, upstream, issued, now, pinned_there)
                    }
                };
                if writes.iter().any(|(_, w)| matches!(w, Write::Learn(_))) {
                    cx.count(ProfileCounter::Learned);
                }
                table_backed::apply(cx, snapshot, &writes, self.timeout, now)
            }
            Writes::Prefix { upstream: None, .. } => Ok(()),
            Writes::Prefix { found, sealed, outcome, upstream: Some(upstream) } => {
                let response = cx.host.response_headers()?;
                let issued = response.first(&self.name).filter(|v| !v.is_empty());
                let unchanged = matches!(&found, Prefixed::Valid { value, .. } if issued == Some(value.as_slice()));
                let value = match (issued, &found) {
                    // The backend repeats the session's value and the persistence stays (pinned, or
                    // kept under `never`): the client's seal again, no crypto.
                    (Some(_), _) if unchanged && outcome != Outcome::Repicked => {
                        return match sealed {
                            Some(sealed) => cx.host.set_response_header(&self.name, &sealed),
                            None => Ok(()),
                        };
                    }
                    (Some(issued), _) => issued.to_vec(),
                    // Moved without a new value from the backend: the client's value, sealed anew.
                    (None, Prefixed::Valid { value, .. }) if outcome == Outcome::Repicked => value.clone(),
                    (None, _) => return Ok(()),
                };
                let Some(nonce) = cx.nonce() else { return Ok(()) };
                let claims = Claims { server: upstream, issued_at: cx.host.now(), expires_at: None };
                let Some(token) = cx.state.tokens.seal(Purpose::AppHeaderPrefix, &self.name, &claims, nonce) else { return Ok(()) };
                if !unchanged {
                    cx.count(ProfileCounter::Learned);
                }
                let mut header = Vec::with_capacity(token.len() + 1 + value.len());
                header.extend_from_slice(token.as_bytes());
                header.push(b'.');
                header.extend_from_slice(&value);
                cx.host.set_response_header(&self.name, &header)
            }
        }
    }
}

fn pinned(found: &Prefixed) -> Option<Server> {
    match found {
        Prefixed::Valid { claims, .. } => Some(claims.server),
        _ => None,
    }
}

fn rejected(found: &Prefixed) -> Option<&'static str> {
    match found {
        Prefixed::Rejected(error) => Some(Rejection::from(*error).name()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config_reader::parse_section;
    use serde_json::json;

    fn parse(section: serde_json::Value) -> Result<Settings, Vec<String>> {
        parse_section("app_header", &section, |field, errors| Settings::parse(field, errors, "app_header"))
    }

    #[test]
    fn reads_both_modes() {
        let table = parse(json!({"name": "mcp-session-id", "timeout_minutes": 30, "forget_on_delete": false})).unwrap();
        assert_eq!((table.mode, table.timeout, table.forget_on_delete), (Mode::Table, 1800, false));
        let prefix = parse(json!({"name": "mcp-session-id", "mode": "prefix"})).unwrap();
        assert_eq!(prefix.mode, Mode::Prefix);
        assert!(prefix.table().is_none() && table.table().is_some());
    }

    #[test]
    fn rejects_bad_settings() {
        let cases = [
            (json!({}), "app_header.name: is required (the application's session header, e.g. mcp-session-id)".to_string()),
            (json!({"name": "Mcp-Session-Id"}), format!("app_header.name: {HEADER_RULE}, got \"Mcp-Session-Id\"")),
            (
                json!({"name": "mcp-session-id", "mode": "prefix", "timeout_minutes": 5}),
                "app_header.timeout_minutes: has no effect in prefix mode: the persistence lives in the header's value, as long as the session does".into(),
            ),
        ];
        for (section, expected) in cases {
            assert_eq!(parse(section.clone()), Err(vec![expected]), "{section}");
        }
    }
}
