//! One HTTP stream: strip the client's override header, pick the profile, pin the request through
//! the override header, and on the response record what Envoy really did. One file per profile
//! type holds its glue; the decisions themselves live in `crate::profile`.

mod app_cookie;
mod cookie;
mod header;
mod table;
mod tls;

use super::ffi::{self, Map};
use super::root::Plugin;
use crate::config::DEFAULT_OVERRIDE_HEADER;
use crate::endpoint::{self, Endpoint};
use crate::metrics::FilterCounter;
use crate::profile::{Kind, Outcome};
use crate::report;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;
use std::net::SocketAddr;
use std::rc::Rc;

const PROFILE_METADATA: [&str; 5] = ["xds", "route_metadata", "filter_metadata", "persistence", "profile"];
const ROUTE_NAME: [&str; 2] = ["xds", "route_name"];
pub(super) const UPSTREAM_ADDRESS: [&str; 2] = ["upstream", "address"];
const TLS_VERSION: [&str; 2] = ["connection", "tls_version"];

pub struct Http {
    plugin: Option<Rc<Plugin>>,
    /// Set on the request path when a profile applies; read on the response path.
    pending: Option<Pending>,
}

/// What the request path learned, per profile type, for the response path.
enum Pending {
    Cookie(cookie::Pending),
    Table(table::Pending),
    AppCookie(app_cookie::Pending),
    Header(header::Pending),
}

impl Http {
    pub fn new(plugin: Option<Rc<Plugin>>) -> Http {
        Http { plugin, pending: None }
    }
}

impl Pending {
    /// The host the request was pinned to, if any.
    fn pin(&self) -> Option<Endpoint> {
        match self {
            Pending::Cookie(pending) => pending.pin(),
            Pending::Table(pending) => pending.pin(),
            Pending::AppCookie(pending) => pending.pin(),
            Pending::Header(pending) => Some(pending.pin()),
        }
    }
}

impl Context for Http {}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        super::span("request", || self.request())
    }

    fn on_http_response_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        super::span("response", || self.response())
    }
}

impl Http {
    fn request(&mut self) -> Action {
        let Some(plugin) = self.plugin.clone() else {
            let _ = ffi::remove_header(Map::RequestHeaders, DEFAULT_OVERRIDE_HEADER);
            return Action::Continue;
        };
        // One host call for every header the filter may look at.
        let headers = match super::span("request_headers", || ffi::Headers::read(Map::RequestHeaders)) {
            Ok(headers) => headers,
            Err(status) => {
                let _ = ffi::remove_header(Map::RequestHeaders, &plugin.config.override_header);
                host_error(&plugin, "reading request headers", status);
                return Action::Continue;
            }
        };
        strip_client_headers(&plugin, &headers);
        let Some(index) = super::span("select_profile", || select_profile(&plugin)) else { return Action::Continue };
        let Some(profile) = plugin.config.profiles.get(index) else { return Action::Continue };
        plugin.note_use(index);
        let pending = match &profile.kind {
            Kind::HttpCookie(settings) => cookie::request(&plugin, index, settings, &headers).map(|p| p.map(Pending::Cookie)),
            Kind::ClientIp(settings) => table::client_ip_request(&plugin, index, settings, &headers).map(|p| p.map(Pending::Table)),
            Kind::AppCookie(settings) => app_cookie::request(&plugin, index, settings, &headers).map(|p| p.map(Pending::AppCookie)),
            Kind::HttpHeader(settings) => header::request(&plugin, index, settings, &headers).map(|p| p.map(Pending::Header)),
            Kind::Tls(settings) => tls::request(&plugin, index, settings, &headers).map(|p| p.map(Pending::Table)),
        };
        match pending {
            Ok(pending) => self.pending = pending,
            Err((what, status)) => host_error(&plugin, what, status),
        }
        Action::Continue
    }

    fn response(&mut self) -> Action {
        let Some(plugin) = self.plugin.clone() else { return Action::Continue };
        let pending = self.pending.take();
        let upstream = match &pending {
            Some(_) => super::span("upstream_address", upstream_address),
            None => None,
        };
        // stateful_session puts the host it used in the response whenever that is not the host
        // the request was pinned to: never show it to the client. (Backends' own copies are
        // removed by the route's response_headers_to_remove, before stateful_session runs.)
        let pinned_there = upstream.is_some() && pending.as_ref().and_then(Pending::pin) == upstream;
        if !pinned_there {
            super::span("strip_response", || {
                let _ = ffi::remove_header(Map::ResponseHeaders, &plugin.config.override_header);
            });
        }
        let Some(pending) = pending else { return Action::Continue };
        let result = match pending {
            Pending::Cookie(pending) => cookie::response(&plugin, pending, upstream),
            Pending::Table(pending) => table::response(&plugin, pending, upstream),
            Pending::AppCookie(pending) => app_cookie::response(&plugin, pending, upstream),
            Pending::Header(pending) => header::response(&plugin, pending, upstream),
        };
        if let Err((what, status)) = result {
            host_error(&plugin, what, status);
        }
        Action::Continue
    }
}

/// A failed host call: what was being done, and Envoy's status.
type HostResult<T> = Result<T, (&'static str, ffi::Status)>;

fn host_error(plugin: &Plugin, what: &str, status: ffi::Status) {
    log::warn!("host call failed while {what} (status {}): request continues without persistence", status.0);
    plugin.metrics.count(FilterCounter::HostErrors);
}

fn profile_name(plugin: &Plugin, profile: usize) -> &str {
    plugin.config.profiles.get(profile).map_or("?", |p| p.name.as_str())
}

/// Where the per-request record goes: Envoy keeps it as filter state `wasm.persistence`.
const RECORD: [&str; 1] = ["persistence"];

fn record(plugin: &Plugin, text: &str) {
    if super::span("record", || ffi::set_property(&RECORD, text.as_bytes())).is_err() {
        plugin.metrics.count(FilterCounter::HostErrors);
    }
}

fn type_name(plugin: &Plugin, profile: usize) -> &'static str {
    plugin.config.profiles.get(profile).map_or("?", |p| p.kind.type_name())
}

/// The request-time decision: `pin` the server the request is sent to, or why not. It becomes the
/// record only when the request has no response phase for the filter (`responds` false; otherwise
/// the outcome replaces it), and the `decision_header` when one is configured.
fn decided(plugin: &Plugin, profile: usize, pin: Option<Endpoint>, why: Option<(&str, &str)>, responds: bool) {
    let header = plugin.config.decision_header.as_deref();
    if responds && header.is_none() {
        return;
    }
    let text = report::decision(profile_name(plugin, profile), type_name(plugin, profile), pin, why);
    if !responds {
        record(plugin, &text);
    }
    if let Some(header) = header {
        if ffi::replace_header(Map::RequestHeaders, header, text.as_bytes()).is_err() {
            plugin.metrics.count(FilterCounter::HostErrors);
        }
    }
}

/// Counts, logs and records what happened once Envoy chose `upstream`.
fn log_outcome(plugin: &Plugin, profile: usize, outcome: Outcome, upstream: Option<Endpoint>, rejected: Option<&str>) {
    plugin.metrics.count_profile(profile, outcome.into());
    let text = report::outcome(profile_name(plugin, profile), type_name(plugin, profile), outcome, rejected, upstream);
    log::debug!("{text}");
    record(plugin, &text);
}

/// Only the filter may name an upstream: a client-supplied override header is removed on every
/// request, whether or not a profile applies (and so is a client-supplied decision header).
fn strip_client_headers(plugin: &Plugin, headers: &ffi::Headers) {
    let override_header = &plugin.config.override_header;
    if headers.first(override_header).is_some() {
        plugin.metrics.count(FilterCounter::SpoofedOverrideHeader);
        log::debug!("removed a client-supplied {override_header} header");
        if ffi::remove_header(Map::RequestHeaders, override_header).is_err() {
            plugin.metrics.count(FilterCounter::HostErrors);
        }
    }
    if let Some(decision) = plugin.config.decision_header.as_deref().filter(|h| headers.first(h).is_some()) {
        let _ = ffi::remove_header(Map::RequestHeaders, decision);
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
            let mut warned = plugin.warned_profiles.borrow_mut();
            if !warned.iter().any(|w| *w == name) {
                warned.push(name.to_string());
                log::warn!(
                    "route metadata names profile {}, which the plugin configuration does not define: no persistence on that route",
                    crate::config::reader::quoted(&name)
                );
            }
        }
        return found;
    }
    if !config.routes.is_empty() {
        if let Ok(Some(route)) = ffi::property(&ROUTE_NAME) {
            if let Some(index) = std::str::from_utf8(&route).ok().and_then(|r| config.route_profile(r)) {
                return Some(index);
            }
        }
    }
    config.default_profile
}

/// Hands the decision to stateful_session.
fn pin(plugin: &Plugin, endpoint: &Endpoint) -> HostResult<()> {
    ffi::replace_header(Map::RequestHeaders, &plugin.config.override_header, endpoint::override_header_value(endpoint).as_bytes())
        .map_err(|status| ("setting the override header", status))
}

/// Replaces all Cookie headers by the rewritten ones (None: unchanged); several become one
/// (RFC 9110 allows joining them with "; "), an emptied one disappears.
fn rewrite_cookie_headers(original: &[&[u8]], rewritten: &[Option<Vec<u8>>]) -> HostResult<()> {
    if rewritten.iter().all(Option::is_none) {
        return Ok(());
    }
    let kept: Vec<&[u8]> = rewritten.iter().zip(original).map(|(new, old)| new.as_deref().unwrap_or(old)).filter(|header| !header.is_empty()).collect();
    let result = if kept.is_empty() {
        ffi::remove_header(Map::RequestHeaders, "cookie")
    } else {
        ffi::replace_header(Map::RequestHeaders, "cookie", &kept.join(&b"; "[..]))
    };
    result.map_err(|status| ("rewriting Cookie", status))
}

/// The next token nonce of this VM; None (logged, counted) if the host has no randomness to start
/// a sequence with.
fn nonce(plugin: &Plugin) -> Option<[u8; crate::token::NONCE_LEN]> {
    let mut sequence = plugin.nonces.borrow_mut();
    if let Some(nonce) = sequence.as_mut().and_then(crate::token::NonceSequence::next_nonce) {
        return Some(nonce);
    }
    let mut prefix = [0u8; 8];
    if getrandom::fill(&mut prefix).is_err() {
        log::error!("no randomness for token nonces: nothing sealed");
        plugin.metrics.count(FilterCounter::HostErrors);
        return None;
    }
    let mut fresh = crate::token::NonceSequence::new(prefix);
    let nonce = fresh.next_nonce();
    *sequence = Some(fresh);
    nonce
}

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
