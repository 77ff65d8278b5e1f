//! App cookie persistence (Avi "App Cookie"): persist on a session cookie the application itself
//! sets (JSESSIONID, ASP.NET_SessionId, ...) instead of inserting one.
//!
//! - `table` mode: the filter learns "session id -> server" from the backend's `Set-Cookie` and
//!   keeps it in the shared table; requests carry the id in the cookie, else in the query
//!   (`?JSESSIONID=`) or a path parameter (`;jsessionid=`, as servlet containers write URLs).
//! - `prefix` mode (stateless, for fleets of Envoys): the filter seals the server into the cookie
//!   value it returns to the client (`<token>.<value>`) and strips it again before the request
//!   reaches the backend, so the backend only ever sees its own value.

use super::client_ip::DEFAULT_MAX_ENTRIES;
use super::table_backed::{self, TableTimeout, Write};
use crate::config_reader::{Errors, Field};
use crate::context::Context;
use crate::cookie::{self, Edit};
use crate::server::Server;
use crate::header_pairs::Headers;
use crate::host::{HostError, HttpStream};
use crate::metrics::ProfileCounter;
use crate::outcome::{self, Outcome, ServerDown};
use crate::persistence::{TokenSpec, Describe, Persistence, Requested, Responded, TableSpec};
use crate::state::State;
use crate::table::{hash_key, Entry, Snapshot};
use crate::token::{self, Claims, OpenError, Purpose, Rejection, Tokens};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Table,
    Prefix,
}

/// What a type with these two modes (app cookie, app header) counts and keeps.
impl Mode {
    pub fn counters(self) -> Vec<ProfileCounter> {
        let own: &[ProfileCounter] = match self {
            Mode::Table => &ProfileCounter::TABLE,
            Mode::Prefix => &ProfileCounter::TOKENS,
        };
        [&ProfileCounter::OUTCOMES[..], own, &[ProfileCounter::Learned]].concat()
    }

    /// The shared table of table mode.
    pub fn table(self, max_entries: u32, timeout: u32) -> Option<TableSpec> {
        (self == Mode::Table).then_some(TableSpec { max_entries, timeout, connection_aware: false })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    pub name: String,
    pub mode: Mode,
    /// Table mode: seconds of inactivity after which a session id is forgotten.
    pub timeout: u32,
    pub max_entries: u32,
    /// Prefix mode: `Path` of the cookie when the filter re-issues it after a server change.
    pub path: String,
}

impl Settings {
    pub fn parse(section: Option<Field>, errors: &mut Errors, section_path: &str) -> Option<Settings> {
        let Some(mut object) = section.and_then(|field| field.object(errors)) else {
            errors.add(section_path, "is required (at least the application's cookie name, e.g. {\"name\": \"JSESSIONID\"})");
            return None;
        };
        let name = object
            .required("name", "is required (the application's session cookie, e.g. JSESSIONID)", errors)
            .and_then(|f| f.string_where(cookie::is_token, cookie::NAME_RULE, errors))
            .map(str::to_string);
        let mode = object.field("mode").and_then(|f| f.choice(&[("table", Mode::Table), ("prefix", Mode::Prefix)], errors)).unwrap_or(Mode::Table);
        let mut settings = Settings { name: String::new(), mode, timeout: 20 * 60, max_entries: DEFAULT_MAX_ENTRIES, path: "/".into() };
        match mode {
            Mode::Table => {
                settings.timeout = table_backed::parse_timeout(&mut object, errors, TableTimeout { default_minutes: 20, min_minutes: 1, max_minutes: 720 });
                if let Some(max) = object.field("max_entries").and_then(|f| f.integer(1, 1 << 24, errors)) {
                    settings.max_entries = max as u32;
                }
            }
            Mode::Prefix => {
                if let Some(path) = object.field("path").and_then(|f| f.string_where(cookie::is_valid_path, cookie::PATH_RULE, errors)) {
                    settings.path = path.into();
                }
            }
        }
        object.finish(errors, |key| match (mode, key) {
            (Mode::Prefix, "timeout_minutes" | "timeout_seconds" | "max_entries") => {
                Some("has no effect in prefix mode: the persistence lives in the application's cookie, as long as it does".into())
            }
            (Mode::Table, "path") => Some("is for prefix mode only (the Path of a cookie the filter re-issues)".into()),
            _ => None,
        });
        settings.name = name?;
        Some(settings)
    }
}

/// Where a request's session id was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Found {
    Cookie,
    Query,
    PathParameter,
}

/// The request's session id: the first cookie `name`, else the query parameter `name`, else the
/// path parameter `;name=` (names of parameters compared without case, as servlet containers
/// write `;jsessionid=` for a `JSESSIONID` cookie). `path` is the `:path` header.
pub fn session_id<'a>(name: &'a str, cookie_headers: &'a [impl AsRef<[u8]>], path: &'a [u8]) -> Option<(&'a [u8], Found)> {
    if let Some(value) = cookie_headers.iter().flat_map(|h| cookie::values(h.as_ref(), name)).find(|v| !v.is_empty()) {
        return Some((value, Found::Cookie));
    }
    let (path, query) = match path.iter().position(|&b| b == b'?') {
        Some(q) => (path.get(..q).unwrap_or_default(), path.get(q + 1..).unwrap_or_default()),
        None => (path, &[][..]),
    };
    let query = query.split(|&b| b == b'#').next().unwrap_or_default();
    let named = |pair: &'a [u8]| -> Option<&'a [u8]> {
        let eq = pair.iter().position(|&b| b == b'=')?;
        let (key, value) = pair.split_at(eq);
        (key.eq_ignore_ascii_case(name.as_bytes())).then(|| value.get(1..).unwrap_or_default()).filter(|v| !v.is_empty())
    };
    if let Some(value) = query.split(|&b| b == b'&').find_map(named) {
        return Some((value, Found::Query));
    }
    // `/shop/cart;jsessionid=ABC/next;x=1`: parameters follow `;` within a segment.
    path.split(|&b| b == b'/').flat_map(|segment| segment.split(|&b| b == b';').skip(1)).find_map(named).map(|value| (value, Found::PathParameter))
}

/// The table key of a session id.
pub fn key(value: &[u8]) -> u64 {
    hash_key(&[b"app", value])
}

/// What the backend did with the session cookie in its response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Issued {
    Value(Vec<u8>),
    Deleted,
}

/// The last `Set-Cookie` of cookie `name` in the response, if any.
pub fn issued(name: &str, set_cookies: &[impl AsRef<[u8]>]) -> Option<Issued> {
    set_cookies.iter().filter_map(|h| cookie::parse_set_cookie(h.as_ref())).filter(|c| c.name == name.as_bytes()).last().map(|c| {
        if c.deletes() {
            Issued::Deleted
        } else {
            Issued::Value(c.value.to_vec())
        }
    })
}

/// Table mode, once the response's session id is known: the writes to make. A session id the
/// backend issued is recorded for the server that issued it, and a replaced or deleted id is
/// forgotten; otherwise `write` (the rule of every table-backed profile) applies to the request's id,
/// also when the backend repeats the request's own id on the server it is pinned to (some send it
/// on every response: that is no news, and no table write).
pub fn table_writes(request_key: Option<u64>, write: Option<Write>, upstream: Option<Server>, issued: Option<Issued>, now: u32, pinned_there: bool) -> Vec<(u64, Write)> {
    let mut writes = Vec::new();
    match (issued, upstream) {
        (Some(Issued::Value(value)), Some(_)) if pinned_there && request_key == Some(key(&value)) => writes.extend(request_key.zip(write)),
        (Some(Issued::Value(value)), Some(upstream)) => {
            let issued_key = key(&value);
            writes.push((issued_key, Write::Learn(Entry { touched: now, record: upstream })));
            if let Some(old) = request_key.filter(|k| *k != issued_key) {
                writes.push((old, Write::Forget));
            }
        }
        (Some(Issued::Deleted), _) => writes.extend(request_key.map(|k| (k, Write::Forget))),
        _ => writes.extend(request_key.zip(write)),
    }
    writes
}

/// Prefix mode: a cookie value `<token>.<application value>` split in two, when the part before the
/// first `.` has the shape of our token (application values may contain dots themselves).
pub fn split_prefixed(value: &[u8]) -> Option<(&[u8], &[u8])> {
    let dot = value.iter().position(|&b| b == b'.')?;
    let (token, rest) = value.split_at(dot);
    token::looks_like_token(token).then(|| (token, rest.get(1..).unwrap_or_default()))
}

/// What a prefix-mode request carried.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Prefixed {
    /// No cookie with our token: load balance.
    Absent,
    /// Our token, but it does not open (rotated-out key, forged, other name).
    Rejected(OpenError),
    Valid {
        claims: Claims,
        key_id: u8,
        value: Vec<u8>,
    },
}

/// Reads the prefix-mode cookie and returns it with the Cookie headers rewritten for the backend
/// (every `<token>.` of ours removed, everything else byte for byte).
pub fn read_prefixed(name: &str, tokens: &Tokens, cookie_headers: &[impl AsRef<[u8]>]) -> (Prefixed, Vec<Option<Vec<u8>>>) {
    let mut found = Prefixed::Absent;
    let rewritten = cookie_headers
        .iter()
        .map(|header| {
            cookie::edit(header.as_ref(), name, |value| {
                let Some((token, application)) = split_prefixed(value) else { return Edit::Keep };
                let opened = tokens.open(Purpose::AppCookiePrefix, name, token);
                match (&found, opened) {
                    (Prefixed::Valid { .. }, _) => {}
                    (_, Ok(opened)) => found = Prefixed::Valid { claims: opened.claims, key_id: opened.key_id, value: application.to_vec() },
                    (Prefixed::Absent, Err(error)) => found = Prefixed::Rejected(error),
                    (Prefixed::Rejected(_), Err(_)) => {}
                }
                Edit::Value(application.to_vec())
            })
        })
        .collect();
    (found, rewritten)
}

/// Prefix mode: the backend's `Set-Cookie` for `name` with the value sealed for `upstream`;
/// None for other cookies and for deletions (passed on untouched).
pub fn seal_set_cookie(name: &str, tokens: &Tokens, header: &[u8], upstream: Server, now: u64, nonce: [u8; token::NONCE_LEN]) -> Option<Vec<u8>> {
    let parsed = cookie::parse_set_cookie(header).filter(|c| c.name == name.as_bytes() && !c.deletes())?;
    let token = tokens.seal(Purpose::AppCookiePrefix, name, &Claims { server: upstream, issued_at: now, expires_at: None }, nonce)?;
    let mut out = Vec::with_capacity(header.len() + token.len() + 1);
    out.extend_from_slice(name.as_bytes());
    out.push(b'=');
    out.extend_from_slice(token.as_bytes());
    out.push(b'.');
    out.extend_from_slice(parsed.value);
    out.extend_from_slice(parsed.attributes);
    Some(out)
}

/// Prefix mode, after `immediate` moved a client whose response did not set the cookie: the
/// client's value sealed for the new server, so later requests follow it.
pub fn reissue(
    settings: &Settings,
    tokens: &Tokens,
    value: &[u8],
    upstream: Server,
    now: u64,
    nonce: [u8; token::NONCE_LEN],
    secure: bool,
) -> Option<String> {
    let token = tokens.seal(Purpose::AppCookiePrefix, &settings.name, &Claims { server: upstream, issued_at: now, expires_at: None }, nonce)?;
    let value = std::str::from_utf8(value).ok()?;
    let attributes = cookie::Attributes { path: settings.path.clone(), domain: None, http_only: true, same_site: None, partitioned: false };
    Some(cookie::set_cookie(&settings.name, &format!("{token}.{value}"), &attributes, secure, None, now))
}

impl Describe for Settings {
    fn summary(&self) -> String {
        match self.mode {
            Mode::Table => format!("cookie {}, table, idle timeout {}s, {} entries", self.name, self.timeout, self.max_entries),
            Mode::Prefix => format!("cookie {}, prefix", self.name),
        }
    }

    fn counters(&self) -> Vec<ProfileCounter> {
        self.mode.counters()
    }

    fn table(&self) -> Option<TableSpec> {
        self.mode.table(self.max_entries, self.timeout)
    }

    fn tokens(&self) -> Option<TokenSpec> {
        (self.mode == Mode::Prefix).then(|| TokenSpec { purpose: Purpose::AppCookiePrefix, name: self.name.clone(), timeout: None, idle_timeout: None })
    }
}

pub enum Pending {
    /// `key`: the request's session id, if it had one; `now`: the clock at the request.
    Table { key: Option<u64>, snapshot: Option<Snapshot>, pin: Option<Entry<Server>>, now: u32 },
    Prefix { found: Prefixed },
}

pub enum Writes {
    Table { key: Option<u64>, snapshot: Option<Snapshot>, write: Option<Write>, upstream: Option<Server>, now: u32, pinned_there: bool },
    Prefix { found: Prefixed, outcome: Outcome, upstream: Option<Server> },
}

impl Persistence for Settings {
    const TYPE: &'static str = "app_cookie";
    type Pending = Pending;
    type Writes = Writes;

    fn parse_section(section: Option<Field>, errors: &mut Errors, path: &str) -> Option<Settings> {
        Settings::parse(section, errors, path)
    }

    fn on_request<H: HttpStream>(&self, cx: &mut Context<'_, H>, headers: &Headers) -> Result<Requested<Pending>, HostError> {
        let cookies: Vec<&[u8]> = headers.values("cookie").collect();
        match self.mode {
            Mode::Table => {
                let path = headers.first(":path").unwrap_or_default();
                let now = cx.host.now() as u32;
                let Some((value, _found)) = session_id(&self.name, &cookies, path) else {
                    let pending = Pending::Table { key: None, snapshot: None, pin: None, now };
                    return Ok(Requested::Balance { why: Some(("reason", "no_session")), pending });
                };
                let key = key(value);
                let Some(table_backed::Found { snapshot, live }) = table_backed::lookup(cx, key, self.timeout, false, now)? else {
                    return Ok(Requested::Skip { reason: "no_table" });
                };
                Ok(Requested::pin_or_balance(live.map(|e| e.record), None, Pending::Table { key: Some(key), snapshot: Some(snapshot), pin: live, now }))
            }
            Mode::Prefix => {
                let (found, rewritten) = read_prefixed(&self.name, &cx.state.tokens, &cookies);
                if let Prefixed::Rejected(error) = found {
                    cx.count(error.into());
                }
                cx.rewrite_cookie_headers(&cookies, &rewritten)?;
                Ok(Requested::pin_or_balance(pinned(&found), rejected(&found).map(|r| ("rejected", r)), Pending::Prefix { found }))
            }
        }
    }

    fn on_response(&self, pending: Pending, upstream: Option<Server>, server_down: ServerDown, _: &State) -> Responded<Writes> {
        match pending {
            Pending::Table { key, snapshot, pin, now } => {
                let (outcome, write) = table_backed::decide(pin, upstream, server_down, self.timeout, now);
                let pinned_there = upstream.is_some() && pin.map(|p| p.record.endpoint) == upstream.map(|u| u.endpoint);
                Responded { outcome, rejected: None, writes: Writes::Table { key, snapshot, write, upstream, now, pinned_there } }
            }
            Pending::Prefix { found } => {
                let outcome = outcome::outcome(pinned(&found), upstream, server_down);
                Responded { outcome, rejected: rejected(&found), writes: Writes::Prefix { found, outcome, upstream } }
            }
        }
    }

    /// Learns from the backend's Set-Cookie (table), or seals it (prefix).
    fn write<H: HttpStream>(&self, cx: &mut Context<'_, H>, writes: Writes) -> Result<(), HostError> {
        if let Writes::Prefix { upstream: None, .. } = writes {
            return Ok(());
        }
        let response_headers = cx.host.response_headers()?;
        let set_cookies: Vec<&[u8]> = response_headers.values("set-cookie").collect();
        match writes {
            Writes::Table { key, snapshot, write, upstream, now, pinned_there } => {
                let writes = table_writes(key, write, upstream, issued(&self.name, &set_cookies), now, pinned_there);
                if writes.iter().any(|(_, w)| matches!(w, Write::Learn(_))) {
                    cx.count(ProfileCounter::Learned);
                }
                table_backed::apply(cx, snapshot, &writes, self.timeout, now)
            }
            Writes::Prefix { found, outcome, upstream: Some(upstream) } => seal_response(self, cx, &set_cookies, upstream, outcome, &found),
            Writes::Prefix { upstream: None, .. } => Ok(()),
        }
    }
}

/// Seals the backend's session cookie for `upstream`; after a move without one, re-issues the
/// client's.
fn seal_response<H: HttpStream>(
    settings: &Settings,
    cx: &mut Context<'_, H>,
    set_cookies: &[&[u8]],
    upstream: Server,
    outcome: Outcome,
    found: &Prefixed,
) -> Result<(), HostError> {
    let now = cx.host.now();
    let mut sealed_any = false;
    let mut rewritten = Vec::with_capacity(set_cookies.len());
    for header in set_cookies {
        let Some(nonce) = cx.nonce() else { return Ok(()) };
        match seal_set_cookie(&settings.name, &cx.state.tokens, header, upstream, now, nonce) {
            Some(sealed) => {
                sealed_any = true;
                rewritten.push(sealed);
            }
            None => rewritten.push(header.to_vec()),
        }
    }
    if sealed_any {
        cx.count(ProfileCounter::Learned);
        // Header order among Set-Cookie headers is kept; they move after the other headers.
        cx.host.remove_response_header("set-cookie")?;
        for header in &rewritten {
            cx.host.add_response_header("set-cookie", header)?;
        }
        return Ok(());
    }
    if let (Outcome::Repicked, Prefixed::Valid { value, .. }) = (outcome, found) {
        let Some(nonce) = cx.nonce() else { return Ok(()) };
        let secure = cx.is_tls();
        if let Some(header) = reissue(settings, &cx.state.tokens, value, upstream, now, nonce, secure) {
            cx.host.add_response_header("set-cookie", header.as_bytes())?;
        }
    }
    Ok(())
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
mod tests;
