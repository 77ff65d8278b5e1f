//! Glue of `http_header` profiles: the request header's value selects a statically assigned server.

use super::{decided, log_outcome, pin, HostResult};
use crate::endpoint::Endpoint;
use crate::host::ffi;
use crate::host::root::Plugin;
use crate::metrics::ProfileCounter;
use crate::profile::{http_header, Profile};

pub struct Pending {
    profile: usize,
    assigned: Endpoint,
}

impl Pending {
    pub fn pin(&self) -> Endpoint {
        self.assigned
    }
}

pub fn request(plugin: &Plugin, profile: usize, settings: &http_header::Settings, headers: &ffi::Headers) -> HostResult<Option<Pending>> {
    let Some(value) = headers.first(&settings.name) else {
        plugin.metrics.count_profile(profile, ProfileCounter::HeaderMissing);
        decided(plugin, profile, None, Some(("reason", "header_missing")), false);
        return Ok(None);
    };
    let Some(assigned) = settings.server_for(value) else {
        plugin.metrics.count_profile(profile, ProfileCounter::HeaderUnmatched);
        decided(plugin, profile, None, Some(("reason", "header_unmatched")), false);
        return Ok(None);
    };
    pin(plugin, &assigned)?;
    decided(plugin, profile, Some(assigned), None, true);
    Ok(Some(Pending { profile, assigned }))
}

pub fn response(plugin: &Plugin, pending: Pending, upstream: Option<Endpoint>) -> HostResult<()> {
    let Some(Profile { server_down, .. }) = plugin.config.profiles.get(pending.profile) else { return Ok(()) };
    let outcome = crate::profile::outcome(Some(pending.assigned), upstream, *server_down);
    log_outcome(plugin, pending.profile, outcome, upstream, None);
    Ok(())
}
