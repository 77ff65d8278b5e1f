//! Glue of `http_cookie` profiles: read and strip our cookie, issue or refresh it.

use super::{decided, log_outcome, nonce, pin, profile_name, rewrite_cookie_headers, HostResult};
use crate::host::ffi::{self, Map};
use crate::host::root::Plugin;
use crate::endpoint::Endpoint;
use crate::metrics::ProfileCounter;
use crate::profile::http_cookie::{self, Presented};
use crate::profile::{Kind, Profile};

pub struct Pending {
    profile: usize,
    presented: Presented,
}

pub fn request(plugin: &Plugin, profile: usize, settings: &http_cookie::Settings) -> HostResult<Option<Pending>> {
    let cookies = ffi::header_values(Map::RequestHeaders, "cookie").map_err(|s| ("reading Cookie", s))?;
    let presented = http_cookie::read_request(settings, &plugin.keyring, &cookies, ffi::now_seconds());
    if let Presented::Rejected(rejection) = presented {
        plugin.metrics.count_profile(profile, rejection.into());
        log::debug!("profile {}: cookie {} rejected ({rejection:?}): load balancing", profile_name(plugin, profile), settings.name);
    }
    if let Some(endpoint) = presented.pin() {
        pin(plugin, &endpoint)?;
    }
    decided(plugin, profile, presented.pin(), rejection(&presented).map(|r| ("rejected", r)));
    let rewritten: Vec<Option<Vec<u8>>> = cookies.iter().map(|header| crate::cookie::without(header, &settings.name)).collect();
    rewrite_cookie_headers(&cookies, &rewritten)?;
    Ok(Some(Pending { profile, presented }))
}

pub fn response(plugin: &Plugin, pending: Pending, upstream: Option<Endpoint>) -> HostResult<()> {
    let Pending { profile, presented } = pending;
    let Some(Profile { kind: Kind::HttpCookie(settings), server_down, .. }) = plugin.config.profiles.get(profile) else { return Ok(()) };
    let now = ffi::now_seconds();
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
    let Some(nonce) = nonce(plugin) else { return Ok(()) };
    if let Some(header) = http_cookie::set_cookie_header(settings, &plugin.keyring, &decision.reply, tls, now, nonce) {
        ffi::add_header(Map::ResponseHeaders, "set-cookie", header.as_bytes()).map_err(|s| ("adding Set-Cookie", s))?;
    }
    Ok(())
}

fn rejection(presented: &Presented) -> Option<&'static str> {
    match presented {
        Presented::Rejected(rejection) => Some(rejection.name()),
        _ => None,
    }
}
