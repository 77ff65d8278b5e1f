//! Glue of `http_cookie` profiles: read and strip our cookie, issue or refresh it.

use super::{decided, log_outcome, nonce, pin, profile_name, rewrite_cookie_headers, HostResult};
use crate::endpoint::Endpoint;
use crate::host::ffi::{self, Map};
use crate::host::root::Plugin;
use crate::metrics::ProfileCounter;
use crate::profile::http_cookie::{self, Presented};
use crate::profile::{Kind, Profile};

pub struct Pending {
    profile: usize,
    presented: Presented,
    /// The clock at the request (the response uses it too: one clock read per request).
    now: u64,
}

impl Pending {
    pub fn pin(&self) -> Option<Endpoint> {
        self.presented.pin()
    }
}

pub fn request(plugin: &Plugin, profile: usize, settings: &http_cookie::Settings, headers: &ffi::Headers) -> HostResult<Option<Pending>> {
    let cookies: Vec<&[u8]> = headers.values("cookie").collect();
    let now = ffi::now_seconds();
    let presented = crate::host::span("open_token", || http_cookie::read_request(settings, &plugin.keyring, &cookies, now));
    if let Presented::Rejected(rejection) = presented {
        plugin.metrics.count_profile(profile, rejection.into());
        log::debug!("profile {}: cookie {} rejected ({}): load balancing", profile_name(plugin, profile), settings.name, rejection.name());
    }
    if let Some(endpoint) = presented.pin() {
        crate::host::span("pin", || pin(plugin, &endpoint))?;
    }
    decided(plugin, profile, presented.pin(), rejection(&presented).map(|r| ("rejected", r)), true);
    let rewritten: Vec<Option<Vec<u8>>> = cookies.iter().map(|header| crate::cookie::without(header, &settings.name)).collect();
    crate::host::span("strip_cookie", || rewrite_cookie_headers(&cookies, &rewritten))?;
    Ok(Some(Pending { profile, presented, now }))
}

pub fn response(plugin: &Plugin, pending: Pending, upstream: Option<Endpoint>) -> HostResult<()> {
    let Pending { profile, presented, now } = pending;
    let Some(Profile { kind: Kind::HttpCookie(settings), server_down, .. }) = plugin.config.profiles.get(profile) else { return Ok(()) };
    let decision = http_cookie::decide(settings, *server_down, &presented, upstream, plugin.keyring.primary_id(), now);
    log_outcome(plugin, profile, decision.outcome, upstream, rejection(&presented));
    if decision.rotated {
        plugin.metrics.count_profile(profile, ProfileCounter::Rotated);
    }
    if decision.refreshed {
        plugin.metrics.count_profile(profile, ProfileCounter::Refreshed);
    }
    if decision.reply == http_cookie::Reply::None {
        return Ok(());
    }
    let tls = settings.secure == http_cookie::Secure::Auto && super::is_tls();
    let Some(nonce) = crate::host::span("nonce", || nonce(plugin)) else { return Ok(()) };
    if let Some(header) = crate::host::span("seal", || http_cookie::set_cookie_header(settings, &plugin.keyring, &decision.reply, tls, now, nonce)) {
        crate::host::span("add_set_cookie", || ffi::add_header(Map::ResponseHeaders, "set-cookie", header.as_bytes())).map_err(|s| ("adding Set-Cookie", s))?;
    }
    Ok(())
}

fn rejection(presented: &Presented) -> Option<&'static str> {
    match presented {
        Presented::Rejected(rejection) => Some(rejection.name()),
        _ => None,
    }
}
