//! Glue of `app_cookie` profiles: find the application's session id (table mode) or our sealed
//! prefix on it (prefix mode), and learn from the backend's Set-Cookie.

use super::table::{apply, lookup};
use super::{decided, is_tls, log_outcome, nonce, pin, rewrite_cookie_headers, HostResult};
use crate::endpoint::Endpoint;
use crate::host::ffi::{self, Map};
use crate::host::root::Plugin;
use crate::metrics::ProfileCounter;
use crate::profile::app_cookie::{self, Mode, Prefixed, Settings};
use crate::profile::table_backed::Write;
use crate::profile::{Kind, Outcome, Profile};
use crate::table::{Entry, Snapshot};

pub enum Pending {
    Table { profile: usize, key: Option<u64>, snapshot: Option<Snapshot>, pin: Option<Entry<Endpoint>>, now: u32 },
    Prefix { profile: usize, found: Prefixed },
}

impl Pending {
    pub fn pin(&self) -> Option<Endpoint> {
        match self {
            Pending::Table { pin, .. } => pin.map(|entry| entry.record),
            Pending::Prefix { found, .. } => pinned(found),
        }
    }
}

pub fn request(plugin: &Plugin, profile: usize, settings: &Settings, headers: &ffi::Headers) -> HostResult<Option<Pending>> {
    let cookies: Vec<&[u8]> = headers.values("cookie").collect();
    match settings.mode {
        Mode::Table => {
            let path = headers.first(":path").unwrap_or_default();
            let now = ffi::now_seconds() as u32;
            let Some((value, _found)) = app_cookie::session_id(&settings.name, &cookies, path) else {
                decided(plugin, profile, None, Some(("reason", "no_session")), true);
                return Ok(Some(Pending::Table { profile, key: None, snapshot: None, pin: None, now }));
            };
            let key = app_cookie::key(value);
            let Some((snapshot, live)) = lookup(plugin, profile, key, settings.timeout, false, now)? else { return Ok(None) };
            decided(plugin, profile, live.map(|e| e.record), None, true);
            Ok(Some(Pending::Table { profile, key: Some(key), snapshot: Some(snapshot), pin: live, now }))
        }
        Mode::Prefix => {
            let (found, rewritten) = app_cookie::read_prefixed(&settings.name, &plugin.keyring, &cookies);
            match &found {
                Prefixed::Rejected(error) => plugin.metrics.count_profile(profile, (*error).into()),
                Prefixed::Valid { claims, .. } => pin(plugin, &claims.endpoint)?,
                Prefixed::Absent => {}
            }
            decided(plugin, profile, pinned(&found), rejected(&found).map(|r| ("rejected", r)), true);
            rewrite_cookie_headers(&cookies, &rewritten)?;
            Ok(Some(Pending::Prefix { profile, found }))
        }
    }
}

pub fn response(plugin: &Plugin, pending: Pending, upstream: Option<Endpoint>) -> HostResult<()> {
    let profile = match &pending {
        Pending::Table { profile, .. } | Pending::Prefix { profile, .. } => *profile,
    };
    let Some(Profile { kind: Kind::AppCookie(settings), server_down, .. }) = plugin.config.profiles.get(profile) else { return Ok(()) };
    let response_headers = ffi::Headers::read(Map::ResponseHeaders).map_err(|s| ("reading response headers", s))?;
    let set_cookies: Vec<&[u8]> = response_headers.values("set-cookie").collect();
    match pending {
        Pending::Table { key, snapshot, pin, now, .. } => {
            let issued = app_cookie::issued(&settings.name, &set_cookies);
            let (outcome, writes) = app_cookie::decide_table(key, pin, upstream, issued, *server_down, settings.timeout, now);
            log_outcome(plugin, profile, outcome, upstream, None);
            if writes.iter().any(|(_, w)| matches!(w, Write::Learn(_))) {
                plugin.metrics.count_profile(profile, ProfileCounter::Learned);
            }
            apply(plugin, profile, snapshot, &writes, settings.timeout, now)
        }
        Pending::Prefix { found, .. } => {
            let outcome = crate::profile::outcome(pinned(&found), upstream, *server_down);
            log_outcome(plugin, profile, outcome, upstream, rejected(&found));
            let Some(upstream) = upstream else { return Ok(()) };
            seal_response(plugin, profile, settings, &set_cookies, upstream, outcome, &found)
        }
    }
}

/// Seals the backend's session cookie for `upstream`; after a move without one, re-issues the
/// client's.
fn seal_response(
    plugin: &Plugin,
    profile: usize,
    settings: &Settings,
    set_cookies: &[&[u8]],
    upstream: Endpoint,
    outcome: Outcome,
    found: &Prefixed,
) -> HostResult<()> {
    let now = ffi::now_seconds();
    let mut sealed_any = false;
    let mut rewritten = Vec::with_capacity(set_cookies.len());
    for header in set_cookies {
        let Some(nonce) = nonce(plugin) else { return Ok(()) };
        match app_cookie::seal_set_cookie(&settings.name, &plugin.keyring, header, upstream, now, nonce) {
            Some(sealed) => {
                sealed_any = true;
                rewritten.push(sealed);
            }
            None => rewritten.push(header.to_vec()),
        }
    }
    if sealed_any {
        plugin.metrics.count_profile(profile, ProfileCounter::Learned);
        // Header order among Set-Cookie headers is kept; they move after the other headers.
        ffi::remove_header(Map::ResponseHeaders, "set-cookie").map_err(|s| ("rewriting Set-Cookie", s))?;
        for header in &rewritten {
            ffi::add_header(Map::ResponseHeaders, "set-cookie", header).map_err(|s| ("rewriting Set-Cookie", s))?;
        }
        return Ok(());
    }
    if let (Outcome::Repicked, Prefixed::Valid { value, .. }) = (outcome, found) {
        let Some(nonce) = nonce(plugin) else { return Ok(()) };
        if let Some(header) = app_cookie::reissue(settings, &plugin.keyring, value, upstream, now, nonce, is_tls()) {
            ffi::add_header(Map::ResponseHeaders, "set-cookie", header.as_bytes()).map_err(|s| ("adding Set-Cookie", s))?;
        }
    }
    Ok(())
}

fn pinned(found: &Prefixed) -> Option<Endpoint> {
    match found {
        Prefixed::Valid { claims, .. } => Some(claims.endpoint),
        _ => None,
    }
}

fn rejected(found: &Prefixed) -> Option<&'static str> {
    match found {
        Prefixed::Rejected(error) => Some(crate::profile::http_cookie::Rejection::from(*error).name()),
        _ => None,
    }
}
