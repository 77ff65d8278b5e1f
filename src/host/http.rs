//! One HTTP stream: strip the client's override header, pick the profile, pin the request through
//! the override header, and on the response issue or refresh the cookie for the host really used.

use super::ffi::{self, Map};
use super::root::Plugin;
use crate::config::DEFAULT_OVERRIDE_HEADER;
use crate::endpoint::{self, Endpoint};
use crate::metrics::{FilterCounter, ProfileCounter};
use crate::profile::http_cookie::{self, Presented};
use crate::profile::Kind;
use crate::token::NONCE_LEN;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;
use std::rc::Rc;

const PROFILE_METADATA: [&str; 5] = ["xds", "route_metadata", "filter_metadata", "persistence", "profile"];
const ROUTE_NAME: [&str; 2] = ["xds", "route_name"];
const UPSTREAM_ADDRESS: [&str; 2] = ["upstream", "address"];
const TLS_VERSION: [&str; 2] = ["connection", "tls_version"];

pub struct Http {
    plugin: Option<Rc<Plugin>>,
    /// Set on the request path when a profile applies; read on the response path.
    pending: Option<Pending>,
}

struct Pending {
    profile: usize,
    presented: Presented,
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
        let Some(profile) = select_profile(&plugin) else { return Action::Continue };
        let Some(Kind::HttpCookie(settings)) = plugin.config.profiles.get(profile).map(|p| &p.kind) else {
            return Action::Continue;
        };
        let cookies = match ffi::header_values(Map::RequestHeaders, "cookie") {
            Ok(cookies) => cookies,
            Err(status) => return host_error(&plugin, "reading Cookie", status),
        };
        let presented = http_cookie::read_request(settings, &plugin.keyring, &cookies, ffi::now_seconds());
        if let Presented::Rejected(rejection) = presented {
            plugin.metrics.count_profile(profile, rejection.into());
            log::debug!("profile {}: cookie {} rejected ({rejection:?}): load balancing", profile_name(&plugin, profile), settings.name);
        }
        if let Some(pin) = presented.pin() {
            if let Err(status) = ffi::replace_header(Map::RequestHeaders, &plugin.config.override_header, endpoint::override_header_value(&pin).as_bytes()) {
                return host_error(&plugin, "setting the override header", status);
            }
        }
        if let Err(status) = strip_our_cookie(&cookies, &settings.name) {
            return host_error(&plugin, "rewriting Cookie", status);
        }
        self.pending = Some(Pending { profile, presented });
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        let Some(plugin) = self.plugin.clone() else { return Action::Continue };
        // stateful_session announces a changed host in the response: never show it to the client.
        let _ = ffi::remove_header(Map::ResponseHeaders, &plugin.config.override_header);
        let Some(Pending { profile, presented }) = self.pending.take() else { return Action::Continue };
        let Some(Kind::HttpCookie(settings)) = plugin.config.profiles.get(profile).map(|p| &p.kind) else {
            return Action::Continue;
        };
        let server_down = plugin.config.profiles.get(profile).map(|p| p.server_down).unwrap_or(crate::profile::ServerDown::Immediate);
        let upstream = upstream_address();
        let now = ffi::now_seconds();
        let decision = http_cookie::decide(settings, server_down, &presented, upstream, plugin.keyring.primary_id(), now);
        plugin.metrics.count_profile(profile, decision.outcome.into());
        if decision.rotated {
            plugin.metrics.count_profile(profile, ProfileCounter::Rotated);
        }
        if decision.refreshed {
            plugin.metrics.count_profile(profile, ProfileCounter::Refreshed);
        }
        log::debug!(
            "profile {}: {:?} upstream {}",
            profile_name(&plugin, profile),
            decision.outcome,
            upstream.map_or_else(|| "none".to_string(), |u| u.to_string())
        );
        if decision.reply == http_cookie::Reply::None {
            return Action::Continue;
        }
        let tls = settings.secure == http_cookie::Secure::Auto && is_tls();
        let mut nonce = [0u8; NONCE_LEN];
        if getrandom::fill(&mut nonce).is_err() {
            log::error!("no randomness for a cookie nonce: cookie not issued");
            plugin.metrics.count(FilterCounter::HostErrors);
            return Action::Continue;
        }
        if let Some(header) = http_cookie::set_cookie_header(settings, &plugin.keyring, &decision.reply, tls, now, nonce) {
            if let Err(status) = ffi::add_header(Map::ResponseHeaders, "set-cookie", header.as_bytes()) {
                return host_error(&plugin, "adding Set-Cookie", status);
            }
        }
        Action::Continue
    }
}

fn host_error(plugin: &Plugin, what: &str, status: ffi::Status) -> Action {
    log::warn!("host call failed while {what} (status {}): request continues without persistence", status.0);
    plugin.metrics.count(FilterCounter::HostErrors);
    Action::Continue
}

fn profile_name(plugin: &Plugin, profile: usize) -> &str {
    plugin.config.profiles.get(profile).map_or("?", |p| p.name.as_str())
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

/// Removes our cookie from what the backend receives; other cookies are untouched. Several Cookie
/// headers become one (RFC 9110 allows joining them with "; ").
fn strip_our_cookie(cookies: &[Vec<u8>], name: &str) -> Result<(), ffi::Status> {
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

fn upstream_address() -> Option<Endpoint> {
    let bytes = ffi::property(&UPSTREAM_ADDRESS).ok()??;
    endpoint::parse(std::str::from_utf8(&bytes).ok()?)
}

fn is_tls() -> bool {
    matches!(ffi::property(&TLS_VERSION), Ok(Some(version)) if !version.is_empty())
}
