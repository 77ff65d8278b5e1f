//! Glue of `http_header` profiles: the request header's value selects a statically assigned server.

use super::{decided, log_outcome, pin, HostResult};
use crate::host::ffi::{self, Map};
use crate::host::root::Plugin;
use crate::endpoint::Endpoint;
use crate::metrics::ProfileCounter;
use crate::profile::{http_header, Profile};

pub struct Pending {
    profile: usize,
    assigned: Endpoint,
}

pub fn request(plugin: &Plugin, profile: usize, settings: &http_header::Settings) -> HostResult<Option<Pending>> {
    let value = ffi::header(Map::RequestHeaders, &settings.name).map_err(|s| ("reading the persistence header", s))?;
    let Some(value) = value else {
        plugin.metrics.count_profile(profile, ProfileCounter::HeaderMissing);
        decided(plugin, profile, None, Some(("reason", "header_missing")));
        return Ok(None);
    };
    let Some(assigned) = settings.server_for(&value) else {
        plugin.metrics.count_profile(profile, ProfileCounter::HeaderUnmatched);
        decided(plugin, profile, None, Some(("reason", "header_unmatched")));
        return Ok(None);
    };
    pin(plugin, &assigned)?;
    decided(plugin, profile, Some(assigned), None);
    Ok(Some(Pending { profile, assigned }))
}

pub fn response(plugin: &Plugin, pending: Pending, upstream: Option<Endpoint>) -> HostResult<()> {
    let Some(Profile { server_down, .. }) = plugin.config.profiles.get(pending.profile) else { return Ok(()) };
    let outcome = crate::profile::outcome(Some(pending.assigned), upstream, *server_down);
    log_outcome(plugin, pending.profile, outcome, upstream, None);
    Ok(())
}
