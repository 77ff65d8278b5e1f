//! One HTTP stream: strip the client's override header, pick the profile, pin the request through
//! the override header, and on the response record what Envoy really did (cookie or table).

use super::ffi::{self, Map};
use super::root::Plugin;
use super::store::SharedData;
use crate::config::DEFAULT_OVERRIDE_HEADER;
use crate::endpoint::{self, Endpoint};
use crate::metrics::{FilterCounter, ProfileCounter};
use crate::profile::http_cookie::{self, Presented};
use crate::profile::{client_ip, table_backed, Kind, Outcome, Profile};
use crate::table::{Entry, Snapshot, Table, TableError};
use crate::token::NONCE_LEN;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;
use std::net::SocketAddr;
use std::rc::Rc;

const PROFILE_METADATA: [&str; 5] = ["xds", "route_metadata", "filter_metadata", "persistence", "profile"];
const ROUTE_NAME: [&str; 2] = ["xds", "route_name"];
const SOURCE_ADDRESS: [&str; 2] = ["source", "address"];
const UPSTREAM_ADDRESS: [&str; 2] = ["upstream", "address"];
const TLS_VERSION: [&str; 2] = ["connection", "tls_version"];

pub struct Http {
    plugin: Option<Rc<Plugin>>,
    /// Set on the request path when a profile applies; read on the response path.
    pending: Option<Pending>,
}

enum Pending {
    Cookie { profile: usize, presented: Presented },
    Table { profile: usize, key: u64, snapshot: Snapshot, pin: Option<Entry<Endpoint>> },
}

impl Http {
    pub fn new(plugin: Option<Rc<Plugin>>) -> Http {
        Http { plugin, pending: None }
    }
}

impl Context for Http {}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        let Some(plugin) = self.plugin.clone() else {
            let _ = ffi::remove_header(Map::RequestHeaders, DEFAULT_OVERRIDE_HEADER);
            return Action::Continue;
        };
        strip_client_override(&plugin);
        let Some(index) = select_profile(&plugin) else { return Action::Continue };
        let Some(profile) = plugin.config.profiles.get(index) else { return Action::Continue };
        let pending = match &profile.kind {
            Kind::HttpCookie(settings) => cookie_request(&plugin, index, settings),
            Kind::ClientIp(settings) => client_ip_request(&plugin, index, settings),
        };
        match pending {
            Ok(pending) => self.pending = pending,
            Err((what, status)) => host_error(&plugin, what, status),
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        let Some(plugin) = self.plugin.clone() else { return Action::Continue };
        // stateful_session announces a changed host in the response: never show it to the client.
        let _ = ffi::remove_header(Map::ResponseHeaders, &plugin.config.override_header);
        let Some(pending) = self.pending.take() else { return Action::Continue };
        let upstream = upstream_address();
        let result = match pending {
            Pending::Cookie { profile, presented } => cookie_response(&plugin, profile, &presented, upstream),
            Pending::Table { profile, key, snapshot, pin } => table_response(&plugin, profile, key, snapshot, pin, upstream),
        };
        if let Err((what, status)) = result {
            host_error(&plugin, what, status);
        }
        Action::Continue
    }
}

type HostResult<T> = Result<T, (&'static str, ffi::Status)>;

fn host_error(plugin: &Plugin, what: &str, status: ffi::Status) {
    log::warn!("host call failed while {what} (status {}): request continues without persistence", status.0);
    plugin.metrics.count(FilterCounter::HostErrors);
}

fn profile_name(plugin: &Plugin, profile: usize) -> &str {
    plugin.config.profiles.get(profile).map_or("?", |p| p.name.as_str())
}

fn log_outcome(plugin: &Plugin, profile: usize, outcome: Outcome, upstream: Option<Endpoint>) {
    plugin.metrics.count_profile(profile, outcome.into());
    log::debug!(
        "profile {}: {outcome:?} upstream {}",
        profile_name(plugin, profile),
        upstream.map_or_else(|| "none".to_string(), |u| u.to_string())
    );
}

/// Only the filter may name an upstream: a client-supplied override header is removed on every
/// request, whether or not a profile applies.
fn strip_client_override(plugin: &Plugin) {
    let header = &plugin.config.override_header;
    match ffi::header(Map::RequestHeaders, header) {
        Ok(None) => {}
        Ok(Some(_)) => {
            plugin.metrics.count(FilterCounter::SpoofedOverrideHeader);
            log::debug!("removed a client-supplied {header} header");
            if ffi::remove_header(Map::RequestHeaders, header).is_err() {
                plugin.metrics.count(FilterCounter::HostErrors);
            }
        }
        Err(_) => {
            // Could not tell: remove anyway.
            let _ = ffi::remove_header(Map::RequestHeaders, header);
            plugin.metrics.count(FilterCounter::HostErrors);
        }
    }
}

/// Route metadata `filter_metadata.persistence.profile`, then `routes` by route name, then the default.
fn select_profile(plugin: &Plugin) -> Option<usize> {
    let config = &plugin.config;
    if let Ok(Some(name)) = ffi::property(&PROFILE_METADATA) {
        let name = String::from_utf8_lossy(&name);
        let found = config.profile_index(&name);
        if found.is_none() {
            plugin.metrics.count(FilterCounter::UnknownProfile);
            if plugin.warned_profiles.borrow_mut().insert(name.to_string()) {
                log::warn!("route metadata names profile {name:?}, which the plugin configuration does not define: no persistence on that route");
            }
        }
        return found;
    }
    if !config.routes.is_empty() {
        if let Ok(Some(route)) = ffi::property(&ROUTE_NAME) {
            if let Some(index) = std::str::from_utf8(&route).ok().and_then(|r| config.routes.get(r)) {
                return Some(*index);
            }
        }
    }
    config.default_profile
}

fn pin(plugin: &Plugin, endpoint: &Endpoint) -> HostResult<()> {
    ffi::replace_header(Map::RequestHeaders, &plugin.config.override_header, endpoint::override_header_value(endpoint).as_bytes())
        .map_err(|status| ("setting the override header", status))
}

// --- http_cookie -------------------------------------------------------------------------------

fn cookie_request(plugin: &Plugin, profile: usize, settings: &http_cookie::Settings) -> HostResult<Option<Pending>> {
    let cookies = ffi::header_values(Map::RequestHeaders, "cookie").map_err(|s| ("reading Cookie", s))?;
    let presented = http_cookie::read_request(settings, &plugin.keyring, &cookies, ffi::now_seconds());
    if let Presented::Rejected(rejection) = presented {
        plugin.metrics.count_profile(profile, rejection.into());
        log::debug!("profile {}: cookie {} rejected ({rejection:?}): load balancing", profile_name(plugin, profile), settings.name);
    }
    if let Some(endpoint) = presented.pin() {
        pin(plugin, &endpoint)?;
    }
    strip_cookie(&cookies, &settings.name).map_err(|s| ("rewriting Cookie", s))?;
    Ok(Some(Pending::Cookie { profile, presented }))
}

fn cookie_response(plugin: &Plugin, profile: usize, presented: &Presented, upstream: Option<Endpoint>) -> HostResult<()> {
    let Some(Profile { kind: Kind::HttpCookie(settings), server_down, .. }) = plugin.config.profiles.get(profile) else { return Ok(()) };
    let now = ffi::now_seconds();
    let decision = http_cookie::decide(settings, *server_down, presented, upstream, plugin.keyring.primary_id(), now);
    log_outcome(plugin, profile, decision.outcome, upstream);
    if decision.rotated {
        plugin.metrics.count_profile(profile, ProfileCounter::Rotated);
    }
    if decision.refreshed {
        plugin.metrics.count_profile(profile, ProfileCounter::Refreshed);
    }
    if decision.reply == http_cookie::Reply::None {
        return Ok(());
    }
    let tls = settings.secure == http_cookie::Secure::Auto && is_tls();
    let mut nonce = [0u8; NONCE_LEN];
    if getrandom::fill(&mut nonce).is_err() {
        log::error!("no randomness for a cookie nonce: cookie not issued");
        plugin.metrics.count(FilterCounter::HostErrors);
        return Ok(());
    }
    if let Some(header) = http_cookie::set_cookie_header(settings, &plugin.keyring, &decision.reply, tls, now, nonce) {
        ffi::add_header(Map::ResponseHeaders, "set-cookie", header.as_bytes()).map_err(|s| ("adding Set-Cookie", s))?;
    }
    Ok(())
}

/// Removes the cookie `name` from what the backend receives; other cookies are untouched. Several
/// Cookie headers become one (RFC 9110 allows joining them with "; ").
fn strip_cookie(cookies: &[Vec<u8>], name: &str) -> Result<(), ffi::Status> {
    let rewritten: Vec<Option<Vec<u8>>> = cookies.iter().map(|header| crate::cookie::without(header, name)).collect();
    if rewritten.iter().all(Option::is_none) {
        return Ok(());
    }
    let kept: Vec<&[u8]> = rewritten
        .iter()
        .zip(cookies)
        .map(|(new, old)| new.as_deref().unwrap_or(old))
        .filter(|header| !header.is_empty())
        .collect();
    if kept.is_empty() {
        ffi::remove_header(Map::RequestHeaders, "cookie")
    } else {
        ffi::replace_header(Map::RequestHeaders, "cookie", &kept.join(&b"; "[..]))
    }
}

// --- table-backed profiles -------------------------------------------------------------------

fn client_ip_request(plugin: &Plugin, profile: usize, settings: &client_ip::Settings) -> HostResult<Option<Pending>> {
    if settings.timeout == 0 {
        return Ok(None); // Avi: a timeout of 0 disables persistence.
    }
    let Some(source) = property_address(&SOURCE_ADDRESS) else {
        log::debug!("profile {}: no client address (not an IP connection): load balancing", profile_name(plugin, profile));
        return Ok(None);
    };
    plugin.ensure_tracked(profile);
    let key = client_ip::client_key(source.ip(), settings.granularity());
    table_request(plugin, profile, key, settings.timeout, true)
}

/// Looks the key up (one bucket read) and pins the request if a live entry names a server.
fn table_request(plugin: &Plugin, profile: usize, key: u64, timeout: u32, connection_aware: bool) -> HostResult<Option<Pending>> {
    let Some(Some(table)) = plugin.tables.get(profile) else { return Ok(None) };
    let store = SharedData;
    let snapshot = table.read(&store, key).map_err(|e| ("reading the shared table", store_status(e)))?;
    let now = ffi::now_seconds() as u32;
    let entry: Option<Entry<Endpoint>> = table.find(&snapshot, key);
    let live = entry.filter(|e| {
        table_backed::alive(e, timeout, now) || (connection_aware && connections_keep_alive(&plugin.connections, key, timeout, now))
    });
    if let Some(entry) = &live {
        pin(plugin, &entry.record)?;
    }
    Ok(Some(Pending::Table { profile, key, snapshot, pin: live }))
}

/// Whether the client behind `key` has a connection open, or closed its last one within `timeout`
/// (only consulted when the entry's own timestamp says it expired).
fn connections_keep_alive(connections: &Table, key: u64, timeout: u32, now: u32) -> bool {
    let record = connections.read(&SharedData, key).ok().and_then(|snapshot| connections.find(&snapshot, key));
    client_ip::connections_keep_alive(record.as_ref(), timeout, now)
}

fn table_response(plugin: &Plugin, profile: usize, key: u64, snapshot: Snapshot, pin: Option<Entry<Endpoint>>, upstream: Option<Endpoint>) -> HostResult<()> {
    let Some(Profile { kind, server_down, .. }) = plugin.config.profiles.get(profile) else { return Ok(()) };
    let Some(Some(table)) = plugin.tables.get(profile) else { return Ok(()) };
    let timeout = match kind {
        Kind::ClientIp(settings) => settings.timeout,
        Kind::HttpCookie(_) => return Ok(()),
    };
    let now = ffi::now_seconds() as u32;
    let (outcome, write) = table_backed::decide(pin, upstream, *server_down, timeout, now);
    log_outcome(plugin, profile, outcome, upstream);
    let Some(write) = write else { return Ok(()) };
    let expired = |e: &Entry<Endpoint>| !table_backed::alive(e, timeout, now);
    match table.update(&SharedData, key, Some(snapshot), write, expired) {
        Ok(applied) => {
            plugin.metrics.entries_changed(profile, applied.entries_delta());
            plugin.metrics.add_profile(profile, ProfileCounter::Expired, applied.expired);
            plugin.metrics.add_profile(profile, ProfileCounter::Evicted, applied.evicted);
            Ok(())
        }
        Err(TableError::Conflict) => {
            plugin.metrics.count_profile(profile, ProfileCounter::TableConflicts);
            log::warn!("profile {}: gave up recording a table entry after repeated conflicts", profile_name(plugin, profile));
            Ok(())
        }
        Err(TableError::Store(status)) => Err(("writing the shared table", ffi::Status(status))),
    }
}

fn store_status(error: crate::table::StoreError) -> ffi::Status {
    match error {
        crate::table::StoreError::CasMismatch => ffi::Status(ffi::CAS_MISMATCH),
        crate::table::StoreError::Host(status) => ffi::Status(status),
    }
}

// --- properties ------------------------------------------------------------------------------

fn property_address(path: &[&str]) -> Option<SocketAddr> {
    let bytes = ffi::property(path).ok()??;
    std::str::from_utf8(&bytes).ok()?.parse().ok()
}

fn upstream_address() -> Option<Endpoint> {
    let bytes = ffi::property(&UPSTREAM_ADDRESS).ok()??;
    endpoint::parse(std::str::from_utf8(&bytes).ok()?)
}

fn is_tls() -> bool {
    matches!(ffi::property(&TLS_VERSION), Ok(Some(version)) if !version.is_empty())
}
