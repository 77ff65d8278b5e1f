//! One HTTP stream through the filter, the same for every persistence type:
//!
//! request: remove client-supplied override (cluster, decision) headers → select the profile
//! (route metadata, then `routes`, then `default_profile`) → the type reads its key → pin (or
//! not), and name the recorded cluster in `cluster_header` → decision header;
//! response: learn the host Envoy used (and the routed cluster) → hide stateful_session's header
//! unless the pin held → the type's outcome → count it and record it → the type's writes
//! (cookies, table entries).
//!
//! Clusters (`cluster_header`): Envoy picks a route's weighted cluster before any host override
//! applies, so a pinned client would land in another cluster as often as the weights say. The
//! filter names the client's recorded cluster in a request header; writing a request header
//! makes Envoy match the route again, and the configuration's routes that match that header
//! (ahead of the weighted route) send the request to that cluster. A cluster the route no longer
//! reaches falls through to the weights: the client is load balanced again and counted
//! (`cluster_moved`), whatever `server_down` says.
//!
//! Every request that selected a profile gets exactly one access-log record: the outcome when
//! the response phase runs, otherwise the request-time decision (`decision=balance
//! reason=<why>`: `header_missing`, `header_unmatched`, `no_key`, `disabled`,
//! `no_client_address`, `untrusted_client_address`, `no_peer_address`, `host_error`).

use crate::config::DEFAULT_OVERRIDE_HEADER;
use crate::context::Context;
use crate::endpoint;
use crate::header_pairs::Headers;
use crate::host::{Attribute, HostError, HttpStream};
use crate::metrics::{FilterCounter, ProfileCounter};
use crate::outcome::{Outcome, ServerDown};
use crate::persistence::Requested;
use crate::plugin::Plugin;
use crate::profile::Pending;
use crate::report;
use crate::server::{ClusterName, Server};
use std::rc::Rc;

pub struct Stream {
    /// None when the configuration was rejected (Envoy should not run such a plugin): the stream
    /// then only removes client-supplied override headers.
    plugin: Option<Rc<Plugin>>,
    in_flight: Option<InFlight>,
}

/// A request that the response phase will finish.
struct InFlight {
    profile: usize,
    pin: Option<Server>,
    pending: Pending,
}

impl Stream {
    pub fn new(plugin: Option<Rc<Plugin>>) -> Stream {
        Stream { plugin, in_flight: None }
    }

    /// The plugin this stream runs (None when the configuration was rejected).
    pub fn plugin(&self) -> Option<&Plugin> {
        self.plugin.as_deref()
    }

    pub fn on_request_headers<H: HttpStream>(&mut self, host: &mut H) {
        let Some(plugin) = self.plugin.clone() else {
            let _ = host.remove_request_header(DEFAULT_OVERRIDE_HEADER);
            return;
        };
        // One host call for every header the filter may look at.
        let headers = match host.request_headers() {
            Ok(headers) => headers,
            Err(error) => {
                let _ = host.remove_request_header(&plugin.config.override_header);
                host_error(&plugin, host, error);
                return;
            }
        };
        strip_client_headers(&plugin, host, &headers);
        let Some(index) = select_profile(&plugin, host) else { return };
        let Some(profile) = plugin.config.profiles.get(index) else { return };
        plugin.note_use(index, host);
        let requested = {
            let mut cx = Context { host: &mut *host, state: &plugin.state, profile: index, name: &profile.name, client_address: plugin.config.client_address };
            profile.kind.on_request(&mut cx, &headers)
        };
        let decision = Decision { plugin: &plugin, profile: index };
        match requested {
            Ok(Requested::Pin { server, pending }) => match pin(&plugin, host, &server) {
                Ok(()) => {
                    decision.announce(host, Some(server), None);
                    self.in_flight = Some(InFlight { profile: index, pin: Some(server), pending });
                }
                Err(error) => {
                    host_error(&plugin, host, error);
                    decision.record(host, "host_error");
                }
            },
            Ok(Requested::Balance { why, pending }) => {
                decision.announce(host, None, why);
                self.in_flight = Some(InFlight { profile: index, pin: None, pending });
            }
            Ok(Requested::Skip { reason }) => decision.record(host, reason),
            Err(error) => {
                host_error(&plugin, host, error);
                decision.record(host, "host_error");
            }
        }
    }

    pub fn on_response_headers<H: HttpStream>(&mut self, host: &mut H) {
        let Some(plugin) = self.plugin.clone() else { return };
        let in_flight = self.in_flight.take();
        let pin = in_flight.as_ref().and_then(|f| f.pin);
        let upstream = match &in_flight {
            Some(_) => upstream_address(host).map(|endpoint| Server { endpoint, cluster: routed_cluster(&plugin, host, pin) }),
            None => None,
        };
        // stateful_session puts the host it used in the response whenever that is not the host
        // the request was pinned to: never show it to the client. (Backends' own copies are
        // removed by the route's response_headers_to_remove, before stateful_session runs.)
        let pinned_there = upstream.is_some() && pin.map(|p| p.endpoint) == upstream.map(|u| u.endpoint);
        if !pinned_there {
            let _ = host.remove_response_header(&plugin.config.override_header);
        }
        let Some(InFlight { profile: index, pending, .. }) = in_flight else { return };
        let Some(profile) = plugin.config.profiles.get(index) else { return };
        let mut server_down = profile.server_down;
        if let (Some(Server { cluster: Some(recorded), .. }), Some(Server { cluster: Some(routed), .. })) = (pin, upstream) {
            if recorded != routed {
                // The route no longer reaches the client's cluster: a new server, whatever server_down says.
                plugin.state.metrics.count_profile(host, index, ProfileCounter::ClusterMoved);
                log::debug!("profile {}: cluster {} is no longer routed (now {}): client moves", profile.name, recorded.as_str(), routed.as_str());
                server_down = ServerDown::Immediate;
            }
        }
        let Some(responded) = profile.kind.on_response(pending, upstream, server_down, &plugin.state) else { return };
        report_outcome(&plugin, host, index, responded.outcome, upstream, responded.rejected);
        if plugin.config.host_stats && responded.outcome == Outcome::Pinned {
            if let Some(upstream) = upstream {
                plugin.state.host_stats.count_pinned(host, &upstream.endpoint);
            }
        }
        let mut cx = Context { host: &mut *host, state: &plugin.state, profile: index, name: &profile.name, client_address: plugin.config.client_address };
        if let Err(error) = profile.kind.write(&mut cx, responded.writes) {
            host_error(&plugin, host, error);
        }
    }
}

/// Pins the request to `server`, and names its recorded cluster for the routes that match it.
fn pin<H: HttpStream>(plugin: &Plugin, host: &mut H, server: &Server) -> Result<(), HostError> {
    host.pin(&server.endpoint, &plugin.config.override_header)?;
    if let (Some(header), Some(cluster)) = (plugin.config.cluster_header.as_deref(), &server.cluster) {
        host.set_request_header(header, cluster.as_bytes())?;
        host.reroute()?;
    }
    Ok(())
}

/// The cluster to record for this response: the routed one where clusters are steered. When it
/// cannot be recorded, the pin's (so a record never loses its cluster to a failed read).
fn routed_cluster<H: HttpStream>(plugin: &Plugin, host: &mut H, pin: Option<Server>) -> Option<ClusterName> {
    plugin.config.cluster_header.as_ref()?;
    let routed = host.attribute(Attribute::ClusterName);
    if let Some(cluster) = routed.as_ref().ok().and_then(|c| c.as_deref()).and_then(ClusterName::new) {
        return Some(cluster);
    }
    plugin.state.metrics.count(host, FilterCounter::ClusterUnrecorded);
    if !plugin.state.warned.cluster_unrecorded.replace(true) {
        let why = match &routed {
            Err(error) => format!("reading it failed (status {})", error.status),
            Ok(None) => "Envoy gave none".to_string(),
            Ok(Some(name)) => format!("{} bytes, not 1-255 printable ASCII characters", name.len()),
        };
        log::warn!("cluster_header: the routed cluster cannot be recorded ({why}): clients keep the cluster they had");
    }
    pin.and_then(|p| p.cluster)
}

/// A failed host call: the request continues without persistence.
fn host_error<H: HttpStream>(plugin: &Plugin, host: &H, error: HostError) {
    log::warn!("host call {} failed (status {}): request continues without persistence", error.call, error.status);
    plugin.state.metrics.count(host, FilterCounter::HostErrors);
}

/// The request-time decision of one profile.
struct Decision<'a> {
    plugin: &'a Plugin,
    profile: usize,
}

impl Decision<'_> {
    fn text(&self, pin: Option<Server>, why: Option<(&str, &str)>) -> String {
        let profile = self.plugin.config.profiles.get(self.profile);
        let (name, type_name) = profile.map_or(("?", "?"), |p| (p.name.as_str(), p.kind.type_name()));
        report::decision(name, type_name, pin, why)
    }

    /// A response phase follows (it writes the record): only the decision header, if configured.
    fn announce<H: HttpStream>(&self, host: &mut H, pin: Option<Server>, why: Option<(&str, &str)>) {
        if let Some(header) = self.plugin.config.decision_header.as_deref() {
            let text = self.text(pin, why);
            if host.set_request_header(header, text.as_bytes()).is_err() {
                self.plugin.state.metrics.count(host, FilterCounter::HostErrors);
            }
        }
    }

    /// No response phase: the decision is the record (and the decision header, if configured).
    fn record<H: HttpStream>(&self, host: &mut H, reason: &str) {
        let text = self.text(None, Some(("reason", reason)));
        record(self.plugin, host, &text);
        if let Some(header) = self.plugin.config.decision_header.as_deref() {
            if host.set_request_header(header, text.as_bytes()).is_err() {
                self.plugin.state.metrics.count(host, FilterCounter::HostErrors);
            }
        }
    }
}

fn record<H: HttpStream>(plugin: &Plugin, host: &mut H, text: &str) {
    if host.record(text).is_err() {
        plugin.state.metrics.count(host, FilterCounter::HostErrors);
    }
}

/// Counts, logs and records what happened once Envoy chose `upstream`.
fn report_outcome<H: HttpStream>(plugin: &Plugin, host: &mut H, profile: usize, outcome: Outcome, upstream: Option<Server>, rejected: Option<&str>) {
    plugin.state.metrics.count_profile(host, profile, outcome.into());
    let (name, type_name) = plugin.config.profiles.get(profile).map_or(("?", "?"), |p| (p.name.as_str(), p.kind.type_name()));
    let text = report::outcome(name, type_name, outcome, rejected, upstream);
    log::debug!("{text}");
    record(plugin, host, &text);
}

/// Only the filter may name an upstream: a client-supplied override header is removed on every
/// request, whether or not a profile applies (and so is a client-supplied decision header).
fn strip_client_headers<H: HttpStream>(plugin: &Plugin, host: &mut H, headers: &Headers) {
    let override_header = &plugin.config.override_header;
    if headers.first(override_header).is_some() {
        plugin.state.metrics.count(host, FilterCounter::SpoofedOverrideHeader);
        log::debug!("removed a client-supplied {override_header} header");
        if host.remove_request_header(override_header).is_err() {
            plugin.state.metrics.count(host, FilterCounter::HostErrors);
        }
    }
    if let Some(cluster_header) = plugin.config.cluster_header.as_deref().filter(|h| headers.first(h).is_some()) {
        plugin.state.metrics.count(host, FilterCounter::SpoofedClusterHeader);
        log::debug!("removed a client-supplied {cluster_header} header");
        if host.remove_request_header(cluster_header).and_then(|()| host.reroute()).is_err() {
            plugin.state.metrics.count(host, FilterCounter::HostErrors);
        }
    }
    if let Some(decision) = plugin.config.decision_header.as_deref().filter(|h| headers.first(h).is_some()) {
        let _ = host.remove_request_header(decision);
    }
}

/// Route metadata `filter_metadata.persistence.profile`, then `routes` by route name, then the default.
fn select_profile<H: HttpStream>(plugin: &Plugin, host: &mut H) -> Option<usize> {
    let config = &plugin.config;
    if let Ok(Some(name)) = host.attribute(Attribute::RouteProfile) {
        let name = String::from_utf8_lossy(&name);
        let found = config.profile_index(&name);
        if found.is_none() {
            plugin.state.metrics.count(host, FilterCounter::UnknownProfile);
            let mut warned = plugin.state.warned.profiles.borrow_mut();
            if !warned.iter().any(|w| *w == name) {
                warned.push(name.to_string());
                log::warn!(
                    "route metadata names profile {}, which the plugin configuration does not define: no persistence on that route",
                    crate::config_reader::quoted(&name)
                );
            }
        }
        return found;
    }
    if !config.routes.is_empty() {
        if let Ok(Some(route)) = host.attribute(Attribute::RouteName) {
            if let Some(index) = std::str::from_utf8(&route).ok().and_then(|r| config.route_profile(r)) {
                return Some(index);
            }
        }
    }
    config.default_profile
}

fn upstream_address<H: HttpStream>(host: &mut H) -> Option<endpoint::Endpoint> {
    let bytes = host.attribute(Attribute::UpstreamAddress).ok()??;
    endpoint::parse(std::str::from_utf8(&bytes).ok()?)
}

#[cfg(test)]
mod tests;
