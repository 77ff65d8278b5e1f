//! App cookie persistence (Avi "App Cookie"): persist on a session cookie the application itself
//! sets (JSESSIONID, ASP.NET_SessionId, ...) instead of inserting one.
//!
//! - `table` mode: the filter learns "session id -> server" from the backend's `Set-Cookie` and
//!   keeps it in the shared table; requests carry the id in the cookie, else in the query
//!   (`?JSESSIONID=`) or a path parameter (`;jsessionid=`, as servlet containers write URLs).
//! - `prefix` mode (stateless, for fleets of Envoys): the filter seals the server into the cookie
//!   value it returns to the client (`<token>.<value>`) and strips it again before the request
//!   reaches the backend, so the backend only ever sees its own value.

use super::table_backed::Write;
use super::{parse_table_timeout, Outcome, ServerDown, TableTimeout};
use crate::config::reader::{Errors, Field};
use crate::cookie::{self, Edit};
use crate::endpoint::Endpoint;
use crate::keyring::Keyring;
use crate::table::{hash_key, Entry};
use crate::token::{self, Claims, OpenError, Purpose};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Table,
    Prefix,
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
        let mut settings = Settings { name: String::new(), mode, timeout: 20 * 60, max_entries: super::client_ip::DEFAULT_MAX_ENTRIES, path: "/".into() };
        match mode {
            Mode::Table => {
                settings.timeout = parse_table_timeout(&mut object, errors, TableTimeout { default_minutes: 20, min_minutes: 1, max_minutes: 720 });
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

/// Table mode, after the response: the outcome and the writes (key, write) to make. A session id
/// the backend issued is recorded for the server that issued it, and a replaced or deleted id is
/// forgotten; otherwise the request's id follows the rules of every table-backed profile.
pub fn decide_table(
    request_key: Option<u64>,
    pin: Option<Entry<Endpoint>>,
    upstream: Option<Endpoint>,
    issued: Option<Issued>,
    server_down: ServerDown,
    timeout: u32,
    now: u32,
) -> (Outcome, Vec<(u64, Write)>) {
    let (outcome, write) = super::table_backed::decide(pin, upstream, server_down, timeout, now);
    let mut writes = Vec::new();
    match (issued, upstream) {
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
    (outcome, writes)
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
pub fn read_prefixed(name: &str, keyring: &Keyring, cookie_headers: &[impl AsRef<[u8]>]) -> (Prefixed, Vec<Option<Vec<u8>>>) {
    let mut found = Prefixed::Absent;
    let rewritten = cookie_headers
        .iter()
        .map(|header| {
            cookie::edit(header.as_ref(), name, |value| {
                let Some((token, application)) = split_prefixed(value) else { return Edit::Keep };
                let opened = token::open(keyring, Purpose::AppCookiePrefix, name, token);
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
pub fn seal_set_cookie(name: &str, keyring: &Keyring, header: &[u8], upstream: Endpoint, now: u64, nonce: [u8; token::NONCE_LEN]) -> Option<Vec<u8>> {
    let parsed = cookie::parse_set_cookie(header).filter(|c| c.name == name.as_bytes() && !c.deletes())?;
    let token = token::seal(keyring, Purpose::AppCookiePrefix, name, &Claims { endpoint: upstream, issued_at: now, expires_at: None }, nonce)?;
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
    keyring: &Keyring,
    value: &[u8],
    upstream: Endpoint,
    now: u64,
    nonce: [u8; token::NONCE_LEN],
    secure: bool,
) -> Option<String> {
    let token = token::seal(keyring, Purpose::AppCookiePrefix, &settings.name, &Claims { endpoint: upstream, issued_at: now, expires_at: None }, nonce)?;
    let value = std::str::from_utf8(value).ok()?;
    let attributes = cookie::Attributes { path: settings.path.clone(), domain: None, http_only: true, same_site: None };
    Some(cookie::set_cookie(&settings.name, &format!("{token}.{value}"), &attributes, secure, None, now))
}

#[cfg(test)]
mod tests;
